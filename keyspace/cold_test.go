package keyspace

import (
	"fmt"
	"maps"
	"math/rand"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"concord/crdt"
)

// snapshots returns every key's state (tombstones included), as the codec's
// canonical bytes are order-dependent, compared with crdt.Equal.
func snapshots(ks *Keyspace, keys []Key) map[Key]*crdt.State {
	out := map[Key]*crdt.State{}
	for _, k := range keys {
		if st := ks.Snapshot(k); st != nil {
			out[k] = st
		}
	}
	return out
}

// Keys packed by PackCold read, write, expire, scan, checkpoint and digest
// exactly as if they had stayed unpacked: a keyspace that packs after every
// step and one that never packs see the same random workload and must agree
// on every state, every reply, every checkpoint write and every digest.
func TestColdKeysBehaveLikeWarmOnes(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		clk := &fakeClock{t: time.Unix(1_000_000, 0)}
		mk := func() (*Keyspace, *memStore) {
			st := &memStore{}
			return New(Config{Region: "A", DBs: 3, Now: clk.Now, Digests: true, Stable: func() bool { return seed%2 == 0 }}, st), st
		}
		cold, cstore := mk()
		warm, wstore := mk()
		rng := rand.New(rand.NewSource(seed))
		var keys []Key
		for i := 0; i < 40; i++ {
			name := fmt.Sprint("k", i)
			switch {
			case i == 1:
				name = "" // a valid key too
			case i%5 == 0: // around the 32 bytes a string entry holds itself
				name = fmt.Sprint(strings.Repeat("x", 26+i/5), i)
			}
			keys = append(keys, Key{DB: i % 3, Key: name})
		}
		packed := 0
		for step := 0; step < 1500; step++ {
			k := keys[rng.Intn(len(keys))]
			op := rng.Intn(9)
			arg := fmt.Sprint(rng.Intn(6))
			ttl := int64(rng.Intn(3000))
			reply := func(ks *Keyspace) string {
				var out string
				ks.Run([]Key{k}, func(tx *Tx) error {
					st := tx.State(k)
					switch op {
					case 0:
						tx.Apply(k, crdt.SetString(st, tx.Op(), []byte(arg), false))
					case 1:
						if tx.Type(k) == crdt.TypeNone || tx.Type(k) == crdt.TypeString {
							tx.Apply(k, crdt.IncrBy(st, tx.Op(), 3))
						}
					case 2:
						tx.Apply(k, crdt.SAdd(st, tx.Op(), [][]byte{[]byte(arg)}))
					case 3:
						tx.Apply(k, crdt.HSet(st, tx.Op(), [][]byte{[]byte("f" + arg), []byte(arg)}))
					case 4:
						tx.Apply(k, crdt.Delete(st))
					case 5:
						tx.Apply(k, crdt.Expire(st, tx.Op(), tx.NowMs()+ttl))
					case 6:
						tx.Apply(k, crdt.SRem(st, [][]byte{[]byte(arg)}))
					}
					if g := tx.Get(k); g != nil {
						out = g.Type().String() + describe(g)
					}
					return nil
				})
				return out
			}
			rc, rw := reply(cold), reply(warm)
			if rc != rw {
				t.Fatalf("seed %d step %d: cold keyspace replied %q, warm %q", seed, step, rc, rw)
			}
			switch rng.Intn(10) {
			case 0:
				clk.Add(time.Duration(rng.Intn(1500)) * time.Millisecond)
			case 1:
				cstore.checkpoint(t, cold)
				wstore.checkpoint(t, warm)
			case 2:
				cold.ExpireCycle(1000, 0)
				warm.ExpireCycle(1000, 0)
			}
			if step%3 == 0 {
				cold.Roots() // anti-entropy settles the digests: keys may go cold
				warm.Roots()
			}
			packed += cold.PackCold(4) // twice per touch: hot, then packed
			packed += cold.PackCold(4)
		}
		checkFlagged(t, cold)
		checkFlagged(t, warm)
		if packed == 0 || cold.Stats.ColdKeys.Load() == 0 {
			t.Fatalf("nothing was packed (%d, %d)", packed, cold.Stats.ColdKeys.Load())
		}
		cs, ws := snapshots(cold, keys), snapshots(warm, keys)
		if len(cs) != len(ws) {
			t.Fatalf("seed %d: %d keys vs %d", seed, len(cs), len(ws))
		}
		for k, st := range ws {
			if !crdt.Equal(cs[k], st) {
				t.Fatalf("seed %d: %v differs after packing", seed, k)
			}
		}
		if fmt.Sprint(cold.Roots()) != fmt.Sprint(warm.Roots()) {
			t.Fatalf("seed %d: anti-entropy roots differ", seed)
		}
		for db := 0; db < 3; db++ {
			sc, _ := cold.ScanPage(nil, db, 0, 1000, func(_ string, st func() *crdt.State) bool { return st().Type() == crdt.TypeSet })
			sw, _ := warm.ScanPage(nil, db, 0, 1000, func(_ string, st func() *crdt.State) bool { return st().Type() == crdt.TypeSet })
			sort.Strings(sc)
			sort.Strings(sw)
			if fmt.Sprint(sc) != fmt.Sprint(sw) {
				t.Fatalf("SCAN TYPE set: %v vs %v", sc, sw)
			}
			nc, xc := cold.Size(db)
			nw, xw := warm.Size(db)
			if nc != nw || xc != xw {
				t.Fatalf("sizes %d/%d vs %d/%d", nc, xc, nw, xw)
			}
		}
		// key listings (FLUSHALL/SWAPDB, anti-entropy), RANDOMKEY and WATCH
		// versions see cold keys
		cold.Roots()
		cold.PackCold(4)
		cold.PackCold(4)
		if cold.Stats.ColdKeys.Load() == 0 {
			t.Fatal("no cold keys to list")
		}
		versions := func(ks *Keyspace) string {
			var out []string
			for _, k := range keys {
				ks.Run([]Key{k}, func(tx *Tx) error { out = append(out, fmt.Sprint(tx.Version(k))); return nil })
			}
			return fmt.Sprint(out)
		}
		for db := 0; db < 3; db++ {
			var lc, lw []string
			cold.RunAll(func(tx *Tx) error { lc = tx.Keys(db); return nil })
			warm.RunAll(func(tx *Tx) error { lw = tx.Keys(db); return nil })
			sort.Strings(lc)
			sort.Strings(lw)
			if fmt.Sprint(lc) != fmt.Sprint(lw) {
				t.Fatalf("Keys(%d): %v vs %v", db, lc, lw)
			}
			all := make([]int, NumBuckets)
			for i := range all {
				all[i] = i
			}
			kc, kw := cold.KeysIn(db, all), warm.KeysIn(db, all)
			sort.Strings(kc)
			sort.Strings(kw)
			if fmt.Sprint(kc) != fmt.Sprint(kw) {
				t.Fatalf("KeysIn(%d): %v vs %v", db, kc, kw)
			}
			if len(lw) > 0 {
				if r := cold.RandomKey(nil, db); sort.SearchStrings(lw, r) == len(lw) || lw[sort.SearchStrings(lw, r)] != r {
					t.Fatalf("RANDOMKEY returned %q, not a key of db %d", r, db)
				}
			}
		}
		versions(cold) // expires the keys whose deadline passed (a new version)
		versions(warm)
		before := versions(cold)
		cold.Roots()
		cold.PackCold(4)
		cold.PackCold(4)
		if after := versions(cold); after != before {
			t.Fatalf("packing changed WATCH versions:\n%s\n%s", before, after)
		}
		// what a checkpoint stores of cold keys is what it stores of warm ones
		cstore.writes, wstore.writes = nil, nil
		cold.Roots()
		cold.PackCold(4)
		cold.PackCold(4)
		for _, k := range keys {
			for _, ks := range []*Keyspace{cold, warm} {
				s := ks.dbs[k.DB].shardOf(k.Key)
				s.mu.Lock()
				if s.dirty == nil {
					s.dirty = map[string]*dirtyKey{}
				}
				s.dirty[k.Key] = &dirtyKey{all: true, elems: true}
				s.mu.Unlock()
			}
		}
		cstore.checkpoint(t, cold)
		wstore.checkpoint(t, warm)
		if a, b := canonWrites(cstore.writes), canonWrites(wstore.writes); a != b {
			t.Fatalf("seed %d: checkpoints differ:\n%s\n%s", seed, a, b)
		}
	}
}

