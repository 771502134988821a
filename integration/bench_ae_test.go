package integration

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"concord/cmd/concord/server"
	"concord/peering"

	"github.com/redis/go-redis/v9"
)

// BenchmarkAntiEntropy measures, for BENCH_AE_KEYS keys (default 100000;
// 1000000 for the figure): the time and bytes for an empty region to
// pull everything from a peer, and the time and bytes to compare two
// identical regions (one root exchange per database).
func BenchmarkAntiEntropy(b *testing.B) {
	n := envInt("BENCH_AE_KEYS", 100000)
	bus := peering.NewBus()
	start := func(name, peer string) *server.Instance {
		in, err := server.Start(server.Config{Addr: "127.0.0.1:0", Region: name, Dir: b.TempDir(), LogLevel: "error",
			Peers: map[string]string{peer: "mem"}, Bus: bus})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { in.Close() })
		return in
	}
	a := start("A", "B")
	ca := redis.NewClient(&redis.Options{Addr: a.Addr()})
	defer ca.Close()
	for i := 0; i < n; i += 1000 {
		p := ca.Pipeline()
		for j := i; j < i+1000 && j < n; j++ {
			p.Set(ctx, "key:"+strconv.Itoa(j), "v", 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	bus.PauseStreams("B") // B starts empty and must not get the keys from the stream
	bnode := start("B", "A")
	t0 := time.Now()
	keys, bytes := bnode.AntiEntropyRound(context.Background())
	resync := time.Since(t0)
	t1 := time.Now()
	_, cmpBytes := bnode.AntiEntropyRound(context.Background())
	compare := time.Since(t1)
	fmt.Printf("\nanti-entropy, %d keys: resync of an empty region %v (%d keys, %d bytes); compare of identical regions %v (%d bytes)\n",
		n, resync.Round(time.Millisecond), keys, bytes, compare.Round(time.Microsecond), cmpBytes)
	if keys != n {
		b.Fatalf("resynced %d of %d keys", keys, n)
	}
	b.ReportMetric(0, "ns/op")
}
