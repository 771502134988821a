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
