package keyspace

import (
	"strconv"
	"testing"

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

func (discard) Submit([]Write, []crdt.KeyDelta, []crdt.KeyDelta) Ticket { return done{} }
