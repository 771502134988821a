package keyspace

import "iter"

// index is a shard's warm keys: each entry under its key's hashKey, with
// the key's name beside it, in a table of our own (open addressing, linear
// probing). A Go map of names made every lookup compare the name it found
// with the one asked for before returning the entry, and the name is in
// the entry (entryWithString's first line), out of the cache for a key not
// used lately: that compare waited for memory, a key after another. A Go
// map by hash read only its own memory, but a lookup still waited for its
// group's control word and then its slot, and Prefetch could not issue
// those loads for a pipeline's keys together. Here a key's slot is where
// its hash says (touch reads that line for every key first), a lookup by
// hash (peek) then reads what is already in the cache, and the command's
// own lookup compares names already loaded. Two keys may share a hash
// (FNV-1a's 64 bits: rare by chance, but names can be made to): each has
// its slot, a lookup compares names.
type index struct {
	slots []islot // len a power of two (nil: empty, never grown)
	shift uint8   // 64 - log2(len(slots)): a hash's home slot is its top bits after a multiply
	n     int     // live slots
	used  int     // live and deleted slots (a probe goes on past both)
}

// islot is a slot of the table: a key's hash, entry and name; e nil is a
// slot never used, deleted one whose key was deleted.
type islot struct {
	h   uint64
	e   *entry
	key string
}

// slot is a key's name and entry.
type slot struct {
	key string
	e   *entry
}

// deleted marks a slot whose key was deleted (never read or written).
var deleted = new(entry)

func newIndex(n int) index {
	var x index
	if n > 0 {
		x.alloc(n)
	}
	return x
}

// alloc gives x an empty table for n keys (at most 3/4 full).
func (x *index) alloc(n int) {
	c, bits := 8, uint8(3)
	for c*3/4 < n {
		c, bits = c*2, bits+1
	}
	x.slots, x.shift, x.n, x.used = make([]islot, c), 64-bits, 0, 0
}

// home is the slot where h's probe starts: the top bits of fib(h) (the
// shard took h's low bits), so that slots follow the order of scanTag, the
// cold table's too (see ScanPage).
func (x *index) home(h uint64) int { return int(fib(h) >> x.shift) }

// get returns the entry of key, whose hashKey is h (nil if none).
func (x *index) get(h uint64, key string) *entry {
	e, _ := x.getName(h, key)
	return e
}

// getName is get that also returns the name the index keeps for key (the
// keyspace's own: a caller's may point into memory it lends, see
// Tx.MergeReceived).
func (x *index) getName(h uint64, key string) (*entry, string) {
	if x.n == 0 {
		return nil, ""
	}
	mask := len(x.slots) - 1
	for p := x.home(h); ; p = (p + 1) & mask {
		s := &x.slots[p]
		if s.e == nil {
			return nil, ""
		}
		if s.h == h && s.e != deleted && s.key == key {
			return s.e, s.key
		}
	}
}

// touch reads the line of h's home slot (Prefetch: every key's first, so
// that their loads overlap) and returns a word of it.
func (x *index) touch(h uint64) uint64 {
	if x.n == 0 {
		return 0
	}
	return x.slots[x.home(h)].h
}

// peek returns the first slot under h without comparing its name
// (Prefetch): its key, or another of the same hash.
func (x *index) peek(h uint64) slot {
	if x.n == 0 {
		return slot{}
	}
	mask := len(x.slots) - 1
	for p := x.home(h); ; p = (p + 1) & mask {
		s := &x.slots[p]
		if s.e == nil {
			return slot{}
		}
		if s.h == h && s.e != deleted {
			return slot{s.key, s.e}
		}
	}
}

// put sets key's entry (h: its hashKey).
func (x *index) put(h uint64, key string, e *entry) {
	if x.slots == nil {
		x.alloc(1)
	}
	mask := len(x.slots) - 1
	free := -1 // the first deleted slot on the probe
	p := x.home(h)
	for ; x.slots[p].e != nil; p = (p + 1) & mask {
		s := &x.slots[p]
		if s.e == deleted {
			if free < 0 {
				free = p
			}
		} else if s.h == h && s.key == key {
			s.e = e
			return
		}
	}
	if free >= 0 { // a deleted slot reused: used stays
		x.slots[free] = islot{h: h, e: e, key: key}
		x.n++
		return
	}
	if (x.used+1)*4 > len(x.slots)*3 { // full: a table for what lives
		x.grow()
		x.put(h, key, e)
		return
	}
	x.slots[p] = islot{h: h, e: e, key: key}
	x.n++
	x.used++
}

// grow moves the live slots to a new table with room for twice as many
// (deleted slots are dropped: as big a table when they were most of it).
func (x *index) grow() {
	old := x.slots
	x.alloc(max(2*x.n, 1))
	x.refill(old)
}

// refill puts the live slots of old into x.
func (x *index) refill(old []islot) {
	mask := len(x.slots) - 1
	for i := range old {
		s := &old[i]
		if s.e == nil || s.e == deleted {
			continue
		}
		p := x.home(s.h)
		for x.slots[p].e != nil {
			p = (p + 1) & mask
		}
		x.slots[p] = *s
		x.n++
		x.used++
	}
}

// del removes key (h: its hashKey).
func (x *index) del(h uint64, key string) {
	if x.n == 0 {
		return
	}
	mask := len(x.slots) - 1
	for p := x.home(h); ; p = (p + 1) & mask {
		s := &x.slots[p]
		if s.e == nil {
			return
		}
		if s.h == h && s.e != deleted && s.key == key {
			*s = islot{h: 0, e: deleted} // (the name and the entry let go)
			x.n--
			return
		}
	}
}

func (x *index) len() int { return x.n }

// all yields every key and entry, like ranging over a map: the loop may
// remove the key it is at, and changes made meanwhile (with the shard's
// lock let go) may or may not be seen. A key is yielded once, with the
// entry it has then; one deleted before the loop reached it is not. When
// the table grew (or was replaced) meanwhile, the loop goes on over the
// slots it started with, yielding those keys the index still holds.
func (x *index) all() iter.Seq2[string, *entry] {
	return func(yield func(string, *entry) bool) {
		start := x.slots
		for i := range start {
			s := start[i]
			if s.e == nil || s.e == deleted {
				continue
			}
			if len(x.slots) != len(start) || &x.slots[0] != &start[0] {
				if s.e = x.get(s.h, s.key); s.e == nil {
					continue
				}
			}
			if !yield(s.key, s.e) {
				return
			}
		}
	}
}

// rebuilt returns a copy sized for what x holds now (PackCold rebuilds an
// index that emptied out: a table never shrinks by itself).
func (x *index) rebuilt() index {
	var y index
	if x.n > 0 {
		y.alloc(x.n)
		y.refill(x.slots)
	}
	return y
}

// entry returns key's warm entry (nil if none).
func (s *shard) entry(key string) *entry { return s.m.get(hashKey(key), key) }
