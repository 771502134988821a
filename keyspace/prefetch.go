package keyspace

import "sync/atomic"

// prefetchSink keeps what Prefetch read (almost never stored: the loads
// must only look used).
var prefetchSink atomic.Uint64

// Prefetch brings the entries of keys in database db into the CPU's cache
// ahead of the commands that will read or write them (a client's pipeline:
// the server peeks at the commands it has buffered). A key's lookup waits
// for memory two or three times (its map group, its entry's lines); one
// after another in a tight loop, the lookups of several keys wait together
// instead of one per command, between whose lookups thousands of
// instructions run (Redis 8 prefetches a pipeline's keys for the same
// reason). Only a hint: it changes nothing, skips a shard whose lock is
// taken and keys that are cold (packed), and never blocks.
func (ks *Keyspace) Prefetch(db int, keys [][]byte) {
	if db < 0 || db >= len(ks.dbs) || !ks.world.TryRLock() {
		return
	}
	d := ks.dbs[db]
	var sink uint64
	found := 0
	for _, k := range keys {
		s := &d.shards[hashKey(k)%shardCount]
		if !s.mu.TryLock() {
			continue
		}
		if e := s.m[string(k)]; e != nil {
			sink ^= touchEntry(e)
			found++
		}
		s.mu.Unlock()
	}
	ks.world.RUnlock()
	if found > 0 {
		ks.Stats.Prefetched.Add(uint64(found))
	}
	if sink == 1 {
		prefetchSink.Store(sink)
	}
}
