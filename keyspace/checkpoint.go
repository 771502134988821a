package keyspace

import (
	"iter"
	"maps"
	"math/bits"
	"runtime"
	"slices"
	"strings"
	"unsafe"

	"concord/crdt"
)

// dirtyKey is what changed in a key since the last checkpoint captured its
// shard, beyond its header: which members and fields (or all of them).
//
// A key changed since the last checkpoint is marked by its entry's (or cold
// record's) dirty flag; the shard's dirty map holds only keys that need
// more than their header stored (a *dirtyKey) and keys removed from memory
// (nil: their page is stored without them). A checkpoint takes the map, then walks the
// shard for the remaining flags.
type dirtyKey struct {
	all     bool // rewrite every element (and drop the stored ones)
	elems   bool // the key held members or fields at some point
	members map[string]struct{}
	fields  map[string]struct{}
}

// markDirty records t's changes to key for the next checkpoint: gone says
// the key was removed from memory, hasElems that it holds members or
// fields now; borrowed that key points into memory the keyspace must not
// keep (the dirty set keeps a copy).
func (s *shard) markDirty(key string, borrowed bool, e *entry, t *touch, gone, hasElems bool) {
	elems := t.elems || hasElems
	plain := !elems && len(t.members) == 0 && len(t.fields) == 0
	if e.dirty != !gone {
		e.dirty = !gone
		if gone {
			s.flagged--
		} else {
			s.flagged++
		}
	}
	if plain && !gone {
		return // the flag says it all
	}
	if s.dirty == nil {
		s.dirty = make(map[string]*dirtyKey)
	}
	d, seen := s.dirty[key]
	if plain {
		if !seen {
			s.dirty[own(key, key, borrowed)] = nil
		}
		return
	}
	if d == nil {
		d = &dirtyKey{}
		s.dirty[own(key, key, borrowed)] = d // (storing again stores the key given)
	}
	d.merge(t.all || gone, elems, t.members, t.fields)
	if n := len(d.members) + len(d.fields); n >= dirtyElemsAll && !gone && 2*n >= e.st.Set.Len()+e.st.Hash.Len() {
		// most of a big key changed: rewriting it whole costs at most
		// twice as much and drops a map of every changed element
		d.all, d.members, d.fields = true, nil, nil
	}
}

// dirtyElemsAll: a key with this many changed elements, half of its
// elements or more, is rewritten whole by the next checkpoint.
const dirtyElemsAll = 1024

func (d *dirtyKey) merge(all, elems bool, members, fields []string) {
	d.elems = d.elems || elems
	if all {
		d.all, d.members, d.fields = true, nil, nil
	}
	if !d.all {
		d.members = addNames(d.members, slices.Values(members), len(members))
		d.fields = addNames(d.fields, slices.Values(fields), len(fields))
	}
}

// mergeKey is merge of another dirtyKey's changes (a captured shard's,
// joined or put back).
func (d *dirtyKey) mergeKey(o *dirtyKey) {
	d.merge(o.all, o.elems, nil, nil)
	if !d.all {
		d.members = addNames(d.members, maps.Keys(o.members), len(o.members))
		d.fields = addNames(d.fields, maps.Keys(o.fields), len(o.fields))
	}
}

// addNames adds names to set, made (for about n) when nil and needed.
func addNames(set map[string]struct{}, names iter.Seq[string], n int) map[string]struct{} {
	for name := range names {
		if set == nil {
			set = make(map[string]struct{}, n)
		}
		set[name] = struct{}{}
	}
	return set
}

// captured is one shard's dirty set taken by a checkpoint, kept until its
// states are stored (put back if storing fails): its dirty map and the keys
// found by their flag.
type captured struct {
	s       *shard
	dirty   map[string]*dirtyKey
	flagged []string
}

