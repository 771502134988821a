package keyspace

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"concord/crdt"
)

// BenchmarkRunSet measures one local SET through the keyspace: locking,
// the CRDT op and merge, and encoding what persistence receives.
func BenchmarkRunSet(b *testing.B) {
	ks, _, _ := newKS(true)
	ks.store = discard{}
	v := []byte("xxx")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		k := Key{Key: "key:" + strconv.Itoa(i%100000)}
		ks.Run([]Key{k}, func(tx *Tx) error {
			tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), v, false))
			return nil
		})
	}
}

type discard struct{}

// Submit hands pooled deltas back, as persistence does once it encoded them.
func (discard) Submit(_ []Write, deltas, _ []crdt.KeyDelta, r Received) Ticket {
	for _, kd := range deltas {
		crdt.Release(kd.Delta)
	}
	for _, kd := range r.Merged {
		crdt.Release(kd.Delta)
	}
	return done{}
}

// BenchmarkColdKeys measures, per key of a 100k-key keyspace: packing
// (ns/op of "pack"), the sweep over keys already cold ("idle sweep": what
// --cold-after costs a quiet server), and a read that unpacks ("warm").
func BenchmarkColdKeys(b *testing.B) {
	const n = 100000
	setup := func() *Keyspace {
		ks, _, _ := newKS(true)
		ks.store = discard{}
		v := []byte("xxx")
		for i := 0; i < n; i++ {
			k := Key{Key: "key:" + strconv.Itoa(i)}
			ks.Run([]Key{k}, func(tx *Tx) error {
				tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), v, false))
				return nil
			})
		}
		ks.PackCold(128) // clears the hot marks
		return ks
	}
	b.Run("pack", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i += n {
			b.StopTimer()
			ks := setup()
			b.StartTimer()
			if got := ks.PackCold(128); got != n {
				b.Fatalf("packed %d", got)
			}
		}
	})
	// a sweep of a busy keyspace: every key was accessed since the last
	// one (its mark is cleared, nothing is packed)
	b.Run("hot sweep", func(b *testing.B) {
		ks := setup()
		b.ResetTimer()
		for i := 0; i < b.N; i += n {
			b.StopTimer()
			for _, d := range ks.dbs {
				for j := range d.shards {
					for _, e := range d.shards[j].m.all() {
						e.hot = true
					}
				}
			}
			b.StartTimer()
			if got := ks.PackCold(128); got != 0 {
				b.Fatalf("packed %d hot keys", got)
			}
		}
	})
	b.Run("idle sweep", func(b *testing.B) {
		ks := setup()
		ks.PackCold(128)
		b.ResetTimer()
		for i := 0; i < b.N; i += n {
			ks.PackCold(128)
		}
	})
	b.Run("warm", func(b *testing.B) {
		ks := setup()
		ks.PackCold(128)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if i%n == 0 && i > 0 {
				b.StopTimer()
				ks.PackCold(128)
				ks.PackCold(128)
				b.StartTimer()
			}
			k := Key{Key: "key:" + strconv.Itoa(i%n)}
			ks.Run([]Key{k}, func(tx *Tx) error {
				if tx.Get(k) == nil {
					b.Fatal("key lost")
				}
				return nil
			})
		}
	})
	// in random order (redis-benchmark -r), and with each 16 keys
	// prefetched first as the server does for a pipeline (Prefetch reads
	// a cold key's index slot and record)
	for _, prefetch := range []bool{false, true} {
		b.Run(fmt.Sprint("warm random prefetch=", prefetch), func(b *testing.B) {
			ks := setup()
			ks.PackCold(128)
			keys := make([]string, n)
			raw := make([][]byte, n)
			for i, j := range rand.Perm(n) {
				keys[i] = "key:" + strconv.Itoa(j)
				raw[i] = []byte(keys[i])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j := i % n
				if j == 0 && i > 0 {
					b.StopTimer()
					ks.PackCold(128)
					ks.PackCold(128)
					b.StartTimer()
				}
				if prefetch && j%16 == 0 {
					ks.Prefetch(0, raw[j:min(j+16, n)], nil, 0)
				}
				k := Key{Key: keys[j]}
				ks.Run([]Key{k}, func(tx *Tx) error {
					if tx.Get(k) == nil {
						b.Fatal("key lost")
					}
					return nil
				})
			}
		})
	}
}

