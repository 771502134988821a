package peering

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"concord/crdt"

	"github.com/rs/zerolog"
)

// chanApplier hands each applied batch to a channel.
type chanApplier chan []crdt.KeyDelta

func (c chanApplier) ApplyBatch(b Batch) error {
	c <- append([]crdt.KeyDelta(nil), b.Deltas...)
	return nil
}

// startOnBus starts region on bus, linked to peers.
func startOnBus(t *testing.T, bus *Bus, region string, src Source, apply Applier, peers ...string) *Node {
	t.Helper()
	pm := map[string]string{}
	for _, p := range peers {
		pm[p] = ""
	}
	n, err := Start(Config{Region: region, Peers: pm, Transport: bus.Transport(region), Log: zerolog.Nop()}, src, apply)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// An answer larger than a message comes in parts, whole; a peer of an
// older build (no parts: it answers nothing to a wrapped request) is asked
// plainly.
func TestFetchAnswersInParts(t *testing.T) {
	bus := NewBus()
	bus.SetMaxPayload(16 << 10)
	a := startOnBus(t, bus, "A", newMemOutbox(), nopApplier{}, "B")
	b := startOnBus(t, bus, "B", newMemOutbox(), nopApplier{}, "A")
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i * 7 / 3)
	}
	if err := b.ServeFetch(func(req []byte) []byte {
		if string(req) == "big" {
			return big
		}
		return append([]byte("echo "), req...)
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct{ req, want []byte }{{[]byte("big"), big}, {[]byte("x"), []byte("echo x")}, {[]byte("big"), big}} {
		got, err := a.Fetch(ctx, "B", tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Fatalf("%q: answer of %d bytes, want %d", tc.req, len(got), len(tc.want))
		}
	}
	if len(b.held.m) != 0 {
		t.Fatalf("%d answers still held after being read", len(b.held.m))
	}
	// a peer of an older build
	bus.Transport("B").ServeFetch(func(req []byte) []byte {
		if req[0] == reqWrapped {
			return nil
		}
		return []byte("plain " + string(req))
	})
	if got, err := a.Fetch(ctx, "B", []byte("x")); err != nil || string(got) != "plain x" {
		t.Fatalf("from an older peer: %q, %v", got, err)
	}
}

// Answers being read in parts are kept a while, a bounded number of them.
func TestHeldAnswersBounded(t *testing.T) {
	var h heldAnswers
	now := time.Unix(1000, 0)
	ans := bytes.Repeat([]byte("a"), 100)
	var toks []uint64
	for i := range maxHeldAnswers + 1 {
		h.wrap(ans, 10, now.Add(time.Duration(i)*time.Second))
		toks = append(toks, h.next)
	}
	if len(h.m) != maxHeldAnswers || h.m[toks[0]] != nil {
		t.Fatalf("%d answers held (the oldest: %v), want %d without the oldest", len(h.m), h.m[toks[0]] != nil, maxHeldAnswers)
	}
	part := func(tok, off uint64, at time.Time) []byte {
		return h.read(fmt.Appendf(nil, "%c%c", byte(tok), byte(off)), 10, at)
	}
	if p := part(toks[1], 10, now.Add(10*time.Second)); len(p) != 10 {
		t.Fatalf("part of %d bytes, want 10", len(p))
	}
	h.wrap(ans, 10, now.Add(10*time.Second+partsTTL)) // the others expired meanwhile
	if len(h.m) != 2 || h.m[toks[1]] == nil {
		t.Fatalf("%d answers held after a minute, want the one read since and the new one", len(h.m))
	}
	if p := part(toks[1], 95, now.Add(11*time.Second)); string(p) != "aaaaa" || h.m[toks[1]] != nil {
		t.Fatalf("last part %q; held after it: %v", p, h.m[toks[1]] != nil)
	}
	if p := part(toks[1], 0, now); p != nil {
		t.Fatal("a part of an answer read to its end")
	}
}

// A write too large for a message is published as a reference to its key,
// and the peer fetches the key's state (in parts) in its place: the
// publisher is not stalled, and the writes after it arrive too, in order.
func TestLargeEntryShippedAsReference(t *testing.T) {
	bus := NewBus()
	bus.SetMaxPayload(16 << 10)
	outA := newMemOutbox()
	applied := make(chanApplier, 10)
	a := startOnBus(t, bus, "A", outA, nopApplier{}, "B")
	startOnBus(t, bus, "B", newMemOutbox(), applied, "A")
	clock := crdt.NewClock("A")
	var mu sync.Mutex // the fetch handler reads states while the next write adds one
	states := map[string]*crdt.State{}
	write := func(key string, val []byte) {
		st := &crdt.State{}
		mu.Lock()
		d := crdt.SetString(st, crdt.Op{HLC: clock.Now(int64(len(states) + 1))}, val, false)
		st.Merge(d)
		states[key] = st
		mu.Unlock()
		outA.add(crdt.AppendBatch(nil, []crdt.KeyDelta{{Key: key, Delta: d}}))
	}
	if err := a.ServeFetch(func(req []byte) []byte { // the server's ReqStates
		kds, err := crdt.DecodeBatch(req[1:])
		if req[0] != ReqStates || err != nil {
			t.Errorf("request %q...: %v", req[:min(len(req), 8)], err)
			return nil
		}
		mu.Lock()
		for i := range kds {
			kds[i].Delta = states[kds[i].Key]
		}
		mu.Unlock()
		return crdt.AppendBatch(nil, kds)
	}); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789"), 20<<10)
	write("small1", []byte("x"))
	write("big", big)
	write("small2", []byte("y"))
	for _, want := range []string{"small1", "big", "small2"} {
		select {
		case batch := <-applied:
			if len(batch) != 1 || batch[0].Key != want {
				t.Fatalf("applied %d deltas (%v...), want %s", len(batch), batch[0].Key, want)
			}
			if v, _, _ := batch[0].Delta.Str.Get(); want == "big" && !bytes.Equal(v, big) {
				t.Fatalf("the large value arrived as %d bytes, want %d", len(v), len(big))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never applied", want)
		}
	}
	bus.mu.Lock() // (the regions' consumers create streams meanwhile)
	msgs := bus.stream("A").msgs
	bus.mu.Unlock()
	for _, m := range msgs {
		if len(m) > 16<<10 {
			t.Fatalf("a stream message of %d bytes", len(m))
		}
	}
}

// unconnected is a transport whose connection is not up yet: its server's
// max payload is unknown (nats.Conn reports 0).
type unconnected struct{ Transport }

func (unconnected) MaxPayload() int { return 0 }

// Until the connection is up (an external server down at start), messages
// are cut for NATS's default 1 MiB, not for an unknown 0.
func TestPartSizeBeforeConnecting(t *testing.T) {
	n := &Node{t: unconnected{NewBus().Transport("A")}, cfg: Config{MaxMessage: 768 << 10, Log: zerolog.Nop()}}
	if got := n.partSize(); got != 1<<20-payloadSlack {
		t.Fatalf("part size %d before connecting, want %d", got, 1<<20-payloadSlack)
	}
	entry := crdt.AppendBatch(nil, []crdt.KeyDelta{{Key: "k", Delta: crdt.SetString(&crdt.State{}, crdt.Op{HLC: crdt.HLC{Phys: 1, Region: "A"}}, make([]byte, 100<<10), false)}})
	if _, msgs := n.envelopes([]uint64{1}, [][]byte{entry}); len(msgs) != 1 || msgs[0][0] == refMessage {
		t.Fatal("a 100 KiB entry became a reference before connecting")
	}
}

// An outbox entry too large for a message that does not decode (it cannot
// be one this build wrote) goes out as a reference to no key: as is it
// could never be published, and every later entry would wait behind it.
func TestUndecodableLargeEntryDoesNotStall(t *testing.T) {
	bus := NewBus()
	bus.SetMaxPayload(1 << 20)
	n := &Node{t: bus.Transport("A"), cfg: Config{MaxMessage: 768 << 10, Log: zerolog.Nop()}}
	entry := bytes.Repeat([]byte{0xff}, 2<<20)
	small := crdt.AppendBatch(nil, []crdt.KeyDelta{{Key: "k", Delta: crdt.SetString(&crdt.State{}, crdt.Op{HLC: crdt.HLC{Phys: 1, Region: "A"}}, []byte("v"), false)}})
	lasts, msgs := n.envelopes([]uint64{1, 2}, [][]byte{entry, small})
	if len(msgs) != 2 || lasts[0] != 1 || lasts[1] != 2 {
		t.Fatalf("%d messages up to %v for two entries", len(msgs), lasts)
	}
	if m := msgs[0]; len(m) > n.partSize() || m[0] != refMessage {
		t.Fatalf("the undecodable entry went out as %d bytes starting %#x", len(m), m[0])
	}
	if kds, err := crdt.DecodeBatch(msgs[0][1:]); err != nil || len(kds) != 0 {
		t.Fatalf("the reference names %d keys (%v), want none", len(kds), err)
	}
}
