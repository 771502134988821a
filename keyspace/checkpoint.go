package keyspace

import (
	"slices"
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
// fields now.
func (s *shard) markDirty(key string, e *entry, t *touch, gone, hasElems bool) {
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
			s.dirty[key] = nil
		}
		return
	}
	if d == nil {
		d = &dirtyKey{}
		s.dirty[key] = d
	}
	d.merge(t.all || gone, elems, t.members, t.fields)
	if n := len(d.members) + len(d.fields); n >= dirtyElemsAll && !gone && 2*n >= len(e.st.Set)+len(e.st.Hash) {
		// most of a big key changed: rewriting it whole costs at most
		// twice as much and drops a map of every changed element
		d.all, d.members, d.fields = true, nil, nil
	}
}

// dirtyElemsAll: a key with this many changed elements, half of its
// elements or more, is rewritten whole by the next checkpoint.
const dirtyElemsAll = 1024

func (d *dirtyKey) merge(all, elems bool, members, fields map[string]struct{}) {
	d.elems = d.elems || elems
	if all {
		d.all, d.members, d.fields = true, nil, nil
	}
	if d.all {
		return
	}
	for m := range members {
		if d.members == nil {
			d.members = make(map[string]struct{}, len(members))
		}
		d.members[m] = struct{}{}
	}
	for f := range fields {
		if d.fields == nil {
			d.fields = make(map[string]struct{}, len(fields))
		}
		d.fields[f] = struct{}{}
	}
}