// join moves key's changes since c was taken into c (called under the
// shard's lock, as the key's header is encoded): its dirty flag and its
// entry in the shard's dirty map.
func (c *captured) join(key string) {
	s := c.s
	if s.clearDirty(key) {
		if _, inMap := c.dirty[key]; !inMap {
			c.flagged = append(c.flagged, key)
		}
	}
	dk, seen := s.dirty[key]
	if !seen {
		return
	}
	delete(s.dirty, key)
	cur, had := c.dirty[key]
	switch {
	case !had || cur == nil:
		c.dirty[key] = dk
	case dk != nil:
		cur.mergeKey(dk)
	}
}

// Checkpoint encodes the state of every key changed since the last
// checkpoint, shard by shard (each under its lock, never the whole keyspace
// at once, and a few keys per hold), and hands the writes to flush in
// batches of about batch writes or checkpointBytes. A changed key's bucket
// (BucketOf) is stored whole, as a page of its keys' headers; its changed
// set members and hash fields as records of their own, before the page. A
// batch that flush fails to store is marked dirty again. The caller makes
// the log durable up to the capture before storing a batch, and records the
// log position taken before Checkpoint began as covered once it returns
// nil. keys counts the changed keys. pace, when not nil, is called before
// each shard with changes and after each hold that encodes a key's
// elements (a background checkpoint sleeps there: see server's pacer).
func (ks *Keyspace) Checkpoint(batch int, pace func(), flush func([]Write) error) (keys int, err error) {
	var writes []Write
	var taken []captured
	size, changed := 0, 0 // bytes in writes; changed keys in taken
	send := func() error {
		if len(writes) == 0 {
			return nil
		}
		if err := flush(writes); err != nil {
			ks.redirty(taken)
			return err
		}
		keys += changed
		writes, taken, size, changed = writes[:0], taken[:0], 0, 0
		return nil
	}
	add := func(w Write) error {
		writes = append(writes, w)
		size += len(w.Header)
		for _, e := range w.Elems {
			size += len(e.Name) + len(e.Data)
		}
		if len(writes) >= batch || size >= checkpointBytes {
			return send()
		}
		return nil
	}
	// lock runs fn under the shard's lock (and the keyspace's read lock)
	lock := func(s *shard, fn func()) {
		ks.world.RLock()
		s.mu.Lock()
		fn()
		s.mu.Unlock()
		ks.world.RUnlock()
		// yield between holds, not in one: the scheduler's preemption
		// (after 10 ms of running) would otherwise fall inside a hold now
		// and then, and the loop would wait on that lock until the
		// checkpoint's next turn on a P; and a loop waiting for a P gets
		// this one now
		runtime.Gosched()
	}
	// inChunks runs fn on keys, captureKeys per hold of s's lock: a client
	// (under the event loop, every client) waits for a few keys' encoding,
	// never for a whole shard's; a key changed between two holds is
	// captured at its newer state (the log after the checkpoint's position
	// covers every change either way). The chunk's warm entries are read
	// first, all their lines at once (touchEntry): encoding a state follows
	// pointers from line to line, a cache miss after a miss otherwise
	// (keys come in map order, scattered over the heap).
	var sink uint64
	inChunks := func(s *shard, keys []string, fn func(key string)) {
		for len(keys) > 0 {
			chunk := keys[:min(captureKeys, len(keys))]
			keys = keys[len(chunk):]
			lock(s, func() {
				for _, key := range chunk {
					if e := s.entry(key); e != nil {
						sink ^= touchEntry(e)
					}
				}
				for _, key := range chunk {
					fn(key)
				}
			})
		}
	}
	// a big key's elements are encoded captureChunk per hold, with the
	// pacer between holds: one key of 100k changed fields is ~0.15 s of
	// CPU, which would otherwise run at full speed in one shard's turn
	elemLock := lock
	if pace != nil {
		elemLock = func(s *shard, fn func()) { lock(s, fn); pace() }
	}
	stored, _ := ks.store.(ElemPages)
	var names []string
	var pages [subBuckets]pageBuf
	hdrBytes, hdrKeys := 64, 1 // the headers encoded so far (to size pages)
	var quarantined []Key
	if ks.quarAny.Load() {
		quarantined = ks.QuarantinedKeys()
	}
	for dbi, d := range ks.dbs {
		for si := range d.shards {
			s := &d.shards[si]
			// take the shard's dirty map, and note the buckets of the keys
			// flagged dirty, in one hold (join clears the flags, as it
			// encodes their headers: a flagged key is in s.m or the cold
			// table, so in its page's names)
			var c captured
			var inPage [subBuckets]bool
			lock(s, func() {
				if len(s.dirty) == 0 && s.flagged == 0 {
					return
				}
				c = captured{s: s, dirty: s.dirty}
				s.dirty = nil
				for key := range c.dirty {
					inPage[subBucket(key)] = true
				}
				if s.flagged == 0 {
					return
				}
				for key, e := range s.m.all() {
					if e.dirty {
						inPage[subBucket(key)] = true
					}
				}
				s.cold.each(func(_ int, kb []byte, r coldRec) bool {
					if r.dirty {
						inPage[subBucket(unsafe.String(unsafe.SliceData(kb), len(kb)))] = true
					}
					return true
				})
			})
			if c.s == nil {
				continue
			}
			if pace != nil {
				pace()
			}
			// the pages of the changed keys' buckets: every key in them
			lock(s, func() {
				names = names[:0]
				for key := range s.m.all() {
					if inPage[subBucket(key)] {
						names = append(names, key)
					}
				}
				s.cold.each(func(_ int, kb []byte, _ coldRec) bool {
					if inPage[subBucket(unsafe.String(unsafe.SliceData(kb), len(kb)))] {
						names = append(names, string(kb))
					}
					return true
				})
			})
			// each page sized for its keys (headers of the average size so
			// far): one allocation each instead of a doubling series
			var count, nameBytes [subBuckets]int
			for _, key := range names {
				sub := subBucket(key)
				count[sub]++
				nameBytes[sub] += len(key)
			}
			for i := range pages {
				if !inPage[i] {
					continue
				}
				pages[i] = pageBuf{keys: make([]string, 0, count[i]), ends: make([]int, 0, count[i]),
					names: make([]byte, 0, nameBytes[i]),
					hdr:   make([]byte, 0, count[i]*(hdrBytes/max(hdrKeys, 1)+16))}
			}
			// headers first, then the members and fields: a stored header
			// must never be newer than its key's stored elements (its
			// context would cover a change whose element it lacks, and the
			// log's replay of that change could not bring it back). So a
			// key's changes since the dirty map was taken join this
			// checkpoint when its header is encoded, and its element pages
			// are encoded after.
			if c.dirty == nil {
				c.dirty = make(map[string]*dirtyKey)
			}
			inChunks(s, names, func(key string) {
				c.join(key)
				if st := s.stateOf(key); st != nil {
					p := &pages[subBucket(key)]
					p.hdr = crdt.AppendHeader(p.hdr, st)
					p.keys = append(p.keys, p.name(key))
					p.ends = append(p.ends, len(p.hdr))
				}
			})
			taken = append(taken, c)
			changed += len(c.dirty) + len(c.flagged)
			names = names[:0]
			for key, dk := range c.dirty {
				if dk != nil {
					names = append(names, key)
				}
			}
			// the elements, stored before the pages: a crash between leaves
			// an old header over newer elements, which the log's replay mends
			for _, key := range names {
				var plan elemPlan
				lock(s, func() { plan = ks.planElems(s, dbi, key, c.dirty[key], stored) })
				if err := plan.store(elemLock, add); err != nil {
					return keys, err
				}
			}
			// a key known damaged, waiting for a peer's repair, stays
			// marked damaged in its page (see Quarantine)
			for _, k := range quarantined {
				if sub := subBucket(k.Key); k.DB == dbi && d.shardOf(k.Key) == s && inPage[sub] && !slices.Contains(pages[sub].keys, k.Key) {
					p := &pages[sub]
					p.keys = append(p.keys, k.Key)
					p.ends = append(p.ends, len(p.hdr)) // no header: damaged
				}
			}
			for sub, on := range inPage {
				if !on {
					continue
				}
				p := pages[sub]
				hdrBytes, hdrKeys = hdrBytes+len(p.hdr), hdrKeys+len(p.keys)
				if err := add(Write{DB: dbi, Page: true, Bucket: si*subBuckets + sub, Keys: p.keys, Ends: p.ends, Header: p.hdr}); err != nil {
					return keys, err
				}
			}
		}
	}
	if sink == 1 {
		prefetchSink.Store(sink) // (the loads must look used)
	}
	return keys, send()
}

