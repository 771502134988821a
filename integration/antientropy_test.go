package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"concord/cmd/concord/server"
)

func fastAE(c *server.Config) { c.AntiEntropyInterval = 200 * time.Millisecond }

func (c *cluster) fill(t *testing.T, region string, n int) {
	t.Helper()
	cl := c.clients[region]
	for i := 0; i < n; i++ {
		p := cl.Pipeline()
		p.Set(ctx, fmt.Sprint("s", i), fmt.Sprint("v", i), 0)
		p.SAdd(ctx, fmt.Sprint("set", i%10), fmt.Sprint("m", i))
		p.HIncrBy(ctx, "h", fmt.Sprint("f", i%7), 1)
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// A region whose data dir is wiped rejoins empty: its durable consumers on
// the other regions have already acknowledged everything, so only
// anti-entropy can bring the data back; /readyz says "resyncing" until the
// first complete round.
func TestAntiEntropyRebuildsWipedRegion(t *testing.T) {
	c := startCluster(t, 3, fastAE)
	c.fill(t, "A", 300)
	c.fill(t, "B", 100)
	c.converged(t, 20*time.Second)
	c.regions["C"].Close()
	os.RemoveAll(c.dirs["C"])
	os.MkdirAll(c.dirs["C"], 0o755)
	c.start(t, "C", c.nats["C"])
	sawResync := strings.Contains(httpGet(t, c.regions["C"].MetricsAddr(), "/readyz"), `"status":"resyncing"`)
	c.converged(t, 30*time.Second)
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if r := httpGet(t, c.regions["C"].MetricsAddr(), "/readyz"); !strings.Contains(r, `"status":"ready"`) {
			return fmt.Errorf("readyz: %s", r)
		}
		return nil
	})
	info, _ := c.clients["C"].Info(ctx, "replication").Result()
	if !strings.Contains(info, "antientropy_keys_repaired:") || strings.Contains(info, "antientropy_keys_repaired:0\r") {
		t.Fatalf("no anti-entropy repairs counted:\n%s", info)
	}
	t.Logf("readyz reported resyncing right after start: %v", sawResync)
}

// With a stream bounded to a few messages, a partitioned region misses
// deltas for good; after the heal anti-entropy alone repairs it.
func TestAntiEntropyRepairsMissedDeltas(t *testing.T) {
	c := startCluster(t, 3, func(cfg *server.Config) { fastAE(cfg); cfg.StreamMaxMsgs = 5 })
	c.fill(t, "A", 20)
	c.converged(t, 20*time.Second)
	c.partition("C", (*proxy).cut)
	c.fill(t, "A", 400) // hundreds of group commits: the stream keeps only 5
	c.fill(t, "B", 100)
	c.healAll()
	c.converged(t, 30*time.Second)
	info, _ := c.clients["C"].Info(ctx, "replication").Result()
	if strings.Contains(info, "stream_gaps:0\r") || !strings.Contains(info, "stream_gaps:") {
		t.Fatalf("the gap in A's stream went unnoticed:\n%s", info)
	}
}
