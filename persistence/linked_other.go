//go:build !unix

package persistence

import "os"

// unlinked: open files cannot be deleted on these systems.
func unlinked(*os.File) bool { return false }
