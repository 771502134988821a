package keyspace

import (
	"fmt"
	"testing"
	"time"

	"concord/crdt"
)

// The one-read clock tells the wall clock's millisecond, and a step of the
// wall clock (here: an anchor an hour off) is gone within a period.
func TestWallClock(t *testing.T) {
	c := &wallClock{period: 30 * time.Millisecond}
	deadline := time.Now().Add(100 * time.Millisecond)
	n := 0
	for time.Now().Before(deadline) {
		before := time.Now().UnixMilli()
		got := c.nowMs()
		after := time.Now().UnixMilli()
		if got < before-1 || got > after+1 {
			t.Fatalf("read %d: %d outside [%d, %d]", n, got, before, after)
		}
		n++
	}
	t0 := time.Now()
	c.anchor.Store(&clockAnchor{wall: t0.Add(time.Hour).UnixNano(), mono: t0.Sub(clockEpoch)})
	if got := c.nowMs(); got < time.Now().Add(59*time.Minute).UnixMilli() {
		t.Fatalf("within its period the clock ignored its anchor: %d", got)
	}
	time.Sleep(c.period)
	if got, now := c.nowMs(), time.Now().UnixMilli(); got < now-1 || got > now+1 {
		t.Fatalf("after a period: %d, wall clock %d", got, now)
	}
}

// A command's transaction takes its time from the monotonic reading the
// command started with (RunAt), and a reading older than the clock's
// anchor counts back from it instead of anchoring again.
func TestRunAtTakesTheCommandsReading(t *testing.T) {
	ks := New(Config{Region: "A"}, nil)
	if ks.wall == nil {
		t.Fatal("no wall clock")
	}
	m := Monotonic()
	now := ks.NowMsAt(m)
	a := ks.wall.anchor.Load()
	for _, back := range []time.Duration{0, 1500 * time.Millisecond, time.Hour} {
		if got := ks.NowMsAt(m - back); got < now-back.Milliseconds()-1 || got > now-back.Milliseconds()+1 {
			t.Fatalf("%v back: %d, want %d", back, got, now-back.Milliseconds())
		}
		var txNow int64
		ks.RunAt(m-back, nil, func(tx *Tx) error { txNow = tx.NowMs(); return nil })
		if txNow != ks.NowMsAt(m-back) {
			t.Fatalf("%v back: the transaction's time %d, the reading's %d", back, txNow, ks.NowMsAt(m-back))
		}
	}
	if ks.wall.anchor.Load() != a {
		t.Fatal("an older reading anchored the clock again")
	}
}

// A delta merged from elsewhere advances the clock past its timestamps
// before the region issues another: within the tx that merged it (a later
// Op), after it (the next write), for each way in (a peer's batch, a
// message logged as it came, a repair, the log's replay). The clock's lock is taken once per tx, not
// per delta.
func TestMergedTimestampsAdvanceTheClock(t *testing.T) {
	for _, way := range []string{"remote", "received", "repair", "restore"} {
		t.Run(way, func(t *testing.T) {
			ks, _, _ := newKS(true)
			pclk := &fakeClock{t: time.Unix(1_000_000, 0).Add(time.Hour)} // B's clock runs an hour ahead
			peer := New(Config{Region: "B", Now: pclk.Now, Stable: func() bool { return true }}, &memStore{})
			var deltas []*crdt.State
			keys := []Key{{Key: "a"}, {Key: "b"}, {Key: "c"}}
			for i, k := range keys {
				pclk.t = pclk.t.Add(time.Second) // each later than the last
				peer.Run([]Key{k}, func(tx *Tx) error {
					d := crdt.SetString(tx.State(k), tx.Op(), []byte(fmt.Sprint("b", i)), false)
					tx.Apply(k, d)
					deltas = append(deltas, d.Clone())
					return nil
				})
			}
			newest := deltas[len(deltas)-1].MaxHLC()
			merge := func(tx *Tx, k Key, d *crdt.State) {
				switch way {
				case "remote":
					tx.ApplyRemote(k, d, "B")
				case "received": // the message's newest timestamp told apart
					tx.See(d.MaxHLC())
					tx.MergeReceived(k, d, "B")
				case "repair":
					tx.Repair(k, d)
				default:
					tx.Restore(k, d)
				}
			}
			ks.Run(keys[:2], func(tx *Tx) error {
				merge(tx, keys[0], deltas[0])
				merge(tx, keys[1], deltas[1])
				if op := tx.Op(); op.HLC.Compare(deltas[1].MaxHLC()) <= 0 {
					t.Errorf("an op after the merge in its tx: %v, not after %v", op.HLC, deltas[1].MaxHLC())
				}
				return nil
			})
			ks.Run(keys[2:], func(tx *Tx) error {
				merge(tx, keys[2], deltas[2])
				return nil
			})
			// (the clock observes a time, not a region: its Last is newest's
			// time with this region's name)
			if c := ks.Clock(); c.Phys < newest.Phys || (c.Phys == newest.Phys && c.Log < newest.Log) {
				t.Fatalf("clock %v after merging %v", c, newest)
			}
			set(ks, "c", "mine", 0)
			if v, _ := get(ks, "c"); v != "mine" {
				t.Fatalf("a write after a merge of a later timestamp reads %q", v)
			}
			if c := ks.Clock(); c.Compare(newest) <= 0 || c.Region != "A" {
				t.Fatalf("the write after the merge was stamped %v, not after %v", c, newest)
			}
		})
	}
}
