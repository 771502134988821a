package crdt

import (
	"math/big"
	"sync"
	"unsafe"
)

// Op carries what a local operation needs from outside: the timestamp it is
// issued at (its Region is the issuing region).
type Op struct {
	HLC HLC
}

func (o Op) region() string { return o.HLC.Region }

// dotGen hands out consecutive new dots of one region for one key.
type dotGen struct {
	next   Dot
	seeded bool
}

// newDotGen starts at the next counter of this region for the key. A key
// with an empty context (new, or forgotten by tombstone GC) starts from a
// seed taken from the HLC, far above any counter an earlier life of the key
// used, so a region still holding that earlier life's tombstone cannot take
// the new dots for ones it has seen.
func newDotGen(s *State, op Op) dotGen {
	region := op.region()
	if s.Ctx.IsEmpty() && op.HLC.Phys > 0 {
		seed := uint64(op.HLC.Phys)<<22 | uint64(op.HLC.Log)&(1<<22-1)
		return dotGen{next: Dot{Region: region, N: seed}, seeded: true}
	}
	return dotGen{next: s.Ctx.Next(region)}
}

// mark puts the seed's floor into a delta's context: every earlier dot of
// this region for the key counts as seen (they all died before GC).
func (g *dotGen) mark(c *Context) {
	if g.seeded && g.next.N > 1 {
		c.setMax(g.next.Region, g.next.N-1)
	}
}

func (g *dotGen) take() Dot {
	d := g.next
	g.next.N++
	return d
}

// stamp returns the creation stamp a write of type t carries: the existing
// one when the key already shows t, the op's timestamp when it creates it.
func stamp(s *State, t Type, op Op) HLC {
	if s.Type() == t {
		switch t {
		case TypeString:
			return s.StrT
		case TypeSet:
			return s.SetT()
		case TypeHash:
			return s.HashT()
		}
	}
	return op.HLC
}

// removalFloors adds to d the floors that remove every counter s holds.
func removalFloors(s *State, d *State, keep Type) {
	if keep != TypeString && s.Str != nil && len(s.Str.Counts) > 0 {
		if d.Str == nil {
			d.Str = &Reg{}
		}
		d.Str.Floor = joinCounts(d.Str.Floor, s.Str.Counts)
	}
	if keep != TypeHash {
		for f, r := range s.Hash.All() {
			if len(r.Counts) > 0 {
				if d.Hash == nil {
					d.Hash = NewTable[*Reg](0)
				}
				dr := d.Hash.Get(f)
				if dr == nil {
					dr = &Reg{}
					d.Hash.Put(f, dr)
				}
				dr.Floor = joinCounts(dr.Floor, r.Counts)
			}
		}
	}
}

// widen turns a scoped delta on a key that still holds hidden data of other
// types (after a type conflict) into an unscoped one that also removes that
// data, keeping everything of type keep.
func widen(s *State, d *State, keep Type) {
	if s.liveTypes() <= 1 && (s.Type() == keep || s.Type() == TypeNone) {
		return
	}
	d.Scoped = false
	d.Ctx.Join(&s.Ctx)
	switch keep {
	case TypeString:
		if s.Str != nil {
			if d.Str == nil {
				d.Str = &Reg{}
			}
			for _, b := range s.Str.Base {
				if !hasBase(d.Str.Base, b.Dot) {
					d.Str.Base = append(d.Str.Base, cloneBase(b))
				}
			}
			d.Str.Counts = joinCounts(cloneCounts(s.Str.Counts), d.Str.Counts)
			d.Str.Floor = joinCounts(cloneCounts(s.Str.Floor), d.Str.Floor)
		}
	case TypeSet:
		for m, ds := range s.Set.All() {
			if !d.Set.Has(m) {
				if d.Set == nil {
					d.Set = NewTable[[]Dot](0)
				}
				d.Set.Put(m, append([]Dot(nil), ds...))
			}
		}
	case TypeHash:
		for f, r := range s.Hash.All() {
			if !d.Hash.Has(f) {
				if d.Hash == nil {
					d.Hash = NewTable[*Reg](0)
				}
				d.Hash.Put(f, r.clone())
			}
		}
	}
	if !d.ExpTouched {
		d.Exp = append([]Exp(nil), s.Exp...)
	}
	removalFloors(s, d, keep)
}