// BenchmarkRunSetRandom is BenchmarkRunSet over a million existing keys in
// random order: what redis-benchmark -r does, where a SET's cost is mostly
// the cache misses on the key's map slot, entry, state and register.
func BenchmarkRunSetRandom(b *testing.B) {
	v := []byte("xxx")
	benchRandomKeys(b, func(tx *Tx, k Key) {
		tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), v, false))
	})
}

// BenchmarkRunGetRandom is BenchmarkRunSetRandom for GET: the lookup,
// the expiry and type checks, the value's bytes.
func BenchmarkRunGetRandom(b *testing.B) {
	var sink int
	v3 := []byte("xxx")
	benchRandomKeys(b, func(tx *Tx, k Key) {
		st := tx.Get(k)
		if st == nil { // the untimed first pass
			tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), v3, false))
			return
		}
		if st.Type() != crdt.TypeString {
			b.Fatal("wrong type")
		}
		v, _, _ := st.Str.Get()
		sink += int(v[0])
	})
	_ = sink
}

// BenchmarkRunIncrRandom is BenchmarkRunSetRandom for INCR (reading the
// type, the counter's increments, the new value).
func BenchmarkRunIncrRandom(b *testing.B) {
	benchRandomKeys(b, func(tx *Tx, k Key) {
		if t := tx.Type(k); t != crdt.TypeNone && t != crdt.TypeString {
			b.Fatal("wrong type")
		}
		st := tx.State(k)
		if _, _, ok, _ := st.Str.IntValue(); !ok && tx.Get(k) != nil {
			b.Fatal("not an integer")
		}
		tx.Apply(k, crdt.IncrBy(st, tx.Op(), 1))
	})
}

// benchRandomKeys runs op on a million keys once, then times it on them in
// random order.
func benchRandomKeys(b *testing.B, op func(tx *Tx, k Key)) { benchKeys(b, false, op) }

