package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
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
		in.store.Barrier().Wait()
		last, _ := in.store.OutboxSeq()
		open = append(open, gcEpoch{n: n, out: last, applied: in.Node.AppliedVector()})

		stable := uint32(0)
		vectors := map[string]map[string]uint64{}
		progress := map[string]uint64{}
		ok := true
		for _, peer := range in.activePeers() {
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
		for _, p := range in.activePeers() {
			if progress[p] < ss {
				return false
			}
		}
	}
	for _, p := range in.activePeers() {
		for origin, seq := range ep.applied {
			if origin == p || in.Removed(origin) {
				continue // a region has all of its own deltas
			}
			if vectors[p][origin] < seq {
				return false
			}
		}
	}
	return true
}

// PeerNames, Removed and SetRemoved implement commands.PeerAdmin: a peer
// declared removed no longer holds back tombstone GC. If it ever comes back
// it must start from an empty data dir (it may hold deleted data, or miss
// deletes whose tombstones are gone); the declaration survives restarts.
func (in *Instance) PeerNames() []string { return in.Node.Peers() }

func (in *Instance) Removed(name string) bool {
	in.removedMu.Lock()
	defer in.removedMu.Unlock()
	return in.removed[name]
}

func (in *Instance) SetRemoved(name string, removed bool) error {
	known := false
	for _, p := range in.Node.Peers() {
		known = known || p == name
	}
	if !known {
		return fmt.Errorf("no such peer '%s'", name)
	}
	in.removedMu.Lock()
	if in.removed == nil {
		in.removed = map[string]bool{}
	}
	if removed {
		in.removed[name] = true
	} else {
		delete(in.removed, name)
	}
	var names []string
	for n := range in.removed {
		names = append(names, n)
	}
	in.removedMu.Unlock()
	in.Log.Warn().Str("peer", name).Bool("removed", removed).Msg("peer removal changed: tombstone GC no longer waits for it")
	return in.store.Submit([]persistence.Write{{Meta: true, Key: "removed-peers", Header: []byte(strings.Join(names, ","))}}, nil, nil).Wait()
}

// activePeers are the peers GC waits for.
func (in *Instance) activePeers() []string {
	var out []string
	for _, p := range in.Node.Peers() {
		if !in.Removed(p) {
			out = append(out, p)
		}
	}
	return out
}