// regAlloc allocates a register and room for one base together (one
// allocation; a read reaches the base without another cache miss).
type regAlloc struct {
	r Reg
	b [1]Base
}

// StringRoom is a key's state with room for its first version-vector entry,
// its string register and a short value: a string key's state, vector,
// register, base and value are one allocation, so reading or writing the
// key misses the cache once for them, not once per part (keyspace embeds it
// in a key's entry).
type StringRoom struct {
	st  State
	vv  [1]VVEntry
	reg regAlloc
	// val holds the register's values of at most roomVal bytes. A merge
	// copies a new value into a buffer no value of the register before the
	// merge uses, so a value read before a write (SET ... GET, GETSET)
	// stays intact through that write; values are never written in place.
	val roomVals
}

// roomVal is the longest value a StringRoom keeps in itself.
const roomVal = 8

type roomVals [2][roomVal]byte

// State returns the room's empty state. Its register is present but empty
// (an empty register and none mean the same) until a merge fills it; a
// merge that leaves it empty drops it, and a later one takes it back
// (emptyReg).
func (r *StringRoom) State() *State {
	r.st.Ctx.VV = r.vv[:0]
	r.reg.r.Base = r.reg.b[:0]
	r.st.Str = &r.reg.r
	r.st.room = true
	return &r.st
}

// emptyReg returns an empty register for s.Str: the room's own when s is a
// room's state (its register then holds nothing anyone reads: s.Str is nil).
func (s *State) emptyReg() *Reg {
	if !s.room {
		return newReg()
	}
	r := (*StringRoom)(unsafe.Pointer(s))
	r.reg.r = Reg{Base: r.reg.b[:0]}
	return &r.reg.r
}

// roomVals returns the value buffers of s's room when a is its register.
func (s *State) roomVals(a *Reg) *roomVals {
	if !s.room {
		return nil
	}
	r := (*StringRoom)(unsafe.Pointer(s)) // st is the room's first field
	if a != &r.reg.r {
		return nil
	}
	return &r.val
}

// roomUse returns the buffers of vals the values of bs point into (bit i
// for buffer i).
func roomUse(bs []Base, vals *roomVals) uint8 {
	var used uint8
	for i := range bs {
		if len(bs[i].Val) == 0 {
			continue
		}
		p := unsafe.SliceData(bs[i].Val)
		for j := range vals {
			if p == &vals[j][0] {
				used |= 1 << j
			}
		}
	}
	return used
}

// cloneBaseIn is cloneBase with a short value copied into a buffer of vals
// not in *used (which it then marks), when there is one, and a longer
// value shared (see Base: a 100 MB SET was copied from the request, then
// again into the key; a peer's, from its message, then into the key).
func cloneBaseIn(b Base, vals *roomVals, used *uint8) Base {
	if vals != nil && len(b.Val) > 0 && len(b.Val) <= roomVal {
		for j := range vals {
			if *used&(1<<j) == 0 {
				*used |= 1 << j
				n := copy(vals[j][:], b.Val)
				b.Val = vals[j][:n:n]
				b.Absorb = cloneCounts(b.Absorb)
				return b
			}
		}
	}
	if len(b.Val) > deltaVal {
		b.Absorb = cloneCounts(b.Absorb)
		return b
	}
	return cloneBase(b)
}

// newReg returns an empty register with room for one base in the same
// allocation.
func newReg() *Reg {
	ra := &regAlloc{}
	ra.r.Base = ra.b[:0]
	return &ra.r
}

// regWithBase is a delta's register with its one base and a short value,
// in one allocation. A longer value is a copy of its own (see Base).
type regWithBase struct {
	r   Reg
	b   [1]Base
	val [deltaVal]byte
}

// deltaVal is the longest value a pooled delta keeps inline; see Base.
const deltaVal = 8

// a StringRoom's values must be copied too: roomVal ≤ deltaVal
var _ [deltaVal - roomVal]struct{}

