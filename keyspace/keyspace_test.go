package keyspace

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"concord/crdt"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) Add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

type memStore struct {
	mu      sync.Mutex
	writes  []Write
	deltas  []crdt.KeyDelta
	inbound []crdt.KeyDelta
	// peers' messages logged as they came, and the deltas merged from them
	received [][]byte
	merged   []crdt.KeyDelta
}

type done struct{}

func (done) Wait() error { return nil }

func (m *memStore) Submit(w []Write, d, in []crdt.KeyDelta, r Received) Ticket {
	m.mu.Lock()
	m.writes = append(m.writes, w...)
	m.deltas = append(m.deltas, d...)
	m.inbound = append(m.inbound, in...)
	m.received = append(m.received, r.Messages...)
	m.merged = append(m.merged, r.Merged...)
	m.mu.Unlock()
	return done{}
}

// checkpoint stores the states of the keys changed since the last one.
func (m *memStore) checkpoint(t testing.TB, ks *Keyspace) {
	t.Helper()
	if _, err := ks.Checkpoint(3, nil, func(ws []Write) error {
		m.mu.Lock()
		m.writes = append(m.writes, ws...)
		m.mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func newKS(stable bool) (*Keyspace, *fakeClock, *memStore) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	st := &memStore{}
	ks := New(Config{Region: "A", Now: clk.Now, Stable: func() bool { return stable }}, st)
	return ks, clk, st
}

func set(ks *Keyspace, key, val string, ttl time.Duration) {
	k := Key{Key: key}
	ks.Run([]Key{k}, func(tx *Tx) error {
		tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), []byte(val), false))
		if ttl > 0 {
			tx.Apply(k, crdt.Expire(tx.State(k), tx.Op(), tx.NowMs()+ttl.Milliseconds()))
		}
		return nil
	})
}

func get(ks *Keyspace, key string) (v string, ok bool) {
	k := Key{Key: key}
	ks.Run([]Key{k}, func(tx *Tx) error {
		if st := tx.Get(k); st != nil {
			b, _ := st.StrValue()
			v, ok = string(b), true
		}
		return nil
	})
	return
}

func TestLazyAndActiveExpiry(t *testing.T) {
	ks, clk, store := newKS(true)
	set(ks, "a", "1", time.Second)
	set(ks, "b", "2", time.Second)
	set(ks, "c", "3", 0)
	if n, x := ks.Size(0); n != 3 || x != 2 {
		t.Fatalf("size %d/%d", n, x)
	}
	clk.Add(2 * time.Second)
	if _, ok := get(ks, "a"); ok {
		t.Fatal("expired key returned")
	}
	if ks.Stats.ExpiredKeys.Load() != 1 {
		t.Fatalf("expired_keys %d", ks.Stats.ExpiredKeys.Load())
	}
	// b is never touched: the active cycle removes it
	_, n := ks.ExpireCycle(100, 0)
	if n != 1 || ks.Stats.ExpiredKeys.Load() != 2 {
		t.Fatalf("sweep removed %d, expired_keys %d", n, ks.Stats.ExpiredKeys.Load())
	}
	if n, x := ks.Size(0); n != 1 || x != 0 {
		t.Fatalf("size after expiry %d/%d", n, x)
	}
	// the expiry became a delete delta and, with no peers, a deleted record
	store.writes = nil
	store.checkpoint(t, ks)
	headers, _ := headersIn(t, store.writes)
	for _, k := range []string{"a", "b"} {
		stored := false
		for _, w := range store.writes {
			stored = stored || w.Page && w.Bucket == BucketOf(k)
		}
		if _, kept := headers[k]; kept || !stored {
			t.Fatalf("the delete of %q is not persisted: %+v", k, store.writes)
		}
	}
	keys, _ := ks.ScanPage(nil, 0, 0, 100, nil)
	if len(keys) != 1 || keys[0] != "c" {
		t.Fatalf("scan %v", keys)
	}
	// the db's count of keys with a deadline (an idle cycle skips a db
	// at 0) follows deadlines set, replaced, dropped and expired
	withExp := func(want int64) {
		t.Helper()
		if got := ks.dbs[0].withExp.Load(); got != want {
			t.Fatalf("keys with a deadline: %d, want %d", got, want)
		}
	}
	withExp(0)
	set(ks, "d", "4", time.Second)
	set(ks, "d", "5", 2*time.Second)
	withExp(1)
	set(ks, "d", "6", 0) // SET without EX drops the deadline
	withExp(0)
	set(ks, "d", "7", time.Second)
	clk.Add(2 * time.Second)
	if _, n := ks.ExpireCycle(100, 0); n != 1 {
		t.Fatalf("sweep removed %d", n)
	}
	withExp(0)
}

// With peers (not stable) a deleted key stays as a tombstone: hidden from
// reads and counts, kept in memory and on disk for the merge.
func TestTombstonesKeptUntilStable(t *testing.T) {
	ks, _, store := newKS(false)
	set(ks, "k", "v", 0)
	k := Key{Key: "k"}
	ks.Run([]Key{k}, func(tx *Tx) error { tx.Apply(k, crdt.Delete(tx.State(k))); return nil })
	if _, ok := get(ks, "k"); ok {
		t.Fatal("deleted key readable")
	}
	if n, _ := ks.Size(0); n != 0 {
		t.Fatalf("size %d", n)
	}
	if ks.Stats.Tombstones.Load() != 1 {
		t.Fatalf("tombstones %d", ks.Stats.Tombstones.Load())
	}
	store.checkpoint(t, ks)
	last := store.writes[len(store.writes)-1]
	if last.Header == nil {
		t.Fatal("tombstone not persisted")
	}
	st, err := crdt.DecodeState(last.Header)
	if err != nil || st.Ctx.IsEmpty() {
		t.Fatalf("tombstone lost its context: %v", err)
	}
}

