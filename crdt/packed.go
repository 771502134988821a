package crdt

import "math"

// The packed form is the in-memory encoding of a cold key's state: what the
// keyspace keeps instead of a *State for keys nobody touched for a while.
// It is never persisted or shipped (AppendState is the wire and disk
// format), so it may change between versions. Regions are written as
// indexes into a table the caller owns and shares between all keys, and
// the parts most keys lack (the other types' creation stamps, counters,
// the expiry register, the cloud) cost one bit each when absent: a 3-byte
// string key packs into about 22 bytes, against ~550 B as a *State.

// Regions interns region names for the packed form: Index returns a stable
// index for a name (adding it when new), Name the name of an index.
type Regions interface {
	Index(name string) uint64
	Name(i uint64) (string, bool)
}

// presence bits of a packed state
const (
	pkStrT = 1 << iota
	pkSetT
	pkHashT
	pkStr
	pkSet
	pkHash
	pkExp
	pkCloud
	pkScoped
	pkExpTouched
)

// presence bits of a packed base and register
const (
	pkSameHLC = 1 << iota // the base's HLC is the reference stamp
	pkAbsorb
	pkCounts
	pkFloor
)

// AppendPacked appends the packed form of s to dst.
func AppendPacked(dst []byte, s *State, tbl Regions) []byte {
	e := encoder{b: dst, tbl: tbl}
	p := packer{e: &e, ctx: &s.Ctx, ref: packRef(&s.Ctx)}
	var flags uint64
	set := func(cond bool, bit uint64) {
		if cond {
			flags |= bit
		}
	}
	set(!s.StrT.IsZero(), pkStrT)
	set(!s.SetT().IsZero(), pkSetT)
	set(!s.HashT().IsZero(), pkHashT)
	set(s.Str != nil, pkStr)
	set(s.Set.Len() > 0, pkSet)
	set(s.Hash.Len() > 0, pkHash)
	set(len(s.Exp) > 0, pkExp)
	set(len(s.Ctx.Cloud) > 0, pkCloud)
	set(s.Scoped, pkScoped)
	set(s.ExpTouched, pkExpTouched)
	e.uv(flags)
	e.uv(uint64(len(s.Ctx.VV)))
	for _, v := range s.Ctx.VV {
		e.region(v.Region)
		e.uv(v.N)
	}
	if flags&pkCloud != 0 {
		e.uv(uint64(len(s.Ctx.Cloud)))
		for _, d := range s.Ctx.Cloud {
			e.dot(d)
		}
	}
	if flags&pkStrT != 0 {
		p.hlc(s.StrT)
	}
	if flags&pkSetT != 0 {
		p.hlc(s.SetT())
	}
	if flags&pkHashT != 0 {
		p.hlc(s.HashT())
	}
	if flags&pkStr != 0 {
		p.reg(s.Str, s.StrT)
	}
	if flags&pkSet != 0 {
		e.members(s.Set, p.dot)
	}
	if flags&pkHash != 0 {
		e.uv(uint64(s.Hash.Len()))
		hashT := s.HashT()
		for f, r := range s.Hash.All() {
			e.str(f)
			p.reg(r, hashT)
		}
	}
	if flags&pkExp != 0 {
		e.uv(uint64(len(s.Exp)))
		for _, x := range s.Exp {
			p.dot(x.Dot)
			e.iv(x.At - p.ref)
		}
	}
	return e.body()
}

// packer writes stamps and dots relative to the state's context: a dot as
// its distance below its region's vector entry (0 for the latest write), a
// timestamp's milliseconds relative to the first vector entry's (dots are
// seeded from the HLC of a key's first write), so most take 1-3 bytes.
type packer struct {
	e   *encoder
	ctx *Context
	ref int64
}

func packRef(c *Context) int64 {
	if len(c.VV) == 0 {
		return 0
	}
	return int64(c.VV[0].N >> 22)
}

func (p *packer) dot(d Dot) {
	p.e.region(d.Region)
	p.e.iv(int64(p.ctx.Max(d.Region) - d.N))
}

func (p *packer) hlc(h HLC) {
	p.e.iv(h.Phys - p.ref)
	p.e.uv(uint64(h.Log))
	p.e.region(h.Region)
}

func (p *packer) reg(r *Reg, ref HLC) {
	e := p.e
	var rf uint64
	if len(r.Counts) > 0 {
		rf |= pkCounts
	}
	if len(r.Floor) > 0 {
		rf |= pkFloor
	}
	e.uv(uint64(len(r.Base))<<2 | rf>>2)
	for _, b := range r.Base {
		var bf uint64
		if b.HLC == ref {
			bf |= pkSameHLC
		}
		if len(b.Absorb) > 0 {
			bf |= pkAbsorb
		}
		e.uv(bf)
		p.dot(b.Dot)
		if bf&pkSameHLC == 0 {
			p.hlc(b.HLC)
		}
		e.bytes(b.Val)
		if bf&pkAbsorb != 0 {
			e.counts(b.Absorb)
		}
	}
	if rf&pkCounts != 0 {
		e.counts(r.Counts)
	}
	if rf&pkFloor != 0 {
		e.counts(r.Floor)
	}
}

