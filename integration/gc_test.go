package integration

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"concord/cmd/concord/server"
	"concord/keyspace"
)

func tombstones(t *testing.T, c *cluster, r string) int {
	t.Helper()
	info, _ := c.clients[r].Info(ctx, "stats").Result()
	m := regexp.MustCompile(`tombstones:(-?\d+)`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("no tombstones line:\n%s", info)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A delete-heavy workload leaves tombstones; once every region has seen the
// deletes they are collected everywhere, nothing observable changes, and a
// collected key can live again in any region.
func TestTombstoneGC(t *testing.T) {
	c := startCluster(t, 3, func(cfg *server.Config) {
		cfg.GCInterval = 100 * time.Millisecond
		cfg.AntiEntropyInterval = 150 * time.Millisecond
	})
	a := c.clients["A"]
	for i := 0; i < 200; i++ {
		p := a.Pipeline()
		p.Set(ctx, fmt.Sprint("s", i), "v", 0)
		p.SAdd(ctx, fmt.Sprint("set", i), "a", "b")
		p.HSet(ctx, fmt.Sprint("h", i), "f", "v")
		p.Set(ctx, fmt.Sprint("keep", i), "v", 0)
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c.converged(t, 20*time.Second)
	for i := 0; i < 20; i++ { // counter fields in a hash that stays alive
		a.HIncrBy(ctx, "counters", fmt.Sprint("c", i), 5)
	}
	a.HSet(ctx, "counters", "keep", "1")
	c.converged(t, 20*time.Second)
	for i := 0; i < 200; i++ {
		r := c.clients[c.names[i%3]] // deletes from every region
		r.Del(ctx, fmt.Sprint("s", i), fmt.Sprint("set", i))
		r.HDel(ctx, fmt.Sprint("h", i), "f")
		if i < 20 {
			r.HDel(ctx, "counters", fmt.Sprint("c", i))
		}
	}
	before := c.converged(t, 20*time.Second)
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		for _, r := range c.names {
			if n := tombstones(t, c, r); n != 0 {
				return fmt.Errorf("region %s still holds %d tombstones", r, n)
			}
		}
		return nil
	})
	if after := c.converged(t, 10*time.Second); after != before {
		t.Fatalf("GC changed what clients see")
	}
	info, _ := c.clients["B"].Info(ctx, "stats").Result()
	if regexp.MustCompile(`tombstones_gc:0\r`).MatchString(info) {
		t.Fatalf("nothing counted as collected:\n%s", info)
	}
	// the removed counter fields' metadata is gone too, in every region
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		for _, r := range c.names {
			st := c.regions[r].KS.Snapshot(keyspace.Key{Key: "counters"})
			if st == nil || st.Hash.Len() != 1 {
				return fmt.Errorf("region %s: counters holds %d field entries", r, st.Hash.Len())
			}
		}
		return nil
	})
	// collected keys live again, from any region, everywhere
	c.clients["C"].SAdd(ctx, "set7", "again")
	c.clients["B"].Set(ctx, "s8", "again", 0)
	state := c.converged(t, 20*time.Second)
	for _, want := range []string{"set7=[again]", `s8="again"`} {
		if !regexp.MustCompile(regexp.QuoteMeta(want)).MatchString(state) {
			t.Fatalf("%s missing after GC:\n%.2000s", want, state)
		}
	}
}

// A region that is down holds back GC everywhere; declaring it removed
// (CONCORD PEERS REMOVE) lets the others collect, and survives a restart.
func TestPeersRemoveUnblocksGC(t *testing.T) {
	c := startCluster(t, 3, func(cfg *server.Config) { cfg.GCInterval = 100 * time.Millisecond })
	a, b := c.clients["A"], c.clients["B"]
	for i := 0; i < 50; i++ {
		a.Set(ctx, fmt.Sprint("k", i), "v", 0)
	}
	c.converged(t, 20*time.Second)
	c.regions["C"].Close()
	for i := 0; i < 50; i++ {
		a.Del(ctx, fmt.Sprint("k", i))
	}
	time.Sleep(time.Second)
	if n := tombstones(t, c, "A"); n != 50 {
		t.Fatalf("A holds %d tombstones while C is down, want 50 (GC must wait for C)", n)
	}
	if err := a.Do(ctx, "CONCORD", "PEERS", "REMOVE", "nosuch").Err(); err == nil {
		t.Fatal("removing an unknown peer succeeded")
	}
	for _, cl := range []string{"A", "B"} {
		if err := c.clients[cl].Do(ctx, "CONCORD", "PEERS", "REMOVE", "C").Err(); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		for _, r := range []string{"A", "B"} {
			if n := tombstones(t, c, r); n != 0 {
				return fmt.Errorf("%s holds %d tombstones", r, n)
			}
		}
		return nil
	})
	peers, _ := b.Do(ctx, "CONCORD", "PEERS").Slice()
	if fmt.Sprint(peers) != "[[A active] [C removed]]" {
		t.Fatalf("CONCORD PEERS = %v", peers)
	}
	c.regions["B"].Close()
	c.start(t, "B", c.nats["B"])
	if peers, _ := c.clients["B"].Do(ctx, "CONCORD", "PEERS", "LIST").Slice(); fmt.Sprint(peers) != "[[A active] [C removed]]" {
		t.Fatalf("after restart CONCORD PEERS = %v", peers)
	}
}
