package server

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Checkpoints and anti-entropy rounds come after a random 75–100% of
// their interval, never later than configured.
func TestJitter(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		d := jitter(30 * time.Second)
		if d < 22500*time.Millisecond || d > 30*time.Second {
			t.Fatalf("jitter(30s) = %v", d)
		}
		seen[d] = true
		if b := jitter(int64(64 << 20)); b < 48<<20 || b > 64<<20 {
			t.Fatalf("jitter(64 MiB) = %d", b)
		}
	}
	if len(seen) < 100 {
		t.Fatalf("%d distinct intervals in 200", len(seen))
	}
	if jitter(int64(1)) != 1 && jitter(int64(1)) != 0 {
		t.Fatal("jitter of a tiny value out of range")
	}
}

// A paced checkpoint sleeps (1-cpu)/cpu of the time it worked since the
// last pause, sleeps shorter than a millisecond added up first.
func TestPacer(t *testing.T) {
	now := time.Unix(1000, 0)
	var slept []time.Duration
	p := newPacer(0.25, func() time.Time { return now }, func(d time.Duration) { slept = append(slept, d) })
	now = now.Add(3 * time.Millisecond) // a shard's work
	p.pace()
	if len(slept) != 1 || slept[0] != 9*time.Millisecond {
		t.Fatalf("after 3 ms of work: slept %v, want [9ms]", slept)
	}
	for range 3 { // 0.1 ms each: 0.3 ms owed each, slept once 1.2 ms are owed
		now = now.Add(100 * time.Microsecond)
		p.pace()
	}
	if len(slept) != 1 {
		t.Fatalf("slept %v for 0.9 ms owed", slept)
	}
	now = now.Add(100 * time.Microsecond)
	p.pace()
	if len(slept) != 2 || slept[1] != 1200*time.Microsecond {
		t.Fatalf("slept %v, want [9ms 1.2ms]", slept)
	}
}

// With an activity count, the pacer sleeps only when something was served
// since its last call.
func TestPacerIdle(t *testing.T) {
	now := time.Unix(1000, 0)
	var slept []time.Duration
	var served uint64
	p := newPacer(0.25, func() time.Time { return now }, func(d time.Duration) { slept = append(slept, d) })
	p.activity = func() uint64 { return served }
	for range 3 {
		now = now.Add(3 * time.Millisecond)
		p.pace()
	}
	if len(slept) != 0 {
		t.Fatalf("idle: slept %v", slept)
	}
	served++
	now = now.Add(3 * time.Millisecond)
	p.pace()
	if len(slept) != 1 || slept[0] != 9*time.Millisecond {
		t.Fatalf("after 3 ms of work beside a command: slept %v, want [9ms]", slept)
	}
	now = now.Add(3 * time.Millisecond)
	p.pace()
	if len(slept) != 1 {
		t.Fatalf("idle again: slept %v", slept)
	}
}

// A paced checkpoint pauses unless a SAVE or a shutdown waits for it, or
// more than twice --checkpoint-log-bytes of log were written since it
// began.
func TestCheckpointMayPause(t *testing.T) {
	in, err := Start(Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), LogLevel: "error", CheckpointInterval: time.Hour, CheckpointLogBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	in.ckptMu.Lock() // (a checkpoint begins: the background one waits)
	defer in.ckptMu.Unlock()
	in.store.LogBytes(true)
	if !in.mayPause() {
		t.Fatal("a checkpoint with nothing waiting may not pause")
	}
	in.hurry.Add(1)
	if in.mayPause() {
		t.Fatal("a checkpoint pauses while a SAVE waits")
	}
	in.hurry.Add(-1)
	val := bytes.Repeat([]byte("v"), 1000)
	for i := 0; in.store.LogBytes(false) < 2<<20; i++ {
		setValue(in, fmt.Sprint("log:", i), val)
	}
	if in.mayPause() {
		t.Fatal("a checkpoint pauses with twice --checkpoint-log-bytes of log written since it began")
	}
}

