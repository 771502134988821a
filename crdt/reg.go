package crdt

import (
	"math/big"
	"strconv"
)

// Base is one assignment of a register (a SET, an HSET of a field): its dot,
// its timestamp, its bytes, and the per-region counter totals it observed and
// therefore absorbs. Val, when longer than deltaVal (8) bytes, is an
// allocation of its own that nothing ever writes: whoever builds a Base
// copies the value in (a command's argument, a decoded message), and a
// merge then shares it (cloneBaseIn). A shorter one may live in memory
// that is reused (a pooled delta's, a StringRoom's) and is copied.
type Base struct {
	Dot    Dot
	HLC    HLC
	Val    []byte
	Absorb []Count
}

// Count is one region's running total of increments on a register: N counts
// the region's increment operations (it orders entries of the same region),
// I is the cumulative integer amount (wrapping), F the cumulative exact
// float amount as a rational string ("" for zero).
type Count struct {
	Region string
	N      uint64
	I      int64
	F      string
}

// Reg is a Redis string value (or one hash field): a multi-value LWW register
// of Bases, read as the Base with the highest HLC, plus a PN-counter of
// per-region Counts. A Base absorbs the counts it observed; a removal records
// the counts it observed as a Floor. Increments observed by neither the
// winning Base nor the Floor are added to the value.
type Reg struct {
	Base   []Base
	Counts []Count
	Floor  []Count
}

func (r *Reg) isEmpty() bool {
	return r == nil || (len(r.Base) == 0 && len(r.Counts) == 0 && len(r.Floor) == 0)
}

func findCount(cs []Count, region string) (Count, bool) {
	for _, c := range cs {
		if c.Region == region {
			return c, true
		}
	}
	return Count{}, false
}

// joinCounts merges b into a: per region, the entry with the larger N.
func joinCounts(a, b []Count) []Count {
	for _, c := range b {
		found := false
		for i := range a {
			if a[i].Region == c.Region {
				found = true
				if c.N > a[i].N {
					a[i] = c
				}
				break
			}
		}
		if !found {
			a = insertCount(a, c)
		}
	}
	return a
}

func insertCount(a []Count, c Count) []Count {
	i := 0
	for i < len(a) && a[i].Region < c.Region {
		i++
	}
	a = append(a, Count{})
	copy(a[i+1:], a[i:])
	a[i] = c
	return a
}

func cloneCounts(a []Count) []Count {
	if len(a) == 0 {
		return nil
	}
	return append([]Count(nil), a...)
}

// Winner returns the live Base with the highest HLC, or nil.
func (r *Reg) Winner() *Base {
	if r == nil || len(r.Base) == 0 {
		return nil
	}
	w := &r.Base[0]
	for i := 1; i < len(r.Base); i++ {
		if w.HLC.Less(r.Base[i].HLC) {
			w = &r.Base[i]
		}
	}
	return w
}

// observed returns the counts observed for region by the winner and the floor.
func (r *Reg) observed(w *Base, region string) Count {
	var o Count
	if w != nil {
		o, _ = findCount(w.Absorb, region)
	}
	if f, ok := findCount(r.Floor, region); ok && f.N > o.N {
		o = f
	}
	return o
}

// pending returns the unobserved integer and float increments and whether
// there are any.
func (r *Reg) pending(w *Base) (sum *big.Int, fsum *big.Rat, any bool) {
	for _, c := range r.Counts {
		o := r.observed(w, c.Region)
		if c.N <= o.N {
			continue
		}
		any = true
		if d := c.I - o.I; d != 0 {
			if sum == nil {
				sum = new(big.Int)
			}
			sum.Add(sum, big.NewInt(d))
		}
		if c.F != o.F {
			if fsum == nil {
				fsum = new(big.Rat)
			}
			fsum.Add(fsum, parseRatString(c.F))
			fsum.Sub(fsum, parseRatString(o.F))
		}
	}
	return
}

// Exists reports whether the register holds a value.
func (r *Reg) Exists() bool {
	if r == nil {
		return false
	}
	if len(r.Base) > 0 {
		return true
	}
	return r.hasPending(nil)
}

// hasPending reports whether any increment is unobserved by w (without
// summing them).
func (r *Reg) hasPending(w *Base) bool {
	for _, c := range r.Counts {
		if c.N > r.observed(w, c.Region).N {
			return true
		}
	}
	return false
}

// intGet is Get's fast path for integer registers: an integer (or no) base
// plus integer increments whose sum fits in int64. handled=false sends the
// caller to the exact path (floats, non-numeric bases, overflow).
func (r *Reg) intGet(w *Base) (val []byte, exists, handled bool) {
	if len(r.Counts) == 0 { // a plain SET value: its bytes, unparsed
		if w == nil {
			return nil, false, true
		}
		return w.Val, true, true
	}
	t, summed, exists, handled := r.intSum(w)
	if !handled || !exists || !summed {
		if handled && exists {
			return w.Val, true, true
		}
		return nil, false, handled
	}
	return strconv.AppendInt(nil, t, 10), true, true
}

// intSum is the int64 value of an integer register: summed reports that
// unobserved increments were added to the base (else the value is the
// base's bytes as stored, and t is meaningful only when the base parses).
func (r *Reg) intSum(w *Base) (t int64, summed, exists, handled bool) {
	var sum int64
	any := false
	for _, c := range r.Counts {
		o := r.observed(w, c.Region)
		if c.N <= o.N {
			continue
		}
		if c.F != o.F {
			return 0, false, false, false
		}
		any = true
		var ok bool
		if sum, ok = addInt64(sum, c.I-o.I); !ok {
			return 0, false, false, false
		}
	}
	if !any {
		if w == nil {
			return 0, false, false, true
		}
		t, _ = ParseInt(w.Val)
		return t, false, true, true
	}
	var base int64
	if w != nil {
		iv, isInt := ParseInt(w.Val)
		if !isInt {
			return 0, false, false, false
		}
		base = iv
	}
	t, ok := addInt64(base, sum)
	if !ok {
		return 0, false, false, false
	}
	return t, true, true, true
}

