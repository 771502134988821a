package keyspace

import "concord/crdt"

// dirtyKey is what changed in a key since the last checkpoint captured its
// shard, beyond its header: which members and fields (or all of them).
//
// A key changed since the last checkpoint is marked by its entry's (or cold
// record's) dirty flag; the shard's dirty map holds only keys that need
// more than their header stored (a *dirtyKey) and keys removed from memory
// (nil: drop the stored header). A checkpoint takes the map, then walks the
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
// at once), and hands the writes to flush in batches of about batch keys.
// A batch that flush fails to store is marked dirty again. The caller makes the
// log durable up to the capture before storing a batch, and records the log
// position taken before Checkpoint began as covered once it returns nil.
func (ks *Keyspace) Checkpoint(batch int, flush func([]Write) error) (keys int, err error) {
	var writes []Write
	var taken []captured
	var rest []restOf
	send := func() error {
		if len(writes) == 0 {
			return nil
		}
		if err := flush(writes); err != nil {
			ks.redirty(taken)
			return err
		}
		keys += len(writes)
		writes, taken = writes[:0], taken[:0]
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
	// captureAll encodes keys of shard s captureKeys per hold of its lock
	// (details: their dirty-map entries; a flagged key has none) and
	// clears their flags: a key changed between two holds is captured at
	// its newer state, or again by the next checkpoint
	captureAll := func(s *shard, dbi int, keys []string, details map[string]*dirtyKey) {
		for len(keys) > 0 {
			chunk := keys[:min(captureKeys, len(keys))]
			keys = keys[len(chunk):]
			lock(s, func() {
				for _, key := range chunk {
					w, more := s.capture(dbi, key, details[key])
					writes = append(writes, w)
					if len(more) > 0 {
						rest = append(rest, restOf{s, dbi, key, more})
					}
					s.clearDirty(key)
				}
			})
		}
	}
	var names []string
	for dbi, d := range ks.dbs {
		for i := range d.shards {
			s := &d.shards[i]
			// take the shard's dirty map in one short hold and capture its
			// keys; then take the names of the keys still flagged in
			// another and capture those: a client (under the event loop,
			// every client) waits for a few keys' encoding, never for a
			// whole shard's
			var c captured
			dirty := false
			lock(s, func() {
				if dirty = len(s.dirty) > 0 || s.flagged > 0; !dirty {
					return
				}
				c = captured{s: s, dirty: s.dirty}
				s.dirty = nil
				names = names[:0]
				for key := range c.dirty {
					names = append(names, key)
				}
			})
			if !dirty {
				continue
			}
			captureAll(s, dbi, names, c.dirty)
			lock(s, func() {
				if s.flagged == 0 {
					return
				}
				for key, e := range s.m {
					if e.dirty {
						e.dirty = false
						s.flagged--
						c.flagged = append(c.flagged, key)
					}
				}
				s.cold.each(func(off int, kb []byte, r coldRec) bool {
					if r.dirty {
						s.cold.setDirty(off, false)
						s.flagged--
						c.flagged = append(c.flagged, string(kb))
					}
					return true
				})
			})
			captureAll(s, dbi, c.flagged, nil) // a key gone since: its header is dropped
			taken = append(taken, c)
			// big keys' remaining elements, a chunk per lock hold: writes
			// to such a key wait for one chunk, never for the whole key
			for _, r := range rest {
				for len(r.refs) > 0 {
					n := min(captureChunk, len(r.refs))
					ks.world.RLock()
					r.s.mu.Lock()
					var st *crdt.State
					st = r.s.stateOf(r.key)
					writes = append(writes, Write{DB: r.db, Key: r.key, ElemsOnly: true, Elems: encodeElems(st, r.refs[:n])})
					r.s.mu.Unlock()
					ks.world.RUnlock()
					r.refs = r.refs[n:]
					if len(writes) >= batch {
						if err := send(); err != nil {
							return keys, err
						}
					}
				}
			}
			rest = rest[:0]
			if len(writes) >= batch {
				if err := send(); err != nil {
					return keys, err
				}
			}
		}
	}
	return keys, send()
}

// captureChunk is how many elements of one key a checkpoint encodes per
// hold of its shard's lock.
const captureChunk = 1024

// captureKeys is how many keys' states a checkpoint encodes per hold of
// their shard's lock.
const captureKeys = 64

// restOf is the part of a big key's elements still to capture.
type restOf struct {
	s    *shard
	db   int
	key  string
	refs []elemRef
}

// capture encodes one dirty key's write (called under the shard's lock): its
// header and its first changed elements; more lists the rest, captured
// after in chunks (each later chunk reflects a state at least as new, and
// the log after the checkpoint's position covers every change either way).
func (s *shard) capture(dbi int, key string, dk *dirtyKey) (w Write, more []elemRef) {
	w = Write{DB: dbi, Key: key}
	st := s.stateOf(key)
	if st == nil { // removed: drop its header and every element
		w.ReplaceAll = dk != nil && dk.elems
		return w, nil
	}
	w.Header = crdt.AppendState(nil, st.Header())
	if dk != nil {
		w.ReplaceAll = dk.all && dk.elems
		refs := elemRefs(st, dk.all, dk.members, dk.fields)
		n := min(captureChunk, len(refs))
		w.Elems = encodeElems(st, refs[:n])
		more = refs[n:]
	}
	return w, more
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
