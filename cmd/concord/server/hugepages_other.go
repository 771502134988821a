//go:build !linux

package server

// hugePages does nothing where transparent huge pages are not Linux's.
type hugePages struct{}

func (h *hugePages) advise() (uintptr, error) { return 0, nil }
