package keyspace

import (
	"math/rand/v2"
	"slices"
	"strings"
	"unsafe"

	"concord/crdt"
)

// scanTag is the order SCAN walks a shard's keys in: the top 32 bits of a
// key's coldHash (fib of its hashKey). Both of a shard's indexes (warm
// keys' and cold keys') put a key's home slot at these bits' top ones and
// probe linearly, so the keys from a tag on are found by walking either
// index from that tag's home slot, and a page reads about count slots,
// not the shard. (Sorting the shard's keys by a hash of their names read
// every name and record of the shard per call: a full SCAN of 950k keys
// took 89 s where Redis takes 3.5.)
func scanTag(h uint64) uint64 { return fib(h) >> 32 }

// scanCold marks a candidate from the cold index (else the warm one).
const scanCold = 1 << 31

// scanAll is the bound of an index walked whole (above every tag).
const scanAll = 1 << 32

// ScanPage returns the live keys of db from cursor on that match (all when
// match is nil) among about count looked at, and the next cursor (0 when
// done). Keys present for the whole scan are returned exactly once (a key
// added or removed meanwhile may or may not be); the cursor is the shard
// and the scanTag to go on from. st returns the key's state to match: a
// cold key is unpacked only if match asks. match must not keep k (a cold
// key's name points into its record until it is returned). in is the
// RunAll tx the caller runs in, or nil.
func (ks *Keyspace) ScanPage(in *Tx, dbi int, cursor uint64, count int, match func(k string, st func() *crdt.State) bool) ([]string, uint64) {
	d := ks.dbs[dbi]
	var cur *crdt.State
	var curPacked []byte
	stOf := func() *crdt.State {
		if cur == nil {
			cur = &crdt.State{}
			ks.unpack(cur, curPacked)
		}
		return cur
	}
	shardIdx := cursor >> 33
	pos := cursor & (1<<33 - 1)
	now := ks.NowMs()
	var out []string
	visited := 0
	var cands []uint64 // scanTag<<32 | scanCold? | slot
	for shardIdx < shardCount {
		s := &d.shards[shardIdx]
		s.lockFor(in)
		// count counts the keys looked at, matched or not (as Redis's
		// counts buckets): a MATCH or TYPE that few keys pass returns
		// short pages instead of reading the whole keyspace in one call
		var bound uint64
		cands, bound = s.scanCandidates(cands[:0], pos, count-visited)
		take := firstByTag(cands, count-visited)
		for _, c := range cands[:take] {
			visited++
			i := int(c & (scanCold - 1))
			var k string
			if c&scanCold == 0 {
				sl := &s.m.slots[i]
				if !sl.e.live {
					continue
				}
				if at := s.expireAt(sl.key, sl.e.hasExp); at > 0 && at <= now {
					continue
				}
				k, cur, curPacked = sl.key, sl.e.st, nil
			} else {
				r, kb, _ := s.cold.parse(int(uint32(s.cold.idx[i])) - 1)
				if len(kb) > 0 { // (the record's bytes: copied only when matched)
					k = unsafe.String(&kb[0], len(kb))
				}
				if at := s.expireAt(k, r.hasExp); at > 0 && at <= now {
					continue
				}
				cur, curPacked = nil, r.packed
			}
			if match == nil || match(k, stOf) {
				if c&scanCold != 0 {
					k = strings.Clone(k)
				}
				out = append(out, k)
			}
		}
		s.unlockFor(in)
		switch {
		case take < len(cands): // the shard goes on after the last tag given
			return out, shardIdx<<33 | (cands[take-1]>>32 + 1)
		case bound < scanAll: // (fewer than count keys had a tag below it)
			if visited >= count {
				return out, shardIdx<<33 | bound
			}
			pos = bound // this shard again
			continue
		}
		if visited >= count {
			if shardIdx+1 == shardCount {
				return out, 0
			}
			return out, (shardIdx + 1) << 33
		}
		shardIdx, pos = shardIdx+1, 0
	}
	return out, 0
}