// set makes the register hold b with a copy of val (inline when short).
func (rb *regWithBase) set(b Base, val []byte) *Reg {
	v := rb.val[:0:len(rb.val)]
	if len(val) > len(rb.val) {
		v = nil
	}
	b.Val = append(v, val...)
	rb.b[0] = b
	rb.r.Base = rb.b[:]
	return &rb.r
}

// SetString assigns a string value, replacing whatever the key held (any
// type), absorbing the increments it observed. keepTTL keeps the expiry.
func SetString(s *State, op Op, val []byte, keepTTL bool) *State {
	return setString(s, op, val, keepTTL, false)
}

// setString is SetString; own says val is a new allocation of the
// caller's that the delta may keep instead of a copy (see Base).
func setString(s *State, op Op, val []byte, keepTTL, own bool) *State {
	g := newDotGen(s, op)
	// the delta, its register, base, short value and a small version
	// vector in one allocation (SET is the hottest write), reused once
	// released
	x := setDeltas.Get().(*setDelta)
	d := &x.st
	d.pool = poolSet
	d.StrT = op.HLC
	if len(s.Ctx.VV) <= len(x.vv) {
		d.Ctx.VV = append(x.vv[:0], s.Ctx.VV...)
	} else {
		d.Ctx.VV = append([]VVEntry(nil), s.Ctx.VV...)
	}
	if len(s.Ctx.Cloud) > 0 {
		d.Ctx.Cloud = append([]Dot(nil), s.Ctx.Cloud...)
	}
	if len(d.Ctx.VV) == 0 {
		d.Ctx.VV = nil
	}
	g.mark(&d.Ctx)
	dot := g.take()
	if s.Type() == TypeString {
		d.StrT = s.StrT
	}
	d.Ctx.Add(dot)
	var absorb []Count
	if s.Str != nil {
		absorb = cloneCounts(s.Str.Counts)
	}
	if own && len(val) > deltaVal {
		x.reg.b[0] = Base{Dot: dot, HLC: op.HLC, Val: val, Absorb: absorb}
		x.reg.r.Base = x.reg.b[:]
		d.Str = &x.reg.r
	} else {
		d.Str = x.reg.set(Base{Dot: dot, HLC: op.HLC, Absorb: absorb}, val)
	}
	if keepTTL {
		d.Exp = append([]Exp(nil), s.Exp...)
	}
	removalFloors(s, d, TypeString)
	return d
}

// setDelta is SetString's delta with its parts, allocated together.
type setDelta struct {
	st  State
	reg regWithBase
	vv  [2]VVEntry
	exp [1]Exp // SetStringExpire's deadline
}

// Deltas whose memory is reused once released (State.pool).
const (
	poolSet  = 1 + iota // a setDelta
	poolIncr            // an incrDelta
	poolHSet            // an hsetDelta
	poolSAdd            // a saddDelta
)

var (
	setDeltas  = sync.Pool{New: func() any { return new(setDelta) }}
	incrDeltas = sync.Pool{New: func() any { return new(incrDelta) }}
	hsetDeltas = sync.Pool{New: func() any { return new(hsetDelta) }}
	saddDeltas = sync.Pool{New: func() any { return new(saddDelta) }}
)

// keepFieldMap: a released HSET or SADD delta keeps its field or member map
// for the next one when it held at most this many entries (a bigger map's
// buckets would stay allocated in the pool).
const keepFieldMap = 8

// Release hands back the memory of a delta SetString, IncrBy, HSet or SAdd
// made (or a string delta DecodeMessageReleasable decoded), once nothing
// reads the delta any more (persistence releases a group's deltas once they
// are encoded into the log): the next such op reuses it instead of
// allocating 300-500 bytes. Merge never keeps a delta's own memory (it
// copies bases, values, counts, dots and contexts), so a state that merged
// d is not affected. Other deltas are left to the collector.
func Release(d *State) {
	if d == nil {
		return
	}
	// st is the first field of every pooled delta struct
	switch d.pool {
	case poolSet:
		x := (*setDelta)(unsafe.Pointer(d))
		*x = setDelta{}
		setDeltas.Put(x)
	case poolIncr:
		x := (*incrDelta)(unsafe.Pointer(d))
		*x = incrDelta{}
		incrDeltas.Put(x)
	case poolHSet:
		x := (*hsetDelta)(unsafe.Pointer(d))
		*x = hsetDelta{m: keptMap(x.m)}
		hsetDeltas.Put(x)
	case poolSAdd:
		x := (*saddDelta)(unsafe.Pointer(d))
		*x = saddDelta{m: keptMap(x.m)}
		saddDeltas.Put(x)
	}
}