func TestRemoteConflictsRecorded(t *testing.T) {
	ks, _, _ := newKS(false)
	set(ks, "k", "local", 0)
	// region B assigned the key concurrently, later by HLC
	remote := crdt.SetString(&crdt.State{}, crdt.Op{HLC: crdt.HLC{Phys: 9_999_999_999_999, Region: "B"}}, []byte("remote"), false)
	k := Key{Key: "k"}
	ks.Run([]Key{k}, func(tx *Tx) error { tx.ApplyRemote(k, remote, "B"); return nil })
	if v, _ := get(ks, "k"); v != "remote" {
		t.Fatalf("value %q", v)
	}
	evs, total := ks.Conflicts(10)
	if total != 1 || len(evs) != 1 || evs[0].Kind != "lww" || evs[0].From != "B" || ks.Stats.ConflictsLWW.Load() != 1 ||
		!strings.Contains(evs[0].Winner, `"remote" by B@`) || !strings.Contains(evs[0].Loser, `"local" by A@`) {
		t.Fatalf("conflicts %v total %d", evs, total)
	}
	// a type conflict
	sadd := crdt.SAdd(&crdt.State{}, crdt.Op{HLC: crdt.HLC{Phys: 9_999_999_999_999, Log: 5, Region: "C"}}, [][]byte{[]byte("m")})
	ks.Run([]Key{k}, func(tx *Tx) error { tx.ApplyRemote(k, sadd, "C"); return nil })
	evs, _ = ks.Conflicts(1)
	if evs[0].Kind != "type" || ks.Stats.ConflictsType.Load() != 1 || !strings.HasPrefix(evs[0].Winner, "set created C@") || !strings.HasPrefix(evs[0].Loser, "string created") {
		t.Fatalf("newest conflict %v", evs)
	}
}

func TestConflictRingBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1, 0)}
	ks := New(Config{Region: "A", Now: clk.Now, ConflictLog: 5}, &memStore{})
	for i := 0; i < 12; i++ {
		ks.recordConflicts(Key{Key: fmt.Sprint(i)}, crdt.ConflictLWW, nil, "B")
	}
	evs, total := ks.Conflicts(100)
	if total != 12 || len(evs) != 5 || evs[0].Key != "11" || evs[4].Key != "7" {
		t.Fatalf("ring: total %d, %v", total, evs)
	}
}

