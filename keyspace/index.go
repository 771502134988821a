package keyspace

import "iter"

// index is a shard's warm keys: each entry under its key's hashKey, with
// the key's name beside it. A Go map of names made every lookup compare the
// name it found with the one asked for before returning the entry, and the
// name is in the entry (entryWithString's first line), out of the cache
// for a key not used lately: that compare waited for memory, a key after
// another, and Prefetch could not issue the entries' loads of a pipeline's
// keys together (a quarter of a SET -P 16 profile was its lookups, half of
// that the compare). Here a lookup by hash reads only the map's own memory
// and returns the entry and the name without reading either, so Prefetch
// loads them for all its keys at once and the command's own lookup
// compares names already in the cache.
//
// Two keys of a shard may share a hash (FNV-1a's 64 bits: rare by chance,
// but names can be made to): the second goes to over, a map by name, which
// a lookup reads only when the hash's slot holds another key or none and
// over is not empty.
type index struct {
	byHash map[uint64]slot
	over   map[string]*entry
}

// slot is a key's name and entry.
type slot struct {
	key string
	e   *entry
}

func newIndex(n int) index { return index{byHash: make(map[uint64]slot, n)} }

// get returns the entry of key, whose hashKey is h (nil if none).
func (x *index) get(h uint64, key string) *entry {
	if sl, ok := x.byHash[h]; ok && sl.key == key {
		return sl.e
	}
	if len(x.over) == 0 {
		return nil
	}
	return x.over[key]
}

// peek returns the slot under h without comparing its name (Prefetch).
func (x *index) peek(h uint64) slot { return x.byHash[h] }

// put sets key's entry (h: its hashKey).
func (x *index) put(h uint64, key string, e *entry) {
	if len(x.over) > 0 {
		if _, ok := x.over[key]; ok {
			x.over[key] = e
			return
		}
	}
	if sl, ok := x.byHash[h]; ok && sl.key != key {
		if x.over == nil {
			x.over = map[string]*entry{}
		}
		x.over[key] = e
		return
	}
	x.byHash[h] = slot{key, e}
}

// del removes key (h: its hashKey). A key of over keeps its place when the
// slot of its hash empties (lookups read over when the slot does not hold
// their key).
func (x *index) del(h uint64, key string) {
	if sl, ok := x.byHash[h]; ok && sl.key == key {
		delete(x.byHash, h)
		return
	}
	delete(x.over, key)
}

func (x *index) len() int { return len(x.byHash) + len(x.over) }

// all yields every key and entry, like ranging over a map: the loop may
// remove the key it is at, and changes made meanwhile (with the shard's
// lock let go) may or may not be seen.
func (x *index) all() iter.Seq2[string, *entry] {
	return func(yield func(string, *entry) bool) {
		for _, sl := range x.byHash {
			if !yield(sl.key, sl.e) {
				return
			}
		}
		for k, e := range x.over {
			if !yield(k, e) {
				return
			}
		}
	}
}

// rebuilt returns a copy sized for what x holds now (Go maps never
// shrink: PackCold rebuilds an index that emptied out).
func (x *index) rebuilt() index {
	y := newIndex(len(x.byHash))
	for h, sl := range x.byHash {
		y.byHash[h] = sl
	}
	if len(x.over) > 0 {
		y.over = make(map[string]*entry, len(x.over))
		for k, e := range x.over {
			y.over[k] = e
		}
	}
	return y
}

// entry returns key's warm entry (nil if none).
func (s *shard) entry(key string) *entry { return s.m.get(hashKey(key), key) }
