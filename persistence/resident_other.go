//go:build !linux

package persistence

// dropResident is Linux-only (see resident_linux.go).
func dropResident(dir string) (int64, error) { return 0, nil }
