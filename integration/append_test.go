package integration

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"concord/cmd/concord/server"
)

// APPEND and SETRANGE on a big string log what they wrote, not the whole
// value (a 1 MB string appended to 300 times logged 300 MB), and the value
// is what Redis would hold (TestKill9Recovery replays such a log).
func TestAppendLogsWhatItWrites(t *testing.T) {
	in := startConcord(t, func(c *server.Config) {
		c.CheckpointInterval, c.CheckpointLogBytes = time.Hour, 1<<30
		c.ColdAfter = time.Hour // the key stays warm: appends in place
	})
	c := client(t, in.Addr())
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := c.Set(ctx, "big", want, 0).Err(); err != nil {
		t.Fatal(err)
	}
	before := int64(infoNumber(t, c, "persistence", "log_bytes_since_checkpoint"))
	for i := 0; i < 300; i++ {
		s := fmt.Sprintf("<%d>", i)
		switch {
		case i%10 == 9: // SETRANGE past the end: a gap of zero bytes
			at := len(want) + 3
			n, err := c.SetRange(ctx, "big", int64(at), s).Result()
			want = append(append(want, 0, 0, 0), s...)
			if err != nil || n != int64(len(want)) {
				t.Fatalf("SETRANGE: %d %v, want %d", n, err, len(want))
			}
		case i%10 == 5: // SETRANGE inside the value
			at := i * 1000
			if _, err := c.SetRange(ctx, "big", int64(at), s).Result(); err != nil {
				t.Fatal(err)
			}
			copy(want[at:], s)
		default:
			n, err := c.Append(ctx, "big", s).Result()
			want = append(want, s...)
			if err != nil || n != int64(len(want)) {
				t.Fatalf("APPEND: %d %v, want %d", n, err, len(want))
			}
		}
	}
	logged := int64(infoNumber(t, c, "persistence", "log_bytes_since_checkpoint")) - before
	if logged > 100<<10 {
		t.Fatalf("300 APPENDs and SETRANGEs of a few bytes to a 1 MiB string logged %d bytes", logged)
	}
	got, err := c.Get(ctx, "big").Bytes()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("value differs from Redis's (%d bytes, want %d): %v", len(got), len(want), err)
	}
	t.Logf("300 writes logged %d bytes", logged)
}

// Two regions: B overwrites a key while cut off from A, which appends to
// the value B overwrote. The APPEND's delta (only its suffix) cannot be
// resolved at B, which fetches the key's state from A instead: both end
// with the same value, the later write's, and B counts the fetch.
func TestAppendConflictFetchesState(t *testing.T) {
	c := startCluster(t, 2)
	a, b := c.clients["A"], c.clients["B"]
	base := strings.Repeat("base-value-from-A ", 100) // (crdt.ExtendMin: a shorter value is shipped whole)
	if err := a.Set(ctx, "k", base, 0).Err(); err != nil {
		t.Fatal(err)
	}
	a.Append(ctx, "k", "+1") // (resolved at B: its base is there)
	c.converged(t, 20*time.Second)
	c.partition("B", (*proxy).cut)
	if err := b.Set(ctx, "k", "overwritten-at-B", 0).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // (A's write is the later one)
	for i := 0; i < 5; i++ {
		if err := a.Append(ctx, "k", fmt.Sprint("+", i+2)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	c.healAll()
	state := c.converged(t, 30*time.Second)
	if want := fmt.Sprintf("k=%q\n", base+"+1+2+3+4+5+6"); state != want {
		t.Fatalf("converged to %q, want %q", state, want)
	}
	if n := int64(infoNumber(t, b, "replication", "extend_fetches")); n == 0 {
		t.Fatal("B resolved APPENDs whose base it had overwritten: no state fetched")
	}
	// and appends keep replicating (B holds A's value again)
	a.Append(ctx, "k", "+7")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if v, _ := b.Get(ctx, "k").Result(); v != base+"+1+2+3+4+5+6+7" {
			return fmt.Errorf("B reads %q", v[len(base)-10:])
		}
		return nil
	})
}
