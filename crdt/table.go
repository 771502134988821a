package crdt

import (
	"hash/maphash"
	"iter"
	"unsafe"
)

// tableSeed seeds every Table's hash: random per process, so that a
// client cannot choose members or fields that collide (a probe through
// thousands of them per command).
var tableSeed = maphash.MakeSeed()

// tableSmall is the most entries a Table keeps without slots: a lookup
// compares the names one after another (most hashes and sets are small;
// their slots would be memory of their own).
const tableSmall = 8

// Table is a set's members (Table[[]Dot]) or a hash's fields
// (Table[*Reg]): its entries, in an array of their own in no particular
// order, and a table of slots (open addressing, linear probing) holding
// each entry's index and the top half of its name's hash.
//
// A Go map did the same job, but a lookup in a big one (redis-benchmark's
// SADD and HSET: one key, 100k members) waited for memory three times one
// after another — its group's control word, the slot, the name to
// compare — and Prefetch could not start those loads for a pipeline's
// sixteen commands together, as it does for their keys: a map's
// internals are not reachable. Here a name's slot is where its hash says
// (TouchSlot reads that line), the entry a slot points to is found by the
// hash alone (TouchEntry reads it and the name's first byte), and the
// command's own lookup then reads only what is in the cache.
//
// Deleting entry i moves the last entry into its place, so All, which
// runs from the last entry to the first, may delete the entry it yields
// (never another: an entry moved into a place not yet reached would be
// yielded twice). Inserting during All is allowed (the new entry is not
// yielded). A nil *Table is an empty one for reading.
type Table[V any] struct {
	ents  []tableEnt[V]
	slots []uint64 // 0: empty; else the hash's top 32 bits << 32 | (entry index + 1)
	shift uint8    // 64 - log2(len(slots))
}

type tableEnt[V any] struct {
	key string
	val V
}

// NewTable returns an empty table with room for n entries.
func NewTable[V any](n int) *Table[V] {
	t := &Table[V]{}
	if n > 0 {
		t.ents = make([]tableEnt[V], 0, n)
		if n > tableSmall {
			t.rehash(n)
		}
	}
	return t
}

// TableHash is the hash of name a Table files it under (for TouchSlot and
// TouchEntry).
func TableHash(name []byte) uint64 { return maphash.Bytes(tableSeed, name) }

func tableHashString(name string) uint64 { return maphash.String(tableSeed, name) }

// Len returns the number of entries.
func (t *Table[V]) Len() int {
	if t == nil {
		return 0
	}
	return len(t.ents)
}

func (t *Table[V]) home(h uint64) int { return int((h * 0x9e3779b97f4a7c15) >> t.shift) }

// find returns the index of name's entry, or -1.
func (t *Table[V]) find(name string) int {
	if t == nil {
		return -1
	}
	if t.slots == nil {
		for i := range t.ents {
			if t.ents[i].key == name {
				return i
			}
		}
		return -1
	}
	h := tableHashString(name)
	fp := h >> 32 << 32
	mask := len(t.slots) - 1
	for p := t.home(h); ; p = (p + 1) & mask {
		s := t.slots[p]
		if s == 0 {
			return -1
		}
		if s&^0xffffffff == fp {
			if i := int(uint32(s)) - 1; t.ents[i].key == name {
				return i
			}
		}
	}
}

// Get returns name's value (the zero value if none).
func (t *Table[V]) Get(name string) V {
	if i := t.find(name); i >= 0 {
		return t.ents[i].val
	}
	var zero V
	return zero
}

// Lookup returns name's value and whether name has an entry.
func (t *Table[V]) Lookup(name string) (V, bool) {
	if i := t.find(name); i >= 0 {
		return t.ents[i].val, true
	}
	var zero V
	return zero, false
}

// GetBytes is Get of a name in bytes (not kept).
func (t *Table[V]) GetBytes(name []byte) V {
	return t.Get(unsafe.String(unsafe.SliceData(name), len(name)))
}

// LookupBytes is Lookup of a name in bytes (not kept).
func (t *Table[V]) LookupBytes(name []byte) (V, bool) {
	return t.Lookup(unsafe.String(unsafe.SliceData(name), len(name)))
}

// Has reports whether name has an entry.
func (t *Table[V]) Has(name string) bool { return t.find(name) >= 0 }

// Put sets name's value (name is kept: the caller's own).
func (t *Table[V]) Put(name string, v V) {
	if i := t.find(name); i >= 0 {
		t.ents[i].val = v
		return
	}
	t.ents = append(t.ents, tableEnt[V]{name, v})
	n := len(t.ents)
	if t.slots == nil {
		if n > tableSmall {
			t.rehash(n)
		}
		return
	}
	if n*4 > len(t.slots)*3 {
		t.rehash(n)
		return
	}
	t.place(tableHashString(name), n-1)
}

// place files entry i, whose name hashes to h, in its slot.
func (t *Table[V]) place(h uint64, i int) {
	mask := len(t.slots) - 1
	p := t.home(h)
	for t.slots[p] != 0 {
		p = (p + 1) & mask
	}
	t.slots[p] = h>>32<<32 | uint64(uint32(i+1))
}

