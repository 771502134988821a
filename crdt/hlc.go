package crdt

// HLC is a hybrid logical clock timestamp: physical milliseconds, a logical
// counter, and the region that issued it. Timestamps are totally ordered by
// (Phys, Log, Region), so ties between regions break deterministically.
type HLC struct {
	Phys   int64
	Log    uint32
	Region string
}

// IsZero reports whether h is the zero timestamp (never issued).
func (h HLC) IsZero() bool { return h.Phys == 0 && h.Log == 0 && h.Region == "" }

// Compare returns -1, 0 or +1 as h is before, equal to or after o.
func (h HLC) Compare(o HLC) int {
	switch {
	case h.Phys != o.Phys:
		if h.Phys < o.Phys {
			return -1
		}
		return 1
	case h.Log != o.Log:
		if h.Log < o.Log {
			return -1
		}
		return 1
	case h.Region != o.Region:
		if h.Region < o.Region {
			return -1
		}
		return 1
	}
	return 0
}

// Less reports whether h orders before o.
func (h HLC) Less(o HLC) bool { return h.Compare(o) < 0 }

func maxHLC(a, b HLC) HLC {
	if a.Less(b) {
		return b
	}
	return a
}

// Clock issues HLC timestamps for one region. It is not safe for concurrent
// use; the caller serialises access.
type Clock struct {
	region string
	last   HLC
}

// NewClock returns a clock for region.
func NewClock(region string) *Clock { return &Clock{region: region, last: HLC{Region: region}} }

// Region is the region this clock stamps.
func (c *Clock) Region() string { return c.region }

// Now returns a timestamp strictly after every timestamp issued or observed,
// given the physical time physMs in milliseconds.
func (c *Clock) Now(physMs int64) HLC {
	if physMs > c.last.Phys {
		c.last = HLC{Phys: physMs, Region: c.region}
	} else {
		c.last = HLC{Phys: c.last.Phys, Log: c.last.Log + 1, Region: c.region}
	}
	return c.last
}

// Observe advances the clock past a timestamp received from elsewhere.
func (c *Clock) Observe(h HLC) {
	if h.Phys > c.last.Phys || (h.Phys == c.last.Phys && h.Log > c.last.Log) {
		c.last = HLC{Phys: h.Phys, Log: h.Log, Region: c.region}
	}
}

// Last returns the latest timestamp issued or observed.
func (c *Clock) Last() HLC { return c.last }
