package integration

import (
	"fmt"
	"testing"
	"time"

	"concord/cmd/concord/server"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"
)

// A region may use an operator-run NATS (--nats) instead of the embedded
// one: here region A runs on an external JetStream server, B embeds its own.
func TestReplicationExternalNATS(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("external NATS not ready")
	}
	ext := ns.ClientURL()
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
