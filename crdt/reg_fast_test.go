package crdt

import (
	"bytes"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// slowGet is Get without the int64 fast path: the exact big-number sum.
func slowGet(r *Reg) ([]byte, bool) {
	w := r.Winner()
	sum, fsum, any := r.pending(w)
	if !any {
		if w == nil {
			return nil, false
		}
		return w.Val, true
	}
	if w == nil {
		return numberBytes(new(big.Int), nil, sum, fsum), true
	}
	if iv, isInt := ParseInt(w.Val); isInt {
		return numberBytes(big.NewInt(iv), nil, sum, fsum), true
	}
	if fv, isFloat := ParseFloat(w.Val); isFloat {
		return numberBytes(nil, fv, sum, fsum), true
	}
	return w.Val, true
}

// The int64 fast paths of Get and IntValue agree with the exact path on counters from
// several regions with bases, absorbed increments and sums near overflow.
func TestRegFastGetMatchesExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	amounts := []int64{1, -1, 7, math.MaxInt64, math.MinInt64, math.MaxInt64 / 2, -math.MaxInt64 / 3}
	for i := 0; i < 3000; i++ {
		regions := []string{"A", "B", "C"}
		s := &State{}
		for j := 0; j < 1+rng.IntN(6); j++ {
			op := Op{HLC: HLC{Phys: int64(1000 + i*10 + j), Region: regions[rng.IntN(3)]}}
			var d *State
			switch rng.IntN(5) {
			case 0:
				d = SetString(s, op, []byte([]string{"5", "-3", "abc", "", "2.5", "9223372036854775807"}[rng.IntN(6)]), false)
			case 1:
				d = IncrByFloat(s, op, big.NewRat(1, 4))
			default:
				d = IncrBy(s, op, amounts[rng.IntN(len(amounts))])
			}
			s.Merge(d)
		}
		got, ok, _ := s.Str.Get()
		want, wok := slowGet(s.Str)
		if ok != wok || !bytes.Equal(got, want) {
			t.Fatalf("case %d: fast %q/%v, exact %q/%v (%+v)", i, got, ok, want, wok, s.Str)
		}
		v, exists, isInt, _ := s.Str.IntValue()
		wv, wIsInt := ParseInt(want)
		if exists != wok || (wok && isInt != wIsInt) || (isInt && wok && v != wv) {
			t.Fatalf("case %d: IntValue %d/%v/%v, exact %q", i, v, exists, isInt, want)
		}
	}
}
