//go:build linux

package persistence

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// residentKB reads the Rss of the mapping of path in /proc/self/smaps.
func residentKB(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) >= 6 && strings.Contains(fields[0], "-") {
			in = fields[5] == path
			continue
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); ok && in {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatalf("no mapping of %s", path)
	return 0
}

// The pages of a shared file mapping under the directory leave the
// process's RSS; their contents stay, read back on the next access.
func TestDropResidentKeepsContents(t *testing.T) {
	dir, _ := filepath.EvalSymlinks(t.TempDir())
	path := filepath.Join(dir, "table.sst")
	const size = 4 << 20
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	for i := range m {
		m[i] = byte(i * 7)
	}
	f.Sync()
	if kb := residentKB(t, path); kb < 4000 {
		t.Fatalf("%d kB resident after writing 4 MB", kb)
	}
	n, err := dropResident(dir)
	if err != nil {
		t.Skipf("MADV_PAGEOUT unsupported here: %v", err)
	}
	if n != size {
		t.Fatalf("covered %d bytes of mappings, want %d", n, size)
	}
	if kb := residentKB(t, path); kb > 1024 {
		t.Fatalf("%d kB still resident", kb)
	}
	for i := range m {
		if m[i] != byte(i*7) {
			t.Fatalf("byte %d changed", i)
		}
	}
}
