//go:build !unix

package commands

import "time"

// processCPU is not measured on this platform.
func processCPU() (sys, user time.Duration) { return 0, 0 }
