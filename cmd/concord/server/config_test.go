package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"concord/crdt"
	"concord/keyspace"
)

// Validate fills the log's segment size and refuses one too small to hold
// a group commit's frame comfortably.
func TestConfigLogSegmentBytes(t *testing.T) {
	c := Config{}
	if err := c.Validate(); err != nil || c.LogSegmentBytes != 64<<20 {
		t.Fatalf("default: %d %v", c.LogSegmentBytes, err)
	}
	c = Config{LogSegmentBytes: 1000}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--log-segment-bytes") {
		t.Fatalf("1000-byte segments: %v", err)
	}
}

// Validate fills --checkpoint-cpu's default and refuses a share outside
// (0, 1].
func TestConfigCheckpointCPU(t *testing.T) {
	c := Config{}
	if err := c.Validate(); err != nil || c.CheckpointCPU != 0.25 {
		t.Fatalf("default: %v %v", c.CheckpointCPU, err)
	}
	for _, bad := range []float64{-0.5, 1.5} {
		c := Config{CheckpointCPU: bad}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--checkpoint-cpu") {
			t.Fatalf("--checkpoint-cpu %v: %v", bad, err)
		}
	}
	c = Config{CheckpointCPU: 1}
	if err := c.Validate(); err != nil || c.CheckpointCPU != 1 {
		t.Fatalf("--checkpoint-cpu 1: %v %v", c.CheckpointCPU, err)
	}
}

// --gc-headroom may be 0 (Go's own pacing), not negative.
func TestConfigGCHeadroom(t *testing.T) {
	for _, h := range []int64{0, 128 << 20} {
		if c := (Config{GCHeadroom: h}); c.Validate() != nil {
			t.Fatalf("--gc-headroom %d refused", h)
		}
	}
	if c := (Config{GCHeadroom: -1}); c.Validate() == nil {
		t.Fatal("--gc-headroom -1 accepted")
	}
}

// --checkpoint-memtable-bytes: 8 MiB unless set, 1 MiB to 1 GiB, and it
// reaches the store.
func TestConfigCheckpointMemtableBytes(t *testing.T) {
	c := Config{}
	if err := c.Validate(); err != nil || c.CheckpointMemtableBytes != 8<<20 {
		t.Fatalf("default: %d %v", c.CheckpointMemtableBytes, err)
	}
	for _, bad := range []int64{-1, 1000, 2 << 30} {
		c := Config{CheckpointMemtableBytes: bad}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--checkpoint-memtable-bytes") {
			t.Fatalf("--checkpoint-memtable-bytes %d: %v", bad, err)
		}
	}
	in, _ := startWith(t, Config{CheckpointMemtableBytes: 3 << 20})
	if got := in.store.MemtableBytes(); got != 3<<20 {
		t.Fatalf("store's memtables %d bytes, configured 3 MiB", got)
	}
}

// setValue writes key = val in in and waits until it is logged.
func setValue(in *Instance, key string, val []byte) {
	k := keyspace.Key{Key: key}
	t, _ := in.KS.Run([]keyspace.Key{k}, func(tx *keyspace.Tx) error {
		tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), val, false))
		return nil
	})
	if t != nil {
		t.Wait()
	}
}

// --log-segment-bytes reaches the log: a small size makes several segments.
func TestLogSegmentBytesReachesTheLog(t *testing.T) {
	in, err := Start(Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), LogLevel: "error", LogSegmentBytes: 64 << 10, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	val := make([]byte, 1000)
	for i := 0; i < 300; i++ {
		setValue(in, fmt.Sprint("k", i), val)
	}
	if _, _, segs, bytes := in.store.Size(); segs < 3 {
		t.Fatalf("%d segments for %d bytes of log with 64 KiB segments", segs, bytes)
	}
}

// --pprof serves Go's profiles on --metrics-addr, only when asked; it
// needs --metrics-addr.
func TestPprofOptIn(t *testing.T) {
	c := Config{Dir: t.TempDir(), Pprof: true}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Fatalf("--pprof without --metrics-addr: %v", err)
	}
	for _, on := range []bool{false, true} {
		in, err := Start(Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), LogLevel: "error", MetricsAddr: "127.0.0.1:0", Pprof: on})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + in.MetricsAddr() + "/debug/pprof/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: 404, true: 200}[on]; resp.StatusCode != want {
			t.Fatalf("pprof %v: status %d, want %d", on, resp.StatusCode, want)
		}
		in.Close()
	}
}
