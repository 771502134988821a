package keyspace

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"concord/crdt"
)

// A transaction of many keys (a peer's batch, a big MSET) locks its shards
// through a bitmap per database, in the order every transaction locks
// them: by address, each once (two transactions taking two shards in
// different orders could deadlock). Keys of databases out of range name
// no shard.
func TestLockShardsManyInAddressOrder(t *testing.T) {
	ks, _, _ := newKS(true)
	rng := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 200; round++ {
		n := lockSortMax + 1 + rng.IntN(600)
		keys := make([]Key, n)
		for i := range keys {
			db := rng.IntN(1 + round%len(ks.dbs)) // one database, then more
			if rng.IntN(50) == 0 {
				db = len(ks.dbs) + rng.IntN(3) // out of range
			}
			keys[i] = Key{DB: db, Key: fmt.Sprint("k", rng.IntN(2*n))}
		}
		var want []*shard
		for _, k := range keys {
			if k.DB < len(ks.dbs) {
				want = append(want, ks.dbs[k.DB].shardOf(k.Key))
			}
		}
		slices.SortFunc(want, func(a, b *shard) int { return cmp.Compare(uintptrOf(a), uintptrOf(b)) })
		want = slices.Compact(want)
		var hashes []uint64 // the keys' hashKeys given (a tx's), or not
		if round%2 == 1 {
			for _, k := range keys {
				hashes = append(hashes, hashKey(k.Key))
			}
		}
		got := ks.lockShards(nil, keys, hashes)
		for _, s := range got {
			if s.mu.TryLock() {
				t.Fatalf("round %d: a shard in the list is not locked", round)
			}
			s.mu.Unlock()
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d (%d keys): %d shards locked, want %d in address order", round, n, len(got), len(want))
		}
	}
}

// BenchmarkLockShards locks and unlocks the shards of a peer's batch: 256
// keys of one database (ns/op per batch).
func BenchmarkLockShards(b *testing.B) {
	ks, _, _ := newKS(true)
	keys := make([]Key, 256)
	for i := range keys {
		keys[i] = Key{Key: fmt.Sprint("key:", rand.IntN(100000))}
	}
	buf := make([]*shard, 0, len(keys))
	b.Run("bitmap", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for _, s := range ks.lockShards(buf, keys, nil) {
				s.mu.Unlock()
			}
		}
	})
	b.Run("sort", func(b *testing.B) { // how lockShards ordered them before
		for i := 0; i < b.N; i++ {
			shards := buf[:0]
			for _, k := range keys {
				shards = append(shards, ks.dbs[k.DB].shardOf(k.Key))
			}
			slices.SortFunc(shards, func(a, b *shard) int { return cmp.Compare(uintptrOf(a), uintptrOf(b)) })
			for _, s := range slices.Compact(shards) {
				s.mu.Lock()
				s.mu.Unlock()
			}
		}
	})
}

// A transaction of many keys finds a key's touch again through its index
// (a key merged twice in a peer's batch has one touch, the same name in
// two databases two), so each key is marked dirty once, with all it had.
func TestTouchIndexOfManyKeys(t *testing.T) {
	ks, _, _ := newKS(false)
	peer := New(Config{Region: "B", Stable: func() bool { return false }}, &memStore{})
	var keys []Key
	var deltas []*crdt.State
	for i := 0; i < 20; i++ {
		for db := 0; db < 2; db++ {
			k := Key{DB: db, Key: fmt.Sprint("k", i)}
			for round := 0; round < 2; round++ {
				peer.Run([]Key{k}, func(tx *Tx) error {
					d := crdt.SAdd(tx.State(k), tx.Op(), [][]byte{[]byte(fmt.Sprint("m", round))})
					tx.Apply(k, d)
					deltas = append(deltas, d.Clone())
					return nil
				})
				keys = append(keys, k)
			}
		}
	}
	ks.Run(keys, func(tx *Tx) error {
		for i, k := range keys {
			tx.ApplyRemote(k, deltas[i], "B")
		}
		if tx.index == nil || len(tx.touched) != 40 {
			t.Fatalf("%d touches (index %v) for 40 keys merged twice each", len(tx.touched), tx.index != nil)
		}
		seen := map[Key]bool{}
		for _, tc := range tx.touched {
			if seen[tc.k] || len(tc.members) != 2 {
				t.Fatalf("key %v: touched again (%v) or members %q", tc.k, seen[tc.k], tc.members)
			}
			seen[tc.k] = true
		}
		return nil
	})
}

// Keys whose touchHash collide take the next free slots: each finds its
// own touch.
func TestTouchIndexCollisions(t *testing.T) {
	ks, _, _ := newKS(true)
	const c = 0x9e3779b97f4a7c15
	inv := uint64(c) // c's inverse mod 2^64 (Newton's iteration)
	for i := 0; i < 6; i++ {
		inv *= 2 - c*inv
	}
	a := Key{Key: "a"}
	b := Key{Key: "b", DB: int((hashKey("a") ^ hashKey("b")) * inv)} // touchHash(b) == touchHash(a)
	if touchHash(a) != touchHash(b) {
		t.Fatalf("no collision: %x %x", touchHash(a), touchHash(b))
	}
	var keys []Key
	for i := 0; i < 20; i++ {
		keys = append(keys, Key{Key: fmt.Sprint("k", i)})
	}
	ks.Run(keys, func(tx *Tx) error {
		for _, k := range keys {
			tx.touchOf(k)
		}
		ta, tb := tx.touchOf(a), tx.touchOf(b)
		if ta == tb || tx.touchOf(a) != ta || tx.touchOf(b) != tb || ta.k != a || tb.k != b {
			t.Fatalf("colliding keys: touches %p %p, found again %p %p", ta, tb, tx.touchOf(a), tx.touchOf(b))
		}
		tx.touched = tx.touched[:0] // (touches without entries: nothing to commit)
		clear(tx.index)
		return nil
	})
}