// UnpackInto decodes a packed state into s (which it overwrites). Values
// are copied: s shares nothing with b.
func UnpackInto(s *State, b []byte, tbl Regions) error {
	return unpackInto(s, b, tbl, nil)
}

// PackedIsString reports whether a packed state holds a string register
// (so that StringRoom.Unpack suits it).
func PackedIsString(b []byte) bool {
	d := decoder{b: b}
	return d.uv()&pkStr != 0 && d.err == nil
}

// Unpack decodes a packed state (see UnpackInto) into the room and returns
// the room's state; its first version-vector entry and its register use
// the room.
func (r *StringRoom) Unpack(b []byte, tbl Regions) (*State, error) {
	return &r.st, unpackInto(&r.st, b, tbl, r)
}

func unpackInto(s *State, b []byte, tbl Regions, room *StringRoom) error {
	d := decoder{b: b, tbl: tbl}
	u := unpacker{d: &d, ctx: &s.Ctx}
	*s = State{room: room != nil}
	flags := d.uv()
	s.Scoped = flags&pkScoped != 0
	s.ExpTouched = flags&pkExpTouched != 0
	if n := d.count(2); n > 0 {
		if room != nil && n <= len(room.vv) {
			s.Ctx.VV = room.vv[:0]
		} else {
			s.Ctx.VV = make([]VVEntry, 0, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			s.Ctx.VV = append(s.Ctx.VV, VVEntry{Region: d.region(), N: d.uv()})
		}
	}
	if flags&pkCloud != 0 {
		n := d.count(2)
		s.Ctx.Cloud = make([]Dot, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			s.Ctx.Cloud = append(s.Ctx.Cloud, d.dot())
		}
	}
	u.ref = packRef(&s.Ctx)
	if flags&pkStrT != 0 {
		s.StrT = u.hlc()
	}
	var setT, hashT HLC
	if flags&pkSetT != 0 {
		setT = u.hlc()
	}
	if flags&pkHashT != 0 {
		hashT = u.hlc()
	}
	s.setStamps(setT, hashT)
	if flags&pkStr != 0 {
		var ra *regAlloc
		var vals *roomVals
		if room != nil {
			ra, vals = &room.reg, &room.val
		}
		s.Str = u.regIn(ra, vals, s.StrT)
	}
	if flags&pkSet != 0 {
		s.Set = d.members(d.count(2), u.dot)
	}
	if flags&pkHash != 0 {
		n := d.count(3)
		s.Hash = NewTable[*Reg](n)
		for i := 0; i < n && d.err == nil; i++ {
			f := d.str()
			s.Hash.Put(f, u.reg(hashT))
		}
	}
	if flags&pkExp != 0 {
		n := d.count(3)
		s.Exp = make([]Exp, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			s.Exp = append(s.Exp, Exp{Dot: u.dot(), At: d.iv() + u.ref})
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return d.err
}

// unpacker reads what packer wrote.
type unpacker struct {
	d   *decoder
	ctx *Context
	ref int64
}

func (u *unpacker) dot() Dot {
	r := u.d.region()
	return Dot{Region: r, N: u.ctx.Max(r) - uint64(u.d.iv())}
}

func (u *unpacker) hlc() HLC {
	p := u.d.iv() + u.ref
	l := u.d.uv()
	if l > math.MaxUint32 {
		u.d.fail()
	}
	return HLC{Phys: p, Log: uint32(l), Region: u.d.region()}
}

func (u *unpacker) reg(ref HLC) *Reg { return u.regIn(nil, nil, ref) }

// regIn reads a register, into ra's room when ra is not nil, and its short
// values into vals when not nil.
func (u *unpacker) regIn(ra *regAlloc, vals *roomVals, ref HLC) *Reg {
	d := u.d
	h := d.uv()
	n, rf := h>>2, h<<2&(pkCounts|pkFloor)
	if n > uint64(len(d.b)) {
		d.fail()
		return &Reg{}
	}
	var r *Reg
	var rb *regWithBase
	switch {
	case ra != nil:
		r = &ra.r
		*r = Reg{Base: ra.b[:0]}
	case n == 1:
		rb = &regWithBase{} // one base and a short value in one allocation
		r = &rb.r
	default:
		r = &Reg{}
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		bf := d.uv()
		b := Base{Dot: u.dot(), HLC: ref}
		if bf&pkSameHLC == 0 {
			b.HLC = u.hlc()
		}
		val := d.raw()
		if bf&pkAbsorb != 0 {
			b.Absorb = d.counts()
		}
		switch {
		case rb != nil:
			rb.set(b, val)
		case vals != nil && i < uint64(len(vals)) && len(val) > 0 && len(val) <= roomVal:
			n := copy(vals[i][:], val)
			b.Val = vals[i][:n:n]
			r.Base = append(r.Base, b)
		default:
			b.Val = append([]byte(nil), val...)
			r.Base = append(r.Base, b)
		}
	}
	if rf&pkCounts != 0 {
		r.Counts = d.counts()
	}
	if rf&pkFloor != 0 {
		r.Floor = d.counts()
	}
	return r
}
