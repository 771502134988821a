package crdt

import (
	"hash/maphash"
	"iter"
	"slices"
	"unsafe"
)

// tableSeed seeds every Table's hash: random per process, so that a
// client cannot choose members or fields that collide (a probe through
// thousands of them per command).
var tableSeed = maphash.MakeSeed()

const (
	// tableSmall is the most entries a part keeps without slots: a lookup
	// compares the names one after another (most hashes and sets are
	// small; their slots would be memory of their own).
	tableSmall = 8
	// partBits is the most slots a part has (log2): a part that would
	// need more splits in two instead, so that no write moves more than
	// 3/4 of 1<<partBits entries (a table of one part that doubled moved
	// all its entries: 210 ms for one SADD into a set of 1.5M members).
	partBits = 11
	// partMax is the most entries a part holds (3/4 of 1<<partBits).
	partMax = 3 << (partBits - 2)
	// slotIdx is the bits of a slot that hold its entry's index + 1 (the
	// others hold the top bits of the name's hash): a part holds at most
	// partMax+1 entries, a half of a split part as many.
	slotIdx = 12
)

// Table is a set's members (Table[[]Dot]) or a hash's fields
// (Table[*Reg]). A Go map did the job before, but a lookup in a big one
// (redis-benchmark's SADD and HSET: one key, 100k members) waited for
// memory three times one after another — its group's control word, the
// slot, the name to compare — and Prefetch could not start those loads
// for a pipeline's sixteen commands together, as it does for their keys:
// a map's internals are not reachable. Here a name's slot is where its
// hash says (TouchSlot reads that line), the entry a slot points to is
// found by the hash alone (Peek reads it and the name's first byte), and
// the command's own lookup then reads what is already in the cache.
//
// It is an extendible hash table: a directory of parts, indexed by the
// hash's top bits, each part its entries (an array, in no order) and its
// slots (open addressing, linear probing), each slot the top 52 bits of
// its name's hash and its entry's index. A part that fills up splits in
// two by the next bit of the hash; a growth or a split reads the slots
// only, never the names. So no write moves more than a part's entries
// (at most 1,536), as a Go map moves at most a table's (1,024), where
// Redis rehashes a dict a bucket at a time.
//
// Deleting entry i moves its part's last entry into its place (or, in a
// small table, the entries after it up one), and All goes on from the
// entry that took the place, so the loop may delete the entry it yields;
// it must not delete another nor insert (a split would move entries it
// has not reached yet). A nil *Table is an empty one for reading.
type Table[V any] struct {
	p   tablePart[V] // the only part while dir is nil
	dir *tableDir[V]
}

// tableDir is a table's parts once it has more than one.
type tableDir[V any] struct {
	parts []*tablePart[V] // 1<<depth, by the hash's top depth bits; a part of depth d is at 1<<(depth-d) indices in a row
	depth uint8
	auxOK bool // aux is known (see Aux)
	n     int  // entries
	aux   int
}

// Aux returns the count the table's owner keeps beside it (a hash: its
// fields holding a value, for HLEN) and whether it is known. Only a table
// of more than one part keeps one (a smaller one is quick to count), and
// any Put or Delete forgets it: an owner that changes the table or its
// values sets it again (SetAux) only when it knows the change's effect.
func (t *Table[V]) Aux() (int, bool) {
	if t == nil || t.dir == nil || !t.dir.auxOK {
		return 0, false
	}
	return t.dir.aux, true
}

// SetAux sets the owner's count (see Aux; nothing for a table of one
// part).
func (t *Table[V]) SetAux(n int) {
	if t != nil && t.dir != nil {
		t.dir.aux, t.dir.auxOK = n, true
	}
}

type tablePart[V any] struct {
	ents  []tableEnt[V]
	slots []uint64 // 0: empty; else the hash's top 52 bits | (entry index + 1)
	bits  uint8    // log2(len(slots)); 0: no slots (a small part)
	depth uint8    // the top depth bits of its entries' hashes are the same
}

type tableEnt[V any] struct {
	key string
	val V
}

// NewTable returns an empty table with room for n entries (as one part:
// a table built bigger grows by splits).
func NewTable[V any](n int) *Table[V] {
	t := &Table[V]{}
	if n > 0 {
		n = min(n, partMax)
		t.p.ents = make([]tableEnt[V], 0, n)
		if n > tableSmall {
			t.p.resize(n)
		}
	}
	return t
}

