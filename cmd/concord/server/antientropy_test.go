package server

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"concord/crdt"
	"concord/keyspace"
)

// A bucket that differs by one key ships that key's state, not the
// bucket's: the peer sends the bucket's key digests, then the one state.
// A peer that predates the digest request (it answers nothing) is asked
// for the whole bucket.
func TestAntiEntropyShipsOnlyDifferingKeys(t *testing.T) {
	start := func(region string) *Instance {
		// replicated (key digests kept), with no peer to reach
		in, err := Start(Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), Region: region, LogLevel: "error", CheckpointInterval: time.Hour, PeerListen: "127.0.0.1:0", AntiEntropyInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		return in
	}
	peer, local := start("P"), start("L")
	// 100 keys of one bucket, the same in both regions, and one more only
	// in the peer's
	var keys []keyspace.Key
	bucket := -1
	for i := 0; len(keys) < 101; i++ {
		k := fmt.Sprint("ae:", i)
		if b := keyspace.BucketOf(k); bucket < 0 || b == bucket {
			bucket = b
			keys = append(keys, keyspace.Key{Key: k})
		}
	}
	val := bytes.Repeat([]byte("v"), 100)
	for _, k := range keys {
		peer.KS.Run([]keyspace.Key{k}, func(tx *keyspace.Tx) error {
			tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), val, false))
			return nil
		})
	}
	same, err := crdt.DecodeBatch(peer.statesOf(keys[:100]))
	if err != nil {
		t.Fatal(err)
	}
	for _, kd := range same {
		k := keyspace.Key{Key: kd.Key}
		local.KS.Run([]keyspace.Key{k}, func(tx *keyspace.Tx) error { tx.ApplyRemote(k, kd.Delta, "P"); return nil })
	}
	for _, old := range []bool{false, true} {
		received := 0
		ask := func(req []byte) ([]byte, error) {
			if old && req[0] == reqDigests {
				return nil, nil
			}
			resp := peer.serveFetch(req)
			received += len(resp)
			return resp, nil
		}
		kds, err := local.differingStates(ask, 0, bucket)
		if err != nil {
			t.Fatal(err)
		}
		want, bound := 1, 100*len(keys)/4 // the digests: a quarter of the states' bytes
		if old {
			want, bound = len(keys), 1<<20
		}
		if len(kds) != want || (!old && kds[0].Key != keys[100].Key) {
			t.Fatalf("old peer %v: %d states, want %d", old, len(kds), want)
		}
		if received > bound {
			t.Fatalf("old peer %v: %d bytes received for one differing key", old, received)
		}
	}
	if err := parseKeyDigests([]byte{3, 'a', 'b'}, func(string, uint64) {}); err == nil {
		t.Fatal("a truncated digest answer parsed")
	}
}