// benchKeys is benchRandomKeys, with prefetch: each 16 keys prefetched
// before their ops run.
func benchKeys(b *testing.B, prefetch bool, op func(tx *Tx, k Key)) {
	const n, batch = 1 << 20, 16
	ks, _, _ := newKS(true)
	ks.store = discard{}
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{Key: "key:" + strconv.Itoa(i)}
	}
	run := func(k Key) {
		ks.Run([]Key{k}, func(tx *Tx) error {
			op(tx, k)
			return nil
		})
	}
	for _, k := range keys {
		run(k)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	for i := range keys {
		// a server's key is a fresh copy of the request's bytes, not the
		// string the map holds (whose bytes a lookup then compares)
		keys[i].Key = strings.Clone(keys[i].Key)
	}
	var raw [][]byte
	if prefetch {
		raw = make([][]byte, n)
		for i, k := range keys {
			raw[i] = []byte(k.Key)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i & (n - 1)
		if prefetch && j%batch == 0 {
			ks.Prefetch(0, raw[j:j+batch], nil, 0)
		}
		run(keys[j])
	}
}

// BenchmarkApplyRemote measures a peer's SET deltas applied as the server's
// applier does (256 per transaction) into 100k existing keys in random
// order; ns/op is per delta. prefetch=true looks up each 16 keys together
// first (Tx.Prefetch), as the server's applier does.
func BenchmarkApplyRemote(b *testing.B) {
	for _, prefetch := range []bool{false, true} {
		b.Run(fmt.Sprint("prefetch=", prefetch), func(b *testing.B) { benchApplyRemote(b, prefetch) })
	}
}

func benchApplyRemote(b *testing.B, prefetch bool) {
	const n, chunk = 100000, 256
	ks, _, _ := newKS(true)
	ks.store = discard{}
	peer, _, _ := newKS(true)
	peer.cfg.Region = "B"
	peer.store = discard{}
	v := []byte("xxx")
	for i := 0; i < n; i++ {
		set(ks, "key:"+strconv.Itoa(i), "x", 0)
	}
	// the peer's deltas: a SET of each key, in random order (new ones for
	// every pass: applying a delta again changes nothing)
	var deltas []crdt.KeyDelta
	round := func() {
		deltas = deltas[:0]
		for _, i := range rand.Perm(n) {
			k := Key{Key: "key:" + strconv.Itoa(i)}
			peer.Run([]Key{k}, func(tx *Tx) error {
				d := crdt.SetString(tx.State(k), tx.Op(), v, false)
				tx.Apply(k, d)
				deltas = append(deltas, crdt.KeyDelta{Key: k.Key, Delta: d.Clone()})
				return nil
			})
		}
	}
	keys := make([]Key, 0, chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += chunk {
		if i%n < chunk {
			b.StopTimer()
			round()
			b.StartTimer()
		}
		batch := deltas[i%n : min(i%n+chunk, n)]
		keys = keys[:0]
		for _, kd := range batch {
			keys = append(keys, Key{Key: kd.Key})
		}
		ks.Run(keys, func(tx *Tx) error {
			for j, kd := range batch {
				if prefetch && j%16 == 0 {
					tx.Prefetch(keys[j:])
				}
				tx.ApplyRemote(keys[j], kd.Delta, "B")
			}
			return nil
		})
	}
}

// BenchmarkRunGetPrefetched is BenchmarkRunGetRandom with the keys of each
// 16 commands prefetched first (Keyspace.Prefetch, as the server does for a
// pipeline): ns/op is per key, its share of the prefetch included.
func BenchmarkRunGetPrefetched(b *testing.B) {
	v3 := []byte("xxx")
	benchKeys(b, true, func(tx *Tx, k Key) {
		if st := tx.Get(k); st == nil { // the untimed first pass
			tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), v3, false))
		}
	})
}

// BenchmarkSettle measures what anti-entropy's first read of the digests
// (Roots) costs per key after every key of a 200k-key keyspace was
// rewritten, in random order (ns/key): each stale key digest recomputed
// and its bucket updated.
func BenchmarkSettle(b *testing.B) {
	const n = 200000
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	ks := New(Config{Region: "A", Now: clk.Now, Digests: true, Stable: func() bool { return true }}, discard{})
	v := []byte("xxx")
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{Key: "key:" + strconv.Itoa(i)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for _, j := range rand.Perm(n) {
			k := keys[j]
			ks.Run([]Key{k}, func(tx *Tx) error {
				tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), v, false))
				return nil
			})
		}
		b.StartTimer()
		ks.Roots()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
}

// BenchmarkRunHSetBigHash is redis-benchmark's HSET row: fields of one
// hash of 100k fields, written in random order (ns/op per HSET: the
// delta, the merge, the field's register replaced).
func BenchmarkRunHSetBigHash(b *testing.B) {
	const n = 100000
	ks, _, _ := newKS(true)
	ks.store = discard{}
	k := Key{Key: "myhash"}
	fields := make([][]byte, n)
	for i := range fields {
		fields[i] = []byte("element:" + strconv.Itoa(i))
	}
	val := []byte("xxx")
	hset := func(f []byte) {
		ks.Run([]Key{k}, func(tx *Tx) error {
			d, _ := crdt.HSetAdded(tx.State(k), tx.Op(), [][]byte{f, val})
			tx.Apply(k, d)
			return nil
		})
	}
	for _, f := range fields {
		hset(f)
	}
	order := rand.New(rand.NewPCG(1, 2)).Perm(n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		hset(fields[order[i%n]])
	}
}
