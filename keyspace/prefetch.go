package keyspace

import (
	"sync/atomic"
	"unsafe"

	"concord/crdt"
)

// prefetchSink keeps what Prefetch read (almost never stored: the loads
// must only look used).
var prefetchSink atomic.Uint64

// MaxPrefetch is the most keys one Prefetch looks up: about what a core's
// out-of-order window and line-fill buffers can overlap (a -P 16 pipeline).
const MaxPrefetch = 16

// Prefetch brings the entries of keys in database db into the CPU's cache
// ahead of the commands that will read or write them (a client's pipeline:
// the server peeks at the commands it has buffered). A key's lookup waits
// for memory two or three times (its index slot, its entry's lines, a
// counter's increments); one after another in a tight loop, the lookups of
// several keys wait together instead of once per command, between whose
// lookups thousands of instructions run (Redis 8 prefetches a pipeline's
// keys for the same reason). So the shards' locks are all taken first: a
// lock is an atomic instruction, which would make each lookup wait for the
// one before. For a cold key (packed, see PackCold) it reads the index slot
// and the record its command will unpack. Only a hint: it changes nothing,
// looks at the first MaxPrefetch keys, skips keys whose shard's lock is
// taken, and never blocks.
//
// elems, when not nil, holds for each key a member or field (or nil) whose
// element is looked up too: a big set's or hash's element lookup waits
// for memory as a key's does (redis-benchmark's SADD and HSET: one key,
// 100k members). Bit i of vals set: key i's command reads its value (GET,
// HGET): a value longer than a string key's entry keeps is an allocation
// of its own, another wait (GET of 100-byte values: 13% of the CPU was
// the copy of each value into the reply, waiting for it).
func (ks *Keyspace) Prefetch(db int, keys, elems [][]byte, vals uint32) {
	if db < 0 || db >= len(ks.dbs) || !ks.world.TryRLock() {
		return
	}
	d := ks.dbs[db]
	keys = keys[:min(len(keys), MaxPrefetch)]
	var of [MaxPrefetch]*shard // each key's shard, nil if its lock was taken
	var hs [MaxPrefetch]uint64 // each key's hashKey
	var held [MaxPrefetch]*shard
	nheld := 0
	for i, k := range keys {
		hs[i] = hashKey(k)
		s := &d.shards[hs[i]%shardCount]
		mine := false
		for _, h := range held[:nheld] {
			if h == s {
				mine = true
				break
			}
		}
		if !mine {
			if !s.mu.TryLock() {
				continue
			}
			held[nheld] = s
			nheld++
		}
		of[i] = s
	}
	var sink uint64
	found := 0
	var notWarm [MaxPrefetch]int // keys not in their shard's index, which may be cold
	nw := 0
	// the index's slots first (their lines, then the slots: its own
	// memory, no name compared, see index), then the entries and names
	// they point to, all of them loading together; a slot may hold another
	// key of the same hash (its loads are wasted: the command looks its key
	// up itself)
	for i := range keys {
		if s := of[i]; s != nil {
			sink ^= s.m.touch(hs[i]) // every slot's line on its way first
		}
	}
	var sl [MaxPrefetch]slot
	for i := range keys {
		if s := of[i]; s != nil {
			sl[i] = s.m.peek(hs[i])
		}
	}
	for i := range keys {
		s := of[i]
		if s == nil {
			continue
		}
		if sl[i].e != nil {
			sink ^= touchSlot(sl[i])
			found++
		} else if s.cold.n > 0 {
			notWarm[nw] = i
			nw++
		}
	}
	// then what the entries point to (a counter's increments, a member or
	// field, a value), once every entry's lines are on their way: fused
	// with the loop above, each key's chain of misses (slot, entry, its
	// increments) waited for most of its predecessor's (INCR: the
	// increments' miss was 7% of the CPU despite the prefetch)
	var eh [MaxPrefetch]uint64 // each member's or field's hash (crdt.Table.TouchSlot)
	var el [MaxPrefetch]bool   // whether key i has one
	for i := range keys {
		if of[i] != nil && sl[i].e != nil {
			el[i] = i < len(elems) && elems[i] != nil
			sink ^= touchState(sl[i].e, vals&(1<<i) != 0 && !el[i])
			if el[i] {
				var x uint64
				eh[i], x = touchElemSlot(sl[i].e, elems[i])
				sink ^= x
			}
		}
	}
	// and, once every member's or field's slot is on its way, the entries
	// the slots point to (see crdt.Table: a Go map's lookup, one after
	// another, was a fifth of SADD's and HSET's CPU at -P 16)
	for i := range keys {
		if el[i] {
			sink ^= touchElem(sl[i].e, eh[i], vals&(1<<i) != 0)
		}
	}
	// a cold key's record, which its command will unpack: the index slots
	// of all first, then the records (each load waits for none of the
	// others)
	var rec [MaxPrefetch]int
	for j, i := range notWarm[:nw] {
		rec[j] = of[i].cold.home(fib(hs[i])) // coldHash
	}
	cold := 0
	for j, i := range notWarm[:nw] {
		if o := rec[j]; o >= 0 {
			arena := of[i].cold.arena
			sink ^= uint64(arena[o])
			if o+64 < len(arena) { // a record is ~75 bytes for a small string key
				sink ^= uint64(arena[o+64])
			}
			cold++
		}
	}
	for _, s := range held[:nheld] {
		s.mu.Unlock()
	}
	ks.world.RUnlock()
	if found > 0 {
		ks.Stats.Prefetched.Add(uint64(found))
	}
	if cold > 0 {
		ks.Stats.PrefetchedCold.Add(uint64(cold))
	}
	if sink == 1 {
		prefetchSink.Store(sink)
	}
}