// keptMap returns a released delta's map emptied for the next delta, or
// nil when it grew too big to keep.
func keptMap[V any](m *Table[V]) *Table[V] {
	if m.Len() > keepFieldMap {
		return nil
	}
	m.Clear()
	return m
}

// oneField returns a hash of one field.
func oneField(f string, r *Reg) *Table[*Reg] {
	t := NewTable[*Reg](1)
	t.Put(f, r)
	return t
}

// Poison is Release for tests: it overwrites the delta's memory with
// garbage and does not reuse it, so whatever kept the delta, or a state
// that shares its memory, reads the garbage (make test runs with it, see
// persistence's CONCORD_POISON_ARGS).
func Poison(d *State) {
	if d == nil {
		return
	}
	bad := Dot{Region: "poisoned", N: 1<<63 + 7}
	switch d.pool {
	case poolSet:
		x := (*setDelta)(unsafe.Pointer(d))
		poisonVV(x.vv[:])
		poisonReg(&x.reg, bad)
		x.exp[0] = Exp{Dot: bad, At: 1<<62 + 9}
	case poolIncr:
		x := (*incrDelta)(unsafe.Pointer(d))
		x.c[0] = Count{Region: bad.Region, N: bad.N, I: 1<<62 + 5}
	case poolHSet:
		x := (*hsetDelta)(unsafe.Pointer(d))
		poisonVV(x.vv[:])
		poisonReg(&x.reg, bad)
		x.m.Put(bad.Region, &Reg{Base: []Base{{Dot: bad, Val: []byte("!")}}})
		x.cs = collStamps{hash: HLC{Phys: 1 << 62, Region: bad.Region}}
	case poolSAdd:
		x := (*saddDelta)(unsafe.Pointer(d))
		poisonVV(x.vv[:])
		x.dot[0] = bad
		x.m.Put(bad.Region, []Dot{bad})
		x.cs = collStamps{set: HLC{Phys: 1 << 62, Region: bad.Region}}
	default:
		return
	}
	d.StrT, d.pool = HLC{Phys: 1 << 62, Region: bad.Region}, 0
}

func poisonVV(vv []VVEntry) {
	for i := range vv {
		vv[i] = VVEntry{Region: "poisoned", N: 1<<63 + 7}
	}
}

func poisonReg(rb *regWithBase, bad Dot) {
	for i := range rb.val {
		rb.val[i] = '!'
	}
	rb.b[0].Dot = bad
	rb.b[0].HLC = HLC{Phys: 1 << 62, Region: bad.Region}
}

// IncrBy adds n to the key's counter.
func IncrBy(s *State, op Op, n int64) *State {
	c := s.Str.own(op.region())
	c.N++
	c.I += n
	x := incrDeltas.Get().(*incrDelta) // the delta, its register and its count together
	x.st.pool = poolIncr
	x.c[0] = c
	x.r.Counts = x.c[:]
	d := &x.st
	d.Scoped, d.StrT, d.Str = true, stamp(s, TypeString, op), &x.r
	widen(s, d, TypeString)
	return d
}

type incrDelta struct {
	st State
	r  Reg
	c  [1]Count
}

// IncrByFloat adds the exact amount r to the key's counter.
func IncrByFloat(s *State, op Op, r *big.Rat) *State {
	c := s.Str.own(op.region())
	c.N++
	c.F = ratString(new(big.Rat).Add(parseRatString(c.F), r))
	d := &State{Scoped: true, StrT: stamp(s, TypeString, op), Str: &Reg{Counts: []Count{c}}}
	widen(s, d, TypeString)
	return d
}

// Delete removes everything the key held that this region has observed.
func Delete(s *State) *State {
	d := &State{Ctx: s.Ctx.Clone()}
	removalFloors(s, d, TypeNone)
	return d
}