// describe renders a state's readable value.
func describe(st *crdt.State) string {
	switch st.Type() {
	case crdt.TypeString:
		v, _ := st.StrValue()
		return string(v)
	case crdt.TypeSet:
		var m []string
		for k := range st.Set.All() {
			m = append(m, k)
		}
		sort.Strings(m)
		return fmt.Sprint(m, st.ExpireAt())
	case crdt.TypeHash:
		var m []string
		for f, r := range st.Hash.All() {
			if v, ok, _ := r.Get(); ok {
				m = append(m, f+"="+string(v))
			}
		}
		sort.Strings(m)
		return fmt.Sprint(m, st.ExpireAt())
	}
	return ""
}

// canonWrites renders checkpoint writes independent of order.
func canonWrites(ws []Write) string {
	var out []string
	for _, w := range ws {
		var h string
		if w.Header != nil {
			st, err := crdt.DecodeState(w.Header)
			if err != nil {
				return err.Error()
			}
			h = describe(st) + fmt.Sprint(st.ExpireAt(), st.Ctx)
		}
		var el []string
		for _, e := range w.Elems {
			el = append(el, fmt.Sprintf("%d:%s:%d", e.Kind, e.Name, len(e.Data)))
		}
		sort.Strings(el)
		out = append(out, fmt.Sprintf("%d/%s %v %s %v", w.DB, w.Key, w.ReplaceAll, h, el))
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}

// The cold table against a map: random adds, finds, removes, dirty flags
// and iteration, through growth, tombstone reuse and compaction.
func TestColdTableModel(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	var tbl coldTable
	model := map[string]coldRec{}
	for step := 0; step < 20000; step++ {
		k := fmt.Sprint("key", rng.Intn(600))
		h := coldHash(k)
		slot, off := tbl.find(k, h)
		m, ok := model[k]
		if (slot >= 0) != ok {
			t.Fatalf("step %d: find(%s) = %d, model has it: %v", step, k, slot, ok)
		}
		if ok {
			r, key, end := tbl.parse(off)
			if string(key) != k || r.ver != m.ver || r.dig != m.dig || r.elems != m.elems || r.hasExp != m.hasExp || r.dirty != m.dirty || string(r.packed) != string(m.packed) {
				t.Fatalf("step %d: record of %s = %+v, want %+v", step, k, r, m)
			}
			switch rng.Intn(3) {
			case 0:
				tbl.remove(slot, off, end)
				delete(model, k)
			case 1:
				tbl.setDirty(off, !m.dirty)
				m.dirty = !m.dirty
				model[k] = m
			}
			continue
		}
		r := coldRec{hasExp: rng.Intn(2) == 0, dirty: rng.Intn(2) == 0, ver: rng.Uint64(), elems: rng.Uint64(), dig: rng.Uint64(),
			packed: []byte(strings.Repeat("p", rng.Intn(300)))}
		if !tbl.add(k, h, r, true) {
			t.Fatal("add refused")
		}
		model[k] = r
		if tbl.n != len(model) {
			t.Fatalf("n %d, model %d", tbl.n, len(model))
		}
	}
	seen := 0
	tbl.each(func(_ int, key []byte, r coldRec) bool {
		if m, ok := model[string(key)]; !ok || m.ver != r.ver {
			t.Fatalf("each yields %s, not in the model", key)
		}
		seen++
		return true
	})
	if seen != len(model) {
		t.Fatalf("each yields %d records, model has %d", seen, len(model))
	}
}

// A sweep in parts covers every shard once.
func TestPackColdInParts(t *testing.T) {
	ks, _, _ := newKS(true)
	for i := 0; i < 500; i++ {
		set(ks, fmt.Sprint("k", i), "v", 0)
	}
	for round := 0; round < 2; round++ {
		if n := ks.Stats.ColdKeys.Load(); n != 0 {
			t.Fatalf("%d keys cold before their second sweep", n)
		}
		for part := 0; part < 7; part++ {
			ks.PackColdPart(8, part, 7)
		}
	}
	if n := ks.Stats.ColdKeys.Load(); n != 500 {
		t.Fatalf("%d of 500 idle keys packed by a sweep in parts", n)
	}
}

// MEMORY USAGE's estimate reads a cold key where it is (it stays cold) and
// shows what packing saves; an expired key, warm or cold, has none.
func TestUsageLeavesColdKeysCold(t *testing.T) {
	ks, clk, _ := newKS(true)
	set(ks, "k", "value", 0)
	set(ks, "ttl", "value", time.Second)
	usage := func(key string) (n int64, ok bool) {
		k := Key{Key: key}
		ks.Run([]Key{k}, func(tx *Tx) error { n, ok = tx.Usage(k, 5); return nil })
		return
	}
	warm, ok := usage("k")
	if !ok || warm < 300 {
		t.Fatalf("warm key: %d %v", warm, ok)
	}
	ks.PackCold(128)
	if got := ks.PackCold(128); got != 2 {
		t.Fatalf("packed %d keys", got)
	}
	cold, ok := usage("k")
	if !ok || cold <= 0 || cold >= warm/4 {
		t.Fatalf("cold key: %d %v (warm %d)", cold, ok, warm)
	}
	if ks.Stats.ColdKeys.Load() != 2 {
		t.Fatalf("MEMORY USAGE warmed a key: %d cold", ks.Stats.ColdKeys.Load())
	}
	if _, ok := usage("missing"); ok {
		t.Fatal("usage of a missing key")
	}
	clk.Add(2 * time.Second)
	if _, ok := usage("ttl"); ok {
		t.Fatal("usage of an expired cold key")
	}
}

// touchEntry reads across an entry's allocation only for entries that are
// an entryWithString's (inRoom), whose state is then its room's: string
// keys made by a write, by warming a packed key, and not other keys (a
// set, a hash, a key loaded from disk). Under -race, checkptr also checks
// the arithmetic stays inside the allocation.
func TestTouchEntryOnlyInRooms(t *testing.T) {
	ks, _, _ := newKS(true)
	write := func(k string, d func(st *crdt.State, op crdt.Op) *crdt.State) {
		ks.Run([]Key{{Key: k}}, func(tx *Tx) error {
			tx.Apply(Key{Key: k}, d(tx.State(Key{Key: k}), tx.Op()))
			return nil
		})
	}
	str := func(st *crdt.State, op crdt.Op) *crdt.State { return crdt.SetString(st, op, []byte("v"), false) }
	write("s1", str)
	write("a-string-key-name-longer-than-thirty-two-bytes", str)
	write("set", func(st *crdt.State, op crdt.Op) *crdt.State { return crdt.SAdd(st, op, [][]byte{[]byte("m")}) })
	write("hash", func(st *crdt.State, op crdt.Op) *crdt.State {
		return crdt.HSet(st, op, [][]byte{[]byte("f"), []byte("v")})
	})
	write("cold", str)
	ks.PackCold(4)
	ks.PackCold(4) // "cold" is now packed; reading it warms it into a room
	loaded := &crdt.State{}
	loaded.Merge(crdt.SetString(loaded, crdt.Op{HLC: crdt.HLC{Phys: 1, Region: "B"}}, []byte("x"), false))
	ks.Load(Key{Key: "loaded"}, loaded)
	for _, k := range []string{"s1", "set", "hash"} {
		write(k, func(st *crdt.State, op crdt.Op) *crdt.State { return crdt.Expire(st, op, 1<<50) }) // (packed too: warmed again)
	}
	want := map[string]bool{"s1": true, "a-string-key-name-longer-than-thirty-two-bytes": true, "set": false, "hash": false, "loaded": false, "cold": true}
	for k, inRoom := range want {
		ks.Run([]Key{{Key: k}}, func(tx *Tx) error {
			e := tx.find(Key{Key: k})
			if e == nil {
				t.Fatalf("%s: no entry", k)
			}
			if e.inRoom != inRoom {
				t.Fatalf("%s: inRoom %v, want %v", k, e.inRoom, inRoom)
			}
			if e.inRoom {
				x := unsafe.Add(unsafe.Pointer(e), -int(unsafe.Offsetof(entryWithString{}.e)))
				if unsafe.Pointer(e.st) != unsafe.Add(x, unsafe.Offsetof(entryWithString{}.room)) {
					t.Fatalf("%s: the state of an entry in a room is not the room's", k)
				}
			}
			tx.touchSink ^= touchEntry(e)
			return nil
		})
	}
}

// A string key's entry is exactly one of Go's size classes: a field added
// to it (or to crdt.StringRoom) must not push every warm string key into
// the next class unnoticed.
func TestStringEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entryWithString{}); n != stringEntrySize {
		t.Fatalf("entryWithString is %d bytes, want %d", n, stringEntrySize)
	}
}