func TestScanSeesEveryStableKeyDespiteChurn(t *testing.T) {
	ks, _, _ := newKS(true)
	for i := 0; i < 2000; i++ {
		set(ks, fmt.Sprint("stable", i), "v", 0)
	}
	seen := map[string]bool{}
	cur := uint64(0)
	for round := 0; ; round++ {
		var page []string
		page, cur = ks.ScanPage(nil, 0, cur, 37, nil)
		for _, k := range page {
			seen[k] = true
		}
		set(ks, fmt.Sprint("churn", round), "v", 0) // keys come during the scan
		if cur == 0 {
			break
		}
	}
	var missing []string
	for i := 0; i < 2000; i++ {
		if !seen[fmt.Sprint("stable", i)] {
			missing = append(missing, fmt.Sprint(i))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("scan missed %d keys: %v", len(missing), missing[:min(5, len(missing))])
	}
}

func TestVersionChangesOnWrite(t *testing.T) {
	ks, _, _ := newKS(true)
	k := Key{Key: "w"}
	var v1, v2, v3 uint64
	ks.Run([]Key{k}, func(tx *Tx) error { v1 = tx.Version(k); return nil })
	set(ks, "w", "x", 0)
	ks.Run([]Key{k}, func(tx *Tx) error { v2 = tx.Version(k); return nil })
	ks.RunAll(func(tx *Tx) error { tx.BumpEpoch(0); v3 = tx.Version(k); return nil })
	if v1 == v2 || v2 == v3 {
		t.Fatalf("versions %d %d %d", v1, v2, v3)
	}
}

// A tx refuses a key on a shard it did not lock, whether it locked one
// shard or many (marked as its own, markHolder), also right after a big tx
// had locked that shard (the marks go with the locks).
func TestTxRefusesUnlockedKey(t *testing.T) {
	// keys on distinct shards: the first 31 for the txs, the last outside
	var keys []Key
	used := map[uint64]bool{}
	for i := 0; len(keys) < 32; i++ {
		k := fmt.Sprint("k", i)
		if sh := hashKey(k) % shardCount; !used[sh] {
			used[sh] = true
			keys = append(keys, Key{Key: k})
		}
	}
	outside := keys[31]
	refused := func(named []Key, k Key) (panicked bool) {
		// (a panic leaves the tx's shards locked: a keyspace per check,
		// after the big tx that locked k's shard before)
		ks, _, _ := newKS(true)
		ks.Run(keys[1:32], func(tx *Tx) error { return nil })
		defer func() { panicked = recover() != nil }()
		ks.Run(named, func(tx *Tx) error {
			for _, n := range named {
				tx.Get(n) // every named key is fine
			}
			tx.Get(k)
			return nil
		})
		return false
	}
	if !refused(keys[:1], outside) {
		t.Fatal("a one-key tx used a key outside it")
	}
	if !refused(keys[:31], outside) {
		t.Fatal("a tx of 31 shards used a key outside it")
	}
	if !refused(keys[:2], outside) {
		t.Fatal("a two-key tx used a key outside it")
	}
	if refused(keys[:31], keys[30]) {
		t.Fatal("a named key was refused")
	}
}

// headersIn returns the headers that writes store, by key (from their
// pages), and the writes of elements.
func headersIn(t testing.TB, writes []Write) (map[string][]byte, []Write) {
	t.Helper()
	headers := map[string][]byte{}
	var elems []Write
	for _, w := range writes {
		if !w.Page {
			if w.Header != nil {
				t.Fatalf("a checkpoint wrote a header outside a page: %+v", w)
			}
			elems = append(elems, w)
			continue
		}
		start := 0
		for i, k := range w.Keys {
			if BucketOf(k) != w.Bucket {
				t.Fatalf("key %q in page %d, its bucket is %d", k, w.Bucket, BucketOf(k))
			}
			headers[k] = w.Header[start:w.Ends[i]]
			start = w.Ends[i]
		}
	}
	return headers, elems
}

// Writing one member of a big set persists the header and that member only.
func TestElementWritesStaySmall(t *testing.T) {
	ks, _, store := newKS(true)
	k := Key{Key: "big"}
	var members [][]byte
	for i := 0; i < 5000; i++ {
		members = append(members, []byte(fmt.Sprint("m", i)))
	}
	ks.Run([]Key{k}, func(tx *Tx) error { tx.Apply(k, crdt.SAdd(tx.State(k), tx.Op(), members)); return nil })
	checkpoint := func() (map[string][]byte, []Write) {
		store.writes = nil
		store.checkpoint(t, ks)
		return headersIn(t, store.writes)
	}
	// one header, every member once in one of 2^lg pages, by its hash
	headers, elems := checkpoint()
	stored := map[string]bool{}
	lg := pagesLog(5000)
	for _, w := range elems {
		if w.Fan != 1<<lg || len(w.Elems) > 4*elemsPerPage {
			t.Fatalf("a page of %d elements of %d pages", len(w.Elems), w.Fan)
		}
		for _, e := range w.Elems {
			if stored[e.Name] || elemPageOf(e.Name, lg) != w.Bucket {
				t.Fatalf("member %q twice or in page %d", e.Name, w.Bucket)
			}
			stored[e.Name] = true
		}
	}
	if len(stored) != 5000 || len(elems) != 1<<lg || len(headers) != 1 || headers["big"] == nil {
		t.Fatalf("first checkpoint wrote %d members in %d pages, %d headers", len(stored), len(elems), len(headers))
	}
	// one member changed: its page is rewritten whole (an SREM's member
	// left out), no other
	onePage := func(name string, data bool) {
		t.Helper()
		if len(elems) != 1 || elems[0].ReplaceAll || elems[0].Bucket != elemPageOf(name, lg) {
			t.Fatalf("%s: %d writes", name, len(elems))
		}
		found := false
		for _, e := range elems[0].Elems {
			found = found || e.Name == name && e.Data != nil
		}
		if found != data || len(elems[0].Elems) < elemsPerPage/4 {
			t.Fatalf("%s not in its page as it should be: %+v", name, elems[0].Elems)
		}
	}
	ks.Run([]Key{k}, func(tx *Tx) error { tx.Apply(k, crdt.SAdd(tx.State(k), tx.Op(), [][]byte{[]byte("new")})); return nil })
	headers, elems = checkpoint()
	onePage("new", true)
	if h := headers["big"]; h == nil || len(h) > 200 {
		t.Fatalf("header of %d bytes", len(h))
	}
	ks.Run([]Key{k}, func(tx *Tx) error { tx.Apply(k, crdt.SRem(tx.State(k), [][]byte{[]byte("m7")})); return nil })
	_, elems = checkpoint()
	onePage("m7", false)
	// DEL replaces everything: the page goes, and the record says so
	ks.Run([]Key{k}, func(tx *Tx) error { tx.Apply(k, crdt.Delete(tx.State(k))); return nil })
	headers, elems = checkpoint()
	if len(headers) != 0 || len(elems) != 1 || !elems[0].ReplaceAll || len(elems[0].Elems) != 0 {
		t.Fatalf("deleted key still has a header (or keeps its members): %v %+v", headers, elems)
	}
	if len(store.writes) != 2 || !store.writes[1].Page || len(store.writes[1].Keys) != 0 {
		t.Fatalf("the emptied page is not deleted: %+v", store.writes)
	}
}

// A key written many times between two checkpoints is stored once; a
// checkpoint whose flush fails leaves its keys dirty for the next one, merged
// with what changed since (a key's elements rewritten whole, whatever of
// them the failed one stored dropped). A changed key's page holds every key of its
// bucket, changed or not.
func TestCheckpointStoresDirtyKeysOnce(t *testing.T) {
	ks, _, store := newKS(true)
	for i := 0; i < 100; i++ {
		set(ks, "hot", fmt.Sprint(i), 0)
	}
	set(ks, "cold", "x", 0)
	store.checkpoint(t, ks)
	headers, _ := headersIn(t, store.writes)
	if len(store.writes) != 2 || len(headers) != 2 {
		t.Fatalf("%d writes for 2 keys", len(store.writes))
	}
	if st, _ := crdt.DecodeState(headers["hot"]); st == nil || func() string { v, _ := st.StrValue(); return string(v) }() != "99" {
		t.Fatal("undecodable header")
	}
	if ks.Dirty() != 0 {
		t.Fatalf("%d keys still dirty", ks.Dirty())
	}
	k := Key{Key: "s"}
	ks.Run([]Key{k}, func(tx *Tx) error { tx.Apply(k, crdt.SAdd(tx.State(k), tx.Op(), [][]byte{[]byte("a")})); return nil })
	set(ks, "plain", "1", 0)
	set(ks, "packed", "2", 0)
	ks.PackCold(8)
	ks.PackCold(8) // "packed" (and "plain") go cold with their dirty flag
	if ks.Stats.ColdKeys.Load() == 0 {
		t.Fatal("nothing packed")
	}
	if _, err := ks.Checkpoint(10, nil, func([]Write) error { return errors.New("disk full") }); err == nil {
		t.Fatal("flush error not returned")
	}
	checkFlagged(t, ks)
	ks.Run([]Key{k}, func(tx *Tx) error { tx.Apply(k, crdt.SAdd(tx.State(k), tx.Op(), [][]byte{[]byte("b")})); return nil })
	store.writes = nil
	store.checkpoint(t, ks)
	headers, elems := headersIn(t, store.writes)
	if len(headers) != 3 || headers["s"] == nil || headers["plain"] == nil || headers["packed"] == nil ||
		len(elems) != 1 || elems[0].Key != "s" || len(elems[0].Elems) != 2 || !elems[0].ReplaceAll {
		t.Fatalf("after a failed checkpoint: %+v", store.writes)
	}
	checkFlagged(t, ks)
	if ks.Dirty() != 0 {
		t.Fatalf("%d keys dirty after the checkpoint", ks.Dirty())
	}
	// an unchanged key shares a page with a changed one: stored again
	other := "o"
	for i := 0; BucketOf(other) != BucketOf("hot"); i++ {
		other = fmt.Sprint("o", i)
	}
	set(ks, other, "y", 0)
	store.writes = nil
	store.checkpoint(t, ks)
	if headers, _ := headersIn(t, store.writes); len(headers) != 2 || headers["hot"] == nil || headers[other] == nil {
		t.Fatalf("the page of %q: %+v", other, store.writes)
	}
}

// checkFlagged verifies each shard's count of dirty flags, and the
// keyspace's counts of warm and cold keys.
func checkFlagged(t *testing.T, ks *Keyspace) {
	t.Helper()
	warm, cold := 0, 0
	defer func() {
		if int64(warm) != ks.Stats.WarmKeys.Load() || int64(cold) != ks.Stats.ColdKeys.Load() {
			t.Fatalf("%d warm and %d cold keys, counted %d and %d", warm, cold, ks.Stats.WarmKeys.Load(), ks.Stats.ColdKeys.Load())
		}
	}()
	for dbi, d := range ks.dbs {
		keys := 0
		for i := range d.shards {
			s := &d.shards[i]
			s.mu.Lock()
			n := 0
			for _, e := range s.m.all() {
				if e.dirty {
					n++
				}
			}
			s.cold.each(func(_ int, _ []byte, r coldRec) bool {
				if r.dirty {
					n++
				}
				return true
			})
			if n != s.flagged {
				t.Fatalf("db %d shard %d: %d dirty flags, counted %d", dbi, i, n, s.flagged)
			}
			warm += s.m.len()
			cold += s.cold.n
			live := s.cold.n // (a cold key is live)
			for _, e := range s.m.all() {
				if e.live {
					live++
				}
			}
			if live != s.live {
				t.Fatalf("db %d shard %d: %d live keys, counted %d", dbi, i, live, s.live)
			}
			keys += live
			s.mu.Unlock()
		}
		if n, _ := ks.Size(dbi); n != keys {
			t.Fatalf("db %d: %d live keys, DBSIZE %d", dbi, keys, n)
		}
	}
}

// Key digests are computed lazily (when read): a keyspace written many
// times reports the same digests and roots as one loaded with the final
// states, and a write after a read changes them again. With every region
// caught up (stable), a deleted key's entry leaves at once, its digest
// maybe still pending.
func TestLazyDigestsMatchFreshOnes(t *testing.T) {
	for _, stable := range []bool{false, true} {
		t.Run(fmt.Sprint("stable=", stable), func(t *testing.T) { testLazyDigests(t, stable) })
	}
}

func testLazyDigests(t *testing.T, stable bool) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	a := New(Config{Region: "A", Now: clk.Now, Digests: true, Stable: func() bool { return stable }}, &memStore{})
	for i := 0; i < 300; i++ {
		k := Key{Key: fmt.Sprint("k", i%37)}
		a.Run([]Key{k}, func(tx *Tx) error {
			if i%5 == 4 {
				tx.Apply(k, crdt.Delete(tx.State(k)))
			} else {
				tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), []byte(fmt.Sprint(i)), false))
			}
			return nil
		})
		if i == 150 {
			a.Roots() // settle halfway
		}
	}
	fresh := func() *Keyspace {
		b := New(Config{Region: "A", Now: clk.Now, Digests: true, Stable: func() bool { return false }}, &memStore{})
		for i := 0; i < 37; i++ {
			k := Key{Key: fmt.Sprint("k", i)}
			if st := a.Snapshot(k); st != nil {
				b.Load(k, st)
			}
		}
		return b
	}
	b := fresh()
	checkFlagged(t, b)
	if fmt.Sprint(a.Roots()) != fmt.Sprint(b.Roots()) {
		t.Fatal("roots of a written keyspace differ from a freshly loaded one")
	}
	for i := 0; i < 37; i++ {
		k := Key{Key: fmt.Sprint("k", i)}
		if a.Digest(k) != b.Digest(k) {
			t.Fatalf("digest of %v differs", k)
		}
	}
	before := fmt.Sprint(a.Roots())
	set(a, "k3", "changed", 0)
	if fmt.Sprint(a.Roots()) == before {
		t.Fatal("a write after a read left the roots unchanged")
	}
	if fmt.Sprint(a.Roots()) != fmt.Sprint(fresh().Roots()) {
		t.Fatal("roots differ after the second write")
	}
}

