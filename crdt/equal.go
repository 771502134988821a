package crdt

import "sort"

// Equal reports whether a and b are the same replicated state (the same
// elements, dots, counters and context), ignoring representation order.
func Equal(a, b *State) bool {
	if !a.Ctx.Equal(&b.Ctx) || a.StrT != b.StrT || a.SetT() != b.SetT() || a.HashT() != b.HashT() {
		return false
	}
	if !regEqual(a.Str, b.Str) || a.Set.Len() != b.Set.Len() || a.Hash.Len() != b.Hash.Len() {
		return false
	}
	for m, ds := range a.Set.All() {
		if !sameDots(ds, b.Set.Get(m)) {
			return false
		}
	}
	for f, r := range a.Hash.All() {
		if !regEqual(r, b.Hash.Get(f)) {
			return false
		}
	}
	if len(a.Exp) != len(b.Exp) {
		return false
	}
	for _, e := range a.Exp {
		found := false
		for _, x := range b.Exp {
			found = found || x == e
		}
		if !found {
			return false
		}
	}
	return true
}

func sameDots(a, b []Dot) bool {
	if len(a) != len(b) {
		return false
	}
	for _, d := range a {
		if !containsDot(b, d) {
			return false
		}
	}
	return true
}

func regEqual(a, b *Reg) bool {
	if a.isEmpty() || b.isEmpty() {
		return a.isEmpty() == b.isEmpty()
	}
	if len(a.Base) != len(b.Base) || !countsEqual(a.Counts, b.Counts) || !countsEqual(a.Floor, b.Floor) {
		return false
	}
	for _, x := range a.Base {
		found := false
		for _, y := range b.Base {
			if x.Dot == y.Dot && x.HLC == y.HLC && string(x.Val) == string(y.Val) && countsEqual(x.Absorb, y.Absorb) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func countsEqual(a, b []Count) bool {
	if len(a) != len(b) {
		return false
	}
	a = append([]Count(nil), a...)
	b = append([]Count(nil), b...)
	sort.Slice(a, func(i, j int) bool { return a[i].Region < a[j].Region })
	sort.Slice(b, func(i, j int) bool { return b[i].Region < b[j].Region })
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