// pageBuf collects one page's headers.
type pageBuf struct {
	keys  []string
	ends  []int
	hdr   []byte
	names []byte // the bytes of keys, one after another
}

// name returns a copy of key in p.names: the page's encoding then reads
// its keys' names from one buffer, not from the entries they were looked
// up in (by then long out of the cache: a miss per key). The copy is made
// as the key's entry is encoded, while the name is in the cache. p.names
// is sized for all of them; a copy that does not fit goes elsewhere.
func (p *pageBuf) name(key string) string {
	if len(key) == 0 || len(p.names)+len(key) > cap(p.names) {
		return strings.Clone(key)
	}
	p.names = append(p.names, key...)
	return unsafe.String(&p.names[len(p.names)-len(key)], len(key))
}

// captureChunk is how many elements of one key a checkpoint encodes per
// hold of its shard's lock.
const captureChunk = 256

// captureKeys is how many keys' states a checkpoint encodes per hold of
// their shard's lock. Under the event loop a pass of 50 pipelining clients
// touches nearly every shard, so every pass waits for the hold in progress:
// with 64 keys per hold the loop spent ~100 of 1200 ms waiting on shard
// locks beside a checkpoint, with 4 ~25 ms (the checkpoint's own cost per
// key within noise).
const captureKeys = 4

