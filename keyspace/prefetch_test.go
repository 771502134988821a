package keyspace

import (
	"fmt"
	"testing"
	"time"

	"concord/crdt"
)

// Prefetch is only a hint: it counts the warm keys it found and the cold
// records it read, changes no key (versions, hot flags, warm/cold), never
// blocks on a shard or the world lock, and takes any database index.
func TestPrefetchChangesNothing(t *testing.T) {
	ks, _, _ := newKS(true)
	for _, k := range []string{"a", "b", "cold"} {
		set(ks, k, "v", 0)
	}
	ks.PackCold(1) // everything goes cold: not accessed since the last pack
	ks.PackCold(1)
	if ks.Stats.ColdKeys.Load() != 3 {
		t.Fatalf("cold keys %d, want 3", ks.Stats.ColdKeys.Load())
	}
	set(ks, "a", "v2", 0) // a and b warm again, cold stays cold
	set(ks, "b", "v2", 0)
	ks.PackCold(1) // a and b now not hot, still warm
	state := func() (out []any) {
		for _, k := range []string{"a", "b"} {
			s := ks.dbs[0].shardOf(k)
			e := s.entry(k)
			out = append(out, e.hot, e.ver, e.live)
		}
		return append(out, ks.Stats.WarmKeys.Load(), ks.Stats.ColdKeys.Load(), ks.Stats.KeyspaceHits.Load())
	}
	before := state()
	ks.Prefetch(0, [][]byte{[]byte("a"), []byte("b"), []byte("cold"), []byte("missing")}, nil, 0)
	if n := ks.Stats.Prefetched.Load(); n != 2 {
		t.Fatalf("prefetched %d keys, want 2 (a, b)", n)
	}
	if n := ks.Stats.PrefetchedCold.Load(); n != 1 {
		t.Fatalf("prefetched %d cold records, want 1 (cold; missing has none)", n)
	}
	if after := state(); len(after) != len(before) || func() bool {
		for i := range after {
			if after[i] != before[i] {
				return true
			}
		}
		return false
	}() {
		t.Fatalf("prefetch changed keys: %v -> %v", before, after)
	}

	// members and fields: looked up beside their keys, changing nothing
	sk, hk := Key{Key: "set"}, Key{Key: "hash"}
	ks.Run([]Key{sk, hk}, func(tx *Tx) error {
		tx.Apply(sk, crdt.SAdd(tx.State(sk), tx.Op(), [][]byte{[]byte("m")}))
		tx.Apply(hk, crdt.HSet(tx.State(hk), tx.Op(), [][]byte{[]byte("f"), []byte("v")}))
		return nil
	})
	before = state()
	n0 := ks.Stats.Prefetched.Load()
	b := func(s string) []byte { return []byte(s) }
	ks.Prefetch(0, [][]byte{b("set"), b("set"), b("hash"), b("hash"), b("a"), b("missing")},
		[][]byte{b("m"), b("nope"), b("f"), nil, b("x")}, ^uint32(0)) // (elems shorter than keys; every value read)
	if n := ks.Stats.Prefetched.Load() - n0; n != 5 {
		t.Fatalf("prefetched %d keys with elements, want 5", n)
	}
	if after := state(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("an element prefetch changed keys: %v -> %v", before, after)
	}

	keys := []Key{{Key: "a"}, {Key: "b"}, {DB: 99, Key: "a"}, {Key: "cold"}}
	ks.Run(keys[:2], func(tx *Tx) error { // inside a tx (the applier's)
		tx.Prefetch(keys[:3])
		return nil
	})
	if after := state(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a tx's prefetch changed keys: %v -> %v", before, after)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("a tx prefetched a key it does not hold")
			}
		}()
		other, _, _ := newKS(true) // (a panic in Run leaves its locks held)
		other.Run(keys[:1], func(tx *Tx) error { tx.Prefetch(keys[3:]); return nil })
	}()

	// two keys of one shard: its lock taken once, both found
	same := ""
	for i := 0; same == ""; i++ {
		if k := fmt.Sprint("s", i); ks.dbs[0].shardOf(k) == ks.dbs[0].shardOf("a") {
			same = k
		}
	}
	set(ks, same, "v", 0)
	n0 = ks.Stats.Prefetched.Load()
	ks.Prefetch(0, [][]byte{[]byte("a"), []byte(same), []byte("a")}, nil, 0)
	if n := ks.Stats.Prefetched.Load() - n0; n != 3 {
		t.Fatalf("prefetched %d keys of one shard, want 3", n)
	}
	ks.Stats.Prefetched.Store(2) // as after the first Prefetch: the counts below start from it

	done := make(chan struct{})
	go func() {
		defer close(done)
		s := ks.dbs[0].shardOf("a")
		s.mu.Lock() // a shard another transaction holds: skipped
		ks.Prefetch(0, [][]byte{[]byte("a"), []byte("b")}, nil, 0)
		s.mu.Unlock()
		ks.world.Lock() // RunAll: nothing
		ks.Prefetch(0, [][]byte{[]byte("a"), []byte("b")}, nil, 0)
		ks.world.Unlock()
		ks.Prefetch(-1, [][]byte{[]byte("a")}, nil, 0)
		ks.Prefetch(len(ks.dbs), [][]byte{[]byte("a")}, nil, 0)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Prefetch blocked")
	}
	want := uint64(3)
	if ks.dbs[0].shardOf("a") == ks.dbs[0].shardOf("b") {
		want = 2
	}
	if n := ks.Stats.Prefetched.Load(); n != want {
		t.Fatalf("prefetched %d keys, want %d (b only, beside a locked shard)", n, want)
	}
}

