//go:build unix

package commands

import (
	"syscall"
	"time"
)

// processCPU returns the system and user CPU time the process has used
// (INFO cpu's used_cpu_sys and used_cpu_user, as Redis reports them).
func processCPU() (sys, user time.Duration) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, 0
	}
	return time.Duration(ru.Stime.Nano()), time.Duration(ru.Utime.Nano())
}
