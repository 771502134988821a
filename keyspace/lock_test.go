package keyspace

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
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
		got := ks.lockShards(nil, keys)
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
			for _, s := range ks.lockShards(buf, keys) {
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