// scanCandidates appends the shard's keys with a scanTag from pos on
// (warm slots holding a tombstone among them) as scanTag<<32 | slot, a
// cold slot's with scanCold: at least need of each index when it has as
// many, and every key of both whose tag is below the bound it returns.
func (s *shard) scanCandidates(cands []uint64, pos uint64, need int) ([]uint64, uint64) {
	cands, warm := s.m.scanFrom(cands, pos, need)
	cands, cold := s.cold.scanFrom(cands, pos, need)
	bound := min(warm, cold)
	if bound == scanAll {
		return cands, bound
	}
	kept := cands[:0]
	for _, c := range cands {
		if c>>32 < bound {
			kept = append(kept, c)
		}
	}
	return kept, bound
}

// scanFrom appends the index's keys whose scanTag is pos or more, walking
// from pos's home slot until it has need of them and reaches an empty
// slot; it returns the tag below which every key of the index from pos
// is among them: a key's slot is at or after its home with no empty slot
// between (linear probing; deletion leaves a marker), so keys whose home
// is before that empty slot were all passed, and home follows the tag. A
// walk that reaches the end of the slots gives all keys from pos: it goes
// on over the run of slots at the start, for the keys whose probe came
// round the end (a slot before its home: passed over by the walk itself).
func (x *index) scanFrom(cands []uint64, pos uint64, need int) ([]uint64, uint64) {
	if x.n == 0 {
		return cands, scanAll
	}
	return walkTags(cands, len(x.slots), x.shift, pos, need, 0, func(j int) (uint64, slotIs) {
		switch sl := &x.slots[j]; sl.e {
		case nil:
			return 0, slotEmpty
		case deleted:
			return 0, slotDeleted
		default:
			return scanTag(sl.h), slotLive
		}
	})
}

// scanFrom is index.scanFrom for the cold index (a slot carries the tag).
func (t *coldTable) scanFrom(cands []uint64, pos uint64, need int) ([]uint64, uint64) {
	if t.n == 0 {
		return cands, scanAll
	}
	return walkTags(cands, len(t.idx), t.shift, pos, need, scanCold, func(j int) (uint64, slotIs) {
		switch v := t.idx[j]; v {
		case 0:
			return 0, slotEmpty
		case tombSlot:
			return 0, slotDeleted
		default:
			return v >> 32, slotLive
		}
	})
}

// slotIs is what an index slot holds.
type slotIs uint8

const (
	slotEmpty   slotIs = iota // a probe ends here
	slotDeleted               // a probe goes on past it
	slotLive
)

// walkTags is scanFrom over size slots (a power of two; a tag's home slot
// is its top log2(size) bits, 64-shift of them) read by slot, each
// candidate marked with mark.
func walkTags(cands []uint64, size int, shift uint8, pos uint64, need int, mark uint64, slot func(j int) (uint64, slotIs)) ([]uint64, uint64) {
	if pos >= scanAll {
		return cands, scanAll
	}
	bits := 64 - uint(shift)
	home := func(tag uint64) int { return int(tag >> (32 - bits)) }
	got := 0
	for j := home(pos); j < size; j++ {
		tag, is := slot(j)
		if is == slotEmpty && got >= need {
			return cands, uint64(j) << (32 - bits)
		}
		if is == slotLive && tag >= pos && home(tag) <= j {
			cands = append(cands, tag<<32|mark|uint64(j))
			got++
		}
	}
	for j := 0; j < size; j++ {
		tag, is := slot(j)
		if is == slotEmpty {
			break
		}
		if is == slotLive && tag >= pos && home(tag) > j {
			cands = append(cands, tag<<32|mark|uint64(j))
		}
	}
	return cands, scanAll
}

// firstByTag puts the n candidates of least tag first (more when others
// share the greatest one's tag: a page never ends inside a tag, the
// cursor goes on from the next), in no order but the one of greatest tag
// last, and returns how many that is; all, as they are, when there are no
// more than n. (Sorting them was a fifth of KEYS: a page's order is free,
// and the candidates come in slot order, which reads the slots in turn.)
func firstByTag(c []uint64, n int) int {
	n = max(n, 1)
	if len(c) <= n {
		return len(c)
	}
	selectLeast(c, n)
	last := c[n-1] >> 32
	for _, x := range c[:n-1] {
		last = max(last, x>>32)
	}
	m := n
	for i := n; i < len(c); i++ {
		if c[i]>>32 == last {
			c[m], c[i] = c[i], c[m]
			m++
		}
	}
	top := 0
	for i, x := range c[:m] {
		if x > c[top] {
			top = i
		}
	}
	c[top], c[m-1] = c[m-1], c[top]
	return m
}

