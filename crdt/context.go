package crdt

import "sort"

// Dot identifies one update: the region that made it and that region's
// per-key counter.
type Dot struct {
	Region string
	N      uint64
}

// VVEntry is one region's entry in a version vector: every dot of that
// region with a counter <= N has been seen.
type VVEntry struct {
	Region string
	N      uint64
}

// Context is a causal context: a version vector plus a cloud of dots seen
// beyond it (gaps), so it is exact under any delivery order. Both slices are
// kept sorted; the cloud never holds a dot the vector already covers.
type Context struct {
	VV    []VVEntry
	Cloud []Dot
}

// Max returns the version-vector entry of region (0 if none).
func (c *Context) Max(region string) uint64 {
	for i := range c.VV {
		if c.VV[i].Region == region {
			return c.VV[i].N
		}
	}
	return 0
}

// Next returns the highest counter seen for region, counting the cloud.
func (c *Context) Next(region string) Dot {
	n := c.Max(region)
	for _, d := range c.Cloud {
		if d.Region == region && d.N > n {
			n = d.N
		}
	}
	return Dot{Region: region, N: n + 1}
}

// Contains reports whether d has been seen.
func (c *Context) Contains(d Dot) bool {
	if d.N <= c.Max(d.Region) {
		return true
	}
	for _, x := range c.Cloud {
		if x == d {
			return true
		}
	}
	return false
}

// IsEmpty reports whether nothing has been seen.
func (c *Context) IsEmpty() bool { return len(c.VV) == 0 && len(c.Cloud) == 0 }

func (c *Context) setMax(region string, n uint64) {
	i := sort.Search(len(c.VV), func(i int) bool { return c.VV[i].Region >= region })
	if i < len(c.VV) && c.VV[i].Region == region {
		if n > c.VV[i].N {
			c.VV[i].N = n
		}
		return
	}
	c.VV = append(c.VV, VVEntry{})
	copy(c.VV[i+1:], c.VV[i:])
	c.VV[i] = VVEntry{Region: region, N: n}
}

// Add records d as seen.
func (c *Context) Add(d Dot) {
	if c.Contains(d) {
		return
	}
	if d.N == c.Max(d.Region)+1 {
		c.setMax(d.Region, d.N)
		c.compact()
		return
	}
	i := sort.Search(len(c.Cloud), func(i int) bool { return !dotLess(c.Cloud[i], d) })
	c.Cloud = append(c.Cloud, Dot{})
	copy(c.Cloud[i+1:], c.Cloud[i:])
	c.Cloud[i] = d
}

// Join adds everything o has seen.
func (c *Context) Join(o *Context) {
	for _, e := range o.VV {
		c.setMax(e.Region, e.N)
	}
	for _, d := range o.Cloud {
		if len(c.Cloud) == 0 && d.N == c.Max(d.Region)+1 {
			// extends the vector, with no cloud to fold after it: what
			// the insert and compact below would do, without the slice
			// they would allocate (a local write's dot, every write)
			c.setMax(d.Region, d.N)
			continue
		}
		if !c.Contains(d) {
			i := sort.Search(len(c.Cloud), func(i int) bool { return !dotLess(c.Cloud[i], d) })
			c.Cloud = append(c.Cloud, Dot{})
			copy(c.Cloud[i+1:], c.Cloud[i:])
			c.Cloud[i] = d
		}
	}
	c.compact()
}

// compact folds cloud dots that extend the vector into it and drops cloud
// dots the vector covers.
func (c *Context) compact() {
	if len(c.Cloud) == 0 {
		return
	}
	for changed := true; changed; {
		changed = false
		out := c.Cloud[:0]
		for _, d := range c.Cloud {
			m := c.Max(d.Region)
			switch {
			case d.N <= m:
				// covered by the vector: drop
			case d.N == m+1:
				c.setMax(d.Region, d.N)
				changed = true
			default:
				out = append(out, d)
			}
		}
		c.Cloud = out
	}
	if len(c.Cloud) == 0 {
		c.Cloud = nil
	}
}

// Clone returns a deep copy.
func (c *Context) Clone() Context {
	var o Context
	if len(c.VV) > 0 {
		o.VV = append([]VVEntry(nil), c.VV...)
	}
	if len(c.Cloud) > 0 {
		o.Cloud = append([]Dot(nil), c.Cloud...)
	}
	return o
}

// Equal reports whether both contexts have seen exactly the same dots.
func (c *Context) Equal(o *Context) bool {
	if len(c.VV) != len(o.VV) || len(c.Cloud) != len(o.Cloud) {
		return false
	}
	for i := range c.VV {
		if c.VV[i] != o.VV[i] {
			return false
		}
	}
	for i := range c.Cloud {
		if c.Cloud[i] != o.Cloud[i] {
			return false
		}
	}
	return true
}

func dotLess(a, b Dot) bool {
	if a.Region != b.Region {
		return a.Region < b.Region
	}
	return a.N < b.N
}

func dotsContext(ds []Dot) Context {
	var c Context
	for _, d := range ds {
		c.Add(d)
	}
	return c
}