// rehash makes slots for n entries (at most 3/4 full) and files every
// entry in them.
func (t *Table[V]) rehash(n int) {
	c, bits := 16, uint8(4)
	for c*3/4 < n {
		c, bits = c*2, bits+1
	}
	if cap(t.slots) >= c && cap(t.slots) < 4*c {
		t.slots = t.slots[:c]
		clear(t.slots)
	} else {
		t.slots = make([]uint64, c)
	}
	t.shift = 64 - bits
	for i := range t.ents {
		t.place(tableHashString(t.ents[i].key), i)
	}
}

// Delete removes name's entry, if any: the last entry takes its place.
func (t *Table[V]) Delete(name string) {
	i := t.find(name)
	if i < 0 {
		return
	}
	last := len(t.ents) - 1
	if t.slots != nil {
		t.unslot(tableHashString(name), i)
		if i != last {
			t.reslot(tableHashString(t.ents[last].key), last, i)
		}
	}
	t.ents[i] = t.ents[last]
	t.ents[last] = tableEnt[V]{}
	t.ents = t.ents[:last]
	if last <= tableSmall/2 && t.slots != nil { // back to a small table
		t.slots, t.shift = nil, 0
	}
}

// slotOf returns the slot holding entry i, whose name hashes to h.
func (t *Table[V]) slotOf(h uint64, i int) int {
	want := h>>32<<32 | uint64(uint32(i+1))
	mask := len(t.slots) - 1
	p := t.home(h)
	for t.slots[p] != want {
		p = (p + 1) & mask
	}
	return p
}

// reslot points the slot of entry from (hash h) at entry to.
func (t *Table[V]) reslot(h uint64, from, to int) {
	p := t.slotOf(h, from)
	t.slots[p] = h>>32<<32 | uint64(uint32(to+1))
}

// unslot empties the slot of entry i (hash h), moving back the slots
// after it that may (backward-shift deletion: no tombstones).
func (t *Table[V]) unslot(h uint64, i int) {
	mask := len(t.slots) - 1
	p := t.slotOf(h, i)
	for q := (p + 1) & mask; ; q = (q + 1) & mask {
		s := t.slots[q]
		if s == 0 {
			break
		}
		// the entry at q may move to p when its home is not in (p, q]
		home := t.home(tableHashString(t.ents[int(uint32(s))-1].key))
		if (q-home)&mask >= (q-p)&mask {
			t.slots[p] = s
			p = q
		}
	}
	t.slots[p] = 0
}

// Clear removes every entry, keeping the memory.
func (t *Table[V]) Clear() {
	clear(t.ents)
	t.ents = t.ents[:0]
	if t.slots != nil {
		clear(t.slots)
	}
}

// All yields each entry, from the last to the first (see Table).
func (t *Table[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		if t == nil {
			return
		}
		for i := len(t.ents) - 1; i >= 0; i-- {
			if i >= len(t.ents) { // (an entry was deleted)
				continue
			}
			if !yield(t.ents[i].key, t.ents[i].val) {
				return
			}
		}
	}
}

// Keys yields each name (see All).
func (t *Table[V]) Keys() iter.Seq[string] {
	return func(yield func(string) bool) {
		for k := range t.All() {
			if !yield(k) {
				return
			}
		}
	}
}

// Clone returns a copy of t whose values are copied by cp.
func (t *Table[V]) Clone(cp func(V) V) *Table[V] {
	if t == nil {
		return nil
	}
	o := &Table[V]{ents: make([]tableEnt[V], len(t.ents)), shift: t.shift}
	for i, e := range t.ents {
		o.ents[i] = tableEnt[V]{e.key, cp(e.val)}
	}
	if t.slots != nil {
		o.slots = append([]uint64(nil), t.slots...)
	}
	return o
}

// TouchSlot reads the line of the slot where the name hashing to h
// starts its probe (the first of Prefetch's three stages).
func (t *Table[V]) TouchSlot(h uint64) uint64 {
	if t == nil || t.slots == nil {
		if t != nil && len(t.ents) > 0 {
			return uint64(len(t.ents[0].key))
		}
		return 0
	}
	return t.slots[t.home(h)]
}

// Peek returns the value of the first entry whose slot matches h's top
// bits on h's probe, and the first byte of its name read, without
// comparing names (Prefetch's second stage: what it reads is what the
// lookup will read; another name of the same top bits is a wasted load).
// ok is false when none matches or t is small.
func (t *Table[V]) Peek(h uint64) (v V, sink uint64, ok bool) {
	if t == nil || t.slots == nil {
		return v, 0, false
	}
	fp := h >> 32 << 32
	mask := len(t.slots) - 1
	for p := t.home(h); ; p = (p + 1) & mask {
		s := t.slots[p]
		if s == 0 {
			return v, 0, false
		}
		if s&^0xffffffff == fp {
			e := &t.ents[int(uint32(s))-1]
			if len(e.key) > 0 {
				sink = uint64(e.key[0])
			}
			return e.val, sink, true
		}
	}
}
