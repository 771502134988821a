package keyspace

import (
	"sync"
	"sync/atomic"

	"concord/crdt"
)

// Cold keys. A key nobody read or wrote between two runs of PackCold is
// kept in crdt's packed form (a few dozen bytes for a small string key
// instead of a ~550-byte *crdt.State with its maps, slices and timestamps)
// and unpacked by the next access through a Tx. Readers outside a Tx
// (checkpoints, anti-entropy digests, SCAN's type filter) unpack a
// temporary copy and leave the entry cold.

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

// view returns e's state: its own when warm, an unpacked copy when cold.
// The caller must not modify it.
func (ks *Keyspace) view(e *entry) *crdt.State {
	if e.st != nil {
		return e.st
	}
	st := &crdt.State{}
	ks.unpack(st, e)
	return st
}

func (ks *Keyspace) unpack(st *crdt.State, e *entry) {
	if err := crdt.UnpackInto(st, e.packed, &ks.regions); err != nil {
		// our own bytes, in memory: a bug, not bad input
		panic("keyspace: cannot unpack a cold entry: " + err.Error())
	}
}

// warm replaces the cold entry e of key with a warm one (under s.mu).
func (s *shard) warm(key string, e *entry) *entry {
	ne := newEntry()
	st := ne.st
	*ne = *e
	ne.st, ne.packed = st, nil
	s.ks.unpack(st, e)
	s.forgetPacked(e)
	s.m[key] = ne
	return ne
}

// forgetPacked updates the cold-key counters for an entry leaving the map
// or warming up.
func (s *shard) forgetPacked(e *entry) {
	if e.st == nil {
		s.ks.Stats.ColdKeys.Add(-1)
		s.ks.Stats.ColdBytes.Add(-int64(len(e.packed)))
	}
}

// expireAt returns the deadline of the live key of e (0: none) without
// unpacking it: the shard's expiry index holds the deadline of every live
// key that has one.
func (s *shard) expireAt(key string, e *entry) int64 {
	if !e.hasExp {
		return 0
	}
	return s.exp[key]
}

// packYield is how many entries PackCold visits per lock hold.
const packYield = 512

// PackCold packs every warm key not accessed since the previous call and
// holding at most maxElems members or fields (bigger keys stay warm: an
// access would unpack them whole); it returns how many it packed. Run it
// periodically: a key goes cold between one and two periods after its
// last access.
func (ks *Keyspace) PackCold(maxElems int) int {
	var buf []byte
	n := 0
	for _, d := range ks.dbs {
		for i := range d.shards {
			s := &d.shards[i]
			ks.world.RLock()
			s.mu.Lock()
			if len(s.pend) > 0 {
				s.settle() // digests read the warm state
			}
			seen := 0
			for key, e := range s.m {
				if seen++; seen%packYield == 0 {
					// let commands in; Go's map iteration allows the
					// changes they make meanwhile
					s.mu.Unlock()
					ks.world.RUnlock()
					ks.world.RLock()
					s.mu.Lock()
					if e = s.m[key]; e == nil { // deleted meanwhile
						continue
					}
				}
				if e.st == nil {
					continue
				}
				if e.hot || e.digStale {
					e.hot = false
					continue
				}
				if len(e.st.Set)+len(e.st.Hash) > maxElems {
					continue
				}
				buf = crdt.AppendPacked(buf[:0], e.st, &ks.regions)
				ne := &entry{}
				*ne = *e
				ne.st, ne.packed = nil, append(make([]byte, 0, len(buf)), buf...)
				s.m[key] = ne
				ks.Stats.ColdKeys.Add(1)
				ks.Stats.ColdBytes.Add(int64(len(buf)))
				n++
			}
			s.mu.Unlock()
			ks.world.RUnlock()
		}
	}
	return n
}
