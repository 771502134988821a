package integration

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Every write acknowledged before a SIGKILL is there after a restart on the
// same dir, for each fsync policy (a process kill, not a power loss: the OS
// page cache survives it).
func TestKill9Recovery(t *testing.T) {
	for _, fsync := range []string{"always", "everysec", "no"} {
		t.Run(fsync, func(t *testing.T) {
			dir := t.TempDir()
			p := startProc(t, "--dir", dir, "--fsync", fsync, "--region", "A")
			const writers = 8
			var acked sync.Map // key -> value acknowledged
			var counter atomic.Int64
			// each writer's APPENDs to log:<w>, acknowledged ones in order
			// (an APPEND's delta carries only its suffix; replay rebuilds
			// the value from the one before)
			var appended [writers]strings.Builder
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1})
					defer c.Close()
					// (long enough for its APPENDs' deltas to carry only
					// their suffix: crdt.ExtendMin)
					head := strings.Repeat("-", 1500)
					if c.Set(ctx, fmt.Sprintf("log:%d", w), head, 0).Err() != nil {
						return
					}
					appended[w].WriteString(head)
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						k := fmt.Sprintf("k:%d:%d", w, i)
						var err error
						switch i % 5 {
						case 0:
							err = c.Set(ctx, k, k, 0).Err()
							if err == nil {
								acked.Store(k, "string")
							}
						case 1:
							err = c.SAdd(ctx, fmt.Sprintf("set:%d", w), k).Err()
							if err == nil {
								acked.Store("set:"+k, "member")
							}
						case 2:
							err = c.HSet(ctx, fmt.Sprintf("hash:%d", w), k, k).Err()
							if err == nil {
								acked.Store("hash:"+k, "field")
							}
						case 3:
							err = c.Incr(ctx, "counter").Err()
							if err == nil {
								counter.Add(1)
							}
						case 4:
							s := fmt.Sprintf("<%d>", i)
							err = c.Append(ctx, fmt.Sprintf("log:%d", w), s).Err()
							if err == nil {
								appended[w].WriteString(s)
							}
						}
						if err != nil {
							return
						}
					}
				}(w)
			}
			checkFor(t, 20*timeSecond, 10*timeMs, func() error {
				if counter.Load() < 1000 {
					return fmt.Errorf("only %d increments so far", counter.Load())
				}
				return nil
			})
			p.kill9()
			close(stop)
			wg.Wait()

			p2 := startProc(t, "--dir", dir, "--fsync", fsync, "--region", "A")
			c := client(t, p2.addr)
			n := 0
			var missing []string
			acked.Range(func(key, kind any) bool {
				n++
				k := key.(string)
				var ok bool
				switch kind {
				case "string":
					v, _ := c.Get(ctx, k).Result()
					ok = v == k
				case "member":
					m := strings.TrimPrefix(k, "set:")
					w := strings.Split(m, ":")[1]
					ok, _ = c.SIsMember(ctx, "set:"+w, m).Result()
				case "field":
					f := strings.TrimPrefix(k, "hash:")
					w := strings.Split(f, ":")[1]
					v, _ := c.HGet(ctx, "hash:"+w, f).Result()
					ok = v == f
				}
				if !ok {
					missing = append(missing, k)
				}
				return true
			})
			if len(missing) > 0 {
				t.Fatalf("%d of %d acknowledged writes lost, e.g. %v", len(missing), n, missing[:min(5, len(missing))])
			}
			for w := range appended {
				v, _ := c.Get(ctx, fmt.Sprintf("log:%d", w)).Result()
				if want := appended[w].String(); !strings.HasPrefix(v, want) || len(v) > len(want)+16 {
					t.Fatalf("log:%d after restart: %d bytes, %d acknowledged (%q...)", w, len(v), len(want), v[:min(len(v), 40)])
				}
			}
			got, _ := c.Get(ctx, "counter").Int64()
			if got < counter.Load() {
				t.Fatalf("counter %d after restart, %d increments acknowledged", got, counter.Load())
			}
			t.Logf("fsync=%s: %d acknowledged writes and %d increments survived", fsync, n, counter.Load())
		})
	}
}