// TableHash is the hash of name a Table files it under.
func TableHash(name []byte) uint64 { return maphash.Bytes(tableSeed, name) }

func tableHashString(name string) uint64 { return maphash.String(tableSeed, name) }

// fpOf is the part of a slot that identifies its name's hash.
func fpOf(s uint64) uint64 { return s &^ (1<<slotIdx - 1) }

// Len returns the number of entries.
func (t *Table[V]) Len() int {
	switch {
	case t == nil:
		return 0
	case t.dir != nil:
		return t.dir.n
	}
	return len(t.p.ents)
}

// part returns the part of the name whose hash is h.
func (t *Table[V]) part(h uint64) *tablePart[V] {
	if t.dir == nil {
		return &t.p
	}
	return t.dir.parts[h>>(64-t.dir.depth)]
}

// home is the slot where the probe of the hash (or slot) h starts: the
// hash's bits after those the part's entries share.
func (p *tablePart[V]) home(h uint64) int { return int((h << p.depth) >> (64 - p.bits)) }

// find returns the index of name's entry (hash h), or -1.
func (p *tablePart[V]) find(name string, h uint64) int {
	if p.bits == 0 {
		for i := range p.ents {
			if p.ents[i].key == name {
				return i
			}
		}
		return -1
	}
	fp := fpOf(h)
	mask := len(p.slots) - 1
	for q := p.home(h); ; q = (q + 1) & mask {
		s := p.slots[q]
		if s == 0 {
			return -1
		}
		if fpOf(s) == fp {
			if i := int(s&(1<<slotIdx-1)) - 1; p.ents[i].key == name {
				return i
			}
		}
	}
}

// lookup returns name's part and its index there (-1 if none).
func (t *Table[V]) lookup(name string) (*tablePart[V], int) {
	if t == nil {
		return nil, -1
	}
	if t.dir == nil && t.p.bits == 0 { // (no hash needed)
		return &t.p, t.p.find(name, 0)
	}
	h := tableHashString(name)
	p := t.part(h)
	return p, p.find(name, h)
}

// Get returns name's value (the zero value if none).
func (t *Table[V]) Get(name string) V {
	if p, i := t.lookup(name); i >= 0 {
		return p.ents[i].val
	}
	var zero V
	return zero
}

// Lookup returns name's value and whether name has an entry.
func (t *Table[V]) Lookup(name string) (V, bool) {
	if p, i := t.lookup(name); i >= 0 {
		return p.ents[i].val, true
	}
	var zero V
	return zero, false
}

// GetBytes is Get of a name in bytes (not kept).
func (t *Table[V]) GetBytes(name []byte) V {
	return t.Get(unsafe.String(unsafe.SliceData(name), len(name)))
}

// Has reports whether name has an entry.
func (t *Table[V]) Has(name string) bool {
	_, i := t.lookup(name)
	return i >= 0
}

// Put sets name's value (name is kept: the caller's own).
func (t *Table[V]) Put(name string, v V) {
	var h uint64
	var p *tablePart[V]
	if t.dir == nil && t.p.bits == 0 {
		p = &t.p
		if i := p.find(name, 0); i >= 0 {
			p.ents[i].val = v
			return
		}
	} else {
		h = tableHashString(name)
		p = t.part(h)
		if t.dir != nil {
			t.dir.auxOK = false
		}
		if i := p.find(name, h); i >= 0 {
			p.ents[i].val = v
			return
		}
	}
	p.ents = append(p.ents, tableEnt[V]{name, v})
	if t.dir != nil {
		t.dir.n++
	}
	n := len(p.ents)
	if p.bits == 0 { // (h not computed)
		if n > tableSmall {
			p.resize(n)
		}
		return
	}
	p.place(fpOf(h), n-1) // (a slot is free: at most 3/4 were used)
	switch {
	case n > partMax:
		t.split(p)
	case n*4 > 3<<p.bits:
		p.resize(n)
	}
}

// place files entry i, whose name's hash's top bits are fp, in its slot.
func (p *tablePart[V]) place(fp uint64, i int) {
	mask := len(p.slots) - 1
	q := p.home(fp)
	for p.slots[q] != 0 {
		q = (q + 1) & mask
	}
	p.slots[q] = fp | uint64(i+1)
}

