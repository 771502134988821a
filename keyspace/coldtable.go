package keyspace

import (
	"encoding/binary"
)

// coldTable holds one shard's cold keys in pointer-free memory: records
// appended to an arena and found through an open-addressing index. A cold
// key costs its record (flags, version, key, packed state: ~45 bytes for a
// small string key) and ~11 bytes of index, where a warm one costs a map
// slot, a key string and an entry besides its state; and the GC never scans
// either slice.
//
// A record: flags (1 byte), the entry's version (8), its element and key
// digests (8+8, only with cfDigests), the key (uvarint length + bytes), the
// packed state (uvarint length + bytes).
type coldTable struct {
	idx   []uint64 // 0: empty; tombSlot: deleted; else tag<<32 | offset+1
	shift uint8    // 64 - log2(len(idx)): a hash's home slot is its top bits
	arena []byte
	n     int // live records
	tombs int // deleted slots
	dead  int // bytes of deleted records
	bytes int // bytes of live records
}

const tombSlot = ^uint64(0)

// maxArena keeps offsets+1 below tombSlot's low half.
const maxArena = 1<<32 - 2

// record flags
const (
	cfDead = 1 << iota
	cfExp
	cfDirty
	cfDigests
)

// coldRec is a record's fields; packed aliases the arena until the table
// next changes.
type coldRec struct {
	hasExp, dirty bool
	ver           uint64
	elems, dig    uint64
	packed        []byte
}

// coldHash mixes a key's FNV hash (whose low bits chose the shard) so that
// its top bits, which the cold index uses, vary within a shard.
func coldHash(key string) uint64 { return fib(hashKey(key)) }

// fib is Fibonacci hashing's multiply: its top bits are a mix of all of
// h's (a shard's two indexes take their home slots and SCAN its order from
// them, see scanTag).
func fib(h uint64) uint64 { return h * 0x9e3779b97f4a7c15 }

func coldHashBytes(key []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range key {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return fib(h)
}

func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

// parse reads the record at off: its fields, its key and where it ends.
func (t *coldTable) parse(off int) (r coldRec, key []byte, end int) {
	b := t.arena[off:]
	f := b[0]
	r.hasExp, r.dirty = f&cfExp != 0, f&cfDirty != 0
	r.ver = binary.LittleEndian.Uint64(b[1:])
	i := 9
	if f&cfDigests != 0 {
		r.elems = binary.LittleEndian.Uint64(b[i:])
		r.dig = binary.LittleEndian.Uint64(b[i+8:])
		i += 16
	}
	kl, n := binary.Uvarint(b[i:])
	i += n
	key = b[i : i+int(kl) : i+int(kl)]
	i += int(kl)
	pl, n := binary.Uvarint(b[i:])
	i += n
	r.packed = b[i : i+int(pl) : i+int(pl)]
	return r, key, off + i + int(pl)
}

// find returns the slot and record offset of key (-1 when absent).
func (t *coldTable) find(key string, h uint64) (slot, off int) {
	if t.n == 0 {
		return -1, -1
	}
	mask := len(t.idx) - 1
	tag := h >> 32
	for i := int(h >> t.shift); ; i = (i + 1) & mask {
		v := t.idx[i]
		if v == 0 {
			return -1, -1
		}
		if v != tombSlot && v>>32 == tag {
			o := int(uint32(v)) - 1
			if _, k, _ := t.parse(o); string(k) == key {
				return i, o
			}
		}
	}
}

// home returns the record offset in the first index slot of a key whose
// coldHash is h when that slot carries h's tag, else -1: a guess at the
// key's record without following its probe or comparing keys (Prefetch).
func (t *coldTable) home(h uint64) int {
	v := t.idx[int(h>>t.shift)]
	if v == 0 || v == tombSlot || v>>32 != h>>32 {
		return -1
	}
	return int(uint32(v)) - 1
}

// lookup is find with key's hash computed.
func (t *coldTable) lookup(key string) (slot, off int) { return t.find(key, coldHash(key)) }

// add appends key's record; it reports false when the arena is full (the
// key then stays warm).
func (t *coldTable) add(key string, h uint64, r coldRec, digests bool) bool {
	need := 1 + 8 + 2*binary.MaxVarintLen64 + len(key) + len(r.packed)
	if digests {
		need += 16
	}
	if len(t.arena)+need > maxArena {
		return false
	}
	if (t.n+t.tombs+1)*4 >= len(t.idx)*3 {
		t.rehash(max(16, 2*t.n+2))
	}
	if cap(t.arena)-len(t.arena) < need {
		// double (append grows a big slice by a quarter: a sweep packing
		// a shard's keys one by one copied its arena ~5 times over)
		c := min(max(2*cap(t.arena), len(t.arena)+need, 512), maxArena)
		t.arena = append(make([]byte, 0, c), t.arena...)
	}
	off := len(t.arena)
	var f byte
	if r.hasExp {
		f |= cfExp
	}
	if r.dirty {
		f |= cfDirty
	}
	if digests {
		f |= cfDigests
	}
	b := append(t.arena, f)
	b = binary.LittleEndian.AppendUint64(b, r.ver)
	if digests {
		b = binary.LittleEndian.AppendUint64(b, r.elems)
		b = binary.LittleEndian.AppendUint64(b, r.dig)
	}
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(r.packed)))
	b = append(b, r.packed...)
	t.arena = b
	t.insert(h, off)
	t.n++
	t.bytes += len(b) - off
	return true
}