// INFO shows a background checkpoint in progress (rdb_bgsave_in_progress,
// aof_rewrite_in_progress), as Redis shows its automatic rewrites.
func TestSavingWhileCheckpointing(t *testing.T) {
	in, err := Start(Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), LogLevel: "error", CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	for i := range 3000 {
		setValue(in, fmt.Sprint("k", i), []byte("v"))
	}
	done := make(chan error, 1)
	go func() { done <- in.checkpointPaced(0.01) }() // slowed down: ~99% of it asleep
	seen := false
	for !seen {
		select {
		case err := <-done:
			t.Fatalf("checkpoint ended (%v) and never showed as in progress", err)
		default:
			seen = in.Saving()
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if in.Saving() {
		t.Fatal("still in progress after the checkpoint ended")
	}
}

// A due checkpoint waits while the server is busy, up to twice its
// interval or its log bytes.
func TestCheckpointDue(t *testing.T) {
	const every, limit = time.Minute, int64(64 << 20)
	for _, c := range []struct {
		since time.Duration
		log   int64
		busy  bool
		want  bool
	}{
		{30 * time.Second, 10 << 20, false, false},
		{30 * time.Second, 10 << 20, true, false},
		{every, 0, false, true},
		{every, 0, true, false},
		{2 * every, 0, true, true},
		{time.Second, limit, false, true},
		{time.Second, limit, true, false},
		{time.Second, 2*limit - 1, true, false},
		{time.Second, 2 * limit, true, true},
	} {
		if got := checkpointDue(c.since, c.log, every, limit, c.busy); got != c.want {
			t.Errorf("since %v, log %d, busy %v: due %v, want %v", c.since, c.log, c.busy, got, c.want)
		}
	}
}

// Under a steady stream of writes a background checkpoint starts past
// its log bytes (1 MiB here, 0.75–1 MiB with jitter), at twice them at
// the latest, or at once with --checkpoint-eager; once the writes stop,
// a due checkpoint starts in the lull.
func TestCheckpointWaitsForLull(t *testing.T) {
	ctx := context.Background()
	// logAtFirst writes 1 KB values in pipelines of ten every 5 ms (~2 MB/s
	// of log: a 100 ms poll sees ~0.2 MiB) until a checkpoint ran, and
	// returns how much log there was when it started
	logAtFirst := func(eager bool) int64 {
		in, c := startWith(t, Config{CheckpointInterval: time.Hour, CheckpointLogBytes: 1 << 20, CheckpointEager: eager})
		val := strings.Repeat("v", 1000)
		var last int64
		for i := 0; in.store.Stats().Checkpoints == 0; i++ {
			if i > 4000 {
				t.Fatalf("no checkpoint after %d bytes of log", last)
			}
			last = max(last, in.store.LogBytes(false))
			p := c.Pipeline()
			for j := range 10 {
				p.Set(ctx, fmt.Sprint("k", i*10+j), val, 0)
			}
			if _, err := p.Exec(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return last
	}
	// 1450 KiB: past the eager start (at most 1 MiB and a poll's writes),
	// short of the busy one (at least twice 0.75 MiB)
	const split = 1450 << 10
	if got := logAtFirst(true); got > split {
		t.Errorf("eager: the checkpoint started at %d KiB of log, want about 1 MiB", got>>10)
	}
	// the writer must not stall for a poll (100 ms) past the due point: a
	// loaded machine gets three tries
	var got int64
	for range 3 {
		if got = logAtFirst(false); got >= split {
			break
		}
	}
	if got < split || got > 2200<<10 {
		t.Errorf("busy: the checkpoint started at %d KiB of log, want past %d KiB and by 2 MiB", got>>10, split>>10)
	}

	in, c := startWith(t, Config{CheckpointInterval: time.Hour, CheckpointLogBytes: 1 << 20})
	val := strings.Repeat("v", 1000)
	p := c.Pipeline()
	for i := range 1200 { // 1.2 MiB: due, not twice due
		p.Set(ctx, fmt.Sprint("k", i), val, 0)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 3*time.Second, 20*time.Millisecond, func() error {
		if in.store.Stats().Checkpoints == 0 {
			return fmt.Errorf("no checkpoint in the lull (%d KiB of log)", in.store.LogBytes(false)>>10)
		}
		return nil
	})
}
