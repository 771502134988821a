package keyspace

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"concord/crdt"
)

// valueOf returns k's string value as stored (not a copy).
func valueOf(ks *Keyspace, k Key) (v []byte) {
	ks.Run([]Key{k}, func(tx *Tx) error {
		if st := tx.Get(k); st != nil {
			v, _ = st.StrValue()
		}
		return nil
	})
	return v
}

// APPENDs write in place once a value has room, at the writer and at a
// peer resolving the deltas (encoded only after the whole run, as a group
// commit may encode them after later commands ran); any other merge into
// the key, and a key going cold and warm again, end that (the next APPEND
// copies); and no value anyone read changes.
func TestAppendInPlace(t *testing.T) {
	a, _, storeA := newKS(true)
	b, _, _ := newKS(true)
	b.cfg.Region = "B"
	k := Key{Key: "k"}
	set(a, "k", strings.Repeat("x", 2000), 0)
	var reads [][]byte
	var copies []string
	appendOne := func(s string) (inPlace bool) {
		a.Run([]Key{k}, func(tx *Tx) error {
			old, _ := tx.Get(k).StrValue()
			reads, copies = append(reads, old), append(copies, string(old))
			tx.Splice(k, old, len(old), []byte(s), true)
			v, _ := tx.Get(k).StrValue()
			inPlace = &v[0] == &old[0]
			return nil
		})
		return inPlace
	}
	n := 0
	for i := 0; i < 200; i++ {
		if appendOne(fmt.Sprintf("<%d>", i)) {
			n++
		}
	}
	if n < 190 {
		t.Fatalf("%d of 200 APPENDs in place", n)
	}
	// another write (an EXPIRE) ends it: the next APPEND copies, then
	// the one after writes in place again
	a.Run([]Key{k}, func(tx *Tx) error {
		tx.Apply(k, crdt.Expire(tx.State(k), tx.Op(), tx.NowMs()+1e9))
		return nil
	})
	if appendOne("e1") || !appendOne("e2") {
		t.Fatal("after an EXPIRE: the next APPEND wrote in place, or the one after did not")
	}
	// so does going cold and warm again
	a.PackCold(0) // (clears the keys' hot flags: the next packs them)
	if a.PackCold(0) == 0 {
		t.Fatal("nothing packed")
	}
	if appendOne("c1") || !appendOne("c2") {
		t.Fatal("after the key went cold: the next APPEND wrote in place, or the one after did not")
	}
	for i, r := range reads {
		if string(r) != copies[i] {
			t.Fatalf("the value read before APPEND %d changed", i)
		}
	}
	want := valueOf(a, k)

	// the peer: the deltas encoded now, resolved in order
	batch, err := crdt.DecodeBatch(crdt.AppendBatch(nil, storeA.deltas))
	if err != nil {
		t.Fatal(err)
	}
	ext, inPlace := 0, 0
	for i := range batch {
		kd := &batch[i]
		if kd.Ext != nil {
			ext++
		}
		before := valueOf(b, k)
		b.Run([]Key{k}, func(tx *Tx) error {
			if !tx.Resolve(k, kd) {
				t.Fatalf("delta %d does not resolve at the peer", i)
			}
			tx.ApplyRemote(k, kd.Delta, "A")
			return nil
		})
		if v := valueOf(b, k); len(before) > 0 && len(v) > len(before) && &v[0] == &before[0] {
			inPlace++
		}
	}
	if got := valueOf(b, k); !bytes.Equal(got, want) {
		t.Fatalf("the peer holds %d bytes, the writer %d", len(got), len(want))
	}
	if ext < 200 || inPlace < 190 {
		t.Fatalf("at the peer: %d extended deltas, %d resolved in place", ext, inPlace)
	}
}