// A key that loses its deadline leaves the expiry index (INFO keyspace
// expires, the active expiry cycle).
func TestExpiryIndexFollowsTheKey(t *testing.T) {
	ks, _, _ := newKS(true)
	set(ks, "a", "1", time.Hour)
	if _, x := ks.Size(0); x != 1 {
		t.Fatalf("%d keys with a deadline", x)
	}
	set(ks, "a", "2", 0) // SET drops the TTL
	if n, x := ks.Size(0); n != 1 || x != 0 {
		t.Fatalf("after SET without TTL: %d keys, %d with a deadline", n, x)
	}
}

// A big key most of whose elements changed is rewritten whole (no map of
// every changed element kept until the checkpoint); a few changes to it are
// written one by one.
func TestMostlyChangedBigKeyRewrittenWhole(t *testing.T) {
	ks, _, store := newKS(true)
	k := Key{Key: "big"}
	sadd := func(from, to int) {
		for i := from; i < to; i += 100 {
			ks.Run([]Key{k}, func(tx *Tx) error {
				var ms [][]byte
				for j := i; j < min(i+100, to); j++ {
					ms = append(ms, []byte(fmt.Sprint("m", j)))
				}
				tx.Apply(k, crdt.SAdd(tx.State(k), tx.Op(), ms))
				return nil
			})
		}
	}
	elems := func() (n int, replace bool) {
		for _, w := range store.writes {
			n += len(w.Elems)
			replace = replace || w.ReplaceAll
		}
		return
	}
	sadd(0, 3000)
	s := ks.dbs[0].shardOf(k.Key)
	if dk := s.dirty[k.Key]; dk == nil || !dk.all || dk.members != nil {
		t.Fatalf("a new 3000-member set is tracked member by member: %+v", dk)
	}
	store.checkpoint(t, ks)
	if n, replace := elems(); n != 3000 || !replace {
		t.Fatalf("checkpoint of the new set: %d elements, replace %v", n, replace)
	}
	store.writes = nil
	sadd(3000, 3010)
	store.checkpoint(t, ks)
	if n, replace := elems(); len(store.writes) > 11 || n > 10*4*elemsPerPage || replace {
		t.Fatalf("checkpoint of 10 new members: %d elements in %d writes, replace %v", n, len(store.writes), replace)
	}
	// grown 4×: rewritten whole in a layout of more pages
	store.writes = nil
	sadd(3010, 12500)
	store.checkpoint(t, ks)
	if n, replace := elems(); n != 12500 || !replace || store.writes[0].Fan != 1<<pagesLog(12500) {
		t.Fatalf("checkpoint of a set grown 4×: %d elements, replace %v", n, replace)
	}
}