// checkpointBytes: a checkpoint hands its writes to be stored once they
// hold about this many bytes (or its batch of writes).
const checkpointBytes = 4 << 20

// elemsPerPage: a key's set members or hash fields are stored in 2^lg
// element pages of about this many, an element's page chosen by a hash of
// its name (elemPageOf). A checkpoint rewrites the pages of the changed
// elements whole: a record per page instead of one per element (Badger's
// cost is per record), for up to this many elements encoded per change.
const elemsPerPage = 64

// lgUnknown in a shard's fans: the key's stored element pages may be in
// any layout (a failed checkpoint, pages of two layouts at load).
const lgUnknown = 255

// pagesLog returns the lg that n elements are stored in.
func pagesLog(n int) uint8 {
	lg := uint8(0)
	for elemsPerPage<<lg < n && lg < 30 {
		lg++
	}
	return lg
}

func elemPageOf(name string, lg uint8) int { return int(mix64(hashKey(name)) & (1<<lg - 1)) }

// elemPlan is what a checkpoint stores of one key's elements: pages, with
// the elements of each, in a layout of 2^lg pages, after dropping every
// stored page of the key when replace. With stored, refs holds only the
// changed elements, and each page's stored elements are read from it.
type elemPlan struct {
	ks      *Keyspace
	s       *shard
	db      int
	key     string
	lg      uint8
	replace bool
	pages   []int
	refs    map[int][]elemRef
	stored  ElemPages
}

// fewPages: a checkpoint reads back the stored elements of a key's changed
// element pages (ElemPages) when at most one in fewPages of its pages
// changed; else it walks the key's elements to find those of the changed
// pages (a walk costs ~0.1 µs per element, a page read tens of µs).
const fewPages = 8

// scanChunk is how many elements of a big key the planning of its pages
// walks per hold of the shard's lock.
const scanChunk = 1024

