package server

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"

	"concord/crdt"
	"concord/keyspace"

	"golang.org/x/time/rate"
)

// aeStats count anti-entropy work (INFO, metrics).
type aeStats struct {
	rounds   atomic.Uint64
	repaired atomic.Uint64
	bytes    atomic.Uint64
	gaps     atomic.Uint64 // entries of a peer's stream aged out unapplied
}

// antiEntropy compares this region's hash tree with each peer's every
// interval (75–100% of it: jitter) and pulls the full states of keys in buckets that differ. Every
// region does the same, so both sides converge; merging full states is safe
// in any direction. A region that started empty reports ready (/readyz)
// only after its first complete round.
func (in *Instance) antiEntropy(ctx context.Context, every time.Duration, bytesPerSec int) {
	lim := rate.NewLimiter(rate.Limit(bytesPerSec), max(bytesPerSec, 1<<20))
	first := true
	for ctx.Err() == nil {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-time.After(jitter(every)):
			case <-in.aeNow:
			}
		}
		start := time.Now()
		synced, keys, bytes := 0, 0, 0
		for _, peer := range in.Node.Peers() {
			k, b, err := in.syncWith(ctx, peer, lim)
			keys, bytes = keys+k, bytes+b
			if err == nil {
				synced++
			}
		}
		in.ae.rounds.Add(1)
		if keys > 0 || in.syncing.Load() {
			in.Log.Info().Int("keys_repaired", keys).Int("bytes", bytes).Int("peers", synced).Dur("took", time.Since(start)).
				Float64("keys_per_sec", float64(keys)/max(time.Since(start).Seconds(), 0.001)).Msg("anti-entropy round")
		}
		if synced > 0 && in.syncing.CompareAndSwap(true, false) {
			in.Log.Info().Msg("initial resync done: ready")
		}
		first = false
	}
}

var errAE = errors.New("anti-entropy: bad answer")

// syncWith pulls from peer every key whose bucket differs.
func (in *Instance) syncWith(ctx context.Context, peer string, lim *rate.Limiter) (keys, bytes int, err error) {
	ask := func(req []byte) ([]byte, error) {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := in.Node.Fetch(fctx, peer, req)
		if err == nil {
			bytes += len(resp)
			in.ae.bytes.Add(uint64(len(resp)))
			lim.WaitN(ctx, min(len(resp), lim.Burst()))
		}
		return resp, err
	}
	rb, err := ask([]byte{reqRoots})
	if err != nil {
		return 0, 0, err
	}
	mine := in.KS.Roots()
	if len(rb) != 8*len(mine) {
		return 0, 0, errAE
	}
	for db, root := range mine {
		if binary.LittleEndian.Uint64(rb[8*db:]) == root {
			continue
		}
		bb, err := ask(binary.AppendUvarint([]byte{reqBuckets}, uint64(db)))
		if err != nil {
			return keys, bytes, err
		}
		local := in.KS.Buckets(db)
		if len(bb) != 8*len(local) {
			return keys, bytes, errAE
		}
		// the differing buckets, a shard's at once (one walk of it on
		// each side, one request)
		for sh := 0; sh < len(local)/keyspace.BucketsPerShard; sh++ {
			var mask uint32
			for i := range keyspace.BucketsPerShard {
				b := sh*keyspace.BucketsPerShard + i
				if binary.LittleEndian.Uint64(bb[8*b:]) != local[b] {
					mask |= 1 << i
				}
			}
			if mask == 0 {
				continue
			}
			kds, err := in.differingInShard(ask, db, sh, mask)
			if err != nil {
				return keys, bytes, err
			}
			for _, kd := range kds {
				k := keyspace.Key{DB: kd.DB, Key: kd.Key}
				if kd.DB != db {
					continue
				}
				before := in.KS.Digest(k)
				t, _ := in.KS.Run([]keyspace.Key{k}, func(tx *keyspace.Tx) error { tx.ApplyRemote(k, kd.Delta, peer); return nil })
				if t != nil {
					t.Wait()
				}
				if in.KS.Digest(k) != before {
					keys++
					in.ae.repaired.Add(1)
				}
			}
		}
	}
	return keys, bytes, nil
}

// differingInShard returns the peer's states of the keys whose key digests
// differ from this region's, in the buckets of shard sh (database db) set
// in mask. It asks for those buckets' key digests first, then for the
// states of the keys that differ only: under a steady stream of writes
// nearly every bucket differs for a moment (the keys in flight, and the
// time each side takes to read its digests), and shipping, encoding and
// merging every key of every bucket again made a round under load a full
// resync (a region's apply lag p99 at 47k SET/s 0.2–0.5 s during rounds,
// 5–13 ms without). A peer that predates the shard request answers
// nothing: it is asked bucket by bucket (differingStates).
func (in *Instance) differingInShard(ask func([]byte) ([]byte, error), db, sh int, mask uint32) ([]crdt.KeyDelta, error) {
	req := binary.AppendUvarint(binary.AppendUvarint(binary.AppendUvarint([]byte{reqShard}, uint64(db)), uint64(sh)), uint64(mask))
	dg, err := ask(req)
	if err != nil {
		return nil, err
	}
	if len(dg) == 0 || dg[0] != digestsVersion {
		var out []crdt.KeyDelta
		for i := range keyspace.BucketsPerShard {
			if mask&(1<<i) == 0 {
				continue
			}
			kds, err := in.differingStates(ask, db, sh*keyspace.BucketsPerShard+i)
			if err != nil {
				return nil, err
			}
			out = append(out, kds...)
		}
		return out, nil
	}
	mine := map[string]uint64{} // this region's digests of the buckets, read in one walk
	in.KS.DigestsInShard(db, sh, mask, func(k string, d uint64) { mine[k] = d })
	return in.fetchDiffering(ask, db, dg[1:], mine)
}

