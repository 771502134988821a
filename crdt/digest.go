package crdt

import (
	"encoding/binary"
	"hash/fnv"
	"sort"
)

// Digests are canonical 64-bit hashes of CRDT state, equal in every region
// that holds the same state whatever the order it was built in. A key's
// digest combines its header digest with the XOR of its element digests, so
// a write that touches one member updates it in O(1).

type digester struct{ b []byte }

func (d *digester) u(v uint64)  { d.b = binary.AppendUvarint(d.b, v) }
func (d *digester) i(v int64)   { d.b = binary.AppendVarint(d.b, v) }
func (d *digester) s(v string)  { d.u(uint64(len(v))); d.b = append(d.b, v...) }
func (d *digester) by(v []byte) { d.u(uint64(len(v))); d.b = append(d.b, v...) }
func (d *digester) dot(x Dot)   { d.s(x.Region); d.u(x.N) }
func (d *digester) hlc(h HLC)   { d.i(h.Phys); d.u(uint64(h.Log)); d.s(h.Region) }
func (d *digester) sum() uint64 { h := fnv.New64a(); h.Write(d.b); return h.Sum64() }
func sortDots(ds []Dot) []Dot {
	ds = append([]Dot(nil), ds...)
	sort.Slice(ds, func(i, j int) bool { return dotLess(ds[i], ds[j]) })
	return ds
}
func (d *digester) counts(cs []Count) {
	cs = append([]Count(nil), cs...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].Region < cs[j].Region })
	d.u(uint64(len(cs)))
	for _, c := range cs {
		d.s(c.Region)
		d.u(c.N)
		d.i(c.I)
		d.s(c.F)
	}
}

func (d *digester) reg(r *Reg) {
	if r == nil {
		d.u(0)
		return
	}
	bs := append([]Base(nil), r.Base...)
	sort.Slice(bs, func(i, j int) bool { return dotLess(bs[i].Dot, bs[j].Dot) })
	d.u(uint64(len(bs)) + 1)
	for _, b := range bs {
		d.dot(b.Dot)
		d.hlc(b.HLC)
		d.by(b.Val)
		d.counts(b.Absorb)
	}
	d.counts(r.Counts)
	d.counts(r.Floor)
}

// HeaderDigest hashes everything of s but its members and fields.
func HeaderDigest(s *State) uint64 {
	d := digester{b: make([]byte, 0, 128)}
	d.u(uint64(len(s.Ctx.VV)))
	for _, v := range s.Ctx.VV {
		d.s(v.Region)
		d.u(v.N)
	}
	d.u(uint64(len(s.Ctx.Cloud)))
	for _, x := range s.Ctx.Cloud {
		d.dot(x)
	}
	d.hlc(s.StrT)
	d.hlc(s.SetT())
	d.hlc(s.HashT())
	d.reg(s.Str)
	exp := append([]Exp(nil), s.Exp...)
	sort.Slice(exp, func(i, j int) bool { return dotLess(exp[i].Dot, exp[j].Dot) })
	d.u(uint64(len(exp)))
	for _, e := range exp {
		d.dot(e.Dot)
		d.i(e.At)
	}
	return d.sum()
}

// MemberDigest hashes one set member with its dots.
func MemberDigest(m string, dots []Dot) uint64 {
	d := digester{b: make([]byte, 0, 32+len(m))}
	d.b = append(d.b, ElemMember)
	d.s(m)
	for _, x := range sortDots(dots) {
		d.dot(x)
	}
	return d.sum()
}

// FieldDigest hashes one hash field with its register.
func FieldDigest(f string, r *Reg) uint64 {
	d := digester{b: make([]byte, 0, 64+len(f))}
	d.b = append(d.b, ElemField)
	d.s(f)
	d.reg(r)
	return d.sum()
}

// ElementsDigest is the XOR of every member's and field's digest.
func ElementsDigest(s *State) uint64 {
	var x uint64
	for m, ds := range s.Set {
		x ^= MemberDigest(m, ds)
	}
	for f, r := range s.Hash {
		x ^= FieldDigest(f, r)
	}
	return x
}

// ListedDigest is the XOR of the digests s has for the elements d lists.
func ListedDigest(s *State, d *State) uint64 {
	var x uint64
	for m := range d.Set {
		if ds, ok := s.Set[m]; ok {
			x ^= MemberDigest(m, ds)
		}
	}
	for f := range d.Hash {
		if r, ok := s.Hash[f]; ok {
			x ^= FieldDigest(f, r)
		}
	}
	return x
}

// KeyDigest combines a key's name with its header and elements digests.
func KeyDigest(key string, header, elems uint64) uint64 {
	d := digester{b: make([]byte, 0, 24+len(key))}
	d.s(key)
	d.u(header)
	d.u(elems)
	return d.sum()
}
