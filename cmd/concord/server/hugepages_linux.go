package server

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// heapProbe is a heap object allocated when the package is initialized:
// its address lies in the Go heap's first arena.
var heapProbe = new([64]uint64)

// heapRange is where the Go heap lives: from the arena holding heapProbe
// (64 MiB arenas; the runtime grows the heap upward from its first arena,
// at a random base since Go 1.26) over 1 TiB.
func heapRange() (lo, hi uintptr) {
	const arena = 64 << 20
	lo = uintptr(unsafe.Pointer(heapProbe)) &^ (arena - 1)
	return lo, lo + 1<<40
}

// Linux's madvise advice: MADV_HUGEPAGE, MADV_COLLAPSE.
const (
	madvHugePage = 14
	madvCollapse = 25
)

// hugeBlock is a transparent huge page's size (x86-64, arm64 with 4 KiB
// pages).
const hugeBlock = 2 << 20

// hugePages advises the kernel to back the Go heap with transparent huge
// pages: 2 MiB pages instead of 4 KiB, so that the TLB covers the keys'
// entries and a random key's lookup misses the cache without also missing
// the TLB (GET/INCR/SET -P 16: 5-14% less CPU per request with huge pages,
// docs/performance.md). Linux's default (transparent_hugepage=madvise)
// gives huge pages only to memory so advised, and Go advises none of its
// heap. The heap grows in mappings of its own (4 MiB and up), mostly
// written right after they are made: advise runs again every second,
// advises the new ones and collapses their dense blocks into huge pages at
// once (MADV_COLLAPSE, Linux 6.1+) instead of leaving them to khugepaged's
// slow background scan. A block is collapsed once, when at least half of
// it is resident: a collapse makes the whole block resident, and a sparse
// block (free memory the runtime returned to the OS) would grow RSS.
type hugePages struct {
	done map[uintptr]struct{} // blocks collapsed
	vec  []byte               // mincore's answer for one block
}

// advise advises and collapses the heap's mappings as above and returns
// the bytes collapsed. A kernel without THP refuses the advice, which is
// no error: it is only a hint.
func (h *hugePages) advise() (collapsed uintptr, err error) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	if h.done == nil {
		h.done = map[uintptr]struct{}{}
		h.vec = make([]byte, hugeBlock/os.Getpagesize())
	}
	lo, hi := heapRange()
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		start, end, ok := anonRW(sc.Bytes())
		if !ok || start < lo || end > hi {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, start, end-start, madvHugePage); errno != 0 {
			continue
		}
		for b := (start + hugeBlock - 1) &^ (hugeBlock - 1); b+hugeBlock <= end; b += hugeBlock {
			if _, ok := h.done[b]; ok || !h.dense(b) {
				continue
			}
			h.done[b] = struct{}{}
			if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, b, hugeBlock, madvCollapse); errno == 0 {
				collapsed += hugeBlock
			}
		}
	}
	return collapsed, sc.Err()
}

// dense tells whether at least half of the block at b is resident.
func (h *hugePages) dense(b uintptr) bool {
	if _, _, errno := syscall.Syscall(syscall.SYS_MINCORE, b, hugeBlock, uintptr(unsafe.Pointer(&h.vec[0]))); errno != 0 {
		return false
	}
	n := 0
	for _, v := range h.vec {
		n += int(v & 1)
	}
	return 2*n >= len(h.vec)
}

// anonRW parses a /proc/self/maps line and tells whether it is a private,
// anonymous, read-write mapping (as the Go heap's are), and its range.
func anonRW(line []byte) (start, end uintptr, ok bool) {
	f := bytes.Fields(line)
	if len(f) != 5 || string(f[1]) != "rw-p" || string(f[4]) != "0" { // no path
		return 0, 0, false
	}
	a, b, found := bytes.Cut(f[0], []byte("-"))
	if !found {
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(string(a), 16, 64)
	e, err2 := strconv.ParseUint(string(b), 16, 64)
	if err1 != nil || err2 != nil || e <= s {
		return 0, 0, false
	}
	return uintptr(s), uintptr(e), true
}