// DigestsIn gives every key of a bucket, warm or cold, with the digest
// Digest gives it.
func TestDigestsInMatchesDigest(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	ks := New(Config{Region: "A", Now: clk.Now, Digests: true, Stable: func() bool { return false }}, &memStore{})
	want := map[string]uint64{}
	for i := 0; i < 300; i++ {
		set(ks, fmt.Sprint("k", i), fmt.Sprint(i), 0)
		if i == 150 {
			ks.Roots() // (a key awaiting its digest stays warm)
			ks.PackCold(128)
			ks.PackCold(128) // the first half cold
		}
	}
	// DigestsIn first: it must bring the stale digests up to date itself
	got := map[string]uint64{}
	for b := 0; b < NumBuckets; b++ {
		ks.DigestsIn(0, b, func(k string, d uint64) {
			if BucketOf(k) != b {
				t.Fatalf("%s listed in bucket %d, not its own %d", k, b, BucketOf(k))
			}
			got[k] = d
		})
	}
	if ks.Stats.ColdKeys.Load() == 0 {
		t.Fatal("no cold key")
	}
	for i := 0; i < 300; i++ {
		k := fmt.Sprint("k", i)
		if want[k] = ks.Digest(Key{Key: k}); want[k] == 0 {
			t.Fatalf("%s has no digest", k)
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("DigestsIn: %d keys, want %d (or digests differ)", len(got), len(want))
	}
	// a shard's buckets in one walk: exactly the keys of the buckets in the
	// mask (warm and cold), every shard's full mask all keys
	for _, mask := range []uint32{0xffff, 0x5555, 1 << 3, 0x8001} {
		got, inMask := map[string]uint64{}, map[string]uint64{}
		for k, d := range want {
			if mask&(1<<(BucketOf(k)%BucketsPerShard)) != 0 {
				inMask[k] = d
			}
		}
		for sh := 0; sh < NumBuckets/BucketsPerShard; sh++ {
			ks.DigestsInShard(0, sh, mask, func(k string, d uint64) {
				if BucketOf(k)/BucketsPerShard != sh {
					t.Fatalf("%s listed in shard %d, not its own", k, sh)
				}
				got[k] = d
			})
		}
		if !maps.Equal(got, inMask) {
			t.Fatalf("DigestsInShard, mask %#x: %d keys, want %d (or digests differ)", mask, len(got), len(inMask))
		}
	}
}

// Sweeps that run while commands write, delete and read the same keys
// (the sweep lets commands in between its batches) lose nothing and
// count every key once: each key ends with its last write, warm or cold.
func TestPackColdWhileServing(t *testing.T) {
	defer func(y int) { packYield = y }(packYield)
	packYield = packBatch // a yield after every batch
	ks, _, _ := newKS(true)
	const keys, writers = 3000, 4
	want := make([]map[string]string, writers) // each writer's keys: value, "" deleted
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		want[w] = map[string]string{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprint("k", rng.Intn(keys/writers)*writers+w)
				switch op := rng.Intn(10); {
				case op < 5:
					v := fmt.Sprint(i)
					set(ks, key, v, 0)
					want[w][key] = v
				case op < 6:
					k := Key{Key: key}
					ks.Run([]Key{k}, func(tx *Tx) error {
						tx.Apply(k, crdt.Delete(tx.State(k)))
						return nil
					})
					want[w][key] = ""
				default:
					if v, ok := get(ks, key); v != want[w][key] || ok != (want[w][key] != "") {
						t.Errorf("%s = %q (%v) mid-sweeps, want %q", key, v, ok, want[w][key])
						return
					}
				}
			}
		}()
	}
	for range 200 {
		ks.PackCold(8)
	}
	close(stop)
	wg.Wait()
	live := 0
	for w := range writers {
		for key, v := range want[w] {
			if got, ok := get(ks, key); got != v || ok != (v != "") {
				t.Errorf("%s = %q (%v), want %q", key, got, ok, v)
			}
			if v != "" {
				live++
			}
		}
	}
	ks.PackCold(8)
	ks.PackCold(8)
	if cold := ks.Stats.ColdKeys.Load(); cold != int64(live) {
		t.Errorf("%d keys cold after two idle sweeps, want all %d live ones", cold, live)
	}
	warm, cold := 0, 0
	for _, d := range ks.dbs {
		for i := range d.shards {
			warm += d.shards[i].m.len()
			cold += d.shards[i].cold.n
		}
	}
	if int64(warm) != ks.Stats.WarmKeys.Load() || int64(cold) != ks.Stats.ColdKeys.Load() {
		t.Errorf("the maps hold %d keys and the cold tables %d, the counters say %d and %d", warm, cold, ks.Stats.WarmKeys.Load(), ks.Stats.ColdKeys.Load())
	}
}

