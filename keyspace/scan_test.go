package keyspace

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"concord/crdt"
)

func del(ks *Keyspace, key string) {
	k := Key{Key: key}
	ks.Run([]Key{k}, func(tx *Tx) error {
		if tx.Get(k) != nil {
			tx.Apply(k, crdt.Delete(tx.State(k)))
		}
		return nil
	})
}

// A full SCAN gives every key present throughout exactly once while keys
// go cold (PackCold) and come back warm (a read) between its calls, others
// come and go, and the page size changes: a key's place in the order is
// the same whether its index slot is warm or cold. Each page looks at the
// count asked for (all keys live: a page holds count keys, the last fewer).
func TestScanOrderSurvivesWarmAndCold(t *testing.T) {
	for seed := int64(1); seed <= 3; seed++ {
		ks, clk, _ := newKS(true)
		rng := rand.New(rand.NewSource(seed))
		const n = 8000 // ~31 keys a shard
		for i := range n {
			set(ks, fmt.Sprint("stable", i), "v", 0)
		}
		switch seed {
		case 1: // every key warm
		case 2: // every key cold
			ks.PackCold(4)
			ks.PackCold(4)
			if c := ks.Stats.ColdKeys.Load(); c != n {
				t.Fatalf("%d cold keys, want %d", c, n)
			}
		case 3: // half and half
			ks.PackCold(4)
			ks.PackCold(4)
			for i := range n / 2 {
				get(ks, fmt.Sprint("stable", 2*i))
			}
		}
		seen := map[string]int{}
		cur, calls, churn := uint64(0), 0, 0
		for {
			count := 1 + rng.Intn(12) // pages end inside shards
			if rng.Intn(20) == 0 {
				count = 1 + rng.Intn(300) // or span them
			}
			var page []string
			page, cur = ks.ScanPage(nil, 0, cur, count, nil)
			calls++
			stable := 0
			for _, k := range page {
				if len(k) > 6 && k[:6] == "stable" {
					seen[k]++
					stable++
				}
			}
			if cur != 0 && len(page) != count {
				t.Fatalf("seed %d call %d: %d keys for COUNT %d (cursor %x)", seed, calls, len(page), count, cur)
			}
			if cur == 0 {
				break
			}
			switch rng.Intn(4) {
			case 0: // some keys warm again
				for range 200 {
					get(ks, fmt.Sprint("stable", rng.Intn(n)))
				}
			case 1: // warm keys go cold
				ks.PackCold(4)
				ks.PackCold(4)
			case 2: // keys come (warm) and go
				for range 20 {
					set(ks, fmt.Sprint("churn", churn), "v", 0)
					del(ks, fmt.Sprint("churn", rng.Intn(churn+1)))
					churn++
				}
			case 3: // the clock moves: nothing here expires
				clk.Add(time.Second)
			}
		}
		var wrong []string
		for i := range n {
			if k := fmt.Sprint("stable", i); seen[k] != 1 {
				wrong = append(wrong, fmt.Sprintf("%s:%d", k, seen[k]))
			}
		}
		if len(wrong) > 0 {
			t.Fatalf("seed %d: %d keys not given exactly once: %v", seed, len(wrong), wrong[:min(5, len(wrong))])
		}
	}
}

// firstByTag puts the n least candidates first, the greatest last, and never ends a
// page inside a tag (candidates sharing the last one's come too).
func TestFirstByTag(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for range 2000 {
		c := make([]uint64, rng.Intn(300))
		tags := 1 + rng.Intn(400) // few tags: many ties
		for i := range c {
			c[i] = uint64(rng.Intn(tags))<<32 | uint64(i)
		}
		want := slices.Clone(c)
		slices.Sort(want)
		n := rng.Intn(40)
		m := firstByTag(c, n)
		k := min(max(n, 1), len(want))
		for k < len(want) && k > 0 && want[k]>>32 == want[k-1]>>32 {
			k++
		}
		took := slices.Clone(c[:m])
		slices.Sort(took)
		if m != k || !slices.Equal(took, want[:k]) {
			t.Fatalf("n %d of %d: took %d, want %d", n, len(c), m, k)
		}
		if m > 0 && m < len(c) && c[m-1]>>32 != want[k-1]>>32 {
			t.Fatalf("n %d of %d: the last taken has tag %d, the greatest is %d", n, len(c), c[m-1]>>32, want[k-1]>>32)
		}
		rest := slices.Clone(c[m:])
		slices.Sort(rest)
		if !slices.Equal(rest, want[k:]) {
			t.Fatal("the candidates not taken changed")
		}
	}
}

