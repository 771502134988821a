package peering

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"
)

// Bus is an in-memory transport shared by regions in one process: each
// region's stream is a slice, each (region, peer) cursor an ack floor. Links
// can be cut and healed. It keeps JetStream's contract: ordered delivery
// resumed from the ack floor, redelivery on failure, de-duplication by ID.
type Bus struct {
	mu      sync.Mutex
	cond    *sync.Cond
	streams map[string]*memStream
	down    map[string]bool // regions cut off from everyone
	paused  map[string]bool // regions that consume no stream (fetches still work)
	fetch   map[string]func([]byte) []byte
	maxMsg  int // the largest message or answer (SetMaxPayload)
}

type memStream struct {
	msgs    [][]byte
	ids     map[string]uint64
	floors  map[string]uint64
	lastAck map[string]time.Time
}

// NewBus returns an empty bus.
func NewBus() *Bus {
	b := &Bus{streams: map[string]*memStream{}, down: map[string]bool{}, paused: map[string]bool{}, fetch: map[string]func([]byte) []byte{},
		maxMsg: 64 << 20}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *Bus) stream(region string) *memStream {
	s := b.streams[region]
	if s == nil {
		s = &memStream{ids: map[string]uint64{}, floors: map[string]uint64{}, lastAck: map[string]time.Time{}}
		b.streams[region] = s
	}
	return s
}

// SetMaxPayload sets the largest message or answer the bus carries (64
// MiB, the embedded NATS server's, by default): bigger ones fail as NATS
// refuses them.
func (b *Bus) SetMaxPayload(n int) { b.mu.Lock(); b.maxMsg = n; b.mu.Unlock() }

var errTooLarge = errors.New("peering: maximum payload exceeded")

// Cut isolates region from every peer (both directions) until Heal.
func (b *Bus) Cut(region string) { b.mu.Lock(); b.down[region] = true; b.mu.Unlock() }

// PauseStreams stops region from consuming its peers' streams (requests
// still go through): a benchmark's way to leave anti-entropy all the work.
func (b *Bus) PauseStreams(region string) { b.mu.Lock(); b.paused[region] = true; b.mu.Unlock() }

// Heal reconnects region.
func (b *Bus) Heal(region string) {
	b.mu.Lock()
	delete(b.down, region)
	b.cond.Broadcast()
	b.mu.Unlock()
}

// Transport returns region's end of the bus.
func (b *Bus) Transport(region string) Transport { return &memTransport{b: b, region: region} }

type memTransport struct {
	b      *Bus
	region string
}

var errCut = errors.New("peering: link is cut")

func (m *memTransport) PublishBatch(_ context.Context, seqs []uint64, entries [][]byte) ([]uint64, error) {
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stream(m.region)
	out := make([]uint64, 0, len(seqs))
	for i, seq := range seqs {
		id := m.region + "-" + strconv.FormatUint(seq, 10)
		if at, dup := s.ids[id]; dup {
			out = append(out, at)
			continue
		}
		if len(entries[i]) > b.maxMsg {
			return out, errTooLarge
		}
		s.msgs = append(s.msgs, append([]byte(nil), entries[i]...))
		s.ids[id] = uint64(len(s.msgs))
		out = append(out, uint64(len(s.msgs)))
	}
	b.cond.Broadcast()
	return out, nil
}

func (m *memTransport) Consume(ctx context.Context, peer string, apply func(uint64, []byte) error) {
	b := m.b
	stop := context.AfterFunc(ctx, func() { b.mu.Lock(); b.cond.Broadcast(); b.mu.Unlock() })
	defer stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for ctx.Err() == nil {
		s := b.stream(peer)
		next := s.floors[m.region] + 1
		if b.down[peer] || b.down[m.region] || b.paused[m.region] || next > uint64(len(s.msgs)) {
			b.cond.Wait()
			continue
		}
		data := s.msgs[next-1]
		b.mu.Unlock()
		err := apply(next, data)
		b.mu.Lock()
		switch {
		case err == nil || errors.Is(err, ErrPoison):
			if next > s.floors[m.region] {
				s.floors[m.region] = next
				s.lastAck[m.region] = time.Now()
			}
		default: // redeliver after a pause
			b.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
			b.mu.Lock()
		}
	}
}

func (m *memTransport) Progress(_ context.Context, peer string) (Progress, error) {
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stream(m.region)
	f := s.floors[peer]
	return Progress{AckFloor: f, Pending: uint64(len(s.msgs)) - f, LastAck: s.lastAck[peer]}, nil
}

func (m *memTransport) Connected(peer string) bool {
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	return !m.b.down[peer] && !m.b.down[m.region]
}

func (m *memTransport) ListenAddr() string { return "" }
func (m *memTransport) MaxPayload() int {
	m.b.mu.Lock()
	defer m.b.mu.Unlock()
	return m.b.maxMsg
}
func (m *memTransport) Close() {}

func (m *memTransport) ServeFetch(fn func([]byte) []byte) error {
	m.b.mu.Lock()
	m.b.fetch[m.region] = fn
	m.b.mu.Unlock()
	return nil
}

func (m *memTransport) Fetch(_ context.Context, peer string, req []byte) ([]byte, error) {
	m.b.mu.Lock()
	fn, down, limit := m.b.fetch[peer], m.b.down[peer] || m.b.down[m.region], m.b.maxMsg
	m.b.mu.Unlock()
	if fn == nil || down {
		return nil, errCut
	}
	if len(req) > limit {
		return nil, errTooLarge
	}
	ans := fn(req)
	if len(ans) > limit { // NATS drops the answer: the request times out
		return nil, errTooLarge
	}
	return ans, nil
}