func addInt64(a, b int64) (int64, bool) {
	c := a + b
	if (b > 0 && c < a) || (b < 0 && c > a) {
		return 0, false
	}
	return c, true
}

// dropsIncrements reports Get's dropped without building the value.
func (r *Reg) dropsIncrements() bool {
	w := r.Winner()
	if w == nil || !r.hasPending(w) {
		return false
	}
	if _, isInt := ParseInt(w.Val); isInt {
		return false
	}
	_, isFloat := ParseFloat(w.Val)
	return !isFloat
}

// Get returns the register's value. dropped reports that the winning base is
// not numeric while unobserved increments exist: they are ignored (a
// conflict the caller may record).
func (r *Reg) Get() (val []byte, ok bool, dropped bool) {
	if r == nil {
		return nil, false, false
	}
	w := r.Winner()
	if val, exists, handled := r.intGet(w); handled {
		return val, exists, false
	}
	sum, fsum, any := r.pending(w)
	if !any {
		if w == nil {
			return nil, false, false
		}
		return w.Val, true, false
	}
	if w == nil {
		return numberBytes(new(big.Int), nil, sum, fsum), true, false
	}
	if iv, isInt := ParseInt(w.Val); isInt {
		return numberBytes(big.NewInt(iv), nil, sum, fsum), true, false
	}
	if fv, isFloat := ParseFloat(w.Val); isFloat {
		return numberBytes(nil, fv, sum, fsum), true, false
	}
	return w.Val, true, true
}

func numberBytes(ibase *big.Int, fbase *big.Rat, sum *big.Int, fsum *big.Rat) []byte {
	if fbase == nil && fsum == nil {
		t := ibase
		if sum != nil {
			t = new(big.Int).Add(ibase, sum)
		}
		return []byte(t.String())
	}
	t := new(big.Rat)
	if ibase != nil {
		t.SetInt(ibase)
	} else {
		t.Set(fbase)
	}
	if sum != nil {
		t.Add(t, new(big.Rat).SetInt(sum))
	}
	if fsum != nil {
		t.Add(t, fsum)
	}
	return []byte(FormatRat(t))
}

// IntValue returns the value as an int64 for INCR-style operations:
// ok=false with overflow=true when it is an integer outside int64.
func (r *Reg) IntValue() (v int64, exists, ok, overflow bool) {
	if r != nil {
		w := r.Winner()
		if t, summed, exists, handled := r.intSum(w); handled && (summed || !exists) {
			return t, exists, true, false
		}
	}
	b, exists, _ := r.Get()
	if !exists {
		return 0, false, true, false
	}
	if v, ok := ParseInt(b); ok {
		return v, true, true, false
	}
	// a sum of increments outside int64 is Redis's overflow; a plain big
	// number SET by a client is "not an integer", as in Redis
	if _, isBig := new(big.Int).SetString(string(b), 10); isBig && len(b) > 18 {
		summed := r.hasPending(r.Winner())
		return 0, true, false, summed
	}
	return 0, true, false, false
}

// own returns this region's count entry.
func (r *Reg) own(region string) Count {
	if r == nil {
		return Count{Region: region}
	}
	c, ok := findCount(r.Counts, region)
	if !ok {
		c.Region = region
	}
	return c
}

// mergeReg joins b (with context bctx) into a (with context actx); scoped
// limits b's context to this register (it only matters for the Bases).
// vals, when not nil, are the buffers of a's room (StringRoom): a short new
// value goes into one no value of a used before the merge; a longer one is
// shared (see Base).
func mergeReg(a *Reg, actx *Context, b *Reg, bctx *Context, vals *roomVals) {
	var used uint8
	if vals != nil {
		used = roomUse(a.Base, vals)
	}
	// causal join of the Bases
	out := a.Base[:0]
	for _, e := range a.Base {
		if hasBase(b.Base, e.Dot) || !bctx.Contains(e.Dot) {
			out = append(out, e)
		}
	}
	a.Base = out
	for _, e := range b.Base {
		if !hasBase(a.Base, e.Dot) && !actx.Contains(e.Dot) {
			a.Base = append(a.Base, cloneBaseIn(e, vals, &used))
		}
	}
	if len(a.Base) == 0 {
		a.Base = nil
	}
	a.Counts = joinCounts(a.Counts, b.Counts)
	a.Floor = joinCounts(a.Floor, b.Floor)
}

func hasBase(bs []Base, d Dot) bool {
	for i := range bs {
		if bs[i].Dot == d {
			return true
		}
	}
	return false
}

func cloneBase(b Base) Base {
	b.Val = append([]byte(nil), b.Val...)
	b.Absorb = cloneCounts(b.Absorb)
	return b
}

func (r *Reg) clone() *Reg {
	if r == nil {
		return nil
	}
	o := &Reg{Counts: cloneCounts(r.Counts), Floor: cloneCounts(r.Floor)}
	for _, b := range r.Base {
		o.Base = append(o.Base, cloneBase(b))
	}
	return o
}

// dots returns the dots of the register's Bases.
func (r *Reg) dots(out []Dot) []Dot {
	if r == nil {
		return out
	}
	for _, b := range r.Base {
		out = append(out, b.Dot)
	}
	return out
}

// dead reports whether the register holds no value and, once causally
// stable, may be forgotten.
func (r *Reg) dead() bool { return !r.Exists() }

func itoa(v int64) []byte { return strconv.AppendInt(nil, v, 10) }
