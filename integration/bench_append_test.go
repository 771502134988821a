package integration

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"concord/cmd/concord/server"
)

// BenchmarkAppendReplication appends 40 bytes at a time to a 10 MB string
// in region A of a two-region cluster (pipelines of 100 from one
// connection) and reports A's rate and how long B took to hold the same
// value after A's last acknowledgement: each APPEND's delta carries its
// 40 bytes (crdt.Extend) and B writes them into its copy's spare capacity,
// where a delta of the whole value cost 10 MB per APPEND per peer.
// BENCH_APPENDS sets how many (20,000 by default).
func BenchmarkAppendReplication(b *testing.B) {
	n := envInt("BENCH_APPENDS", 20000)
	c := startCluster(b, 2, func(cfg *server.Config) { cfg.ColdAfter = coldAfter })
	a, peer := c.clients["A"], c.clients["B"]
	big := bytes.Repeat([]byte("x"), 10<<20)
	if err := a.Set(ctx, "big", big, 0).Err(); err != nil {
		b.Fatal(err)
	}
	checkFor(b, time.Minute, 10*time.Millisecond, func() error {
		if l, _ := peer.StrLen(ctx, "big").Result(); l != int64(len(big)) {
			return fmt.Errorf("B holds %d bytes", l)
		}
		return nil
	})
	suffix := "0123456789012345678901234567890123456789"
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < n; i += 100 {
		p := a.Pipeline()
		for j := i; j < min(n, i+100); j++ {
			p.Append(ctx, "big", suffix)
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	acked := time.Since(start)
	want := int64(len(big) + n*len(suffix))
	checkFor(b, 5*time.Minute, time.Millisecond, func() error {
		if l, _ := peer.StrLen(ctx, "big").Result(); l != want {
			return fmt.Errorf("B holds %d bytes, want %d", l, want)
		}
		return nil
	})
	behind := time.Since(start) - acked
	b.StopTimer()
	va, _ := a.Get(ctx, "big").Bytes()
	vb, _ := peer.Get(ctx, "big").Bytes()
	if !bytes.Equal(va, vb) {
		b.Fatal("A and B hold different values")
	}
	fetches := int64(infoNumber(b, peer, "replication", "extend_fetches"))
	fmt.Printf("\nAPPEND 40 B to a 10 MB string in A, replicated to B: %d APPENDs in %v (%.0f/s), B caught up %v after the last ack; B fetched %d states\n",
		n, acked.Round(time.Millisecond), float64(n)/acked.Seconds(), behind.Round(time.Millisecond), fetches)
}
