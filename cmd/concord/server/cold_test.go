package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"concord/crdt"
	"concord/keyspace"

	"github.com/redis/go-redis/v9"
)

// With more than --cold-max-warm keys warm, keys go cold within a second or
// two of their last write even though --cold-after is an hour (a bulk load
// does not keep every key unpacked); without the limit nothing goes cold.
func TestColdMaxWarmBoundsWarmKeys(t *testing.T) {
	for _, limit := range []int{100, 0} {
		in, err := Start(Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), LogLevel: "error", ColdAfter: time.Hour, ColdMaxWarm: limit})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2000; i++ {
			k := keyspace.Key{Key: fmt.Sprint("bulk:", i)}
			in.KS.Run([]keyspace.Key{k}, func(tx *keyspace.Tx) error {
				tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), []byte("v"), false))
				return nil
			})
		}
		wait := 1500 * time.Millisecond // long enough for two sweeps under pressure
		if limit > 0 {
			wait = 4 * time.Second
		}
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) && (limit == 0 || in.KS.Stats.WarmKeys.Load() > int64(limit)) {
			time.Sleep(20 * time.Millisecond)
		}
		warm, cold := in.KS.Stats.WarmKeys.Load(), in.KS.Stats.ColdKeys.Load()
		// INFO memory reports the same counts (read again if a sweep moved
		// keys meanwhile)
		cl := redis.NewClient(&redis.Options{Addr: in.Addr()})
		for try := 0; ; try++ {
			w, c := in.KS.Stats.WarmKeys.Load(), in.KS.Stats.ColdKeys.Load()
			info, err := cl.Info(context.Background(), "memory").Result()
			if err != nil {
				t.Fatal(err)
			}
			ok := strings.Contains(info, fmt.Sprintf("cold_keys:%d\r\n", c)) && strings.Contains(info, fmt.Sprintf("warm_keys:%d\r\n", w))
			if ok {
				break
			}
			if try == 5 {
				t.Fatalf("INFO memory does not report %d warm, %d cold keys:\n%s", w, c, info)
			}
		}
		cl.Close()
		in.Close()
		if limit > 0 && (warm > int64(limit) || cold < 1900) {
			t.Fatalf("limit %d: %d keys warm, %d cold after %v", limit, warm, cold, wait)
		}
		if limit == 0 && cold != 0 {
			t.Fatalf("no limit, --cold-after 1h: %d keys went cold", cold)
		}
	}
}

// Once sweeps packed many keys, an idle server returns the free memory to
// the OS (FreeOSMemory: Go would otherwise keep the heap's high-water mark
// resident); a server serving commands meanwhile does not pause for it.
// A monitor's INFO and a pool's PING every few milliseconds leave it idle.
func TestIdleServerReturnsMemoryAfterPacking(t *testing.T) {
	old, oldIdle := gcAfterPacked, idleBeforeRelease
	gcAfterPacked, idleBeforeRelease = 500, 300*time.Millisecond
	defer func() { gcAfterPacked, idleBeforeRelease = old, oldIdle }()
	for _, tc := range []struct {
		busy  bool
		polls func(cl *redis.Client)
	}{
		{false, nil},
		{false, func(cl *redis.Client) { cl.Info(context.Background(), "memory"); cl.Ping(context.Background()) }},
		{true, func(cl *redis.Client) { cl.Get(context.Background(), "k1") }},
	} {
		busy := tc.busy
		want := int64(2000) // keys cold (the busy client's own stays warm)
		if busy {
			want = 1999
		}
		in, err := Start(Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), LogLevel: "error", ColdAfter: 200 * time.Millisecond, CheckpointInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		cl := redis.NewClient(&redis.Options{Addr: in.Addr()})
		for i := 0; i < 2000; i++ {
			cl.Set(context.Background(), fmt.Sprint("k", i), "v", 0)
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // a client that keeps the server busy (or polls it)
			defer close(done)
			for tc.polls != nil {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
					tc.polls(cl)
				}
			}
		}()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && (in.KS.Stats.ColdKeys.Load() < want || in.released.Load() == 0) {
			time.Sleep(20 * time.Millisecond)
		}
		close(stop)
		<-done
		cold, released := in.KS.Stats.ColdKeys.Load(), in.released.Load()
		cl.Close()
		in.Close()
		if cold < want {
			t.Fatalf("busy=%v polled=%v: %d of 2000 keys cold", busy, tc.polls != nil, cold)
		}
		if busy && released != 0 || !busy && released == 0 {
			t.Fatalf("busy=%v polled=%v: memory returned %d times", busy, tc.polls != nil, released)
		}
	}
}

// An idle server returns its free memory after a checkpoint of many keys
// too (its garbage: the keys' encodings, Badger's table builds), with no
// key packed and less garbage than a release takes otherwise.
func TestIdleServerReturnsMemoryAfterCheckpoint(t *testing.T) {
	old, oldG, oldIdle := gcAfterPacked, garbageBeforeRelease, idleBeforeRelease
	// (20k keys fill at most 4096 pages: a count of pages stays under it)
	gcAfterPacked, garbageBeforeRelease, idleBeforeRelease = 10000, 1<<40, 300*time.Millisecond
	// (restored after the server closes: cleanups run last in, first out)
	t.Cleanup(func() { gcAfterPacked, garbageBeforeRelease, idleBeforeRelease = old, oldG, oldIdle })
	in, cl := startWith(t, Config{CheckpointInterval: time.Hour}) // (no key goes cold)
	ctx := context.Background()
	pipe := cl.Pipeline()
	for i := 0; i < 20000; i++ {
		pipe.Set(ctx, fmt.Sprint("k", i), "v", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); in.released.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("memory not returned after a checkpoint of 20000 keys (%d cold)", in.KS.Stats.ColdKeys.Load())
		}
	}
}