// selectLeast rearranges c so that its n least values come first, in no
// order (quickselect: O(len(c)) on average).
func selectLeast(c []uint64, n int) {
	lo, hi := 0, len(c) // the n-th least is in c[lo:hi]
	for hi-lo > 16 {
		// median of three as the pivot, Hoare's partition
		m := lo + (hi-lo)/2
		a, b, z := c[lo], c[m], c[hi-1]
		p := max(min(a, b), min(max(a, b), z))
		i, j := lo, hi-1
		for i <= j {
			for c[i] < p {
				i++
			}
			for c[j] > p {
				j--
			}
			if i <= j {
				c[i], c[j] = c[j], c[i]
				i++
				j--
			}
		}
		// c[lo:j+1] <= p <= c[i:hi], c[j+1:i] == p
		switch {
		case n <= j+1:
			hi = j + 1
		case n >= i:
			lo = i
		default:
			return
		}
	}
	slices.Sort(c[lo:hi])
}

// randomDraws is how many random slots RandomKey tries before it walks
// the keys (a draw misses on an empty shard, a tombstone or an expired
// key).
const randomDraws = 64

// RandomKey returns a random live key of db, or ""; in is the RunAll tx the
// caller runs in, or nil. A draw picks a shard, its warm or cold index in
// proportion to their keys, a slot of it and the first key from there, as
// Redis picks a bucket: keys after a run of empty slots come up more
// often. Only when draws keep missing does it walk the keys.
func (ks *Keyspace) RandomKey(in *Tx, dbi int) string {
	d := ks.dbs[dbi]
	now := ks.NowMs()
	for range randomDraws {
		s := &d.shards[rand.IntN(shardCount)]
		s.lockFor(in)
		k, ok := s.randomDraw(now)
		s.unlockFor(in)
		if ok {
			return k
		}
	}
	return ks.randomWalk(in, dbi, now)
}

// randomProbe is how many slots a draw looks at from where it lands.
const randomProbe = 32

// randomDraw is one of RandomKey's draws in s (locked).
func (s *shard) randomDraw(now int64) (string, bool) {
	warm, cold := s.m.n, s.cold.n
	if warm+cold == 0 {
		return "", false
	}
	if rand.IntN(warm+cold) < warm {
		mask := len(s.m.slots) - 1
		i := rand.IntN(len(s.m.slots))
		for range randomProbe {
			if sl := &s.m.slots[i]; sl.e != nil && sl.e != deleted {
				at := s.expireAt(sl.key, sl.e.hasExp)
				return sl.key, sl.e.live && (at == 0 || at > now)
			}
			i = (i + 1) & mask
		}
		return "", false
	}
	mask := len(s.cold.idx) - 1
	i := rand.IntN(len(s.cold.idx))
	for range randomProbe {
		if v := s.cold.idx[i]; v != 0 && v != tombSlot {
			r, kb, _ := s.cold.parse(int(uint32(v)) - 1)
			k := string(kb)
			at := s.expireAt(k, r.hasExp)
			return k, at == 0 || at > now
		}
		i = (i + 1) & mask
	}
	return "", false
}

// randomWalk is RandomKey by walking: a random shard with live keys, the
// skip-th live key not past its deadline, warm ones first (the last one if
// fewer: s.live counts keys not yet expired).
func (ks *Keyspace) randomWalk(in *Tx, dbi int, now int64) string {
	d := ks.dbs[dbi]
	start := rand.IntN(shardCount)
	for i := 0; i < shardCount; i++ {
		s := &d.shards[(start+i)%shardCount]
		s.lockFor(in)
		found := ""
		if s.live > 0 {
			skip := rand.IntN(s.live)
			for k, e := range s.m.all() {
				if at := s.expireAt(k, e.hasExp); e.live && (at == 0 || at > now) {
					if found = k; skip == 0 {
						break
					}
					skip--
				}
			}
			if skip > 0 || found == "" {
				var pick []byte
				s.cold.each(func(_ int, kb []byte, r coldRec) bool {
					if at := s.expireAt(string(kb), r.hasExp); at == 0 || at > now {
						pick = kb
						skip--
					}
					return skip >= 0
				})
				if pick != nil {
					found = string(pick)
				}
			}
		}
		s.unlockFor(in)
		if found != "" {
			return found
		}
	}
	return ""
}