// A cold key's deadline is filed under a name of its own: merge files a
// warm key's under the index's name, which for a short key is inside the
// entry, and the deadline map would keep every packed entry allocated.
func TestColdDeadlinesKeepNoEntry(t *testing.T) {
	heapPerKey := func(ttl time.Duration) float64 {
		ks := New(Config{Region: "A", Stable: func() bool { return true }}, discard{}) // (a memStore keeps every delta)
		const n = 20000
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := range n {
			set(ks, fmt.Sprint("k", i), "v", ttl) // names short enough to sit in their entries
		}
		ks.PackCold(8)
		ks.PackCold(8)
		if c := ks.Stats.ColdKeys.Load(); c != n {
			t.Fatalf("%d cold keys, want %d", c, n)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(ks)
		return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	}
	plain, withTTL := heapPerKey(0), heapPerKey(time.Hour)
	// a deadline costs its map slot and a copy of the name (~60 bytes); an
	// entry kept alive costs its struct and state (hundreds)
	t.Logf("heap per cold key: %.0f bytes, %.0f with a deadline", plain, withTTL)
	if extra := withTTL - plain; extra > 120 {
		t.Fatalf("a cold key with a deadline takes %.0f bytes of heap more than one without (%.0f vs %.0f): entries kept", extra, withTTL, plain)
	}
}
