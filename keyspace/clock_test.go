package keyspace

import (
	"testing"
	"time"
)

// The one-read clock tells the wall clock's millisecond, and a step of the
// wall clock (here: an anchor an hour off) is gone within a period.
func TestWallClock(t *testing.T) {
	c := &wallClock{period: 30 * time.Millisecond}
	deadline := time.Now().Add(100 * time.Millisecond)
	n := 0
	for time.Now().Before(deadline) {
		before := time.Now().UnixMilli()
		got := c.nowMs()
		after := time.Now().UnixMilli()
		if got < before-1 || got > after+1 {
			t.Fatalf("read %d: %d outside [%d, %d]", n, got, before, after)
		}
		n++
	}
	t0 := time.Now()
	c.anchor.Store(&clockAnchor{wall: t0.Add(time.Hour).UnixNano(), mono: t0.Sub(clockEpoch)})
	if got := c.nowMs(); got < time.Now().Add(59*time.Minute).UnixMilli() {
		t.Fatalf("within its period the clock ignored its anchor: %d", got)
	}
	time.Sleep(c.period)
	if got, now := c.nowMs(), time.Now().UnixMilli(); got < now-1 || got > now+1 {
		t.Fatalf("after a period: %d, wall clock %d", got, now)
	}
}

// A command's transaction takes its time from the monotonic reading the
// command started with (RunAt), and a reading older than the clock's
// anchor counts back from it instead of anchoring again.
func TestRunAtTakesTheCommandsReading(t *testing.T) {
	ks := New(Config{Region: "A"}, nil)
	if ks.wall == nil {
		t.Fatal("no wall clock")
	}
	m := Monotonic()
	now := ks.NowMsAt(m)
	a := ks.wall.anchor.Load()
	for _, back := range []time.Duration{0, 1500 * time.Millisecond, time.Hour} {
		if got := ks.NowMsAt(m - back); got < now-back.Milliseconds()-1 || got > now-back.Milliseconds()+1 {
			t.Fatalf("%v back: %d, want %d", back, got, now-back.Milliseconds())
		}
		var txNow int64
		ks.RunAt(m-back, nil, func(tx *Tx) error { txNow = tx.NowMs(); return nil })
		if txNow != ks.NowMsAt(m-back) {
			t.Fatalf("%v back: the transaction's time %d, the reading's %d", back, txNow, ks.NowMsAt(m-back))
		}
	}
	if ks.wall.anchor.Load() != a {
		t.Fatal("an older reading anchored the clock again")
	}
}