// An idle server whose heap holds much garbage (a large value overwritten)
// collects it and returns the memory, with no key packed.
func TestIdleServerReturnsMemoryAfterLargeWrites(t *testing.T) {
	oldG, oldIdle := garbageBeforeRelease, idleBeforeRelease
	garbageBeforeRelease, idleBeforeRelease = 16<<20, 300*time.Millisecond
	// (restored after the server closes: cleanups run last in, first out)
	t.Cleanup(func() { garbageBeforeRelease, idleBeforeRelease = oldG, oldIdle })
	// no collection of its own meanwhile: the headroom keeps Go's goal far
	in, cl := startWith(t, Config{CheckpointInterval: time.Hour, GCHeadroom: 4 << 30})
	for i := range 3 {
		if err := cl.Set(context.Background(), "big", strings.Repeat(fmt.Sprint(i), 16<<20), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); in.released.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("memory not returned: %d MB of garbage", heapGarbage()>>20)
		}
	}
	// and once more, a while later (what background work still held at
	// the first is garbage by then), then no more while nothing happens
	for deadline := time.Now().Add(4 * time.Second); in.released.Load() < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("returned %d times, want a second release after the first", in.released.Load())
		}
	}
	time.Sleep(2500 * time.Millisecond)
	if n := in.released.Load(); n != 2 {
		t.Fatalf("returned %d times while idle, want 2", n)
	}
}

// The cold sweeps' loop wakes once per part of the period (64 parts: ~6 a
// second at --cold-after 10s), and with --cold-max-warm for a 100 ms poll
// too — not 64 times a second whatever the period (an idle server's CPU).
func TestPackLoopWakesPerPart(t *testing.T) {
	for _, tc := range []struct {
		maxWarm int
		atMost  int64
		purpose string
	}{{0, 10, "per part"}, {1 << 20, 18, "per part and per poll"}} {
		in, _ := startWith(t, Config{ColdAfter: 10 * time.Second, ColdMaxWarm: tc.maxWarm})
		w0 := in.packWakes.Load()
		time.Sleep(time.Second)
		if w := in.packWakes.Load() - w0; w > tc.atMost || w < 3 {
			t.Errorf("--cold-max-warm %d: the sweep loop woke %d times in a second, want 3 to %d (%s)", tc.maxWarm, w, tc.atMost, tc.purpose)
		}
	}
}

// The loops that poll (checkpoints' due check, the sweeps' warm-key
// limit) poll every 100 ms while the server works and once a second once
// it did nothing for a second; a command brings the fast polls back.
func TestLoopsPollSlowlyWhenIdle(t *testing.T) {
	in, c := startWith(t, Config{ColdAfter: 10 * time.Second, ColdMaxWarm: 1 << 20, CheckpointInterval: time.Hour})
	ctx := context.Background()
	wakes := func(d time.Duration, during func()) (ckpt, pack int64) {
		c0, p0 := in.ckptWakes.Load(), in.packWakes.Load()
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			during()
			time.Sleep(10 * time.Millisecond)
		}
		return in.ckptWakes.Load() - c0, in.packWakes.Load() - p0
	}
	busy := func() {
		if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// working: ~10 checkpoint polls a second, ~10 polls and ~6 parts (a
	// loaded machine's late timers make fewer)
	if ckpt, pack := wakes(time.Second, busy); ckpt < 5 || pack < 9 {
		t.Fatalf("while serving, a second: %d checkpoint polls, %d sweep wakes; want >= 5 and >= 9", ckpt, pack)
	}
	time.Sleep(1200 * time.Millisecond) // idle for a second
	// idle: ~1 checkpoint poll a second, ~1 poll and ~6 parts
	if ckpt, pack := wakes(2*time.Second, func() {}); ckpt > 4 || pack > 2*(7+1)+2 {
		t.Fatalf("idle, two seconds: %d checkpoint polls, %d sweep wakes; want <= 4 and <= 18", ckpt, pack)
	}
	// working again: the fast polls are back within the slow poll
	busy()
	time.Sleep(idlePoll + 100*time.Millisecond)
	if ckpt, _ := wakes(time.Second, busy); ckpt < 5 {
		t.Fatalf("serving again, a second: %d checkpoint polls, want >= 5", ckpt)
	}
}

func TestIdlePace(t *testing.T) {
	var p idlePace
	t0 := time.Unix(1000, 0)
	fast, slow := 100*time.Millisecond, time.Second
	steps := []struct {
		activity uint64
		at       time.Duration
		want     time.Duration
	}{
		{5, 0, fast},                      // first poll
		{5, 900 * time.Millisecond, fast}, // idle, but not for idleAfter yet
		{5, time.Second, slow},            // idle for idleAfter
		{5, 3 * time.Second, slow},
		{6, 4 * time.Second, fast}, // a command
		{6, 4500 * time.Millisecond, fast},
		{6, 5 * time.Second, slow},
	}
	for i, s := range steps {
		if got := p.poll(s.activity, t0.Add(s.at), fast, slow); got != s.want {
			t.Fatalf("step %d (activity %d at %v): %v, want %v", i, s.activity, s.at, got, s.want)
		}
	}
}
