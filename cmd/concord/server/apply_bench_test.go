package server

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"concord/crdt"
	"concord/peering"
)

// BenchmarkApplyBatch is a replicating region's apply path past the
// network: a peer's message of 256 SETs over 100k keys decoded (as
// peering does) and applied by the applier into a region with its log
// (fsync everysec), the message logged as it came (raw) or its deltas
// encoded again (encoded: how earlier builds logged them, and still the
// path without the message's bytes). ns/delta is per delta.
func BenchmarkApplyBatch(b *testing.B) {
	for _, raw := range []bool{true, false} {
		b.Run(map[bool]string{true: "raw", false: "encoded"}[raw], func(b *testing.B) {
			const keys, per = 100000, 256
			in, _ := startWith(b, Config{Region: "A", Bus: peering.NewBus(), Peers: map[string]string{"X": "mem"},
				CheckpointInterval: time.Hour, CheckpointLogBytes: 1 << 40})
			rng := rand.New(rand.NewPCG(1, 2))
			msgs := make([][]byte, 64)
			phys := time.Now().UnixMilli()
			for i := range msgs {
				batch := make([]crdt.KeyDelta, per)
				for j := range batch {
					op := crdt.Op{HLC: crdt.HLC{Phys: phys + int64(i), Log: uint32(j), Region: "X"}}
					batch[j] = crdt.KeyDelta{Key: "key:" + strconv.Itoa(rng.IntN(keys)), Delta: crdt.SetString(&crdt.State{}, op, []byte(fmt.Sprint(j)), false)}
				}
				msgs[i] = crdt.AppendBatch(nil, batch)
			}
			apply := func(i int) {
				msg := msgs[i%len(msgs)]
				kds, err := crdt.DecodeMessageReleasable(nil, msg)
				if err != nil {
					b.Fatal(err)
				}
				pb := peering.Batch{Origin: "X", Seq: uint64(i + 1), Deltas: kds}
				if raw {
					pb.Raw = msg
					for _, kd := range kds {
						if h := kd.Delta.MaxHLC(); h.Compare(pb.Newest) > 0 {
							pb.Newest = h
						}
					}
				}
				if err := (applier{ks: in.KS, store: in.store}).ApplyBatch(pb); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; i < 4*len(msgs); i++ { // every key there, warm
				apply(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				apply(i)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/delta")
		})
	}
}
