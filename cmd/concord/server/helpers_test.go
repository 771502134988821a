package server

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startWith starts a region with cfg on a free port and a data dir of its
// own (logging errors only), and a client of it; both closed when tb ends.
func startWith(tb testing.TB, cfg Config) (*Instance, *redis.Client) {
	cfg.Addr, cfg.Dir, cfg.LogLevel = "127.0.0.1:0", tb.TempDir(), "error"
	in, err := Start(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { in.Close() })
	c := redis.NewClient(&redis.Options{Addr: in.Addr()})
	tb.Cleanup(func() { c.Close() })
	return in, c
}

// checkFor calls f until it returns nil, every sleep, failing the test
// with f's last error after total (nats-server's helper of the name).
func checkFor(tb testing.TB, total, sleep time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal(err)
		}
		time.Sleep(sleep)
	}
}