// A clean restart restores keys, TTLs and CRDT metadata.
func TestRestartRestoresEverything(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, "--dir", dir)
	c := client(t, p.addr)
	c.Set(ctx, "s", "v", 0)
	c.Expire(ctx, "s", 1000*timeSecond)
	c.IncrBy(ctx, "n", 5)
	c.SAdd(ctx, "set", "a", "b")
	c.SRem(ctx, "set", "a")
	c.HSet(ctx, "h", "f", "v")
	c.HIncrBy(ctx, "h", "c", 3)
	c.Do(ctx, "SELECT", "3")
	c3 := redis.NewClient(&redis.Options{Addr: p.addr, DB: 3})
	c3.Set(ctx, "in3", "x", 0)
	c3.Close()
	c.Close()
	p.cmd.Process.Signal(sigterm)
	p.cmd.Wait()
	p2 := startProc(t, "--dir", dir)
	c2 := client(t, p2.addr)
	if v, _ := c2.Get(ctx, "s").Result(); v != "v" {
		t.Fatalf("s = %q", v)
	}
	if d, _ := c2.TTL(ctx, "s").Result(); d < 990*timeSecond {
		t.Fatalf("TTL = %v", d)
	}
	if n, _ := c2.Incr(ctx, "n").Result(); n != 6 {
		t.Fatalf("counter = %d", n)
	}
	if ms, _ := c2.SMembers(ctx, "set").Result(); len(ms) != 1 || ms[0] != "b" {
		t.Fatalf("set = %v", ms)
	}
	if m, _ := c2.HGetAll(ctx, "h").Result(); m["f"] != "v" || m["c"] != "3" {
		t.Fatalf("hash = %v", m)
	}
	c3 = redis.NewClient(&redis.Options{Addr: p2.addr, DB: 3})
	defer c3.Close()
	if v, _ := c3.Get(ctx, "in3").Result(); v != "x" {
		t.Fatalf("db3 = %q", v)
	}
}

// A second process on the same data dir is refused.
func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	startProc(t, "--dir", dir)
	bin := concordBinary(t)
	out, err := execCombined(bin, "--addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--dir", dir)
	if err == nil || !strings.Contains(strings.ToLower(out), "lock") {
		t.Fatalf("second process on %s: err=%v out=%s", dir, err, out)
	}
}

// Bad flags are refused at start with one line and exit status 2.
func TestBadFlags(t *testing.T) {
	bin := concordBinary(t)
	for _, args := range [][]string{{"--fsync", "sometimes"}, {"--addr", "nope"}, {"--region", "bad region"}, {"--log-level", "loud"}, {"--nosuchflag"}} {
		out, err := execCombined(bin, args...)
		code := exitCode(err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 2 || (args[0] != "--nosuchflag" && len(lines) != 1) {
			t.Errorf("%v: exit %d, output:\n%s", args, code, out)
		}
	}
}

// Shutdown ends even when the disk is gone: with the data directory
// deleted under a running region, its final checkpoint and Badger's last
// flush fail (Badger retries the flush forever); SIGTERM still ends the
// process, with an error, once --store-close-timeout passes — or at once
// on a second signal.
func TestShutdownWithDataDirGone(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout string
		signals int
	}{{"store close timeout", "1s", 1}, {"second signal", "1h", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := startProc(t, "--dir", dir, "--store-close-timeout", tc.timeout)
			c := client(t, p.addr)
			for i := range 200 {
				if err := c.Set(ctx, fmt.Sprint("k", i), "v", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			c.Close()
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- p.cmd.Wait() }()
			for range tc.signals {
				p.cmd.Process.Signal(sigterm)
				time.Sleep(300 * timeMs)
			}
			select {
			case err := <-exited:
				if exitCode(err) != 1 {
					t.Fatalf("exit status %d (%v), want 1\n%s", exitCode(err), err, p.log.String())
				}
			case <-time.After(15 * timeSecond):
				p.cmd.Process.Kill()
				t.Fatalf("still running 15 s after SIGTERM\n%s", p.log.String())
			}
		})
	}
}
