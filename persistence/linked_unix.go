//go:build unix

package persistence

import (
	"os"
	"syscall"
)

// unlinked reports whether f's file no longer has a name (its directory or
// the file itself was deleted while open: what is written to it is lost
// at the next restart).
func unlinked(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink == 0
}
