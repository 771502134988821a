package server

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"concord/crdt"
	"concord/keyspace"
	"concord/peering"
)

// startUnlinked starts a replicated region (key digests kept) with no peer
// to reach: tests call its anti-entropy functions with a peer's answers.
func startUnlinked(t *testing.T, region string) *Instance {
	in, err := Start(Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), Region: region, LogLevel: "error", CheckpointInterval: time.Hour, PeerListen: "127.0.0.1:0", AntiEntropyInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

// A bucket that differs by one key ships that key's state, not the
// bucket's: the peer sends the key digests of the differing buckets of a
// shard (one request), then the differing states. A peer that predates
// the shard request (it answers nothing) is asked bucket by bucket; one
// that predates the digest request too, for the whole buckets.
func TestAntiEntropyShipsOnlyDifferingKeys(t *testing.T) {
	peer, local := startUnlinked(t, "P"), startUnlinked(t, "L")
	// 100 keys of one bucket, the same in both regions, and one more only
	// in the peer's; one key only in the peer's in another bucket of the
	// shard, asked for too, and one in a third, not asked for
	var keys []keyspace.Key
	bucket := -1
	var other, notAsked []keyspace.Key
	for i := 0; len(keys) < 101 || len(other) == 0 || len(notAsked) == 0; i++ {
		k := fmt.Sprint("ae:", i)
		b := keyspace.BucketOf(k)
		switch {
		case bucket < 0 || b == bucket:
			if len(keys) < 101 {
				bucket = b
				keys = append(keys, keyspace.Key{Key: k})
			}
		case b/keyspace.BucketsPerShard != bucket/keyspace.BucketsPerShard:
		case len(other) == 0:
			other = append(other, keyspace.Key{Key: k})
		case b != keyspace.BucketOf(other[0].Key) && len(notAsked) == 0:
			notAsked = append(notAsked, keyspace.Key{Key: k})
		}
	}
	val := bytes.Repeat([]byte("v"), 100)
	for _, k := range slices.Concat(keys, other, notAsked) {
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
	sh := bucket / keyspace.BucketsPerShard
	mask := uint32(1)<<(bucket%keyspace.BucketsPerShard) | 1<<(keyspace.BucketOf(other[0].Key)%keyspace.BucketsPerShard)
	// a peer of this build, one that predates the shard request, one that
	// predates the digest request too (each answers nothing to what it
	// does not know)
	for gen, unknown := range [][]byte{nil, {reqShard}, {reqShard, reqDigests}} {
		received, asked := 0, 0
		ask := func(req []byte) ([]byte, error) {
			asked++
			if bytes.IndexByte(unknown, req[0]) >= 0 {
				return nil, nil
			}
			resp := peer.serveFetch(req)
			received += len(resp)
			return resp, nil
		}
		kds, err := local.differingInShard(ask, 0, sh, mask)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, kd := range kds {
			got = append(got, kd.Key)
		}
		slices.Sort(got)
		want, bound := []string{keys[100].Key, other[0].Key}, 100*len(keys)/4 // the digests: a quarter of the states' bytes
		if gen == 2 {
			want, bound = nil, 1<<20
			for _, k := range append(keys, other...) {
				want = append(want, k.Key)
			}
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("peer generation %d: states of %d keys (%.3q...), want %d", gen, len(got), got[:min(len(got), 3)], len(want))
		}
		if received > bound {
			t.Fatalf("peer generation %d: %d bytes received for two differing keys", gen, received)
		}
		if gen == 0 && asked != 2 {
			t.Fatalf("%d requests for a shard's buckets, want 2 (its key digests, then the differing states)", asked)
		}
	}
	if err := parseKeyDigests([]byte{3, 'a', 'b'}, func(string, uint64) {}); err == nil {
		t.Fatal("a truncated digest answer parsed")
	}
}

// The states of a shard's differing keys are asked for fetchKeys at a
// time: a region that starts empty differs by every key of every shard.
// Long names make the requests smaller (a request is one message).
func TestAntiEntropyFetchesInChunks(t *testing.T) {
	t.Run("short names", func(t *testing.T) { testFetchesInChunks(t, fetchKeys+100, "") })
	// names of 1,000 bytes: 260 a request
	t.Run("long names", func(t *testing.T) { testFetchesInChunks(t, 600, strings.Repeat("k", 990)) })
}

func testFetchesInChunks(t *testing.T, keys int, prefix string) {
	peer, local := startUnlinked(t, "P"), startUnlinked(t, "L")
	const sh = 7
	n := 0
	for i := 0; n < keys; i++ {
		k := keyspace.Key{Key: fmt.Sprintf("chunk:%s%06d", prefix, i)}
		if keyspace.BucketOf(k.Key)/keyspace.BucketsPerShard != sh {
			continue
		}
		peer.KS.Run([]keyspace.Key{k}, func(tx *keyspace.Tx) error {
			tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), []byte("v"), false))
			return nil
		})
		n++
	}
	var fetches []int
	ask := func(req []byte) ([]byte, error) {
		if req[0] == reqFetch {
			kds, err := crdt.DecodeBatch(req[1:])
			if err != nil {
				t.Fatal(err)
			}
			fetches = append(fetches, len(kds))
		}
		return peer.serveFetch(req), nil
	}
	kds, err := local.differingInShard(ask, 0, sh, 1<<keyspace.BucketsPerShard-1)
	if err != nil {
		t.Fatal(err)
	}
	per := min(fetchKeys, fetchNameBytes/(len("chunk:")+len(prefix)+6))
	want := []int{}
	for left := n; left > 0; left -= per {
		want = append(want, min(left, per))
	}
	if len(kds) != n || !slices.Equal(fetches, want) {
		t.Fatalf("%d states of %d keys, fetched in %v", len(kds), n, fetches)
	}
}

// Damaged keys are asked of a peer a request's worth at a time: 600 keys
// with names of ~1 kB are more than a message carries here (512 KiB).
func TestRepairAsksInChunks(t *testing.T) {
	bus := peering.NewBus()
	bus.SetMaxPayload(512 << 10)
	start := func(region, peer string) *Instance {
		in, err := Start(Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), Region: region, LogLevel: "error", CheckpointInterval: time.Hour,
			Bus: bus, Peers: map[string]string{peer: "nats://mem:1"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		return in
	}
	p, l := start("P", "L"), start("L", "P")
	var keys []keyspace.Key
	for i := range 600 {
		k := keyspace.Key{Key: fmt.Sprintf("r:%s%04d", strings.Repeat("k", 1000), i)}
		keys = append(keys, k)
		setValue(p, k.Key, []byte("v"))
	}
	for deadline := time.Now().Add(10 * time.Second); l.KS.Digest(keys[len(keys)-1]) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the keys never reached L")
		}
	}
	for _, k := range keys {
		l.KS.Quarantine(k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l.repairLoop(ctx)
	if n := len(l.KS.QuarantinedKeys()); n != 0 || l.KS.Stats.KeysRepaired.Load() != 600 {
		t.Fatalf("%d keys still quarantined, %d repaired", n, l.KS.Stats.KeysRepaired.Load())
	}
}