// insert puts a record's offset into the index (the caller made room).
func (t *coldTable) insert(h uint64, off int) {
	mask := len(t.idx) - 1
	for i := int(h >> t.shift); ; i = (i + 1) & mask {
		if v := t.idx[i]; v == 0 || v == tombSlot {
			if v == tombSlot {
				t.tombs--
			}
			t.idx[i] = h>>32<<32 | uint64(off+1)
			return
		}
	}
}

// remove deletes the record found at slot/off, which ends at end (as
// parse said).
func (t *coldTable) remove(slot, off, end int) {
	t.arena[off] |= cfDead
	t.idx[slot] = tombSlot
	t.tombs++
	t.n--
	t.dead += end - off
	t.bytes -= end - off
	switch {
	case t.n == 0:
		*t = coldTable{}
	case t.dead > 4096 && t.dead > len(t.arena)/2:
		t.compact()
	}
}

// setDirty sets or clears the dirty flag of the record at off.
func (t *coldTable) setDirty(off int, dirty bool) {
	if dirty {
		t.arena[off] |= cfDirty
	} else {
		t.arena[off] &^= cfDirty
	}
}

// each calls fn for every live record until fn returns false.
func (t *coldTable) each(fn func(off int, key []byte, r coldRec) bool) {
	for off := 0; off < len(t.arena); {
		r, key, end := t.parse(off)
		if t.arena[off]&cfDead == 0 && !fn(off, key, r) {
			return
		}
		off = end
	}
}

// trim gives back the arena's spare capacity once it exceeds an eighth
// (append grows it by a quarter or more at a time).
func (t *coldTable) trim() {
	if spare := cap(t.arena) - len(t.arena); spare > 1024 && spare > len(t.arena)/8 {
		t.arena = append(make([]byte, 0, len(t.arena)), t.arena...)
	}
}

// compact rewrites the arena without deleted records.
func (t *coldTable) compact() {
	live := make([]byte, 0, len(t.arena)-t.dead+len(t.arena)/8)
	for off := 0; off < len(t.arena); {
		_, _, end := t.parse(off)
		if t.arena[off]&cfDead == 0 {
			live = append(live, t.arena[off:end]...)
		}
		off = end
	}
	t.arena, t.dead = live, 0
	t.rehash(max(16, 2*t.n))
}

// rehash rebuilds the index with room for about size records.
func (t *coldTable) rehash(size int) {
	n, bits := 16, uint8(4)
	for n*3 < size*4 {
		n, bits = n*2, bits+1
	}
	t.idx, t.shift = make([]uint64, n), 64-bits
	t.tombs = 0
	for off := 0; off < len(t.arena); {
		_, key, end := t.parse(off)
		if t.arena[off]&cfDead == 0 {
			t.insert(coldHashBytes(key), off)
		}
		off = end
	}
}