// Readers that take only a shard's lock (SCAN, DBSIZE, anti-entropy,
// packing) run safely next to RunAll (MULTI/EXEC), which takes no shard
// lock of its own per key: under -race this failed before RunAll held every
// shard ("concurrent map read and map write").
func TestReadersBesideRunAll(t *testing.T) {
	ks, _, _ := newKS(true)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ks.ScanPage(nil, 0, 0, 100, func(_ string, st func() *crdt.State) bool { return st().Type() != crdt.TypeNone })
			ks.Size(0)
			ks.Snapshot(Key{Key: "k1"})
			ks.Roots()
			ks.PackCold(8)
		}
	}()
	for i := 0; i < 200; i++ {
		ks.RunAll(func(tx *Tx) error {
			for j := 0; j < 5; j++ {
				k := Key{Key: fmt.Sprint("k", (i+j)%40)}
				tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), []byte(fmt.Sprint(i)), false))
				ks.ScanPage(tx, 0, 0, 10, nil) // a reader inside EXEC passes its tx
				ks.Size(0)
			}
			return nil
		})
	}
	close(stop)
	wg.Wait()
}

// Load replacing a key (warm or cold) with a state without a deadline drops
// the old deadline: the db's count returns to 0 and no stale expiry entry
// stays behind; the key reads the loaded value.
func TestLoadReplacesDeadline(t *testing.T) {
	ks, _, _ := newKS(true)
	plain := func(v string) *crdt.State {
		st := &crdt.State{}
		st.Merge(crdt.SetString(st, crdt.Op{HLC: crdt.HLC{Phys: 1, Region: "B"}}, []byte(v), false))
		return st
	}
	for _, cold := range []bool{false, true} {
		set(ks, "x", "1", time.Hour)
		if cold {
			ks.PackCold(128)
			ks.PackCold(128)
		}
		if got := ks.dbs[0].withExp.Load(); got != 1 {
			t.Fatalf("cold=%v: keys with a deadline %d, want 1", cold, got)
		}
		ks.Load(Key{Key: "x"}, plain("2"))
		if got := ks.dbs[0].withExp.Load(); got != 0 {
			t.Fatalf("cold=%v: after Load, keys with a deadline %d, want 0", cold, got)
		}
		if v, ok := get(ks, "x"); !ok || v != "2" {
			t.Fatalf("cold=%v: read %q %v after Load", cold, v, ok)
		}
		if _, x := ks.Size(0); x != 0 {
			t.Fatalf("cold=%v: %d keys still counted with a deadline", cold, x)
		}
	}
}

