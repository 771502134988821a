package keyspace

import (
	"strings"
	"testing"
	"time"

	"concord/crdt"
)

// A peer's deltas are decoded with their keys pointing into the message
// (crdt.DecodeMessageReleasable): MergeReceived must keep none of them.
// Every place the keyspace keeps a key's name — the index (new keys, keys
// warmed from the cold table), the deadlines, the dirty set, the pending
// digests, the removed keys, the conflict log — holds a name of its own:
// the message overwritten after the merge changes none of them.
func TestMergeReceivedKeepsNoNameOfTheMessage(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	ks := New(Config{Region: "A", Now: clk.Now, Stable: func() bool { return true }, Digests: true}, &memStore{})
	peer := New(Config{Region: "B", Now: clk.Now, Stable: func() bool { return true }}, &memStore{})
	const long = "-a-name-longer-than-an-entry-keeps-in-itself"
	cold, gone, conflict := Key{Key: "cold-set" + long}, Key{Key: "gone"}, Key{Key: "conflict"}
	for _, k := range []Key{cold, gone} { // here before, written by the peer
		var d *crdt.State
		peer.Run([]Key{k}, func(tx *Tx) error {
			d = crdt.SAdd(tx.State(k), tx.Op(), [][]byte{[]byte("m")})
			tx.Apply(k, d)
			d = d.Clone()
			return nil
		})
		ks.Run([]Key{k}, func(tx *Tx) error { tx.ApplyRemote(k, d, "B"); return nil })
	}
	set(ks, conflict.Key, "local", 0) // and written here concurrently with the peer
	ks.Buckets(0)                     // (digests settled: a key whose digest is stale stays warm)
	ks.PackCold(1)
	ks.PackCold(1) // cold now
	if ks.Stats.ColdKeys.Load() == 0 {
		t.Fatal("no key went cold")
	}

	var kds []crdt.KeyDelta
	write := func(k Key, op func(tx *Tx, st *crdt.State) *crdt.State) {
		peer.Run([]Key{k}, func(tx *Tx) error {
			d := op(tx, tx.State(k))
			tx.Apply(k, d)
			kds = append(kds, crdt.KeyDelta{DB: k.DB, Key: k.Key, Delta: d.Clone()})
			return nil
		})
	}
	b := func(s string) []byte { return []byte(s) }
	write(Key{Key: "str"}, func(tx *Tx, st *crdt.State) *crdt.State { return crdt.SetString(st, tx.Op(), b("v"), false) })
	write(Key{Key: "str" + long}, func(tx *Tx, st *crdt.State) *crdt.State { return crdt.SetString(st, tx.Op(), b("v"), false) })
	write(Key{Key: "ttl" + long}, func(tx *Tx, st *crdt.State) *crdt.State { return crdt.SetString(st, tx.Op(), b("v"), false) })
	write(Key{Key: "ttl" + long}, func(tx *Tx, st *crdt.State) *crdt.State { return crdt.Expire(st, tx.Op(), tx.NowMs()+60_000) })
	write(Key{Key: "set"}, func(tx *Tx, st *crdt.State) *crdt.State { return crdt.SAdd(st, tx.Op(), [][]byte{b("m")}) })
	write(Key{Key: "hash" + long}, func(tx *Tx, st *crdt.State) *crdt.State { return crdt.HSet(st, tx.Op(), [][]byte{b("f"), b("v")}) })
	write(cold, func(tx *Tx, st *crdt.State) *crdt.State { return crdt.SAdd(st, tx.Op(), [][]byte{b("m2")}) })
	write(gone, func(tx *Tx, st *crdt.State) *crdt.State { return crdt.Delete(st) })
	write(conflict, func(tx *Tx, st *crdt.State) *crdt.State { return crdt.SetString(st, tx.Op(), b("remote"), false) })

	msg := crdt.AppendBatch(nil, kds)
	got, err := crdt.DecodeMessageReleasable(nil, msg)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]Key, len(got))
	for i, kd := range got {
		keys[i] = Key{DB: kd.DB, Key: kd.Key}
	}
	conflicts0 := ks.Stats.ConflictsLWW.Load()
	ks.Run(keys, func(tx *Tx) error {
		for i, kd := range got {
			tx.MergeReceived(keys[i], kd.Delta, "B")
		}
		tx.LogReceived(msg)
		return nil
	})
	if ks.Stats.ConflictsLWW.Load() == conflicts0 {
		t.Fatal("no conflict recorded: the test does not reach the conflict log")
	}
	for i := range msg { // what a reused buffer would do to names kept from it
		msg[i] = 'X'
	}

	kept := map[string][]string{} // where each name is kept
	for _, d := range ks.dbs {
		for i := range d.shards {
			s := &d.shards[i]
			for name := range s.m.all() {
				kept["index"] = append(kept["index"], name)
			}
			for name := range s.exp {
				kept["deadlines"] = append(kept["deadlines"], name)
			}
			for name := range s.dirty {
				kept["dirty set"] = append(kept["dirty set"], name)
			}
			for _, p := range s.pend {
				kept["pending digests"] = append(kept["pending digests"], p.key)
			}
			for name := range s.gone {
				kept["removed"] = append(kept["removed"], name)
			}
		}
	}
	for _, c := range ks.conflicts {
		kept["conflicts"] = append(kept["conflicts"], c.Key)
	}
	for _, where := range []string{"index", "deadlines", "dirty set", "pending digests", "removed", "conflicts"} {
		if len(kept[where]) == 0 {
			t.Errorf("no name in the %s: the test does not reach it", where)
		}
	}
	for where, names := range kept {
		for _, name := range names {
			if strings.Contains(name, "X") {
				t.Errorf("the %s keeps a name that pointed into the message: %q", where, name)
			}
		}
	}
	if st := ks.dbs[0].shardOf(cold.Key).entry(cold.Key); st == nil || !st.st.HasMember("m2") {
		t.Errorf("the cold key was not warmed and merged")
	}
}