// BenchmarkTouchOf finds or adds the touches of a 256-key transaction's
// keys, each twice (ns/op per batch).
func BenchmarkTouchOf(b *testing.B) {
	ks, _, _ := newKS(true)
	keys := make([]Key, 256)
	for i := range keys {
		keys[i] = Key{Key: fmt.Sprint("key:", rand.IntN(100000))}
	}
	for i := 0; i < b.N; i++ {
		ks.Run(keys, func(tx *Tx) error {
			for _, k := range keys {
				tx.touchOf(k)
			}
			for _, k := range keys {
				tx.touchOf(k)
			}
			tx.touched = tx.touched[:0] // (touches without entries: nothing to commit)
			clear(tx.index)
			return nil
		})
	}
}

// A tx of many keys hashes each once, as it locks their shards: Prefetch
// takes the hashes of a part of its keys, a merge the next key's in
// order. Keys merged in any order (again, twice in a row, skipped, not
// named in that order) still find their entries: each key ends with one
// entry and every delta merged.
func TestBatchHashes(t *testing.T) {
	ks, _, _ := newKS(true)
	backing := make([]Key, 0, 64)
	for i := 0; i < 40; i++ {
		backing = append(backing, Key{DB: i % 25 % 2, Key: fmt.Sprint("key:", i%25)}) // (the first 15 named twice)
	}
	keys := backing[:30]
	for _, k := range keys { // every key there first (a merge finds it)
		ks.Run([]Key{k}, func(tx *Tx) error {
			tx.Apply(k, crdt.SAdd(tx.State(k), tx.Op(), [][]byte{[]byte("first")}))
			return nil
		})
	}
	warm := ks.Stats.WarmKeys.Load()
	// the order of the merges: in order, a key twice in a row, one skipped,
	// one from before, one the tx did not name first
	order := []int{0, 1, 1, 2, 4, 5, 3, 6, 7, 7, 7, 8}
	for i := 9; i < len(keys); i++ {
		order = append(order, i)
	}
	peer := New(Config{Region: "B", Stable: func() bool { return true }}, &memStore{})
	ks.Run(keys, func(tx *Tx) error {
		for _, part := range [][]Key{keys, keys[3:19], keys[29:]} {
			got := tx.batchHashes(part)
			if len(got) != len(part) {
				t.Fatalf("%d hashes for a part of %d keys", len(got), len(part))
			}
			for i, k := range part {
				if got[i] != hashKey(k.Key) {
					t.Fatalf("key %v: hash %x, want %x", k, got[i], hashKey(k.Key))
				}
			}
		}
		for _, other := range [][]Key{slices.Clone(keys[:5]), backing[25:35], nil} { // not (all) the tx's
			if got := tx.batchHashes(other); got != nil {
				t.Fatalf("hashes %x for keys the tx did not name", got)
			}
		}
		for n, i := range order {
			if n%MaxPrefetch == 0 {
				tx.Prefetch(keys[i:])
			}
			k := keys[i]
			var d *crdt.State
			peer.Run([]Key{k}, func(ptx *Tx) error {
				d = crdt.SAdd(ptx.State(k), ptx.Op(), [][]byte{[]byte(fmt.Sprint("m", n))})
				ptx.Apply(k, d)
				d = d.Clone()
				return nil
			})
			tx.MergeReceived(k, d, "B")
		}
		return nil
	})
	if got := ks.Stats.WarmKeys.Load(); got != warm {
		t.Fatalf("%d warm keys after the merges, want %d (a key given a second entry)", got, warm)
	}
	for n, i := range order {
		k := keys[i]
		ks.Run([]Key{k}, func(tx *Tx) error {
			if st := tx.Get(k); st == nil || !st.HasMember(fmt.Sprint("m", n)) || !st.HasMember("first") {
				t.Errorf("key %v: merge %d missing", k, n)
			}
			return nil
		})
	}
}

// A transaction that named no keys (RunAll: MULTI/EXEC, FLUSHALL) indexes
// its touches once it has many, sized for 32, and grows the index as they
// pass three quarters of it: every key still finds its own touch.
func TestTouchIndexGrows(t *testing.T) {
	ks, _, _ := newKS(true)
	ks.RunAll(func(tx *Tx) error {
		var keys []Key
		for i := 0; i < 500; i++ {
			k := Key{DB: i % 2, Key: fmt.Sprint("k", i)}
			keys = append(keys, k)
			if tc := tx.touchOf(k); tc.k != k {
				t.Fatalf("touch of %v is %v's", k, tc.k)
			}
		}
		if len(tx.index) < 2*len(keys) {
			t.Fatalf("index of %d slots for %d touches", len(tx.index), len(keys))
		}
		for _, k := range keys {
			if tc := tx.touchOf(k); tc.k != k {
				t.Fatalf("touch of %v found again as %v's", k, tc.k)
			}
		}
		if len(tx.touched) != len(keys) {
			t.Fatalf("%d touches for %d keys touched twice", len(tx.touched), len(keys))
		}
		tx.touched = tx.touched[:0] // (touches without entries: nothing to commit)
		return nil
	})
}