// RANDOMKEY gives only live keys not past their deadline, warm or cold,
// reaches most of them, and finds the one live key among many expired ones
// (its draws miss; it walks the keys).
func TestRandomKeyDraws(t *testing.T) {
	ks, clk, _ := newKS(true)
	if k := ks.RandomKey(nil, 0); k != "" {
		t.Fatalf("empty db: %q", k)
	}
	for i := range 1000 {
		set(ks, fmt.Sprint("live", i), "v", 0)
	}
	ks.PackCold(4)
	ks.PackCold(4)
	for i := range 500 { // half the live keys warm again
		get(ks, fmt.Sprint("live", 2*i))
	}
	for i := range 1000 {
		set(ks, fmt.Sprint("gone", i), "v", time.Second)
	}
	clk.Add(2 * time.Second) // the gone keys expired (not yet deleted)
	seen := map[string]bool{}
	for range 20000 {
		k := ks.RandomKey(nil, 0)
		if len(k) < 4 || k[:4] != "live" {
			t.Fatalf("RANDOMKEY gave %q", k)
		}
		seen[k] = true
	}
	if len(seen) < 950 {
		t.Fatalf("20000 draws reached %d of 1000 keys", len(seen))
	}

	ks2, clk2, _ := newKS(true)
	for i := range 3000 {
		set(ks2, fmt.Sprint("gone", i), "v", time.Second)
	}
	set(ks2, "only", "v", 0)
	clk2.Add(2 * time.Second)
	for range 20 {
		if k := ks2.RandomKey(nil, 0); k != "only" {
			t.Fatalf("RANDOMKEY gave %q, want the one live key", k)
		}
	}
}

// fibInverse undoes fib (the multiplier is odd: it has an inverse mod 2^64).
func fibInverse(x uint64) uint64 {
	g := uint64(0x9e3779b97f4a7c15)
	inv := g
	for range 6 {
		inv *= 2 - g*inv
	}
	return x * inv
}

// scanFrom's promise, on both indexes, against every key they hold: what
// it gives has tags from pos on and below the bound, every key with a tag
// from pos to the bound is given, and at least need are (unless it gives
// all). Hashes are chosen so that many keys' homes are the last slots and
// their probes come round the end of the table.
func TestScanFromBothIndexes(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := range 3000 {
		var x index
		var ct coldTable
		tags := map[uint64]uint64{} // a warm slot's hash -> its tag
		n := 1 + rng.Intn(60)
		for i := range n {
			var tag uint64
			switch rng.Intn(3) {
			case 0: // home in the last slots
				tag = 1<<32 - 1 - uint64(rng.Intn(1<<27))
			case 1: // home in the first
				tag = uint64(rng.Intn(1 << 27))
			default:
				tag = uint64(rng.Uint32())
			}
			fh := tag<<32 | uint64(rng.Uint32())
			h := fibInverse(fh)
			if scanTag(h) != tag {
				t.Fatal("fibInverse")
			}
			key := fmt.Sprint("k", i)
			x.put(h, key, &entry{})
			tags[h] = tag
			ct.add(key, fh, coldRec{}, false)
		}
		for i := range n / 3 { // deleted slots in both
			key := fmt.Sprint("k", i*3)
			for h := range tags {
				if e := x.get(h, key); e != nil {
					x.del(h, key)
					delete(tags, h)
				}
			}
			if slot, off := ct.lookup(key); slot >= 0 {
				_, _, end := ct.parse(off)
				ct.remove(slot, off, end)
			}
		}
		_ = ct
		pos := uint64(rng.Uint32())
		if rng.Intn(4) == 0 {
			pos = 0
		}
		need := 1 + rng.Intn(8)
		check := func(what string, got []uint64, bound uint64, all []uint64) {
			t.Helper()
			given := map[uint64]bool{}
			for _, c := range got {
				tag := c >> 32
				if tag < pos || tag >= bound {
					t.Fatalf("round %d %s: tag %x given, pos %x bound %x", round, what, tag, pos, bound)
				}
				given[tag] = true
			}
			inRange := 0
			for _, tag := range all {
				if tag >= pos && tag < bound {
					inRange++
					if !given[tag] {
						t.Fatalf("round %d %s: tag %x not given, pos %x bound %x", round, what, tag, pos, bound)
					}
				}
			}
			if bound != scanAll && len(got) < need {
				t.Fatalf("round %d %s: %d given for need %d, bound %x", round, what, len(got), need, bound)
			}
		}
		var warmTags []uint64
		for _, tag := range tags {
			warmTags = append(warmTags, tag)
		}
		got, bound := x.scanFrom(nil, pos, need)
		check("warm", got, bound, warmTags)
		var coldTags []uint64
		for _, v := range ct.idx {
			if v != 0 && v != tombSlot {
				coldTags = append(coldTags, v>>32)
			}
		}
		got, bound = ct.scanFrom(nil, pos, need)
		check("cold", got, bound, coldTags)
	}
}
