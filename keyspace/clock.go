package keyspace

import (
	"sync/atomic"
	"time"
)

// wallClock reads the wall clock in unix milliseconds for every command's
// transaction with one monotonic clock read (time.Now reads two clocks):
// it adds the monotonic time since an anchor, a time.Now of both, taken
// again every period, so a step of the wall clock (NTP, an operator) shows
// within a period, as with time.Now it would show at once. Safe for
// concurrent use.
type wallClock struct {
	period time.Duration
	anchor atomic.Pointer[clockAnchor]
}

type clockAnchor struct {
	wall int64         // unix ns
	mono time.Duration // since clockEpoch, read with wall
}

// clockEpoch gives monotonic readings an origin: time.Since reads only the
// monotonic clock.
var clockEpoch = time.Now()

// Monotonic returns the monotonic clock since the process's start (one
// clock read; time.Now reads two): what commands time themselves with.
func Monotonic() time.Duration { return time.Since(clockEpoch) }

const wallClockPeriod = time.Second

func (c *wallClock) nowMs() int64 { return c.nowMsAt(Monotonic()) }

// nowMsAt is the wall clock in ms at the monotonic reading m (Monotonic).
func (c *wallClock) nowMsAt(m time.Duration) int64 {
	a := c.anchor.Load()
	// (a reading older than the anchor, taken before another goroutine
	// anchored again, counts back from it)
	if a == nil || m-a.mono >= c.period {
		t := time.Now()
		a = &clockAnchor{wall: t.UnixNano(), mono: t.Sub(clockEpoch)}
		c.anchor.Store(a)
		return a.wall / 1e6
	}
	return (a.wall + int64(m-a.mono)) / 1e6
}
