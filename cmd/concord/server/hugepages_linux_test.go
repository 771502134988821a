package server

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"unsafe"
)

func TestAnonRW(t *testing.T) {
	for _, c := range []struct {
		line       string
		start, end uintptr
		ok         bool
	}{
		{"c000000000-c004000000 rw-p 00000000 00:00 0 ", 0xc000000000, 0xc004000000, true},
		{"23466f000000-234673400000 rw-p 00000000 00:00 0", 0x23466f000000, 0x234673400000, true},
		{"23466c000000-23466f000000 ---p 00000000 00:00 0", 0, 0, false},                                 // reserved, not mapped
		{"2aa91000-2aab2000 rw-p 00000000 00:00 0                                  [heap]", 0, 0, false}, // brk
		{"7f05ec000000-7f066c000000 rw-s 00000000 fe:00 9977922 /tmp/th/badger/000001.vlog", 0, 0, false},
		{"7f05ec000000-7f066c000000 rw-p 00000000 fe:00 9977922 /lib/x.so", 0, 0, false},
		{"zz-7f rw-p 00000000 00:00 0", 0, 0, false},
		{"7f-7e rw-p 00000000 00:00 0", 0, 0, false},
		{"", 0, 0, false},
	} {
		s, e, ok := anonRW([]byte(c.line))
		if s != c.start || e != c.end || ok != c.ok {
			t.Errorf("anonRW(%q) = %x, %x, %v; want %x, %x, %v", c.line, s, e, ok, c.start, c.end, c.ok)
		}
	}
}

// TestHugePagesAdvised: the mapping holding a big heap object is advised
// (smaps' VmFlags "hg") and its dense blocks collapsed into huge pages.
func TestHugePagesAdvised(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || strings.Contains(string(mode), "[never]") {
		t.Skip("transparent huge pages off on this machine")
	}
	buf := make([]byte, 32<<20) // its own span; every page written: dense
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	var h hugePages
	collapsed, err := h.advise()
	if err != nil {
		t.Fatal(err)
	}
	at := uintptr(unsafe.Pointer(&buf[0]))
	flags, huge := smapsOf(t, at)
	if !strings.Contains(" "+flags+" ", " hg ") {
		t.Fatalf("mapping of the heap object at %x not advised: VmFlags %q", at, flags)
	}
	if collapsed == 0 || huge == 0 {
		t.Errorf("nothing collapsed (advise: %d bytes, mapping's AnonHugePages %d kB)", collapsed, huge)
	}
	// every block of buf (written: dense) is collapsed, and recorded so
	// that it is not collapsed again
	for b := (at + hugeBlock - 1) &^ (hugeBlock - 1); b+hugeBlock <= at+uintptr(len(buf)); b += hugeBlock {
		if _, ok := h.done[b]; !ok {
			t.Errorf("block %x of the written object not collapsed", b)
		}
	}
	buf[0] = 2 // keep buf alive until here
}

// smapsOf returns the VmFlags and AnonHugePages (kB) of the mapping of
// /proc/self/smaps holding address at.
func smapsOf(t *testing.T, at uintptr) (flags string, hugeKB int) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		if s, e, ok := anonRW([]byte(line)); ok {
			in = s <= at && at < e
			continue
		}
		if !in {
			continue
		}
		if v, ok := strings.CutPrefix(line, "AnonHugePages:"); ok {
			hugeKB = atoiKB(v)
		}
		if v, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			return strings.TrimSpace(v), hugeKB
		}
	}
	t.Fatalf("no anonymous mapping holds %x", at)
	return "", 0
}

func atoiKB(v string) int {
	n := 0
	for _, c := range strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")) {
		if c < '0' || c > '9' {
			break
		}
		n = 10*n + int(c-'0')
	}
	return n
}
