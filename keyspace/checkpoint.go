package keyspace

import "concord/crdt"

// dirtyKey is what changed in a key since the last checkpoint captured its
// shard, beyond its header: which members and fields (or all of them).
// Plain string keys never need one (a nil *dirtyKey in shard.dirty).
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
	if plain && e.dirty && !gone {
		return // already in the dirty map, nothing more to record
	}
	if s.dirty == nil {
		s.dirty = make(map[string]*dirtyKey)
	}
	e.dirty = !gone
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
}

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
// states are stored (put back if storing fails).
type captured struct {
	s     *shard
	dirty map[string]*dirtyKey
}

// Checkpoint encodes the state of every key changed since the last
// checkpoint, shard by shard (each under its lock, never the whole keyspace
// at once), and hands the writes to flush in batches of about batch keys.
// A batch flush fails to store is marked dirty again. The caller makes the
// log durable up to the capture before storing a batch, and records the log
// position taken before Checkpoint began as covered once it returns nil.
func (ks *Keyspace) Checkpoint(batch int, flush func([]Write) error) (keys int, err error) {
	var writes []Write
	var taken []captured
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
	for dbi, d := range ks.dbs {
		for i := range d.shards {
			s := &d.shards[i]
			ks.world.RLock()
			s.mu.Lock()
			if len(s.dirty) > 0 {
				for key, dk := range s.dirty {
					writes = append(writes, s.capture(dbi, key, dk))
					if e := s.m[key]; e != nil {
						e.dirty = false
					}
				}
				taken = append(taken, captured{s, s.dirty})
				s.dirty = nil
			}
			s.mu.Unlock()
			ks.world.RUnlock()
			if len(writes) >= batch {
				if err := send(); err != nil {
					return keys, err
				}
			}
		}
	}
	return keys, send()
}

// capture encodes one dirty key's write (called under the shard's lock).
func (s *shard) capture(dbi int, key string, dk *dirtyKey) Write {
	w := Write{DB: dbi, Key: key}
	e := s.m[key]
	if e == nil { // removed: drop its header and every element
		w.ReplaceAll = dk != nil && dk.elems
		return w
	}
	w.Header = crdt.AppendState(nil, e.st.Header())
	if dk != nil {
		w.ReplaceAll = dk.all && dk.elems
		w.Elems = elemWrites(e.st, dk.all, dk.members, dk.fields)
	}
	return w
}

// redirty puts back dirty sets whose states could not be stored.
func (ks *Keyspace) redirty(taken []captured) {
	for _, c := range taken {
		ks.world.RLock()
		c.s.mu.Lock()
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
			s.mu.Unlock()
		}
	}
	return n
}