// planElems decides which element pages of key a checkpoint stores (under
// s's lock, which it gives up and takes again every scanChunk elements:
// an element added meanwhile is in the log after the checkpoint's position
// and marks the key dirty again). A key is rewritten whole when all its
// elements changed, or when its size calls for another layout (4× more or
// fewer elements per page than elemsPerPage); else only the pages of its
// changed elements.
func (ks *Keyspace) planElems(s *shard, dbi int, key string, dk *dirtyKey, stored ElemPages) elemPlan {
	p := elemPlan{ks: ks, s: s, db: dbi, key: key}
	have := s.fans[key]
	st := s.stateOf(key)
	if st == nil {
		delete(s.fans, key)
		p.replace = dk.elems || have != 0
		return p
	}
	want := pagesLog(st.Set.Len() + st.Hash.Len())
	full := dk.all || have == lgUnknown || int(want) >= int(have)+2 || int(want)+2 <= int(have)
	p.lg = have
	if full {
		p.lg, p.replace = want, want != have
	}
	if p.lg == 0 {
		delete(s.fans, key)
	} else {
		if s.fans == nil {
			s.fans = make(map[string]uint8)
		}
		s.fans[key] = p.lg
	}
	var dirty map[int]bool
	if !full {
		dirty = make(map[int]bool)
		for m := range dk.members {
			dirty[elemPageOf(m, p.lg)] = true
		}
		for f := range dk.fields {
			dirty[elemPageOf(f, p.lg)] = true
		}
		if len(dirty) == 0 {
			return p
		}
		if stored != nil && len(dirty)*fewPages <= 1<<p.lg {
			// the changed elements now; the pages' other elements are
			// read from the store (store). Every element a merge changes
			// is in the dirty key (State.Touched; a change of all of them
			// rewrites the key whole), so a page's elements are its stored
			// ones and its changed ones.
			p.stored = stored
			p.refs = make(map[int][]elemRef, len(dirty))
			for m := range dk.members {
				pg := elemPageOf(m, p.lg)
				p.refs[pg] = append(p.refs[pg], elemRef{crdt.ElemMember, m})
			}
			for f := range dk.fields {
				pg := elemPageOf(f, p.lg)
				p.refs[pg] = append(p.refs[pg], elemRef{crdt.ElemField, f})
			}
			for pg := range dirty {
				p.pages = append(p.pages, pg)
			}
			slices.Sort(p.pages)
			return p
		}
	}
	p.refs = make(map[int][]elemRef)
	walked := 0
	note := func(kind byte, name string) {
		if pg := elemPageOf(name, p.lg); full || dirty[pg] {
			p.refs[pg] = append(p.refs[pg], elemRef{kind, name})
		}
		if walked++; walked%scanChunk == 0 {
			s.mu.Unlock()
			ks.world.RUnlock()
			ks.world.RLock()
			s.mu.Lock()
		}
	}
	for m := range st.Set.All() {
		note(crdt.ElemMember, m)
	}
	for f := range st.Hash.All() {
		note(crdt.ElemField, f)
	}
	if full {
		for pg := 0; pg < 1<<p.lg; pg++ {
			p.pages = append(p.pages, pg)
		}
	} else {
		for pg := range dirty {
			p.pages = append(p.pages, pg)
		}
		slices.Sort(p.pages)
	}
	return p
}

// store encodes the plan's pages, about captureChunk elements per hold of
// the shard's lock (writes to a big key wait for one chunk, never for the
// whole key), and hands them to add outside it.
func (p *elemPlan) store(lock func(*shard, func()), add func(Write) error) error {
	if p.stored != nil && !p.readStored() {
		// a page unreadable or of another layout: rewrite the key whole,
		// dropping whatever is stored of it
		lock(p.s, func() {
			p.s.unknownLayout(p.key)
			*p = p.ks.planElems(p.s, p.db, p.key, &dirtyKey{all: true, elems: true}, nil)
		})
	}
	if len(p.pages) == 0 {
		if p.replace {
			return add(Write{DB: p.db, Key: p.key, ReplaceAll: true})
		}
		return nil
	}
	var ws []Write
	for i := 0; i < len(p.pages); {
		ws = ws[:0]
		lock(p.s, func() {
			st := p.s.stateOf(p.key)
			for n := 0; i < len(p.pages) && (n == 0 || n+len(p.refs[p.pages[i]]) <= captureChunk); i++ {
				refs := p.refs[p.pages[i]]
				ws = append(ws, Write{DB: p.db, Key: p.key, ReplaceAll: i == 0 && p.replace,
					Fan: 1 << p.lg, Bucket: p.pages[i], Elems: encodeElems(st, refs)})
				n += len(refs)
			}
		})
		for _, w := range ws {
			if err := add(w); err != nil {
				return err
			}
		}
	}
	return nil
}

