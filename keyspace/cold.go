package keyspace

import (
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"concord/crdt"
)

// Cold keys. A key nobody read or wrote between two runs of PackCold leaves
// its shard's map for the shard's cold table, in crdt's packed form (a few
// dozen bytes for a small string key instead of its 448-byte entry with
// state, register and value; for other keys, instead of an entry and a
// *crdt.State with its maps, slices and timestamps; plus the map's slot
// and a long name's string); the next access through a Tx moves it back.
// Readers outside a Tx (checkpoints, anti-entropy, SCAN's type filter)
// unpack a temporary copy and leave the key cold.

// regionTable interns the region names of packed states: a handful of
// names, read lock-free, appended under a lock.
type regionTable struct {
	mu    sync.Mutex
	names atomic.Pointer[[]string]
}

// Index implements crdt.Regions.
func (t *regionTable) Index(name string) uint64 {
	if p := t.names.Load(); p != nil {
		for i, n := range *p {
			if n == name {
				return uint64(i)
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var cur []string
	if p := t.names.Load(); p != nil {
		cur = *p
	}
	for i, n := range cur {
		if n == name {
			return uint64(i)
		}
	}
	next := append(append(make([]string, 0, len(cur)+1), cur...), name)
	t.names.Store(&next)
	return uint64(len(next) - 1)
}

// Name implements crdt.Regions.
func (t *regionTable) Name(i uint64) (string, bool) {
	p := t.names.Load()
	if p == nil || i >= uint64(len(*p)) {
		return "", false
	}
	return (*p)[i], true
}

func (ks *Keyspace) unpack(st *crdt.State, packed []byte) {
	if err := crdt.UnpackInto(st, packed, &ks.regions); err != nil {
		// our own bytes, in memory: a bug, not bad input
		panic("keyspace: cannot unpack a cold key: " + err.Error())
	}
}

// unpackEntry returns a new entry holding a cold key's packed state (a
// string key's in a StringRoom), and the name the map should hold it under.
func (ks *Keyspace) unpackEntry(key string, packed []byte) (*entry, string) {
	if !crdt.PackedIsString(packed) {
		e := newEntry()
		ks.unpack(e.st, packed)
		return e, key
	}
	x, key := newStringEntry(key)
	st, err := x.room.Unpack(packed, &ks.regions)
	if err != nil {
		panic("keyspace: cannot unpack a cold key: " + err.Error())
	}
	x.e.st = st
	return &x.e, key
}

// warm moves key from the cold table back into the map (under s.mu); nil
// when key is not cold. It returns the name the map keeps: a copy of key
// when borrowed (key points into memory the keyspace must not keep).
func (s *shard) warm(key string, h uint64, borrowed bool) (*entry, string) {
	slot, off := s.cold.lookup(key)
	if slot < 0 {
		return nil, ""
	}
	r, _, end := s.cold.parse(off)
	e, name := s.ks.unpackEntry(key, r.packed)
	key = own(name, key, borrowed)
	e.live, e.hasExp, e.dirty, e.ver, e.elems, e.dig = true, r.hasExp, r.dirty, r.ver, r.elems, r.dig
	s.ks.Stats.ColdKeys.Add(-1)
	s.ks.Stats.ColdBytes.Add(-int64(len(r.packed)))
	s.ks.Stats.WarmKeys.Add(1)
	s.cold.remove(slot, off, end)
	s.m.put(h, key, e)
	s.notePeak()
	return e, key
}

// notePeak records the index's largest size: its table never shrinks by
// itself, so PackCold rebuilds an index that emptied out.
func (s *shard) notePeak() {
	if n := s.m.len(); n > s.peak {
		s.peak = n
	}
}

// stateOf returns key's state, warm or an unpacked copy of a cold one (nil
// when absent); the caller must not modify it.
func (s *shard) stateOf(key string) *crdt.State {
	if e := s.entry(key); e != nil {
		return e.st
	}
	_, off := s.cold.lookup(key)
	if off < 0 {
		return nil
	}
	r, _, _ := s.cold.parse(off)
	st := &crdt.State{}
	s.ks.unpack(st, r.packed)
	return st
}

// expireAt returns the deadline of the live key of e (0: none) from the
// shard's expiry index, which holds the deadline of every live key that
// has one, warm or cold.
func (s *shard) expireAt(key string, hasExp bool) int64 {
	if !hasExp {
		return 0
	}
	return s.exp[key]
}

// Usage estimates the memory k takes, for MEMORY USAGE, without moving a
// cold key back into the map: a cold key's record and index slot; a warm
// key's entry and state (the struct plus what its encoding holds) and map
// slot. False when k is absent or expired (its deletion is left to the
// next access or the expiry cycle).
func (tx *Tx) Usage(k Key, samples int) (int64, bool) {
	s := tx.shard(k)
	if e := s.entry(k.Key); e != nil || s.cold.n == 0 {
		if e == nil || !e.live {
			return 0, false
		}
		if at := e.st.ExpireAt(); at > 0 && at <= tx.now {
			return 0, false
		}
		size := unsafe.Sizeof(entryWithState{}) + uintptr(len(k.Key))
		if e.inRoom { // a string key's entry, its name inside when short
			size = unsafe.Sizeof(entryWithString{})
			if len(k.Key) > len(entryWithString{}.name) {
				size += uintptr(len(k.Key))
			}
		}
		return int64(size+48) + int64(crdt.EncodedSize(e.st, samples)), true
	}
	slot, off := s.cold.lookup(k.Key)
	if slot < 0 {
		return 0, false
	}
	r, _, end := s.cold.parse(off)
	if at := s.expireAt(k.Key, r.hasExp); at > 0 && at <= tx.now {
		return 0, false
	}
	return int64(end-off) + 8*4/3, true // the record, an index slot at 3/4 load
}

// packYield is how many entries PackCold visits per lock hold.
var packYield = 512

// PackCold moves into the shards' cold tables every live key not accessed
// since the previous call and holding at most maxElems members or fields
// (bigger keys stay warm: an access would unpack them whole; tombstones,
// keys with GC metadata and keys whose anti-entropy digest awaits
// recomputation stay warm too); it returns how many it packed. Run it
// periodically: a key goes cold between one and two periods after its last
// access.
func (ks *Keyspace) PackCold(maxElems int) int { return ks.PackColdPart(maxElems, 0, 1) }

// PackColdPart is PackCold over the shards whose index is part modulo
// parts: calling it for every part in turn spreads a sweep's work over a
// period instead of a burst.
func (ks *Keyspace) PackColdPart(maxElems, part, parts int) int {
	var buf []byte
	var batch [packBatch]slot
	n := 0
	for _, d := range ks.dbs {
		for i := part; i < shardCount; i += parts {
			s := &d.shards[i]
			ks.world.RLock()
			s.mu.Lock()
			nb, seen := 0, 0
			pack := func() {
				// the entries are scattered over the heap: read the first
				// line of each of the batch's together, then the states
				// of those not accessed, so that their misses overlap
				var sink uint64
				for _, sl := range batch[:nb] {
					if sl.e.hot {
						sink++
					}
				}
				for _, sl := range batch[:nb] {
					if !sl.e.hot {
						sink ^= touchEntry(sl.e) ^ uint64(sl.e.st.StrT.Phys)
					}
				}
				s.sink ^= sink
				for _, sl := range batch[:nb] {
					if ks.packOne(s, sl.key, sl.e, maxElems, &buf) {
						n++
					}
				}
				clear(batch[:nb])
				nb = 0
			}
			for key, e := range s.m.all() {
				batch[nb] = slot{key: key, e: e}
				if nb++; nb < len(batch) {
					continue
				}
				pack()
				if seen += len(batch); seen >= packYield {
					// let commands in; Go's map iteration, and the index's,
					// allow the changes they make meanwhile
					seen = 0
					s.mu.Unlock()
					ks.world.RUnlock()
					ks.world.RLock()
					s.mu.Lock()
				}
			}
			pack()
			s.cold.trim()
			if s.peak >= 64 && 4*s.m.len() <= s.peak {
				s.m = s.m.rebuilt()
				s.peak = s.m.len()
			}
			s.mu.Unlock()
			ks.world.RUnlock()
		}
	}
	return n
}

// packBatch is how many entries PackCold reads ahead.
const packBatch = 16

// packOne moves the live key of e into its shard's cold table unless it
// was accessed since the last sweep (clearing the mark) or must stay warm
// (see PackCold); buf is scratch space. Under s.mu.
func (ks *Keyspace) packOne(s *shard, key string, e *entry, maxElems int, buf *[]byte) bool {
	if e.hot || e.digStale {
		e.hot = false
		return false
	}
	if !e.live || e.deadEpoch != 0 || e.metaEpoch != 0 || e.st.Set.Len()+e.st.Hash.Len() > maxElems {
		return false
	}
	*buf = crdt.AppendPacked((*buf)[:0], e.st, &ks.regions)
	r := coldRec{hasExp: e.hasExp, dirty: e.dirty, ver: e.ver, elems: e.elems, dig: e.dig, packed: *buf}
	if !s.cold.add(key, coldHash(key), r, ks.cfg.Digests) {
		return false
	}
	if e.hasExp { // the deadline map's key may be the entry's own name (merge)
		at := s.exp[key]
		delete(s.exp, key)
		s.exp[strings.Clone(key)] = at
	}
	s.m.del(hashKey(key), key)
	ks.Stats.WarmKeys.Add(-1)
	ks.Stats.ColdKeys.Add(1)
	ks.Stats.ColdBytes.Add(int64(len(*buf)))
	return true
}