// The hashes that place keys in buckets (pages, anti-entropy) and members in
// element pages are part of the stored format: a change would leave keys in
// pages that are never rewritten. These values must never change.
func TestHashesAreStable(t *testing.T) {
	got := fmt.Sprint(BucketOf("key:000000012345"), BucketOf(""), BucketOf("myset"), elemPageOf("element:42", 10), elemPageOf("f", 3), pagesLog(5000))
	if want := "2910 595 1812 181 5 7"; got != want {
		t.Fatalf("bucket and element-page hashes %s, want %s", got, want)
	}
}

// A stored header is never newer than its key's stored elements: a change
// made while a checkpoint stores a key's element pages (after its header
// was encoded) is not covered by the stored header's context, or else its
// element is stored too. (Encoded the other way round, the header's context
// covered a field its pages lacked, and the log's replay of that change after
// a crash was dropped as already seen.)
func TestHeaderNeverNewerThanElements(t *testing.T) {
	ks, _, store := newKS(true)
	k := Key{Key: "h"}
	hset := func(f string) {
		ks.Run([]Key{k}, func(tx *Tx) error {
			tx.Apply(k, crdt.HSet(tx.State(k), tx.Op(), [][]byte{[]byte(f), []byte("v")}))
			return nil
		})
	}
	hset("f1")
	store.checkpoint(t, ks)
	hset("f2")
	var writes []Write
	changed := false
	if _, err := ks.Checkpoint(1, nil, func(ws []Write) error {
		writes = append(writes, ws...)
		if !changed { // the first batch stored: change the key meanwhile
			changed = true
			hset("f3")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	headers, elems := headersIn(t, writes)
	h, err := crdt.DecodeState(headers["h"])
	if err != nil {
		t.Fatal(err)
	}
	f3 := ks.Snapshot(k).Hash.Get("f3").Base[0].Dot
	stored := false
	for _, w := range elems {
		for _, e := range w.Elems {
			stored = stored || e.Name == "f3" && e.Data != nil
		}
	}
	if h.Ctx.Contains(f3) && !stored {
		t.Fatalf("the stored header covers f3's dot %v, its element pages lack f3", f3)
	}
	if !changed {
		t.Fatal("no batch stored")
	}
}

// A transaction naming many keys (a peer's batch) reuses the touch buffers
// of the last one: nothing it recorded may leak into the next. Two big
// transactions in a row, the second adding a member to a key of the first:
// the checkpoint after it stores that member under that key.
func TestBigTxBuffersDoNotLeak(t *testing.T) {
	ks, _, st := newKS(true)
	sadd := func(names []string, member func(i int) string) {
		keys := make([]Key, len(names))
		for i, n := range names {
			keys[i] = Key{Key: n}
		}
		ks.Run(keys, func(tx *Tx) error {
			for i, k := range keys {
				tx.Apply(k, crdt.SAdd(tx.State(k), tx.Op(), [][]byte{[]byte(member(i))}))
			}
			return nil
		})
	}
	var first, second []string
	for i := 0; i < 40; i++ {
		first = append(first, fmt.Sprintf("a%d", i))
		second = append(second, fmt.Sprintf("b%d", i))
	}
	second[7] = "a5"
	for round := 0; round < 3; round++ {
		sadd(first, func(i int) string { return fmt.Sprintf("m%d-%d", round, i) })
		st.checkpoint(t, ks)
		st.mu.Lock()
		st.writes = nil
		st.mu.Unlock()
		sadd(second, func(i int) string { return fmt.Sprintf("x%d-%d", round, i) })
		st.checkpoint(t, ks)
		want := fmt.Sprintf("x%d-7", round)
		found := false
		st.mu.Lock()
		for _, w := range st.writes {
			for _, e := range w.Elems {
				if e.Name == want {
					found = w.Key == "a5"
				}
			}
		}
		st.mu.Unlock()
		if !found {
			t.Fatalf("round %d: member %s of a5 not stored under a5", round, want)
		}
	}
}

// WATCH's version of a key changes with every write, also a delete, a
// re-creation with the same value, and a key made and deleted again while
// watched (Redis aborts EXEC then too), and not with a read; a shard's
// record of removed keys stays bounded.
func TestVersionChangesWithEveryWrite(t *testing.T) {
	ks, _, _ := newKS(true)
	k := Key{Key: "w"}
	version := func() (v uint64) {
		ks.Run([]Key{k}, func(tx *Tx) error { v = tx.Version(k); return nil })
		return v
	}
	seen := map[uint64]string{}
	note := func(what string) {
		v := version()
		if prev, ok := seen[v]; ok {
			t.Fatalf("%s: version %d as after %s", what, v, prev)
		}
		seen[v] = what
	}
	note("nothing")
	set(ks, "w", "a", 0)
	note("set")
	if v := version(); seen[v] != "set" {
		t.Fatal("a read changed the version")
	}
	set(ks, "w", "a", 0)
	note("same value again")
	del := func(key string) {
		ks.Run([]Key{{Key: key}}, func(tx *Tx) error { tx.Apply(Key{Key: key}, crdt.Delete(tx.State(Key{Key: key}))); return nil })
	}
	del("w")
	note("deleted")
	set(ks, "other", "x", 0) // (another key's write in between)
	set(ks, "w", "a", 0)
	note("made again")
	del("w")
	note("deleted again")
	// many keys of w's shard removed: the record stays bounded, and w,
	// still absent, may only show a change (a retried EXEC), never an old
	// version
	before := version()
	for i, n := 0, 0; n < 3*goneMax; i++ {
		if key := fmt.Sprint("tmp", i); hashKey(key)%shardCount == hashKey("w")%shardCount {
			set(ks, key, "x", 0)
			del(key)
			n++
		}
	}
	if v := version(); v != before {
		if prev, ok := seen[v]; ok {
			t.Fatalf("after others were removed: version %d as after %s", v, prev)
		}
	}
	if n := len(ks.dbs[0].shardOf("w").gone); n > goneMax {
		t.Fatalf("the shard remembers %d removed keys", n)
	}
}

// Every member and field a transaction changes is marked for the next
// checkpoint, however many (the first of each kept in the tx's own buffer,
// the rest appended), and no more.
func TestTxMarksEachElementDirty(t *testing.T) {
	ks, _, store := newKS(true)
	s, h := Key{Key: "s"}, Key{Key: "h"}
	var members, pairs [][]byte
	for i := 0; i < 2000; i++ {
		members = append(members, []byte(fmt.Sprint("m", i)))
		pairs = append(pairs, []byte(fmt.Sprint("f", i)), []byte("v"))
	}
	ks.Run([]Key{s, h}, func(tx *Tx) error {
		tx.Apply(s, crdt.SAdd(tx.State(s), tx.Op(), members))
		tx.Apply(h, crdt.HSet(tx.State(h), tx.Op(), pairs))
		return nil
	})
	b := func(v string) [][]byte { return [][]byte{[]byte(v)} }
	store.checkpoint(t, ks) // from here on, changes are tracked element by element
	ks.Run([]Key{h, s}, func(tx *Tx) error {
		tx.Apply(h, crdt.HSet(tx.State(h), tx.Op(), [][]byte{[]byte("f1"), []byte("w")}))
		tx.Apply(s, crdt.SAdd(tx.State(s), tx.Op(), b("new1")))
		tx.Apply(s, crdt.SAdd(tx.State(s), tx.Op(), b("new2")))
		tx.Apply(h, crdt.HSet(tx.State(h), tx.Op(), [][]byte{[]byte("f2"), []byte("w"), []byte("f3"), []byte("w")}))
		tx.Apply(s, crdt.SRem(tx.State(s), b("m5")))
		return nil
	})
	ks.Run([]Key{s}, func(tx *Tx) error { tx.Apply(s, crdt.SAdd(tx.State(s), tx.Op(), b("new3"))); return nil })
	dirty := func(k Key) *dirtyKey {
		sh := ks.dbs[0].shardOf(k.Key)
		d := sh.dirty[k.Key]
		if d == nil || d.all {
			t.Fatalf("%s: dirty %+v, want its changed elements", k.Key, d)
		}
		return d
	}
	names := func(m map[string]struct{}) []string { return slices.Sorted(maps.Keys(m)) }
	if got := names(dirty(s).members); fmt.Sprint(got) != "[m5 new1 new2 new3]" || len(dirty(s).fields) != 0 {
		t.Fatalf("set's dirty members %v, fields %v", got, dirty(s).fields)
	}
	if got := names(dirty(h).fields); fmt.Sprint(got) != "[f1 f2 f3]" || len(dirty(h).members) != 0 {
		t.Fatalf("hash's dirty fields %v, members %v", got, dirty(h).members)
	}
}

// A peer's batch logs its deltas as inbound through a slice the Tx keeps
// from Run to Run: applying a batch into warm keys allocates nothing, and
// each batch hands the store its own deltas only.
func TestBatchInboundSliceIsReused(t *testing.T) {
	ks, _, st := newKS(true)
	peer, _, _ := newKS(true)
	peer.cfg.Region = "B"
	var batch []crdt.KeyDelta
	var keys []Key
	for i := 0; i < 64; i++ {
		k := Key{Key: fmt.Sprint("key:", i)}
		set(ks, k.Key, "x", 0)
		peer.Run([]Key{k}, func(tx *Tx) error {
			d := crdt.SetString(tx.State(k), tx.Op(), []byte("y"), false)
			tx.Apply(k, d)
			batch = append(batch, crdt.KeyDelta{Key: k.Key, Delta: d.Clone()})
			return nil
		})
		keys = append(keys, k)
	}
	apply := func(n int) {
		ks.Run(keys[:n], func(tx *Tx) error {
			for i, kd := range batch[:n] {
				tx.ApplyRemote(keys[i], kd.Delta, "B")
			}
			return nil
		})
	}
	for _, n := range []int{64, 3, 40} {
		st.inbound = nil
		apply(n)
		if len(st.inbound) != n {
			t.Fatalf("a batch of %d logged %d inbound deltas", n, len(st.inbound))
		}
		for i, kd := range st.inbound {
			if kd != batch[i] {
				t.Fatalf("inbound %d of a batch of %d is %v, want %v", i, n, kd, batch[i])
			}
		}
	}
	if raceEnabled {
		return
	}
	ks.store = discard{}
	if a := testing.AllocsPerRun(20, func() { apply(64) }); a != 0 {
		t.Fatalf("applying a batch into warm keys allocates %v times", a)
	}
}

// A big key's changed elements are encoded a chunk per hold of its shard's
// lock, and the pace function runs after each chunk, not only per shard.
func TestCheckpointPacesBigKeys(t *testing.T) {
	ks, _, _ := newKS(true)
	k := Key{Key: "big"}
	const members = 5200 // (over 20 holds)
	for i := 0; i < members; i += 100 {
		var m [][]byte
		for j := i; j < i+100; j++ {
			m = append(m, []byte(fmt.Sprint("member:", j)))
		}
		ks.Run([]Key{k}, func(tx *Tx) error { tx.Apply(k, crdt.SAdd(tx.State(k), tx.Op(), m)); return nil })
	}
	paced, stored := 0, 0
	keys, err := ks.Checkpoint(1000, func() { paced++ }, func(ws []Write) error {
		for _, w := range ws {
			stored += len(w.Elems)
		}
		return nil
	})
	if err != nil || keys != 1 || stored != members {
		t.Fatalf("checkpoint: %d keys, %d members stored, %v", keys, stored, err)
	}
	if paced < members/captureChunk {
		t.Fatalf("paced %d times for %d members (%d per hold)", paced, members, captureChunk)
	}
}

// A checkpoint calls its pace function before each shard with changes
// (a background checkpoint sleeps there), and only then.
func TestCheckpointPacesPerShard(t *testing.T) {
	ks, _, _ := newKS(true)
	shards := map[uint64]bool{}
	for i := 0; i < 40; i++ {
		k := fmt.Sprint("pace", i)
		set(ks, k, "v", 0)
		shards[hashKey(k)%shardCount] = true
	}
	paced := 0
	keys, err := ks.Checkpoint(1000, func() { paced++ }, func([]Write) error { return nil })
	if err != nil || keys != 40 {
		t.Fatalf("checkpoint: %d keys, %v", keys, err)
	}
	if paced != len(shards) {
		t.Fatalf("paced %d times, want once per shard with changes (%d)", paced, len(shards))
	}
	paced = 0
	if _, err := ks.Checkpoint(1000, func() { paced++ }, func([]Write) error { return nil }); err != nil || paced != 0 {
		t.Fatalf("nothing changed: paced %d times (%v)", paced, err)
	}
}

// The active cycle goes on while the keys it looks at are mostly expired
// (many keys expiring together are reclaimed in one cycle, within its
// spend), takes one pass without a spend, and stops after a pass in which
// few of the keys it looked at had expired.
func TestActiveExpiryAdapts(t *testing.T) {
	ks, clk, _ := newKS(true)
	const n = 20000 // ~80 keys with a deadline per shard
	for i := range n {
		set(ks, fmt.Sprint("k", i), "v", time.Second)
	}
	clk.Add(2 * time.Second)
	_, one := ks.ExpireCycle(1<<30, 0)
	if one == 0 || one > shardCount*expireSample {
		t.Fatalf("one pass deleted %d (at most %d)", one, shardCount*expireSample)
	}
	_, rest := ks.ExpireCycle(1<<30, time.Minute)
	if one+rest != n {
		t.Fatalf("deleted %d+%d of %d expired keys", one, rest, n)
	}
	if keys, x := ks.Size(0); keys != 0 || x != 0 {
		t.Fatalf("size after the cycles %d/%d", keys, x)
	}
	// few stale keys: one pass finds them (or some), then the cycle stops
	// instead of spending its minute
	for i := range n {
		set(ks, fmt.Sprint("live", i), "v", time.Hour)
	}
	for i := range 50 {
		set(ks, fmt.Sprint("stale", i), "v", time.Second)
	}
	clk.Add(2 * time.Second)
	start := time.Now()
	_, got := ks.ExpireCycle(1<<30, time.Minute)
	if got > 50 || time.Since(start) > 30*time.Second {
		t.Fatalf("deleted %d in %v", got, time.Since(start))
	}
	if keys, _ := ks.Size(0); keys != n+50-got {
		t.Fatalf("%d keys left, want %d", keys, n+50-got)
	}
}
