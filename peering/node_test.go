package peering

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"concord/crdt"
	"concord/keyspace"

	"github.com/rs/zerolog"
)

// memOutbox is an in-memory Source.
type memOutbox struct {
	mu      sync.Mutex
	entries map[uint64][]byte
	last    uint64
	trimmed uint64
	notify  chan struct{}
}

func newMemOutbox() *memOutbox {
	return &memOutbox{entries: map[uint64][]byte{}, notify: make(chan struct{}, 1)}
}

func (m *memOutbox) add(b []byte) {
	m.mu.Lock()
	m.last++
	m.entries[m.last] = b
	m.mu.Unlock()
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

func (m *memOutbox) OutboxSeq() (uint64, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last, m.trimmed
}
func (m *memOutbox) OutboxNotify() <-chan struct{} { return m.notify }
func (m *memOutbox) TrimOutbox(seq uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := m.trimmed + 1; s <= seq; s++ {
		delete(m.entries, s)
	}
	m.trimmed = max(m.trimmed, seq)
	return nil
}
func (m *memOutbox) ReadOutbox(after uint64, max int) ([]uint64, [][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var seqs []uint64
	var out [][]byte
	for s := after + 1; s <= m.last && len(seqs) < max; s++ {
		if b, ok := m.entries[s]; ok {
			seqs = append(seqs, s)
			out = append(out, b)
		}
	}
	return seqs, out, nil
}

// flaky applies every batch but reports failure on every other call, so
// JetStream redelivers messages that were already merged.
type flaky struct {
	ks    *keyspace.Keyspace
	calls atomic.Int64
}

func (f *flaky) ApplyBatch(b Batch) error {
	batch := b.Deltas
	keys := make([]keyspace.Key, len(batch))
	for i, kd := range batch {
		keys[i] = keyspace.Key{DB: kd.DB, Key: kd.Key}
	}
	f.ks.Run(keys, func(tx *keyspace.Tx) error {
		for _, kd := range batch {
			tx.ApplyRemote(keyspace.Key{DB: kd.DB, Key: kd.Key}, kd.Delta, b.Origin)
		}
		return nil
	})
	if f.calls.Add(1)%2 == 1 {
		return fmt.Errorf("injected failure after applying")
	}
	return nil
}

type nopApplier struct{}

func (nopApplier) ApplyBatch(Batch) error { return nil }

// Redelivered (duplicated) messages never count an increment twice, with
// each outbox entry in a message of its own and with entries shipped
// together in envelopes (fewer messages than entries).
func TestRedeliveryDoesNotDoubleCount(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxMessage int
	}{{"one entry per message", 1}, {"envelopes", 0}} {
		t.Run(tc.name, func(t *testing.T) { testRedelivery(t, tc.maxMessage) })
	}
}

func testRedelivery(t *testing.T, maxMessage int) {
	outA := newMemOutbox()
	a, err := Start(Config{Region: "A", Dir: t.TempDir(), Listen: "127.0.0.1:0", Peers: map[string]string{"B": "nats://127.0.0.1:1"}, Log: zerolog.Nop(), MaxMessage: maxMessage}, outA, nopApplier{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ksB := keyspace.New(keyspace.Config{Region: "B", Stable: func() bool { return false }}, nil)
	fl := &flaky{ks: ksB}

	// region A's counter: 100 batches of increments 1..100, written before
	// B starts so that they wait in the outbox together
	st := &crdt.State{}
	clock := crdt.NewClock("A")
	want := int64(0)
	for i := int64(1); i <= 100; i++ {
		d := crdt.IncrBy(st, crdt.Op{HLC: clock.Now(i)}, i)
		st.Merge(d)
		want += i
		outA.add(crdt.AppendBatch(nil, []crdt.KeyDelta{{Key: "n", Delta: d}}))
	}
	b, err := Start(Config{Region: "B", Dir: t.TempDir(), Peers: map[string]string{"A": "nats://" + a.ListenAddr()}, Log: zerolog.Nop()}, newMemOutbox(), fl)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	deadline := time.Now().Add(20 * time.Second)
	var got int64
	for time.Now().Before(deadline) {
		ksB.Run([]keyspace.Key{{Key: "n"}}, func(tx *keyspace.Tx) error {
			if s := tx.Get(keyspace.Key{Key: "n"}); s != nil {
				got, _, _, _ = s.Str.IntValue()
			}
			return nil
		})
		if got == want && (maxMessage != 1 || fl.calls.Load() >= 150) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got != want {
		t.Fatalf("counter %d, want %d", got, want)
	}
	calls := fl.calls.Load()
	switch {
	case maxMessage == 1 && calls < 150:
		t.Fatalf("only %d deliveries: redelivery did not happen", calls)
	case maxMessage != 1 && (calls < 2 || calls >= 100):
		t.Fatalf("%d deliveries for 100 entries: not shipped together, or not redelivered", calls)
	}
	// everything published was trimmed from A's outbox, and every entry
	// maps to the stream message that carried it
	if last, trimmed := outA.OutboxSeq(); trimmed != last {
		t.Fatalf("outbox trimmed to %d of %d", trimmed, last)
	}
	for seq := uint64(1); seq <= 100; seq++ {
		a.seqMu.Lock()
		_, ok := a.published[seq]
		a.seqMu.Unlock()
		if !ok {
			t.Fatalf("outbox entry %d has no stream sequence", seq)
		}
	}
}

func TestLagHistogram(t *testing.T) {
	var h lagHist
	for i := 1; i <= 100; i++ {
		h.observe(time.Duration(i) * time.Millisecond)
	}
	p50, p99 := h.quantile(0.5), h.quantile(0.99)
	if p50 < 50*time.Millisecond || p50 > 57*time.Millisecond || p99 < 99*time.Millisecond || p99 > 112*time.Millisecond {
		t.Fatalf("p50 %v p99 %v", p50, p99)
	}
	h.reset()
	if h.quantile(0.5) != 0 {
		t.Fatal("reset kept samples")
	}
}

// recordingApplier keeps a copy of each batch it applies and the address
// of the batch's first slot.
type recordingApplier struct {
	batches [][]crdt.KeyDelta
	firsts  []*crdt.KeyDelta
}

func (r *recordingApplier) ApplyBatch(b Batch) error {
	batch := b.Deltas
	r.batches = append(r.batches, append([]crdt.KeyDelta(nil), batch...))
	r.firsts = append(r.firsts, &batch[0])
	return nil
}

// A peer's messages decode into one slice, reused from message to message
// (emptied: the deltas of one message are not seen with the next's).
func TestApplyReusesTheDecodingSlice(t *testing.T) {
	rec := &recordingApplier{}
	n := &Node{apply: rec, cfg: Config{Log: zerolog.Nop()}}
	p := &peer{name: "B"}
	msg := func(keys ...string) []byte {
		var kds []crdt.KeyDelta
		for i, k := range keys {
			op := crdt.Op{HLC: crdt.HLC{Phys: int64(i + 1), Region: "B"}}
			kds = append(kds, crdt.KeyDelta{Key: k, Delta: crdt.SetString(&crdt.State{}, op, []byte(k), false)})
		}
		return crdt.AppendBatch(nil, kds)
	}
	for i, keys := range [][]string{{"a", "b", "c"}, {"d"}, {"e", "f"}} {
		if err := n.applyEntry(p, uint64(i+1), msg(keys...)); err != nil {
			t.Fatal(err)
		}
		got := rec.batches[i]
		if len(got) != len(keys) {
			t.Fatalf("message %d: %d deltas, want %d", i, len(got), len(keys))
		}
		for j, kd := range got {
			if kd.Key != keys[j] {
				t.Fatalf("message %d: delta %d is for %q, want %q", i, j, kd.Key, keys[j])
			}
		}
	}
	if rec.firsts[1] != rec.firsts[0] || rec.firsts[2] != rec.firsts[0] {
		t.Fatal("each message decoded into a new slice")
	}
	if sp := p.scratch.Load(); sp == nil || len(*sp) != 0 || (*sp)[:2][1] != (crdt.KeyDelta{}) {
		t.Fatal("the kept slice is not emptied")
	}
}