// resize gives p slots for n entries (at most 3/4 full) and files its
// entries in them: from its slots, when it has some (no name hashed), else
// from the names.
func (p *tablePart[V]) resize(n int) {
	bits := uint8(4)
	for 3<<bits < 4*n {
		bits++
	}
	old := p.slots
	p.slots, p.bits = make([]uint64, 1<<bits), bits
	if old != nil {
		for _, s := range old {
			if s != 0 {
				p.place(fpOf(s), int(s&(1<<slotIdx-1))-1)
			}
		}
		return
	}
	for i := range p.ents {
		p.place(fpOf(tableHashString(p.ents[i].key)), i)
	}
}

// split replaces p by two parts, by the next bit of its entries' hashes,
// and splits again a half that is still over partMax: entries put in the
// order of another table's All (Merge copying a delta's members, a
// decoder) come sorted by their hashes' top bits, so all of a part's may
// share the next bit (a set built from a 20k-member delta had a part of
// 4,922 entries, past what a slot's index holds).
func (t *Table[V]) split(p *tablePart[V]) {
	if p.depth >= 64-slotIdx-partBits-1 { // (52-bit hashes alike: never, short of a broken hash)
		panic("crdt: Table part cannot split")
	}
	var half [2]*tablePart[V]
	var count [2]int
	bit := 63 - p.depth
	for _, s := range p.slots {
		if s != 0 {
			count[s>>bit&1]++
		}
	}
	for b := range half {
		q := &tablePart[V]{depth: p.depth + 1, ents: make([]tableEnt[V], 0, max(count[b]+count[b]/4, tableSmall))}
		q.bits = 4
		for 3<<q.bits < 4*(count[b]+1) {
			q.bits++
		}
		q.slots = make([]uint64, 1<<q.bits)
		half[b] = q
	}
	for _, s := range p.slots {
		if s != 0 {
			q := half[s>>bit&1]
			q.ents = append(q.ents, p.ents[int(s&(1<<slotIdx-1))-1])
			q.place(fpOf(s), len(q.ents)-1)
		}
	}
	t.install(p, half)
	for _, q := range half {
		if len(q.ents) > partMax {
			t.split(q)
		}
	}
}

// install puts the halves of p in its place in the directory.
func (t *Table[V]) install(p *tablePart[V], half [2]*tablePart[V]) {
	d := t.dir
	if d == nil {
		t.dir = &tableDir[V]{parts: []*tablePart[V]{half[0], half[1]}, depth: 1, n: len(p.ents)}
		t.p = tablePart[V]{}
		return
	}
	if p.depth == d.depth { // the directory doubles: each part at twice the indices
		parts := make([]*tablePart[V], 2*len(d.parts))
		for i, q := range d.parts {
			parts[2*i], parts[2*i+1] = q, q
		}
		d.parts, d.depth = parts, d.depth+1
	}
	span := 1 << (d.depth - p.depth) // p's indices, in a row; the first half is bit 0's
	for i, q := range d.parts {
		if q == p {
			for j := range span {
				d.parts[i+j] = half[j*2/span]
			}
			break
		}
	}
}

// Delete removes name's entry, if any: its part's last entry takes its
// place (in a small table, the entries after it move up one).
func (t *Table[V]) Delete(name string) {
	p, i := t.lookup(name)
	if i < 0 {
		return
	}
	last := len(p.ents) - 1
	if p.bits == 0 { // a small table keeps its order (HGETALL's, as Redis's listpack)
		copy(p.ents[i:], p.ents[i+1:])
	} else {
		p.unslot(fpOf(tableHashString(name)), i)
		if i != last {
			p.reslot(fpOf(tableHashString(p.ents[last].key)), last, i)
		}
		p.ents[i] = p.ents[last]
	}
	p.ents[last] = tableEnt[V]{}
	p.ents = p.ents[:last]
	if t.dir != nil {
		t.dir.n--
		t.dir.auxOK = false
	} else if last <= tableSmall/2 && p.bits != 0 { // back to a small table
		p.slots, p.bits = nil, 0
	}
}

