package commands

import (
	"fmt"
	"testing"
)

// TestSample: sample picks what SRANDMEMBER, HRANDFIELD and SPOP promise
// from a set or hash it reads by index, including one where most entries
// do not count (a hash's fields holding no value), and falls back to the
// list only when it must.
func TestSample(t *testing.T) {
	for _, tc := range []struct {
		size, live int // entries, and how many count (every size/live-th)
		n          int64
		want       int // how many picked
		listed     bool
	}{
		{size: 10000, live: 10000, n: 1, want: 1},
		{size: 10000, live: 10000, n: 100, want: 100},
		{size: 10000, live: 10000, n: -500, want: 500},
		{size: 10000, live: 10000, n: 6000, want: 6000, listed: true},
		{size: 10000, live: 10000, n: 20000, want: 10000, listed: true},
		{size: 10000, live: 2000, n: 50, want: 50},
		{size: 10000, live: 20, n: 30, want: 20, listed: true},
		{size: 10000, live: 20, n: -3, want: 3, listed: true}, // (16 misses in a row: listed)
		{size: 0, live: 0, n: 5, want: 0},
		{size: 3, live: 0, n: 1, want: 0, listed: true},
	} {
		name := fmt.Sprintf("size=%d,live=%d,n=%d", tc.size, tc.live, tc.n)
		counts := func(i int) bool { return tc.live > 0 && i%(tc.size/tc.live) == 0 }
		draws := 0
		at := func(i int) (string, bool) {
			if i < 0 || i >= tc.size {
				t.Fatalf("%s: at(%d) out of range", name, i)
			}
			draws++
			return fmt.Sprint("e", i), counts(i)
		}
		listed := false
		list := func() []string {
			listed = true
			var out []string
			for i := range tc.size {
				if counts(i) {
					out = append(out, fmt.Sprint("e", i))
				}
			}
			return out
		}
		got := sample(tc.size, tc.n, at, list)
		if len(got) != tc.want {
			t.Fatalf("%s: picked %d, want %d", name, len(got), tc.want)
		}
		seen := map[string]bool{}
		for _, e := range got {
			var i int
			fmt.Sscanf(e, "e%d", &i)
			if !counts(i) {
				t.Fatalf("%s: picked %s, which does not count", name, e)
			}
			if tc.n > 0 && seen[e] {
				t.Fatalf("%s: picked %s twice", name, e)
			}
			seen[e] = true
		}
		if tc.listed != listed {
			t.Fatalf("%s: listed %v, want %v", name, listed, tc.listed)
		}
		if !listed && tc.n > 0 && tc.live > 0 && draws > 4*int(tc.n)*tc.size/tc.live+64 {
			t.Fatalf("%s: %d draws", name, draws)
		}
	}
}

// TestSampleSpread: single picks from a set reach every member about
// equally often.
func TestSampleSpread(t *testing.T) {
	const size, rounds = 20, 20000
	hits := make([]int, size)
	at := func(i int) (string, bool) { hits[i]++; return "", true }
	for range rounds {
		sample(size, 1, at, func() []string { t.Fatal("listed"); return nil })
	}
	for i, h := range hits {
		if h < rounds/size/2 || h > rounds/size*2 {
			t.Fatalf("entry %d picked %d times of %d (%v)", i, h, rounds, hits)
		}
	}
}