// captured is one shard's dirty set taken by a checkpoint, kept until its
// states are stored (put back if storing fails): its dirty map and the keys
// found by their flag.
type captured struct {
	s       *shard
	dirty   map[string]*dirtyKey
	flagged []string
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
// nil. keys counts the changed keys.
func (ks *Keyspace) Checkpoint(batch int, flush func([]Write) error) (keys int, err error) {
	var writes []Write
	var taken []captured
	var rest []restOf
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
	}
	// inChunks runs fn on keys, captureKeys per hold of s's lock: a client
	// (under the event loop, every client) waits for a few keys' encoding,
	// never for a whole shard's; a key changed between two holds is
	// captured at its newer state (the log after the checkpoint's position
	// covers every change either way)
	inChunks := func(s *shard, keys []string, fn func(key string)) {
		for len(keys) > 0 {
			chunk := keys[:min(captureKeys, len(keys))]
			keys = keys[len(chunk):]
			lock(s, func() {
				for _, key := range chunk {
					fn(key)
				}
			})
		}
	}
	var names []string
	var pages [subBuckets]pageBuf
	for dbi, d := range ks.dbs {
		for si := range d.shards {
			s := &d.shards[si]
			// take the shard's dirty map and flags in one hold
			var c captured
			lock(s, func() {
				if len(s.dirty) == 0 && s.flagged == 0 {
					return
				}
				c = captured{s: s, dirty: s.dirty}
				s.dirty = nil
				if s.flagged == 0 {
					return
				}
				for key, e := range s.m {
					if e.dirty {
						e.dirty = false
						s.flagged--
						if _, inMap := c.dirty[key]; !inMap {
							c.flagged = append(c.flagged, key)
						}
					}
				}
				s.cold.each(func(off int, kb []byte, r coldRec) bool {
					if r.dirty {
						s.cold.setDirty(off, false)
						s.flagged--
						if _, inMap := c.dirty[string(kb)]; !inMap {
							c.flagged = append(c.flagged, string(kb))
						}
					}
					return true
				})
			})
			if c.s == nil {
				continue
			}
			taken = append(taken, c)
			changed += len(c.dirty) + len(c.flagged)
			var inPage [subBuckets]bool
			names = names[:0]
			for key, dk := range c.dirty {
				inPage[subBucket(key)] = true
				if dk != nil {
					names = append(names, key)
				}
			}
			for _, key := range c.flagged {
				inPage[subBucket(key)] = true
			}
			// members and fields first: a crash before the page leaves the
			// old header over newer elements, which the log's replay mends
			var werr error
			var elems []Write
			for len(names) > 0 && werr == nil {
				chunk := names[:min(captureKeys, len(names))]
				names = names[len(chunk):]
				elems = elems[:0]
				inChunks(s, chunk, func(key string) {
					w, more := s.captureElems(dbi, key, c.dirty[key])
					if w.ReplaceAll || len(w.Elems) > 0 {
						elems = append(elems, w)
					}
					if len(more) > 0 {
						rest = append(rest, restOf{s, dbi, key, more})
					}
				})
				for _, w := range elems { // stored outside the lock
					if werr == nil {
						werr = add(w)
					}
				}
			}
			// big keys' remaining elements, a chunk per lock hold: writes
			// to such a key wait for one chunk, never for the whole key
			for _, r := range rest {
				for len(r.refs) > 0 && werr == nil {
					n := min(captureChunk, len(r.refs))
					var w Write
					lock(r.s, func() {
						w = Write{DB: r.db, Key: r.key, ElemsOnly: true, Elems: encodeElems(r.s.stateOf(r.key), r.refs[:n])}
					})
					r.refs = r.refs[n:]
					werr = add(w)
				}
			}
			rest = rest[:0]
			if werr != nil {
				return keys, werr
			}
			// the pages of the changed keys' buckets: every key in them
			lock(s, func() {
				names = names[:0]
				for key := range s.m {
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
			for i := range pages {
				pages[i] = pageBuf{}
			}
			inChunks(s, names, func(key string) {
				if st := s.stateOf(key); st != nil {
					p := &pages[subBucket(key)]
					p.hdr = crdt.AppendHeader(p.hdr, st)
					p.keys = append(p.keys, key)
					p.ends = append(p.ends, len(p.hdr))
				}
			})
			// a key known damaged, waiting for a peer's repair, stays
			// marked damaged in its page (see Quarantine)
			for _, k := range ks.QuarantinedKeys() {
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
				if err := add(Write{DB: dbi, Page: true, Bucket: si*subBuckets + sub, Keys: p.keys, Ends: p.ends, Header: p.hdr}); err != nil {
					return keys, err
				}
			}
		}
	}
	return keys, send()
}

// pageBuf collects one page's headers.
type pageBuf struct {
	keys []string
	ends []int
	hdr  []byte
}

// captureChunk is how many elements of one key a checkpoint encodes per
// hold of its shard's lock.
const captureChunk = 1024

// captureKeys is how many keys' states a checkpoint encodes per hold of
// their shard's lock.
const captureKeys = 64

// checkpointBytes: a checkpoint hands its writes to be stored once they
// hold about this many bytes (or its batch of writes).
const checkpointBytes = 4 << 20

// restOf is the part of a big key's elements still to capture.
type restOf struct {
	s    *shard
	db   int
	key  string
	refs []elemRef
}

// captureElems encodes the changed members and fields of one key (called
// under the shard's lock): its first chunk of them; more lists the rest,
// captured after in chunks (each later chunk reflects a state at least as
// new). A key gone from memory drops its stored ones.
func (s *shard) captureElems(dbi int, key string, dk *dirtyKey) (w Write, more []elemRef) {
	w = Write{DB: dbi, Key: key, ElemsOnly: true}
	st := s.stateOf(key)
	if st == nil {
		w.ReplaceAll = dk.elems
		return w, nil
	}
	w.ReplaceAll = dk.all && dk.elems
	refs := elemRefs(st, dk.all, dk.members, dk.fields)
	n := min(captureChunk, len(refs))
	w.Elems = encodeElems(st, refs[:n])
	return w, refs[n:]
}

// clearDirty clears key's dirty flag, on its entry or cold record.
func (s *shard) clearDirty(key string) {
	if e := s.m[key]; e != nil {
		if e.dirty {
			e.dirty = false
			s.flagged--
		}
	} else if _, off := s.cold.lookup(key); off >= 0 {
		if r, _, _ := s.cold.parse(off); r.dirty {
			s.cold.setDirty(off, false)
			s.flagged--
		}
	}
}

// setDirty sets key's dirty flag (a key gone since has its own record in
// the dirty map).
func (s *shard) setDirty(key string) {
	if e := s.m[key]; e != nil {
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
		for key := range c.dirty {
			c.s.setDirty(key)
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
					cur.merge(dk.all, dk.elems, dk.members, dk.fields)
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
			for k, e := range s.m {
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

// DirtyAll marks every key changed: the next checkpoint stores all of them
// (a data dir of an earlier version, whose states were one record per key,
// is rewritten as pages).
func (ks *Keyspace) DirtyAll() {
	for _, d := range ks.dbs {
		for i := range d.shards {
			s := &d.shards[i]
			ks.world.RLock()
			s.mu.Lock()
			for _, e := range s.m {
				if !e.dirty {
					e.dirty = true
					s.flagged++
				}
			}
			s.cold.each(func(off int, _ []byte, r coldRec) bool {
				if !r.dirty {
					s.cold.setDirty(off, true)
					s.flagged++
				}
				return true
			})
			s.mu.Unlock()
			ks.world.RUnlock()
		}
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
