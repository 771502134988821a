package crdt

import (
	"math/rand/v2"
	"testing"
)

// HSetAdded counts the fields absent before (a field named twice once),
// whatever the hash held: live fields, deleted ones, repeats.
func TestHSetAddedCountsNewFields(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	c := NewClock("A")
	for round := 0; round < 500; round++ {
		s := &State{}
		for i := 0; i < r.IntN(6); i++ {
			f := []byte{'f', byte('0' + r.IntN(6))}
			s.Merge(HSet(s, Op{HLC: c.Now(int64(round))}, [][]byte{f, []byte("v")}))
			if r.IntN(3) == 0 {
				s.Merge(HDel(s, [][]byte{f}))
			}
		}
		var pairs [][]byte
		want, seen := 0, map[string]bool{}
		for i := 0; i < 1+r.IntN(5); i++ {
			f := string([]byte{'f', byte('0' + r.IntN(6))})
			pairs = append(pairs, []byte(f), []byte("w"))
			if !s.HasField(f) && !seen[f] {
				want++
			}
			seen[f] = true
		}
		if _, got := HSetAdded(s, Op{HLC: c.Now(int64(round))}, pairs); got != want {
			t.Fatalf("round %d: %d added, want %d (pairs %q)", round, got, want, pairs)
		}
	}
}

// A copy of a pooled delta by value is never itself released as one (it is
// not the first field of a pooled struct): Header and Assign clear the mark.
func TestCopiesOfPooledDeltasAreNotPooled(t *testing.T) {
	op := Op{HLC: HLC{Phys: 1, Region: "A"}}
	for _, d := range []*State{
		SetString(&State{}, op, []byte("v"), false),
		IncrBy(&State{}, op, 1),
		HSet(&State{}, op, [][]byte{[]byte("f"), []byte("v")}),
		SAdd(&State{}, op, [][]byte{[]byte("m")}),
	} {
		if d.pool == 0 {
			t.Fatalf("%s: not pooled", dump(d))
		}
		var a State
		a.Assign(d)
		if h := d.Header(); h.pool != 0 || a.pool != 0 || d.Clone().pool != 0 {
			t.Fatalf("a copy of %s is marked pooled", dump(d))
		}
		Release(d)
	}
}