// SAdd adds members to the set.
func SAdd(s *State, op Op, members [][]byte) *State {
	g := newDotGen(s, op)
	x := saddDeltas.Get().(*saddDelta)
	if x.m == nil {
		x.m = NewTable[[]Dot](len(members))
	}
	d := &x.st
	d.pool = poolSAdd
	x.cs.set = stamp(s, TypeSet, op)
	d.Scoped, d.coll, d.Set = true, &x.cs, x.m
	d.Ctx.VV = x.vv[:0]
	g.mark(&d.Ctx)
	for i, m := range members {
		dot := g.take()
		if i == 0 { // the first member's dot is the delta's own
			x.dot[0] = dot
			d.Set.Put(string(m), x.dot[:])
		} else {
			d.Set.Put(string(m), []Dot{dot})
		}
		d.Ctx.Add(dot)
		for _, old := range s.Set.GetBytes(m) {
			d.Ctx.Add(old)
		}
	}
	if len(d.Ctx.VV) == 0 {
		d.Ctx.VV = nil
	}
	widen(s, d, TypeSet)
	return d
}

// saddDelta is SAdd's delta with room for its version vector and its first
// member's dot, and its member map (kept, emptied, when released).
type saddDelta struct {
	st  State
	vv  [2]VVEntry
	dot [1]Dot
	cs  collStamps
	m   *Table[[]Dot]
}

// SRem removes members from the set.
func SRem(s *State, members [][]byte) *State {
	d := &State{Scoped: true, Set: NewTable[[]Dot](len(members))}
	d.setStamps(s.SetT(), HLC{})
	for _, m := range members {
		d.Set.Put(string(m), nil)
		for _, old := range s.Set.GetBytes(m) {
			d.Ctx.Add(old)
		}
	}
	return d
}

// ReplaceSet makes the key a set holding exactly members (any type before).
func ReplaceSet(s *State, op Op, members [][]byte) *State {
	t := NewTable[[]Dot](len(members))
	for _, m := range members {
		t.Put(string(m), nil)
	}
	return ReplaceSetFrom(s, op, t)
}

// ReplaceSetFrom is ReplaceSet with the members of src (its values are not
// read): the delta's table is a copy of src's, made without hashing a
// name, and its members' dots are one allocation (the delta is read, not
// kept: a merge copies what it keeps). RENAME, COPY and the *STORE
// commands of a big set.
func ReplaceSetFrom(s *State, op Op, src *Table[[]Dot]) *State {
	g := newDotGen(s, op)
	d := &State{Ctx: s.Ctx.Clone(), coll: &collStamps{set: op.HLC}}
	g.mark(&d.Ctx)
	dots := make([]Dot, src.Len())
	i := 0
	d.Set = src.Clone(func([]Dot) []Dot {
		dots[i] = g.take()
		d.Ctx.Add(dots[i])
		i++
		return dots[i-1 : i : i]
	})
	removalFloors(s, d, TypeNone)
	return d
}

// ReplaceHashFrom is ReplaceHash with the fields of src that hold a value,
// each assigned the value it reads as (a counter's sum): the delta's table
// is a copy of src's made without hashing a name, its registers one
// allocation (the delta is read, not kept: a merge copies what it keeps).
// RENAME and COPY of a big hash.
func ReplaceHashFrom(s *State, op Op, src *Table[*Reg]) *State {
	d := &State{Ctx: s.Ctx.Clone(), coll: &collStamps{hash: op.HLC}}
	removalFloors(s, d, TypeNone)
	floors := d.Hash
	g := newDotGen(s, op)
	g.mark(&d.Ctx)
	regs := make([]regWithBase, src.Len())
	i, none := 0, 0
	d.Hash = src.Clone(func(r *Reg) *Reg {
		v, ok, _ := r.Get()
		if !ok {
			none++
			return nil
		}
		dot := g.take()
		d.Ctx.Add(dot)
		i++
		return regs[i-1].set(Base{Dot: dot, HLC: op.HLC}, v)
	})
	if none > 0 {
		dropNil(d.Hash)
	}
	if d.Hash == nil && floors.Len() > 0 { // (src nil)
		d.Hash = NewTable[*Reg](floors.Len())
	}
	for f, fl := range floors.All() {
		if r := d.Hash.Get(f); r != nil {
			r.Floor = fl.Floor
		} else {
			d.Hash.Put(f, fl)
		}
	}
	return d
}

