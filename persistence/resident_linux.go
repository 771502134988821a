//go:build linux

package persistence

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// madvPageout is MADV_PAGEOUT (Linux 5.4+): reclaim the range's pages.
const madvPageout = 21

// dropResident asks the kernel to reclaim the pages of the shared memory
// maps of files under dir (Badger maps its tables, value log and memtable
// logs; Concord reads them only at startup and when a checkpoint replaces
// a key's elements) and returns how many bytes of mappings it covered. A
// later access reads them back. Only RSS changes: it then counts
// Concord's own memory and not the cache of files it wrote and no longer
// reads (Redis's RSS does not count its AOF's either). MADV_PAGEOUT is
// non-destructive: should Badger unmap a file between the read of
// /proc/self/maps and the call, and the range be reused, its contents are
// kept (at worst paged out), unlike MADV_DONTNEED's.
func dropResident(dir string) (int64, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	prefix := strings.TrimSuffix(dir, "/") + "/"
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], prefix) || !strings.HasSuffix(fields[1], "s") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), madvPageout); errno != 0 {
			return total, errno
		}
		total += int64(end - start)
	}
	return total, sc.Err()
}
