package server

import (
	"context"
	"encoding/binary"
	"time"

	"concord/keyspace"
	"concord/persistence"
)

// gcEpoch is what this region had seen when a tombstone GC epoch closed:
// its own outbox position and, per peer, the peer's stream position it had
// applied.
type gcEpoch struct {
	n       uint32
	out     uint64
	applied map[string]uint64
}

// appliedVector answers a peer's 'W' request: per origin, the stream
// sequence applied here.
func (in *Instance) appliedVector() []byte {
	var out []byte
	for peer, seq := range in.Node.AppliedVector() {
		out = binary.AppendUvarint(out, uint64(len(peer)))
		out = append(out, peer...)
		out = binary.AppendUvarint(out, seq)
	}
	return out
}

func decodeVector(b []byte) map[string]uint64 {
	out := map[string]uint64{}
	for len(b) > 0 {
		n, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return nil
		}
		name := string(b[w : w+int(n)])
		b = b[w+int(n):]
		v, w2 := binary.Uvarint(b)
		if w2 <= 0 {
			return nil
		}
		out[name] = v
		b = b[w2:]
	}
	return out
}

// tombstoneGC drops tombstones once every region has seen what this region
// had seen when they died (causal stability): each interval it closes an
// epoch, then checks the oldest open epochs against every peer's progress on
// this region's stream and every peer's applied vector. A peer that is down
// blocks GC (documented; `CONCORD PEERS REMOVE` is future work).
func (in *Instance) tombstoneGC(ctx context.Context, every time.Duration) {
	var open []gcEpoch
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		// close the epoch: everything submitted before is in a durable group
		n := in.KS.NewGCEpoch()
		in.store.Submit([]persistence.Write{{Meta: true, Key: "gc-epoch", Header: []byte{1}}}, nil).Wait()
		last, _ := in.store.OutboxSeq()
		open = append(open, gcEpoch{n: n, out: last, applied: in.Node.AppliedVector()})

		stable := uint32(0)
		vectors := map[string]map[string]uint64{}
		progress := map[string]uint64{}
		ok := true
		for _, peer := range in.Node.Peers() {
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := in.Node.Fetch(fctx, peer, []byte{reqVector})
			pr, perr := in.Node.PeerProgress(fctx, peer)
			cancel()
			v := decodeVector(resp)
			if err != nil || perr != nil || v == nil {
				ok = false
				break
			}
			vectors[peer], progress[peer] = v, pr.AckFloor
		}
		if !ok {
			continue
		}
		for len(open) > 0 {
			ep := open[0]
			if !in.epochStable(ep, vectors, progress) {
				break
			}
			stable = ep.n
			open = open[1:]
		}
		if stable == 0 {
			continue
		}
		keys := in.KS.StableTombstones(stable)
		for i := 0; i < len(keys); i += 256 {
			batch := keys[i:min(i+256, len(keys))]
			t, _ := in.KS.Run(batch, func(tx *keyspace.Tx) error {
				for _, k := range batch {
					tx.Forget(k, stable)
				}
				return nil
			})
			if t != nil {
				t.Wait()
			}
		}
	}
}

func (in *Instance) epochStable(ep gcEpoch, vectors map[string]map[string]uint64, progress map[string]uint64) bool {
	if ep.out > 0 {
		ss, known := in.Node.StreamSeqOf(ep.out)
		if !known {
			return false
		}
		for _, p := range in.Node.Peers() {
			if progress[p] < ss {
				return false
			}
		}
	}
	for _, p := range in.Node.Peers() {
		for origin, seq := range ep.applied {
			if origin == p {
				continue // a region has all of its own deltas
			}
			if vectors[p][origin] < seq {
				return false
			}
		}
	}
	return true
}