// Prefetch is Keyspace.Prefetch inside a transaction, for keys it holds
// (a peer's batch: the applier prefetches each next MaxPrefetch keys
// before merging them). Keys in a database out of range are skipped.
func (tx *Tx) Prefetch(keys []Key) {
	if tx.prefetched {
		return
	}
	keys = keys[:min(len(keys), MaxPrefetch)]
	// the index's slots' lines first, then the slots, then what they point
	// to (see Keyspace.Prefetch)
	var sink uint64
	var hs [MaxPrefetch]uint64
	var ss [MaxPrefetch]*shard
	known := tx.batchHashes(keys)
	for i, k := range keys {
		if k.DB >= 0 && k.DB < len(tx.ks.dbs) {
			if known != nil {
				hs[i] = known[i]
			} else {
				hs[i] = hashKey(k.Key)
			}
			ss[i] = tx.shardH(k, hs[i])
			sink ^= ss[i].m.touch(hs[i])
		}
	}
	var sl [MaxPrefetch]slot
	for i := range keys {
		if ss[i] != nil {
			sl[i] = ss[i].m.peek(hs[i])
		}
	}
	for i := range keys {
		if sl[i].e != nil {
			sink ^= touchSlot(sl[i])
		}
	}
	for i := range keys {
		if sl[i].e != nil {
			sink ^= touchState(sl[i].e, false)
		}
	}
	tx.touchSink ^= sink
}

// batchHashes returns the hashKeys of keys when keys is a part of the
// keys the tx named (bkeys, whose hashes it has), else nil.
func (tx *Tx) batchHashes(keys []Key) []uint64 {
	if len(tx.bkeys) == 0 || len(keys) == 0 {
		return nil
	}
	size := unsafe.Sizeof(Key{})
	off := uintptr(unsafe.Pointer(&keys[0])) - uintptr(unsafe.Pointer(&tx.bkeys[0])) // (wraps when keys starts before)
	if off%size != 0 || off/size >= uintptr(len(tx.bkeys)) {
		return nil
	}
	i := int(off / size)
	if len(keys) > len(tx.bkeys)-i {
		return nil
	}
	return tx.bhash[i : i+len(keys)]
}

// touchSlot reads the first things a command on the key of an index slot
// (its entry not nil) is about to read: the name (in the entry's first
// line when short), the entry's lines and its state's first.
func touchSlot(sl slot) uint64 {
	var sink uint64
	if len(sl.key) > 0 {
		sink = uint64(sl.key[0])
	}
	return sink ^ touchEntry(sl.e) ^ uint64(sl.e.st.StrT.Phys)
}

// touchState reads what a command on e is about to read beyond what
// touchSlot read: a counter's increments, and with val the string's value.
func touchState(e *entry, val bool) uint64 {
	var sink uint64
	if r := e.st.Str; r != nil {
		if len(r.Counts) > 0 { // a counter's increments (INCR)
			sink ^= touchSpan(unsafe.Pointer(&r.Counts[0]), unsafe.Sizeof(r.Counts[0]))
		}
		if val {
			sink ^= touchVal(r)
		}
	}
	return sink
}

// touchElemSlot reads the slot where the lookup of the member or field
// elem in e's set or hash starts, and returns elem's hash for touchElem
// (see crdt.Table.TouchSlot).
func touchElemSlot(e *entry, elem []byte) (h, sink uint64) {
	st := e.st
	if st.Set.Len() > 0 {
		return st.Set.TouchSlot(elem)
	}
	return st.Hash.TouchSlot(elem)
}

// touchElem reads the entry the slot of touchElemSlot points to: the
// member's dots, or the field's register and its first assignment, and
// with val the field's value.
func touchElem(e *entry, h uint64, val bool) uint64 {
	st := e.st
	if st.Set.Len() > 0 {
		ds, sink, _ := st.Set.Peek(h)
		if len(ds) > 0 {
			sink ^= touchSpan(unsafe.Pointer(&ds[0]), unsafe.Sizeof(ds[0]))
		}
		return sink
	}
	r, sink, _ := st.Hash.Peek(h)
	if r != nil && len(r.Base) > 0 {
		sink ^= touchSpan(unsafe.Pointer(r), unsafe.Sizeof(*r)) ^ touchSpan(unsafe.Pointer(&r.Base[0]), unsafe.Sizeof(r.Base[0]))
		if val {
			sink ^= touchVal(r)
		}
	}
	return sink
}

// touchSpan reads a word of every cache line of the n bytes (n >= 8) at
// p: an object of a size class that is not a multiple of 64 (a 48-byte
// count, a 24-byte dot, a 160-byte register with its base) may straddle
// lines, and one read brought in only one of them (the other was INCR's
// miss, in Type, despite the prefetch).
func touchSpan(p unsafe.Pointer, n uintptr) uint64 {
	sink := *(*uint64)(unsafe.Add(p, n-8))
	for off := uintptr(0); off < n; off += 64 {
		sink ^= *(*uint64)(unsafe.Add(p, off))
	}
	return sink
}

// touchVal reads the first and the last byte of a register's value (the
// lines between follow them in: the CPU's own prefetcher).
func touchVal(r *crdt.Reg) uint64 {
	if len(r.Base) == 0 {
		return 0
	}
	v := r.Base[0].Val
	if len(v) == 0 {
		return 0
	}
	return uint64(v[0]) ^ uint64(v[len(v)-1])
}