// The staged lookups of members and fields in big tables (slots, several
// parts: TouchSlot, then Peek) find what is there, miss what is not, and
// change nothing: the sets' and hashes' lengths and HLEN's kept count.
func TestPrefetchBigElements(t *testing.T) {
	ks, _, _ := newKS(true)
	sk, hk := Key{Key: "bigset"}, Key{Key: "bighash"}
	const n = 5000 // four parts or more
	for i := 0; i < n; i += 500 {
		ks.Run([]Key{sk, hk}, func(tx *Tx) error {
			var ms, fv [][]byte
			for j := i; j < i+500; j++ {
				ms = append(ms, []byte(fmt.Sprint("m", j)))
				fv = append(fv, []byte(fmt.Sprint("f", j)), []byte(fmt.Sprint("v", j)))
			}
			tx.Apply(sk, crdt.SAdd(tx.State(sk), tx.Op(), ms))
			tx.Apply(hk, crdt.HSet(tx.State(hk), tx.Op(), fv))
			return nil
		})
	}
	lens := func() string {
		var out string
		ks.Run([]Key{sk, hk}, func(tx *Tx) error {
			s, h := tx.Get(sk), tx.Get(hk)
			hlen := h.HashLen() // (counts once, then keeps the count)
			aux, known := h.Hash.Aux()
			out = fmt.Sprint(s.Set.Len(), h.Hash.Len(), hlen, aux, known)
			return nil
		})
		return out
	}
	before := lens()
	for round := range 50 {
		var keys, elems [][]byte
		for j := range 16 { // a pipeline: present and absent elements of both
			i := (round*16 + j) * 7 % (2 * n)
			if j%2 == 0 {
				keys, elems = append(keys, []byte("bigset")), append(elems, []byte(fmt.Sprint("m", i)))
			} else {
				keys, elems = append(keys, []byte("bighash")), append(elems, []byte(fmt.Sprint("f", i)))
			}
		}
		n0 := ks.Stats.Prefetched.Load()
		ks.Prefetch(0, keys, elems, ^uint32(0))
		if got := ks.Stats.Prefetched.Load() - n0; got != 16 {
			t.Fatalf("round %d: prefetched %d keys, want 16", round, got)
		}
	}
	if after := lens(); after != before {
		t.Fatalf("prefetching elements changed the collections: %s -> %s", before, after)
	}
}
