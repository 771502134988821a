package integration

import (
	"testing"
	"time"

	"concord/cmd/concord/server"
	"concord/peering"

	"github.com/redis/go-redis/v9"
)

// The same convergence scenario over the in-memory transport: three regions
// in this process, no NATS, one cut off and healed.
func TestReplicationInMemoryTransport(t *testing.T) {
	bus := peering.NewBus()
	c := &cluster{regions: map[string]*server.Instance{}, clients: map[string]*redis.Client{}, names: []string{"A", "B", "C"}}
	for _, name := range c.names {
		peers := map[string]string{}
		for _, o := range c.names {
			if o != name {
				peers[o] = "mem"
			}
		}
		in, err := server.Start(server.Config{Addr: "127.0.0.1:0", Region: name, Dir: t.TempDir(), LogLevel: "warn", Peers: peers, Bus: bus})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		c.regions[name] = in
		c.clients[name] = redis.NewClient(&redis.Options{Addr: in.Addr()})
		t.Cleanup(func() { c.clients[name].Close() })
	}
	h := newHistory()
	stop := make(chan struct{})
	wg := c.workload(h, stop)
	time.Sleep(300 * time.Millisecond)
	bus.Cut("B")
	time.Sleep(500 * time.Millisecond)
	bus.Heal("B")
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	c.converged(t, 20*time.Second)
	c.check(t, h, "B")
	// WAIT works over it too
	conn := c.clients["A"].Conn()
	defer conn.Close()
	conn.Set(ctx, "x", "1", 0)
	if n, _ := conn.Do(ctx, "WAIT", 2, 5000).Int(); n != 2 {
		t.Fatalf("WAIT = %d", n)
	}
	bus.Cut("C")
	conn.Set(ctx, "y", "1", 0)
	if n, _ := conn.Do(ctx, "WAIT", 2, 300).Int(); n != 1 {
		t.Fatalf("WAIT with C cut = %d", n)
	}
}