// dropNil deletes the entries of t whose value is nil.
func dropNil[V comparable](t *Table[V]) {
	var zero V
	var gone []string
	for k, v := range t.All() {
		if v == zero {
			gone = append(gone, k)
		}
	}
	for _, k := range gone {
		t.Delete(k)
	}
}

// HSet assigns hash fields (pairs of field, value).
func HSet(s *State, op Op, pairs [][]byte) *State {
	d, _ := HSetAdded(s, op, pairs)
	return d
}

// HSetAdded is HSet that also counts the fields it adds (absent from s;
// a field named twice counts once): HSET's reply, without a second lookup
// of every field in a big hash.
func HSetAdded(s *State, op Op, pairs [][]byte) (*State, int) {
	added := 0
	g := newDotGen(s, op)
	x := hsetDeltas.Get().(*hsetDelta)
	if x.m == nil {
		x.m = NewTable[*Reg](len(pairs) / 2)
	}
	d := &x.st
	d.pool = poolHSet
	x.cs.hash = stamp(s, TypeHash, op)
	d.Scoped, d.coll, d.Hash = true, &x.cs, x.m
	d.Ctx.VV, d.Ctx.Cloud = x.vv[:0], x.cloud[:0]
	g.mark(&d.Ctx)
	for i := 0; i+1 < len(pairs); i += 2 {
		f := string(pairs[i])
		dot := g.take()
		var absorb []Count
		old := s.Hash.Get(f)
		if old != nil {
			absorb = cloneCounts(old.Counts)
			for _, b := range old.Base {
				d.Ctx.Add(b.Dot)
			}
		}
		if prev := d.Hash.Get(f); prev != nil { // field repeated in one command
			for _, b := range prev.Base {
				d.Ctx.Add(b.Dot)
			}
		} else if !old.Exists() {
			added++
		}
		d.Ctx.Add(dot)
		rb := &x.reg // the first field's register is the delta's own
		if i > 0 {
			rb = new(regWithBase)
		}
		r := rb.set(Base{Dot: dot, HLC: op.HLC, Absorb: absorb}, pairs[i+1])
		d.Hash.Put(f, r)
		if i == 0 || f == x.hint.field { // (a one-field delta is then read without iterating: EachField)
			x.hint = liveHint{field: f, r: r}
			d.live = &x.hint
		}
	}
	if len(d.Ctx.VV) == 0 {
		d.Ctx.VV = nil
	}
	if len(d.Ctx.Cloud) == 0 {
		d.Ctx.Cloud = nil
	}
	widen(s, d, TypeHash)
	return d, added
}

// hsetDelta is HSet's delta with room for a small causal context and its
// first field's register, in one allocation, and its field map (kept,
// emptied, when the delta is released).
type hsetDelta struct {
	st    State
	vv    [2]VVEntry
	cloud [2]Dot
	reg   regWithBase
	cs    collStamps
	hint  liveHint
	m     *Table[*Reg]
}

// HDel removes hash fields.
func HDel(s *State, fields [][]byte) *State {
	d := &State{Scoped: true, Hash: NewTable[*Reg](len(fields))}
	d.setStamps(HLC{}, s.HashT())
	for _, fb := range fields {
		f := string(fb)
		r := &Reg{}
		if old := s.Hash.Get(f); old != nil {
			for _, b := range old.Base {
				d.Ctx.Add(b.Dot)
			}
			r.Floor = cloneCounts(old.Counts)
		}
		d.Hash.Put(f, r)
	}
	return d
}

// HIncrBy adds n to a hash field's counter.
func HIncrBy(s *State, op Op, field []byte, n int64) *State {
	c := s.Hash.GetBytes(field).own(op.region())
	c.N++
	c.I += n
	d := &State{Scoped: true, coll: &collStamps{hash: stamp(s, TypeHash, op)}, Hash: oneField(string(field), &Reg{Counts: []Count{c}})}
	widen(s, d, TypeHash)
	return d
}

