package keyspace

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"concord/crdt"
)

// BenchmarkBigElems is redis-benchmark's HSET and SADD rows at -P 16 as
// the server runs them: one hash (set) of 100k fields (members), written
// in random order, 16 commands at a time, each 16 prefetched first
// (Keyspace.Prefetch with the fields: its staged lookups, crdt.Table) or
// not; ns/op is per command.
func BenchmarkBigElems(b *testing.B) {
	const n = 100000
	for _, typ := range []string{"hset", "sadd"} {
		for _, prefetch := range []bool{false, true} {
			b.Run(typ+"/prefetch="+strconv.FormatBool(prefetch), func(b *testing.B) {
				ks, _, _ := newKS(true)
				ks.store = discard{}
				k := Key{Key: "big"}
				elems := make([][]byte, n)
				for i := range elems {
					elems[i] = []byte("element:" + strconv.Itoa(i))
				}
				val := []byte("xxx")
				write := func(f []byte) {
					ks.Run([]Key{k}, func(tx *Tx) error {
						if typ == "hset" {
							d, _ := crdt.HSetAdded(tx.State(k), tx.Op(), [][]byte{f, val})
							tx.Apply(k, d)
						} else {
							tx.Apply(k, crdt.SAdd(tx.State(k), tx.Op(), [][]byte{f}))
						}
						return nil
					})
				}
				for _, f := range elems {
					write(f)
				}
				order := rand.New(rand.NewPCG(1, 2)).Perm(n)
				keys := make([][]byte, 16)
				for i := range keys {
					keys[i] = []byte(k.Key)
				}
				batch := make([][]byte, 16)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i += 16 {
					for j := range batch {
						batch[j] = elems[order[(i+j)%n]]
					}
					if prefetch {
						ks.Prefetch(0, keys, batch, 0)
					}
					for j := 0; j < 16 && i+j < b.N; j++ {
						write(batch[j])
					}
				}
			})
		}
	}
}
