package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"
)

// losePower simulates a power loss on the filesystem mounted at dir:
// FS_IOC_SHUTDOWN with "no log flush" drops everything not yet durable.
func losePower(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const fsIocShutdown = 0x8004587d // _IOR('X', 125, __u32)
	const noLogFlush = 2             // EXT4_GOING_FLAGS_NOLOGFLUSH
	if err := unix.IoctlSetPointerInt(int(f.Fd()), fsIocShutdown, noLogFlush); err != nil {
		t.Fatalf("FS_IOC_SHUTDOWN: %v", err)
	}
}

// With --fsync always, every acknowledged write survives a power loss: the
// data dir lives on a loop-mounted ext4 that is shut down without flushing
// while the region is writing. Needs root (loop devices, mount).
func TestPowerLossFsyncAlways(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("power-loss simulation needs root (losetup, mount): skipped")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("power-loss simulation needs %s: skipped", tool)
		}
	}
	base := t.TempDir()
	img, mnt := filepath.Join(base, "disk.img"), filepath.Join(base, "mnt")
	os.Mkdir(mnt, 0o755)
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Skipf("power-loss simulation unavailable here (%s %v: %v: %s): skipped", name, args, err, out)
		}
		return string(out)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 256<<20)
	run("mkfs.ext4", "-q", img)
	loop := run("losetup", "-f", "--show", img)
	loop = loop[:len(loop)-1]
	t.Cleanup(func() { exec.Command("umount", mnt).Run(); exec.Command("losetup", "-d", loop).Run() })
	mount := func() { run("mount", loop, mnt) }
	mount()

	dir := filepath.Join(mnt, "concord")
	p := startProc(t, "--dir", dir, "--fsync", "always", "--region", "A")
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1})
			defer c.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("k:%d:%d", w, i)
				if c.Set(ctx, k, k, 0).Err() != nil {
					return
				}
				mu.Lock()
				acked[k] = true
				mu.Unlock()
			}
		}(w)
	}
	checkFor(t, 30*timeSecond, 10*timeMs, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 2000 {
			return fmt.Errorf("%d writes so far", len(acked))
		}
		return nil
	})
	mu.Lock()
	snapshot := make([]string, 0, len(acked))
	for k := range acked {
		snapshot = append(snapshot, k)
	}
	mu.Unlock()
	losePower(t, mnt) // everything acknowledged until now must survive
	p.kill9()
	close(stop)
	wg.Wait()
	run("umount", mnt)
	mount()

	p2 := startProc(t, "--dir", dir, "--fsync", "always", "--region", "A")
	c := client(t, p2.addr)
	lost := 0
	for _, k := range snapshot {
		if v, _ := c.Get(ctx, k).Result(); v != k {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged writes lost to the power loss", lost, len(snapshot))
	}
	t.Logf("%d acknowledged writes survived a simulated power loss", len(snapshot))
}