// HIncrByFloat adds the exact amount r to a hash field's counter.
func HIncrByFloat(s *State, op Op, field []byte, r *big.Rat) *State {
	c := s.Hash.GetBytes(field).own(op.region())
	c.N++
	c.F = ratString(new(big.Rat).Add(parseRatString(c.F), r))
	d := &State{Scoped: true, coll: &collStamps{hash: stamp(s, TypeHash, op)}, Hash: oneField(string(field), &Reg{Counts: []Count{c}})}
	widen(s, d, TypeHash)
	return d
}

// ReplaceHash makes the key a hash holding exactly pairs (field, value).
func ReplaceHash(s *State, op Op, pairs [][]byte) *State {
	t := NewTable[*Reg](len(pairs) / 2)
	for i := 0; i+1 < len(pairs); i += 2 {
		t.Put(string(pairs[i]), &Reg{Base: []Base{{Val: pairs[i+1]}}})
	}
	return ReplaceHashFrom(s, op, t)
}

// Expire sets the key's deadline (unix ms); at == 0 is PERSIST.
// SetStringExpire is SetString with a deadline (SET ... EX, SETEX): one
// delta, SetString's joined with the Expire that would follow it (its dot
// the next one), so a key's write merges once and its deadline is set
// over the old one — two deltas removed the key's deadline and added it
// again (a map delete and insert per SET EX: SET EX ran at 0.55× Redis at
// P=16, plain SET at 1.2×).
func SetStringExpire(s *State, op Op, val []byte, at int64) *State {
	d := SetString(s, op, val, false)
	dot := d.Str.Base[0].Dot
	dot.N++
	d.Ctx.Add(dot)
	x := (*setDelta)(unsafe.Pointer(d))
	x.exp[0] = Exp{Dot: dot, At: at}
	d.Exp = x.exp[:1]
	return d
}

func Expire(s *State, op Op, at int64) *State {
	g := newDotGen(s, op)
	d := &State{Scoped: true, ExpTouched: true}
	g.mark(&d.Ctx)
	dot := g.take()
	d.Exp = []Exp{{Dot: dot, At: at}}
	d.Ctx.Add(dot)
	for _, e := range s.Exp {
		d.Ctx.Add(e.Dot)
	}
	return d
}

// Extend says that a string delta's assignment rewrites part of an earlier
// one (APPEND, SETRANGE): its value is Of's with the N bytes from At
// replaced (zero bytes filling any gap past Of's end). The log and peers
// then carry those N bytes and not the whole value (a 10 MB string
// appended to 40 bytes at a time logged and shipped 10 MB per APPEND), and
// whoever merges such a delta rebuilds the value from Of's: ResolveExtend.
//
// A delta Splice made holds the whole value (the writer's merge needs it);
// one decoded from the log or a peer holds the N bytes until resolved.
type Extend struct {
	Of Dot
	At int
	N  int
	// partial: the delta's value is the N bytes only (decoded, not yet
	// resolved)
	partial bool
}

// maxExtendAt bounds a decoded Extend's offset (a damaged one must not
// allocate without bound); a string is at most proto-max-bulk-len (512 MB
// by default).
const maxExtendAt = 1 << 33

// Splice is SETRANGE (APPEND: at the end of the value): old, the string
// value the caller read from s (nil when absent or expired), with v written
// over it from byte at, zero bytes filling any gap, keeping the expiry
// when keepTTL. The caller checked the type and the size.
//
// When old is s's winning assignment as it was made (no increments added
// to it), by op's region, and at least ExtendMin bytes long, the delta
// comes with its Extend. Only such an
// assignment: whoever has this delta has every earlier delta of the
// region (the log replays them in order, a peer's stream delivers them in
// order), so the assignment's value is there unless a concurrent write of
// another region overwrote it — then a peer fetches the key's state from
// the writer instead (the apply path) — or the delta is already merged.
//
// inPlace says that the value of s's only assignment is in a buffer
// nobody else may write past the end of (the last merge into s added it,
// and Splice or ResolveExtend built it): then an APPEND writes into its
// spare capacity instead of copying the value (see extend), and the
// delta's value shares the buffer, as s's will once merged.
func Splice(s *State, op Op, old []byte, at int, v []byte, keepTTL, inPlace bool) (*State, *Extend) {
	return splice(s, op, old, at, v, keepTTL, inPlace, ExtendMin)
}