// slotOf returns the slot holding entry i, whose hash's top bits are fp.
func (p *tablePart[V]) slotOf(fp uint64, i int) int {
	want := fp | uint64(i+1)
	mask := len(p.slots) - 1
	q := p.home(fp)
	for p.slots[q] != want {
		q = (q + 1) & mask
	}
	return q
}

// reslot points the slot of entry from (top bits fp) at entry to.
func (p *tablePart[V]) reslot(fp uint64, from, to int) {
	p.slots[p.slotOf(fp, from)] = fp | uint64(to+1)
}

// unslot empties the slot of entry i (top bits fp), moving back the slots
// after it that may (backward-shift deletion: no tombstones).
func (p *tablePart[V]) unslot(fp uint64, i int) {
	mask := len(p.slots) - 1
	hole := p.slotOf(fp, i)
	for q := (hole + 1) & mask; ; q = (q + 1) & mask {
		s := p.slots[q]
		if s == 0 {
			break
		}
		// the entry at q may move to the hole when its home is not in (hole, q]
		if (q-p.home(s))&mask >= (q-hole)&mask {
			p.slots[hole] = s
			hole = q
		}
	}
	p.slots[hole] = 0
}

// Clear removes every entry (a table of one part keeps its memory).
func (t *Table[V]) Clear() {
	if t.dir != nil {
		*t = Table[V]{}
		return
	}
	clear(t.p.ents)
	t.p.ents = t.p.ents[:0]
	clear(t.p.slots)
}

// parts yields each part once.
func (t *Table[V]) parts() iter.Seq[*tablePart[V]] {
	return func(yield func(*tablePart[V]) bool) {
		if t == nil {
			return
		}
		if t.dir == nil {
			yield(&t.p)
			return
		}
		var prev *tablePart[V]
		for _, p := range t.dir.parts {
			if p != prev && !yield(p) {
				return
			}
			prev = p
		}
	}
}

// All yields each entry in the table's order — a small table's is the
// order its names were put in (as Redis lists a small hash or set) — see
// Table for what the loop may change.
func (t *Table[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for p := range t.parts() {
			for i := 0; i < len(p.ents); {
				k := p.ents[i].key
				if !yield(k, p.ents[i].val) {
					return
				}
				// the entry deleted: another took its place, not yielded yet
				if i < len(p.ents) && p.ents[i].key == k {
					i++
				}
			}
		}
	}
}

// At returns entry i (0 <= i < Len) in an order of the table's own (its
// parts', each's entries), for picking entries at random (SPOP,
// SRANDMEMBER, HRANDFIELD) without listing them: it steps over whole
// parts, ~1/1000 of the entries.
func (t *Table[V]) At(i int) (string, V) {
	for p := range t.parts() {
		if i < len(p.ents) {
			return p.ents[i].key, p.ents[i].val
		}
		i -= len(p.ents)
	}
	panic("crdt: Table.At out of range")
}

// Scan calls fn with entries in the order of their hashes' top 52 bits
// (SSCAN's and HSCAN's cursor: a hash's top bits >> 12), from cursor on:
// at least count of them (more when the last one's bits are shared),
// unless none is left, and returns the cursor of the next one, or 0 when
// none is left. An entry there from the first call to the last is given
// at least once whatever changed between calls (the order is the hash's,
// which no growth or split changes); no entry twice if nothing changed.
// A part's slots follow the same order (a slot's home is the hash's bits
// after the part's, and probes are linear), so a call walks them from the
// cursor's home slot and reads about count slots, not the part.
func (t *Table[V]) Scan(cursor uint64, count int, fn func(name string, v V)) uint64 {
	if t.Len() == 0 || cursor >= 1<<(64-slotIdx) {
		return 0
	}
	from := cursor << slotIdx
	var buf []uint64 // slots at or after from (a hash's bits, an index), sorted
	given := 0
	for {
		p := t.part(from)
		var end uint64 // where the next part's hashes start (0: none)
		if p.depth > 0 {
			step := uint64(1) << (64 - p.depth)
			end = (from &^ (step - 1)) + step
		}
		var bound uint64
		buf, bound = p.scanFrom(buf[:0], from, count-given)
		slices.Sort(buf)
		for j, s := range buf {
			if given >= count && (j == 0 || fpOf(s) != fpOf(buf[j-1])) {
				return fpOf(s) >> slotIdx
			}
			e := &p.ents[int(s&(1<<slotIdx-1))-1]
			fn(e.key, e.val)
			given++
		}
		if bound != 0 { // the part goes on from bound
			from = bound
		} else if from = end; end == 0 { // (past the last part)
			return 0
		}
		if given >= count {
			return from >> slotIdx
		}
	}
}