// differingStates is differingInShard for one bucket, asked of a peer that
// predates the shard request; a peer that predates the digest request too
// answers nothing: it is asked for the whole bucket's states.
func (in *Instance) differingStates(ask func([]byte) ([]byte, error), db, b int) ([]crdt.KeyDelta, error) {
	where := binary.AppendUvarint(binary.AppendUvarint(nil, uint64(db)), uint64(b))
	dg, err := ask(append([]byte{reqDigests}, where...))
	if err != nil {
		return nil, err
	}
	if len(dg) == 0 || dg[0] != digestsVersion {
		kb, err := ask(append([]byte{reqKeys}, where...))
		if err != nil {
			return nil, err
		}
		return crdt.DecodeBatch(kb)
	}
	mine := map[string]uint64{}
	in.KS.DigestsIn(db, b, func(k string, d uint64) { mine[k] = d })
	return in.fetchDiffering(ask, db, dg[1:], mine)
}

// fetchDiffering asks the peer for the states of the keys of its digest
// answer dg (after the version byte) whose digests differ from mine.
func (in *Instance) fetchDiffering(ask func([]byte) ([]byte, error), db int, dg []byte, mine map[string]uint64) ([]crdt.KeyDelta, error) {
	var want []crdt.KeyDelta
	if err := parseKeyDigests(dg, func(key string, d uint64) {
		if mine[key] != d {
			want = append(want, crdt.KeyDelta{DB: db, Key: key, Delta: &crdt.State{}})
		}
	}); err != nil {
		return nil, err
	}
	var out []crdt.KeyDelta
	for len(want) > 0 {
		n := fetchBatch(want)
		kb, err := ask(append([]byte{reqFetch}, crdt.AppendBatch(nil, want[:n])...))
		if err != nil {
			return nil, err
		}
		kds, err := crdt.DecodeBatch(kb)
		if err != nil {
			return nil, err
		}
		out, want = append(out, kds...), want[n:]
	}
	return out, nil
}

// fetchKeys is how many keys' states anti-entropy asks a peer for at once:
// a shard's differing keys may be all of its keys (a region that starts
// empty: 4k keys a shard with 1M keys), and each side holds an answer
// whole (it travels in parts when larger than a message: peering).
const fetchKeys = 1024

// fetchNameBytes bounds the names of the keys asked for at once (a request
// is one message, and an external NATS carries 1 MiB by default).
const fetchNameBytes = 256 << 10

// fetchBatch is how many of the keys want (not empty) one request asks for:
// fetchKeys, fewer if their names are long.
func fetchBatch(want []crdt.KeyDelta) int {
	n, size := 1, len(want[0].Key)
	for ; n < min(len(want), fetchKeys) && size+len(want[n].Key) <= fetchNameBytes; n++ {
		size += len(want[n].Key)
	}
	return n
}

// digestsVersion starts an answer to reqDigests: then, per key of the
// bucket, its name (uvarint length, bytes) and its key digest (8 bytes,
// little-endian).
const digestsVersion = 1

// keyDigests answers reqDigests for bucket b of database db.
func (in *Instance) keyDigests(db, b int) []byte {
	return in.shardDigests(db, b/keyspace.BucketsPerShard, 1<<(b%keyspace.BucketsPerShard))
}

// shardDigests answers reqShard: the key digests of the buckets of shard
// sh set in mask.
func (in *Instance) shardDigests(db, sh int, mask uint32) []byte {
	out := []byte{digestsVersion}
	in.KS.DigestsInShard(db, sh, mask, func(k string, d uint64) {
		out = binary.AppendUvarint(out, uint64(len(k)))
		out = append(out, k...)
		out = binary.LittleEndian.AppendUint64(out, d)
	})
	return out
}

// parseKeyDigests calls fn for each key and digest of an answer to
// reqDigests (after its version byte).
func parseKeyDigests(b []byte, fn func(key string, d uint64)) error {
	for len(b) > 0 {
		n, m := binary.Uvarint(b)
		if m <= 0 || n > uint64(len(b)-m) || len(b)-m-int(n) < 8 {
			return errAE
		}
		key := string(b[m : m+int(n)])
		fn(key, binary.LittleEndian.Uint64(b[m+int(n):]))
		b = b[m+int(n)+8:]
	}
	return nil
}

// AntiEntropyRound runs one comparison with every peer now and returns the
// keys repaired and the bytes received (benchmarks and tests).
func (in *Instance) AntiEntropyRound(ctx context.Context) (keys, bytes int) {
	if in.Node == nil {
		return 0, 0
	}
	lim := rate.NewLimiter(rate.Inf, 1<<30)
	for _, peer := range in.Node.Peers() {
		k, b, _ := in.syncWith(ctx, peer, lim)
		keys, bytes = keys+k, bytes+b
	}
	return keys, bytes
}
