package crdt

import (
	"cmp"
	"encoding/binary"
	"slices"
	"strings"
)

// Digests are canonical 64-bit hashes of CRDT state, equal in every region
// that holds the same state whatever the order it was built in. A key's
// digest combines its header digest with the XOR of its element digests, so
// a write that touches one member updates it in O(1).

// The digests hash (FNV-1a, 64 bits) a canonical encoding, appended by
// the d* functions below to a buffer on the caller's stack (digestBuf),
// with the sorted copies of short lists on the stack too: a region digests
// every key it changed once per anti-entropy round, and the heap
// allocations (buffer, copies, sort closures, the hash.Hash) were half of
// what that cost. (Functions that return the slice, not methods of a
// struct holding it: a pointer to it passed to a call that is not inlined
// moves the buffer to the heap.)

// digestBuf is a digest's buffer on its caller's stack.
type digestBuf [160]byte

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func dU(b []byte, v uint64) []byte  { return binary.AppendUvarint(b, v) }
func dI(b []byte, v int64) []byte   { return binary.AppendVarint(b, v) }
func dS(b []byte, v string) []byte  { return append(dU(b, uint64(len(v))), v...) }
func dBy(b []byte, v []byte) []byte { return append(dU(b, uint64(len(v))), v...) }
func dDot(b []byte, x Dot) []byte   { return dU(dS(b, x.Region), x.N) }
func dHLC(b []byte, h HLC) []byte   { return dS(dU(dI(b, h.Phys), uint64(h.Log)), h.Region) }

func fnvSum(b []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// sortedCopy returns src sorted by cmp: src itself when it has at most
// one element, else a copy in buf's array (grown on the heap past it).
// The lists digested are sets (no two elements compare equal), so any
// sort gives the same order.
func sortedCopy[T any](buf []T, src []T, cmp func(a, b T) int) []T {
	if len(src) <= 1 {
		return src
	}
	out := append(buf[:0], src...)
	slices.SortFunc(out, cmp)
	return out
}

func cmpDot(a, b Dot) int {
	if c := strings.Compare(a.Region, b.Region); c != 0 {
		return c
	}
	return cmp.Compare(a.N, b.N)
}

func dCounts(b []byte, cs []Count) []byte {
	var buf [4]Count
	cs = sortedCopy(buf[:0], cs, func(a, b Count) int { return strings.Compare(a.Region, b.Region) })
	b = dU(b, uint64(len(cs)))
	for _, c := range cs {
		b = dS(dI(dU(dS(b, c.Region), c.N), c.I), c.F)
	}
	return b
}

func dReg(b []byte, r *Reg) []byte {
	if r == nil {
		return dU(b, 0)
	}
	var buf [4]Base
	bs := sortedCopy(buf[:0], r.Base, func(a, b Base) int { return cmpDot(a.Dot, b.Dot) })
	b = dU(b, uint64(len(bs))+1)
	for _, x := range bs {
		b = dCounts(dBy(dHLC(dDot(b, x.Dot), x.HLC), x.Val), x.Absorb)
	}
	return dCounts(dCounts(b, r.Counts), r.Floor)
}

// HeaderDigest hashes everything of s but its members and fields.
func HeaderDigest(s *State) uint64 {
	var buf digestBuf
	b := dU(buf[:0], uint64(len(s.Ctx.VV)))
	for _, v := range s.Ctx.VV {
		b = dU(dS(b, v.Region), v.N)
	}
	b = dU(b, uint64(len(s.Ctx.Cloud)))
	for _, x := range s.Ctx.Cloud {
		b = dDot(b, x)
	}
	b = dReg(dHLC(dHLC(dHLC(b, s.StrT), s.SetT()), s.HashT()), s.Str)
	var ebuf [2]Exp
	exp := sortedCopy(ebuf[:0], s.Exp, func(a, b Exp) int { return cmpDot(a.Dot, b.Dot) })
	b = dU(b, uint64(len(exp)))
	for _, e := range exp {
		b = dI(dDot(b, e.Dot), e.At)
	}
	return fnvSum(b)
}

// MemberDigest hashes one set member with its dots.
func MemberDigest(m string, dots []Dot) uint64 {
	var buf digestBuf
	b := dS(append(buf[:0], ElemMember), m)
	var dbuf [4]Dot
	for _, x := range sortedCopy(dbuf[:0], dots, cmpDot) {
		b = dDot(b, x)
	}
	return fnvSum(b)
}

// FieldDigest hashes one hash field with its register.
func FieldDigest(f string, r *Reg) uint64 {
	var buf digestBuf
	return fnvSum(dReg(dS(append(buf[:0], ElemField), f), r))
}

// ElementsDigest is the XOR of every member's and field's digest.
func ElementsDigest(s *State) uint64 {
	var x uint64
	for m, ds := range s.Set.All() {
		x ^= MemberDigest(m, ds)
	}
	for f, r := range s.Hash.All() {
		x ^= FieldDigest(f, r)
	}
	return x
}

// ListedDigest is the XOR of the digests s has for the elements d lists.
func ListedDigest(s *State, d *State) uint64 {
	var x uint64
	d.EachMember(func(m string, _ []Dot) {
		if ds, ok := s.Set.Lookup(m); ok {
			x ^= MemberDigest(m, ds)
		}
	})
	if s.Hash.Len() > 0 {
		d.EachField(func(f string, _ *Reg) {
			if r, ok := s.Hash.Lookup(f); ok {
				x ^= FieldDigest(f, r)
			}
		})
	}
	return x
}

// KeyDigest combines a key's name with its header and elements digests.
func KeyDigest(key string, header, elems uint64) uint64 {
	var buf digestBuf
	return fnvSum(dU(dU(dS(buf[:0], key), header), elems))
}
