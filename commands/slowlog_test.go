package commands

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// The slow log keeps a long argument's first 128 bytes, as Redis does,
// without copying all of it on the way.
func TestSlowArg(t *testing.T) {
	if got := slowArg([]byte("short")); got != "short" {
		t.Fatalf("short argument: %q", got)
	}
	big := bytes.Repeat([]byte("x"), 8<<20)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	got := slowArg(big)
	runtime.ReadMemStats(&m1)
	if want := strings.Repeat("x", 128) + "... (8388480 more bytes)"; got != want {
		t.Fatalf("long argument: %q", got)
	}
	// (the process's allocations: other goroutines' count too, so the
	// bound is far above 128 bytes and far below a copy of the argument)
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 1<<20 {
		t.Fatalf("%d bytes allocated for an 8 MB argument", alloc)
	}
}
