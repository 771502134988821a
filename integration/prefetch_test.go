package integration

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"concord/cmd/concord/server"

	"github.com/redis/go-redis/v9"
)

// A client's pipeline has its keys prefetched (INFO stats prefetched_keys
// counts the keys found) in the client's database, never for a lone
// command or commands without a key first, never with --io-prefetch=false;
// the replies are what they would be without it.
func TestPipelinePrefetch(t *testing.T) {
	ctx := context.Background()
	for _, off := range []bool{false, true} {
		in := startConcord(t, func(c *server.Config) {
			c.ColdAfter = 0 // keys stay warm: a cold key is not prefetched
			c.IONoPrefetch = off
		})
		c := redis.NewClient(&redis.Options{Addr: in.Addr(), DB: 1, PoolSize: 1})
		t.Cleanup(func() { c.Close() })
		prefetched := func() int {
			info, err := c.Info(ctx, "stats").Result()
			if err != nil {
				t.Fatal(err)
			}
			m := regexp.MustCompile(`prefetched_keys:(\d+)`).FindStringSubmatch(info)
			if m == nil {
				t.Fatalf("no prefetched_keys in INFO stats:\n%s", info)
			}
			n, _ := strconv.Atoi(m[1])
			return n
		}
		pipe := func(fn func(p redis.Pipeliner)) []redis.Cmder {
			cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error { fn(p); return nil })
			if err != nil && err != redis.Nil {
				t.Fatal(err)
			}
			return cmds
		}
		pipe(func(p redis.Pipeliner) { // new keys: nothing to find
			for i := range 8 {
				p.Set(ctx, fmt.Sprint("k", i), i, 0)
			}
		})
		base := prefetched()
		cmds := pipe(func(p redis.Pipeliner) {
			for i := range 8 {
				p.Get(ctx, fmt.Sprint("k", i))
			}
			p.Get(ctx, "missing")
		})
		for i, cmd := range cmds[:8] {
			if v, err := cmd.(*redis.StringCmd).Result(); err != nil || v != fmt.Sprint(i) {
				t.Fatalf("GET k%d: %q %v", i, v, err)
			}
		}
		want := 8
		if off {
			want = 0
		}
		if got := prefetched() - base; got != want {
			t.Fatalf("prefetch off=%v: %d keys prefetched for a pipeline of 8 GETs, want %d", off, got, want)
		}
		// a deep pipeline (one read brings hundreds): prefetched as it is
		// served, 16 commands at a time, not only its first 16
		pipe(func(p redis.Pipeliner) {
			for i := range 300 {
				p.Set(ctx, fmt.Sprint("d", i), i, 0)
			}
		})
		base = prefetched()
		pipe(func(p redis.Pipeliner) {
			for i := range 300 {
				p.Get(ctx, fmt.Sprint("d", i))
			}
		})
		if got := prefetched() - base; off && got != 0 || !off && got < 250 {
			t.Fatalf("prefetch off=%v: %d keys prefetched for a pipeline of 300 GETs", off, got)
		}
		base = prefetched()
		c.Get(ctx, "k1")
		pipe(func(p redis.Pipeliner) {
			p.Echo(ctx, "k1")
			p.Ping(ctx)
		})
		if got := prefetched() - base; got != 0 {
			t.Fatalf("%d keys prefetched for a lone GET and keyless commands", got)
		}
	}
}
