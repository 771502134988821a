package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"concord/cmd/concord/server"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"
)

// startExternalNATS runs an operator's JetStream server (NATS's defaults)
// for the test and returns its URL.
func startExternalNATS(t *testing.T) string {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("external NATS not ready")
	}
	return ns.ClientURL()
}

// A region may use an operator-run NATS (--nats) instead of the embedded
// one: here region A runs on an external JetStream server, B embeds its own.
func TestReplicationExternalNATS(t *testing.T) {
	ext := startExternalNATS(t)
	bNATS := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	a, err := server.Start(server.Config{Addr: "127.0.0.1:0", Region: "A", Dir: t.TempDir(), LogLevel: "warn",
		NATS: ext, Peers: map[string]string{"B": "nats://" + bNATS}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := server.Start(server.Config{Addr: "127.0.0.1:0", Region: "B", Dir: t.TempDir(), LogLevel: "warn",
		PeerListen: bNATS, Peers: map[string]string{"A": ext}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ca, cb := redis.NewClient(&redis.Options{Addr: a.Addr()}), redis.NewClient(&redis.Options{Addr: b.Addr()})
	defer ca.Close()
	defer cb.Close()
	ca.IncrBy(ctx, "n", 2)
	cb.IncrBy(ctx, "n", 3)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		va, _ := ca.Get(ctx, "n").Result()
		vb, _ := cb.Get(ctx, "n").Result()
		if va != "5" || vb != "5" {
			return fmt.Errorf("A=%q B=%q", va, vb)
		}
		return nil
	})
}

// An external NATS carries at most 1 MiB a message by default: a larger
// value still replicates (its stream message names the key, and the peer
// fetches its state in parts), the writes after it too, and anti-entropy
// repairs a large key a peer missed (its state in parts too).
func TestReplicationExternalNATSLargeValues(t *testing.T) {
	ext := startExternalNATS(t) // max_payload: the default 1 MiB
	bNATS := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// A's stream keeps 3 messages: B, started late, misses the first value
	a, err := server.Start(server.Config{Addr: "127.0.0.1:0", Region: "A", Dir: t.TempDir(), LogLevel: "warn",
		NATS: ext, Peers: map[string]string{"B": "nats://" + bNATS}, StreamMaxMsgs: 3, AntiEntropyInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ca := redis.NewClient(&redis.Options{Addr: a.Addr()})
	defer ca.Close()
	val := func(c byte) string { return strings.Repeat(string(c), 3<<20) }
	if err := ca.Set(ctx, "missed", val('m'), 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		ca.Set(ctx, fmt.Sprint("small", i), i, 0)
	}
	b, err := server.Start(server.Config{Addr: "127.0.0.1:0", Region: "B", Dir: t.TempDir(), LogLevel: "warn",
		PeerListen: bNATS, Peers: map[string]string{"A": ext}, AntiEntropyInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cb := redis.NewClient(&redis.Options{Addr: b.Addr()})
	defer cb.Close()
	// the large write and the one after it reach B by the stream, not by
	// anti-entropy: WAIT (on the connection that wrote) sees B apply them
	conn := ca.Conn()
	defer conn.Close()
	conn.Set(ctx, "streamed", val('s'), 0)
	conn.Set(ctx, "after", "x", 0)
	if n, err := conn.Do(ctx, "WAIT", 1, 20000).Int(); n != 1 {
		t.Fatalf("WAIT after a large write: %d regions (%v), want 1", n, err)
	}
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		for k, want := range map[string]string{"missed": val('m'), "streamed": val('s'), "after": "x", "small4": "4"} {
			if got, _ := cb.Get(ctx, k).Result(); got != want {
				return fmt.Errorf("B's %s: %d bytes, want %d", k, len(got), len(want))
			}
		}
		return nil
	})
}