// scanFrom appends the part's slots whose hash bits are from or more: for
// a part with slots, walking from from's home slot until it has need of
// them and reaches an empty slot. It returns the bits below which every
// entry of the part from from on is among them, 0 when all are: an
// entry's slot is at or after its home with no empty slot between (linear
// probing, backward-shift deletion), so the entries whose home is before
// that empty slot were all passed. A walk that reaches the end of the
// slots gives all entries from from: it goes on over the run of slots at
// the start, for the entries whose probe came round the end (a slot
// before its home: passed over by the walk itself).
func (p *tablePart[V]) scanFrom(buf []uint64, from uint64, need int) ([]uint64, uint64) {
	if p.bits == 0 {
		for i := range p.ents {
			if fp := fpOf(tableHashString(p.ents[i].key)); fp >= from {
				buf = append(buf, fp|uint64(i+1))
			}
		}
		return buf, 0
	}
	size := len(p.slots)
	got := 0
	for j := p.home(from); j < size; j++ {
		s := p.slots[j]
		if s == 0 {
			if got >= need {
				base := from &^ (^uint64(0) >> p.depth) // the part's top bits
				return buf, base | uint64(j)<<(64-p.depth-p.bits)
			}
			continue
		}
		if fpOf(s) >= from && p.home(s) <= j {
			buf = append(buf, s)
			got++
		}
	}
	for j := 0; j < size && p.slots[j] != 0; j++ {
		if s := p.slots[j]; fpOf(s) >= from && p.home(s) > j {
			buf = append(buf, s)
		}
	}
	return buf, 0
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
	clonePart := func(p *tablePart[V]) tablePart[V] {
		o := tablePart[V]{ents: make([]tableEnt[V], len(p.ents)), bits: p.bits, depth: p.depth}
		for i, e := range p.ents {
			o.ents[i] = tableEnt[V]{e.key, cp(e.val)}
		}
		if p.slots != nil {
			o.slots = append([]uint64(nil), p.slots...)
		}
		return o
	}
	o := &Table[V]{}
	if t.dir == nil {
		o.p = clonePart(&t.p)
		return o
	}
	o.dir = &tableDir[V]{parts: make([]*tablePart[V], len(t.dir.parts)), depth: t.dir.depth, n: t.dir.n}
	var prev, cur *tablePart[V]
	for i, p := range t.dir.parts {
		if p != prev {
			c := clonePart(p)
			prev, cur = p, &c
		}
		o.dir.parts[i] = cur
	}
	return o
}

// TouchSlot reads the line of the slot where name's probe starts (the
// first of Prefetch's stages) and returns name's hash for Peek: 0, and
// no hash computed, when the part is small (no slots: Peek finds
// nothing, the lookup compares names).
func (t *Table[V]) TouchSlot(name []byte) (h, sink uint64) {
	if t == nil || (t.dir == nil && t.p.bits == 0) {
		return 0, 0
	}
	h = TableHash(name)
	p := t.part(h)
	if p.bits == 0 {
		return h, uint64(len(p.ents))
	}
	return h, p.slots[p.home(h)]
}

// Peek returns the value of the first entry on h's probe whose slot
// matches h, and the first byte of its name read, without comparing names
// (Prefetch's next stage: what it reads is what the lookup will read;
// another name of the same 52 bits is a wasted load). ok is false when
// none matches or t is small.
func (t *Table[V]) Peek(h uint64) (v V, sink uint64, ok bool) {
	if t == nil {
		return v, 0, false
	}
	p := t.part(h)
	if p.bits == 0 {
		return v, 0, false
	}
	fp := fpOf(h)
	mask := len(p.slots) - 1
	for q := p.home(h); ; q = (q + 1) & mask {
		s := p.slots[q]
		if s == 0 {
			return v, 0, false
		}
		if fpOf(s) == fp {
			e := &p.ents[int(s&(1<<slotIdx-1))-1]
			if len(e.key) > 0 {
				sink = uint64(e.key[0])
			}
			return e.val, sink, true
		}
	}
}