// readStored adds to each page's changed elements the others stored in it
// (outside the shard's lock); false when a page cannot be read or belongs
// to another layout.
func (p *elemPlan) readStored() bool {
	fan := 1 << p.lg
	for _, pg := range p.pages {
		refs := p.refs[pg]
		changed := make(map[elemRef]bool, len(refs))
		for _, r := range refs {
			changed[r] = true
		}
		f, err := p.stored.ElemPageNames(p.db, p.key, pg, func(kind byte, name string) {
			if r := (elemRef{kind, name}); !changed[r] {
				refs = append(refs, r)
			}
		})
		if err != nil || f != 0 && f != fan {
			return false
		}
		p.refs[pg] = refs
		p.ks.Stats.ElemPagesRead.Add(1)
	}
	return true
}

// unknownLayout records that key's stored element pages may be in any
// layout: the next checkpoint that stores its elements drops them all.
func (s *shard) unknownLayout(key string) {
	if s.fans == nil {
		s.fans = make(map[string]uint8)
	}
	s.fans[key] = lgUnknown
}

// clearDirty clears key's dirty flag, on its entry or cold record, and
// tells whether it was set.
func (s *shard) clearDirty(key string) bool {
	if e := s.entry(key); e != nil {
		if e.dirty {
			e.dirty = false
			s.flagged--
			return true
		}
	} else if _, off := s.cold.lookup(key); off >= 0 {
		if r, _, _ := s.cold.parse(off); r.dirty {
			s.cold.setDirty(off, false)
			s.flagged--
			return true
		}
	}
	return false
}

// setDirty sets key's dirty flag (a key gone since has its own record in
// the dirty map).
func (s *shard) setDirty(key string) {
	if e := s.entry(key); e != nil {
		if !e.dirty {
			e.dirty = true
			s.flagged++
		}
	} else if _, off := s.cold.lookup(key); off >= 0 {
		if r, _, _ := s.cold.parse(off); !r.dirty {
			s.cold.setDirty(off, true)
			s.flagged++
		}
	}
}

// redirty puts back dirty sets whose states could not be stored.
func (ks *Keyspace) redirty(taken []captured) {
	for _, c := range taken {
		ks.world.RLock()
		c.s.mu.Lock()
		for _, key := range c.flagged {
			c.s.setDirty(key)
		}
		for key, dk := range c.dirty {
			c.s.setDirty(key)
			if dk != nil {
				// its element pages may be stored in part: rewrite it whole,
				// dropping whatever is stored
				dk.merge(true, dk.elems, nil, nil)
				c.s.unknownLayout(key)
			}
		}
		if c.s.dirty == nil {
			c.s.dirty = c.dirty
		} else {
			for key, dk := range c.dirty {
				cur, seen := c.s.dirty[key]
				switch {
				case !seen || cur == nil:
					c.s.dirty[key] = dk
				case dk != nil:
					cur.mergeKey(dk)
				}
			}
		}
		c.s.mu.Unlock()
		ks.world.RUnlock()
	}
}

