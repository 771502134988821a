package peering

import (
	"math"
	"sync/atomic"
	"time"
)

// lagHist is a lock-free histogram of replication lag (the time from a
// write in its origin region, by the origin's HLC, to its merge here) with
// buckets about 12% wide from 10 µs to ~1000 s.
type lagHist struct {
	buckets [170]atomic.Uint64
	count   atomic.Uint64
}

func lagBucket(d time.Duration) int {
	us := float64(d.Microseconds())
	if us < 10 {
		return 0
	}
	i := int(20 * math.Log10(us/10))
	return min(i, 169)
}

func (h *lagHist) observe(d time.Duration) {
	h.buckets[lagBucket(d)].Add(1)
	h.count.Add(1)
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *lagHist) quantile(q float64) time.Duration {
	n := h.count.Load()
	if n == 0 {
		return 0
	}
	target := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= target {
			return time.Duration(10*math.Pow(10, float64(i+1)/20)) * time.Microsecond
		}
	}
	return time.Duration(math.MaxInt64)
}

func (h *lagHist) reset() {
	for i := range h.buckets {
		h.buckets[i].Store(0)
	}
	h.count.Store(0)
}
