package crdt

import (
	"fmt"
	"strings"
)

// Describe summarises, for a conflict of kind (one Conflict* flag) found in
// s, what won and what lost: region, timestamp and a short value.
func Describe(s *State, kind int) (winner, loser string) {
	short := func(b []byte) string {
		if len(b) > 32 {
			return fmt.Sprintf("%q...(%d bytes)", b[:32], len(b))
		}
		return fmt.Sprintf("%q", b)
	}
	at := func(h HLC) string { return fmt.Sprintf("%s@%d.%d", h.Region, h.Phys, h.Log) }
	switch kind {
	case ConflictLWW:
		regs := []*Reg{s.Str}
		for _, r := range s.Hash.All() {
			regs = append(regs, r)
		}
		for _, r := range regs {
			if r == nil || len(r.Base) < 2 {
				continue
			}
			w := r.Winner()
			var ls []string
			for _, b := range r.Base {
				if b.Dot != w.Dot {
					ls = append(ls, short(b.Val)+" by "+at(b.HLC))
				}
			}
			return short(w.Val) + " by " + at(w.HLC), strings.Join(ls, ", ")
		}
	case ConflictType:
		t := s.Type()
		var ls []string
		if t != TypeString && s.Str.Exists() {
			ls = append(ls, "string created "+at(s.StrT))
		}
		if t != TypeSet && s.Set.Len() > 0 {
			ls = append(ls, fmt.Sprintf("set of %d created %s", s.Set.Len(), at(s.SetT())))
		}
		if t != TypeHash && s.hashExists() {
			ls = append(ls, fmt.Sprintf("hash of %d created %s", s.HashLen(), at(s.HashT())))
		}
		stamp := map[Type]HLC{TypeString: s.StrT, TypeSet: s.SetT(), TypeHash: s.HashT()}[t]
		return t.String() + " created " + at(stamp), strings.Join(ls, ", ")
	case ConflictNonNumeric:
		if w := s.Str.Winner(); w != nil {
			sum, fsum, _ := s.Str.pending(w)
			n := "increments"
			if sum != nil {
				n = "increments of " + sum.String()
			} else if fsum != nil {
				n = "increments of " + fsum.FloatString(6)
			}
			return short(w.Val) + " by " + at(w.HLC), "unobserved " + n
		}
	}
	return "", ""
}