// ExtendMin is the shortest value Splice's delta extends (see Extend):
// a shorter one is shipped whole. Where a key is appended to in several
// regions at once, a peer whose write overwrote the extended value must
// fetch the key's state from the writer (a round trip during which its
// apply path waits); for a short value shipping it whole costs less.
const ExtendMin = 1 << 10

// splice is Splice, extending values of at least min bytes.
func splice(s *State, op Op, old []byte, at int, v []byte, keepTTL, inPlace bool, min int) (*State, *Extend) {
	var w *Base
	if len(old) > 0 && s.Str != nil {
		if w = s.Str.Winner(); w != nil && (len(w.Val) != len(old) || &w.Val[0] != &old[0]) {
			w = nil // (increments added to it: the value read is not w's)
		}
	}
	val := extend(old, at, v, inPlace && w != nil && len(s.Str.Base) == 1)
	d := setString(s, op, val, keepTTL, true)
	if w == nil || w.Dot.Region != op.region() || len(old) < min {
		return d, nil
	}
	return d, &Extend{Of: w.Dot, At: at, N: len(v)}
}

// extend returns base with v written over it from byte at (zero bytes
// filling any gap): written into base's spare capacity when inPlace allows
// it and the write is past base's end (bytes within it may still be read
// by whoever holds base: an earlier delta, a reply), else a new allocation
// with room to grow when the value grows, as Redis's strings have.
func extend(base []byte, at int, v []byte, inPlace bool) []byte {
	if n := at + len(v); inPlace && len(base) > deltaVal && at >= len(base) && n <= cap(base) {
		out := base[:n]
		clear(out[len(base):at])
		copy(out[at:], v)
		return out
	}
	n := max(len(base), at+len(v))
	var out []byte
	if n == len(base) { // (SETRANGE within the value: base is never written)
		out = append([]byte(nil), base...)
	} else {
		// room to grow as Redis's sdsMakeRoomFor: double up to 1 MB, 1 MB
		// more past it (base copied, the rest cleared)
		c := 2 * n
		if n >= 1<<20 {
			c = n + 1<<20
		}
		out = append(base[:len(base):len(base)], make([]byte, c-len(base))...)[:n]
	}
	copy(out[at:], v)
	return out
}

// ResolveExtend makes kd, a delta decoded with an Extend, mergeable into
// s, the key's state where it is to be merged (nil: none): its value is
// rebuilt from the assignment it extends (kd.Ext stays, saying how to
// encode it again). A delta s already holds (its dot seen) is left as it
// is: the merge keeps nothing of its value. It returns false, leaving kd
// as it was, when s lacks the assignment (a concurrent write of another
// region overwrote it, or it was never received): kd must not be merged
// then, and the key's full state must come from elsewhere (the writer). A
// kd without Extend, or made by Splice, is whole already.
//
// inPlace is Splice's: the value may be written into the spare capacity
// of the assignment's (s's only one); built says a value was built (and
// the delta, once merged, adds it to s).
func ResolveExtend(s *State, kd *KeyDelta, inPlace bool) (ok, built bool) {
	x := kd.Ext
	if x == nil || !x.partial {
		return true, false
	}
	d := kd.Delta
	if d == nil || d.Str == nil || len(d.Str.Base) != 1 {
		return false, false
	}
	b := &d.Str.Base[0]
	if s != nil && s.Ctx.Contains(b.Dot) {
		return true, false
	}
	if s == nil || s.Str == nil {
		return false, false
	}
	for i := range s.Str.Base {
		if s.Str.Base[i].Dot == x.Of {
			b.Val = extend(s.Str.Base[i].Val, x.At, b.Val, inPlace && len(s.Str.Base) == 1)
			kd.Ext = &Extend{Of: x.Of, At: x.At, N: x.N}
			return true, true
		}
	}
	return false, false
}