// Dirty returns how many keys changed since the last checkpoint.
func (ks *Keyspace) Dirty() int {
	n := 0
	for _, d := range ks.dbs {
		for i := range d.shards {
			s := &d.shards[i]
			s.mu.Lock()
			n += len(s.dirty)
			for k, e := range s.m.all() {
				if _, inMap := s.dirty[k]; e.dirty && !inMap {
					n++
				}
			}
			s.cold.each(func(_ int, k []byte, r coldRec) bool {
				if _, inMap := s.dirty[string(k)]; r.dirty && !inMap {
					n++
				}
				return true
			})
			s.mu.Unlock()
		}
	}
	return n
}

// DirtyAll marks every key changed, with all its elements, and the bucket
// of every quarantined key: the next checkpoint stores all of them (a data
// dir of an earlier version, whose states were one record per key and
// element, is rewritten as pages).
func (ks *Keyspace) DirtyAll() {
	for _, d := range ks.dbs {
		for i := range d.shards {
			s := &d.shards[i]
			ks.world.RLock()
			s.mu.Lock()
			elems := func(key string) {
				if s.dirty == nil {
					s.dirty = make(map[string]*dirtyKey)
				}
				s.dirty[key] = &dirtyKey{all: true, elems: true}
			}
			for key, e := range s.m.all() {
				if !e.dirty {
					e.dirty = true
					s.flagged++
				}
				if e.st.Set.Len()+e.st.Hash.Len() > 0 {
					elems(key)
				}
			}
			s.cold.each(func(off int, kb []byte, r coldRec) bool {
				if !r.dirty {
					s.cold.setDirty(off, true)
					s.flagged++
				}
				if !crdt.PackedIsString(r.packed) {
					elems(string(kb))
				}
				return true
			})
			s.mu.Unlock()
			ks.world.RUnlock()
		}
	}
	// and the buckets of quarantined keys, whose pages mark them damaged
	for _, k := range ks.QuarantinedKeys() {
		if k.DB < 0 || k.DB >= len(ks.dbs) {
			continue
		}
		s := ks.dbs[k.DB].shardOf(k.Key)
		ks.world.RLock()
		s.mu.Lock()
		if _, seen := s.dirty[k.Key]; !seen && s.stateOf(k.Key) == nil {
			if s.dirty == nil {
				s.dirty = make(map[string]*dirtyKey)
			}
			s.dirty[k.Key] = nil
		}
		s.mu.Unlock()
		ks.world.RUnlock()
	}
}

// Unstore has the next checkpoint drop the stored records of k, a key not
// in memory (its page is stored without it, its elements deleted).
func (ks *Keyspace) Unstore(k Key) {
	if k.DB < 0 || k.DB >= len(ks.dbs) {
		return
	}
	s := ks.dbs[k.DB].shardOf(k.Key)
	ks.world.RLock()
	s.mu.Lock()
	if s.dirty == nil {
		s.dirty = make(map[string]*dirtyKey)
	}
	if d := s.dirty[k.Key]; d != nil {
		d.merge(true, true, nil, nil)
	} else {
		s.dirty[k.Key] = &dirtyKey{all: true, elems: true}
	}
	s.mu.Unlock()
	ks.world.RUnlock()
}

// SetElemPages records that k's elements are stored in fan element pages
// (read at startup: Write.Fan of the pages stored); fan < 0 says pages of
// different layouts are stored (a checkpoint cut short), so the next
// checkpoint that stores k's elements rewrites them whole.
func (ks *Keyspace) SetElemPages(k Key, fan int) {
	if k.DB < 0 || k.DB >= len(ks.dbs) {
		return
	}
	lg := uint8(lgUnknown)
	if fan > 0 && fan&(fan-1) == 0 {
		lg = uint8(bits.TrailingZeros(uint(fan)))
	}
	if lg == 0 {
		return
	}
	s := ks.dbs[k.DB].shardOf(k.Key)
	ks.world.RLock()
	s.mu.Lock()
	if s.fans == nil {
		s.fans = make(map[string]uint8)
	}
	s.fans[k.Key] = lg
	s.mu.Unlock()
	ks.world.RUnlock()
}
