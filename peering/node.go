package peering

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"concord/crdt"

	"github.com/rs/zerolog"
)

// Config configures a region's links.
type Config struct {
	Region string
	// Dir holds the embedded JetStream store (the region's data dir locks it).
	Dir string
	// Listen is where peers reach the embedded server ("" = in-process only).
	Listen string
	// External is an operator-run NATS URL used instead of the embedded server.
	External string
	// Peers maps each other region's name to the URL of its NATS server
	// (possibly a proxy).
	Peers map[string]string
	Fsync string
	// Retention bounds the stream by age (default 24h) and size (MaxBytes,
	// default 8 GiB): a peer cut off for longer needs a full resync.
	Retention time.Duration
	MaxBytes  int64
	// MaxMsgs bounds the stream by message count (0: unlimited; tests use it
	// to make a partitioned peer miss deltas).
	MaxMsgs int64
	Log     zerolog.Logger
	// OnGap is told when a peer's stream skipped entries this region never
	// applied (they aged out of the stream's retention): anti-entropy must
	// repair what they carried.
	OnGap func(peer string, from, to uint64)
	// Token is the secret every region's NATS requires (empty: none).
	Token string
	// ServerTLS (mutual TLS: peers must present a certificate the CA
	// signed) and ClientTLS (this region's certificate and the CA) secure
	// the links between regions; nil: plain TCP.
	ServerTLS, ClientTLS *tls.Config
	// Transport overrides NATS (tests use NewBus().Transport).
	Transport Transport
	// MaxMessage bounds a stream message: consecutive outbox entries are
	// shipped together in one message (an envelope) up to this many bytes
	// (default 768 KiB, the size entries are split at, so that a message
	// fits an external NATS's default 1 MiB max_payload); an entry bigger
	// than it goes alone.
	MaxMessage int
}

// Source is the part of persistence the publisher drains.
type Source interface {
	Outbox
	ReadOutbox(after uint64, max int) ([]uint64, [][]byte, error)
	OutboxNotify() <-chan struct{}
}

// Applier merges a batch of deltas from a peer and returns once the merged
// states and the watermark are durable.
type Applier interface {
	ApplyBatch(b Batch) error
}

// Batch is one stream message of a peer, decoded.
type Batch struct {
	Origin string // the peer
	Seq    uint64 // the message's stream sequence
	// Deltas' keys point into Raw (crdt.DecodeMessageReleasable): an
	// applier keeps a copy of any it keeps.
	Deltas []crdt.KeyDelta
	// Raw is the encoding Deltas were decoded from (crdt.DecodeMessage
	// reads it back): the applier may log it as it came instead of
	// encoding the deltas again. Nil when unknown.
	Raw []byte
	// Newest is the newest timestamp of any delta in Deltas.
	Newest crdt.HLC
}

// Node is a region's replication: the outbox publisher and one replicator
// per peer, over a Transport.
type Node struct {
	cfg     Config
	t       Transport
	src     Source
	apply   Applier
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	peers   []*peer
	seqMu   sync.Mutex
	seqCond *sync.Cond
	// published maps outbox sequences to stream sequences (for WAIT).
	published map[uint64]uint64
	pubOrder  []uint64
	lastPub   atomic.Uint64 // last outbox seq published and acked
	held      heldAnswers   // answers being read in parts (large.go)
	// fetchedStates counts keys' states fetched from a peer because its
	// deltas extended values not held here (Unresolved)
	fetchedStates atomic.Uint64
}

// FetchedStates returns how many keys' states were fetched from peers in
// place of deltas that extended values not held here (crdt.Extend).
func (n *Node) FetchedStates() uint64 { return n.fetchedStates.Load() }

type peer struct {
	name      string
	applied   atomic.Uint64 // last stream seq of the peer's stream applied here
	lastApply atomic.Int64  // unix ms
	errors    atomic.Uint64
	lag       lagHist
	downSince atomic.Int64 // unix ms when the link was first seen down (0: up)
	wasUp     bool         // watchLinks only
	// fetchFails counts the failed fetches of states for the entry being
	// applied (applyFetched)
	fetchFails atomic.Int32
	// scratch is the slice the peer's last message decoded into, emptied:
	// the next one decodes into it (taken by a swap, so that two deliveries
	// at once would each have their own)
	scratch atomic.Pointer[[]crdt.KeyDelta]
}

// Start starts the transport (embedded NATS by default), the publisher and
// the replicators. Peers may be down: replicators retry forever.
func Start(cfg Config, src Source, apply Applier) (*Node, error) {
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 768 << 10
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 8 << 30
	}
	t := cfg.Transport
	if t == nil {
		var err error
		if t, err = NewNATS(cfg); err != nil {
			return nil, err
		}
	}
	n := &Node{cfg: cfg, t: t, src: src, apply: apply, published: map[uint64]uint64{}}
	n.seqCond = sync.NewCond(&n.seqMu)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for name := range cfg.Peers {
		n.peers = append(n.peers, &peer{name: name})
	}
	sort.Slice(n.peers, func(i, j int) bool { return n.peers[i].name < n.peers[j].name })
	_, published := src.OutboxSeq()
	n.lastPub.Store(published)
	n.wg.Add(1)
	go n.publishLoop()
	for _, p := range n.peers {
		p.downSince.Store(time.Now().UnixMilli()) // down until connected
	}
	n.wg.Add(1)
	go n.watchLinks()
	for _, p := range n.peers {
		n.wg.Add(1)
		go func(p *peer) {
			defer n.wg.Done()
			t.Consume(n.ctx, p.name, func(seq uint64, data []byte) error { return n.applyEntry(p, seq, data) })
		}(p)
	}
	return n, nil
}

// watchLinks records when each link went down, for health checks.
func (n *Node) watchLinks() {
	defer n.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case now := <-t.C:
			for _, p := range n.peers {
				if n.t.Connected(p.name) {
					if ds := p.downSince.Swap(0); ds != 0 && p.wasUp {
						n.cfg.Log.Info().Str("peer", p.name).Dur("down_for", now.Sub(time.UnixMilli(ds))).Msg("peer link up")
					} else if !p.wasUp {
						n.cfg.Log.Info().Str("peer", p.name).Msg("peer link up")
					}
					p.wasUp = true
				} else if p.downSince.Load() == 0 {
					p.downSince.Store(now.UnixMilli())
					n.cfg.Log.Warn().Str("peer", p.name).Msg("peer link down")
				}
			}
		}
	}
}

// ListenAddr returns where peers reach this region ("" if none).
func (n *Node) ListenAddr() string { return n.t.ListenAddr() }

// publishLoop ships outbox entries in order and trims the outbox only after
// the stream acknowledged them.
func (n *Node) publishLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.src.OutboxNotify():
		case <-tick.C:
		}
		for n.ctx.Err() == nil {
			seqs, entries, err := n.src.ReadOutbox(n.lastPub.Load(), 512)
			if err != nil || len(seqs) == 0 {
				break
			}
			// ship consecutive entries together: fewer stream messages,
			// deliveries and acks per write (each message costs the
			// stream a store and every peer a delivery and an ack)
			lasts, msgs := n.envelopes(seqs, entries)
			acked, err := n.t.PublishBatch(n.ctx, lasts, msgs)
			from := 0
			for i, s := range acked {
				for ; from < len(seqs) && seqs[from] <= lasts[i]; from++ {
					n.recordPublished(seqs[from], s)
				}
			}
			if len(acked) > 0 {
				done := lasts[len(acked)-1]
				n.lastPub.Store(done)
				if terr := n.src.TrimOutbox(done); terr != nil {
					n.cfg.Log.Warn().Err(terr).Msg("outbox trim failed")
				}
			}
			if err != nil {
				n.cfg.Log.Debug().Err(err).Msg("publish failed; will retry")
				time.Sleep(100 * time.Millisecond)
				break
			}
		}
	}
}

// envelopes groups consecutive outbox entries into stream messages of at
// most MaxMessage bytes; it returns each message and the outbox seq of its
// last entry (the message's ID: a retried publish that ends at the same
// entry is de-duplicated, and it can only contain what the first attempt
// did, since publishing resumes after the last acknowledged entry).
//
// An entry larger than a message is published as a reference to its keys
// (see large.go), alone.
func (n *Node) envelopes(seqs []uint64, entries [][]byte) (lasts []uint64, msgs [][]byte) {
	part := n.partSize()
	limit := min(n.cfg.MaxMessage, part) // an envelope must fit a message
	for i := 0; i < len(entries); {
		if len(entries[i]) > part {
			ref, err := reference(entries[i])
			if err != nil { // cannot happen: the outbox holds what this build encoded
				// a reference to no key: published, the stream goes on
				// (as is, the entry could never be: every later entry
				// would wait behind it); anti-entropy repairs its keys
				n.cfg.Log.Error().Err(err).Uint64("seq", seqs[i]).Msg("outbox entry too large for a message and undecodable; shipped as a reference to no key")
				ref = crdt.AppendBatch([]byte{refMessage}, nil)
			}
			lasts, msgs = append(lasts, seqs[i]), append(msgs, ref)
			i++
			continue
		}
		j, size := i+1, len(entries[i])
		for j < len(entries) && size+len(entries[j])+2*binary.MaxVarintLen64 <= limit {
			size += len(entries[j]) + binary.MaxVarintLen64
			j++
		}
		msg := entries[i]
		if j > i+1 {
			msg = crdt.AppendEnvelope(make([]byte, 0, size+2*binary.MaxVarintLen64), entries[i:j])
		}
		lasts = append(lasts, seqs[j-1])
		msgs = append(msgs, msg)
		i = j
	}
	return lasts, msgs
}

func (n *Node) recordPublished(outSeq, streamSeq uint64) {
	n.seqMu.Lock()
	n.published[outSeq] = streamSeq
	n.pubOrder = append(n.pubOrder, outSeq)
	if len(n.pubOrder) > 1<<20 {
		for _, s := range n.pubOrder[:1<<16] {
			delete(n.published, s)
		}
		n.pubOrder = append([]uint64(nil), n.pubOrder[1<<16:]...)
	}
	n.seqCond.Broadcast()
	n.seqMu.Unlock()
}

// maxScratch is the most deltas a peer's kept decoding slice holds (a
// bigger one, from a message of many small deltas, is dropped after use).
const maxScratch = 1 << 16

// applyEntry is the apply path for one entry of a peer's stream.
func (n *Node) applyEntry(p *peer, seq uint64, data []byte) error {
	// the deltas' memory is reused once the apply path logged them (see
	// crdt.DecodeMessageReleasable): read what the lag needs first
	var dst []crdt.KeyDelta
	if sp := p.scratch.Swap(nil); sp != nil {
		dst = *sp
	}
	if len(data) > 0 && data[0] == refMessage { // an entry too large for a message
		states, err := n.referencedStates(p.name, data[1:])
		if err != nil {
			p.errors.Add(1)
			n.cfg.Log.Warn().Err(err).Str("peer", p.name).Uint64("seq", seq).Msg("fetching the states a large entry names failed; will retry")
			return err
		}
		data = states
	}
	batch, err := crdt.DecodeMessageReleasable(dst, data)
	if err != nil {
		p.errors.Add(1)
		n.cfg.Log.Error().Err(err).Str("peer", p.name).Uint64("seq", seq).Msg("undecodable delta batch; skipped")
		return ErrPoison
	}
	var newest crdt.HLC // (the lag's and the applier's clock's, computed once)
	for _, kd := range batch {
		if h := kd.Delta.MaxHLC(); h.Compare(newest) > 0 {
			newest = h
		}
	}
	err = n.apply.ApplyBatch(Batch{Origin: p.name, Seq: seq, Deltas: batch, Raw: data, Newest: newest})
	if u := (*Unresolved)(nil); errors.As(err, &u) {
		err = n.applyFetched(p, seq, u.Keys)
	}
	if cap(batch) <= maxScratch { // the slice for the next message
		clear(batch)
		batch = batch[:0]
		p.scratch.Store(&batch)
	}
	if err != nil {
		p.errors.Add(1)
		return err
	}
	if prev := p.applied.Load(); prev > 0 && seq > prev+1 && n.cfg.OnGap != nil {
		n.cfg.OnGap(p.name, prev+1, seq-1)
	}
	if seq > p.applied.Load() {
		p.applied.Store(seq)
	}
	now := time.Now()
	p.lastApply.Store(now.UnixMilli())
	if newest.Phys > 0 {
		p.lag.observe(now.Sub(time.UnixMilli(newest.Phys)))
	}
	return nil
}

// fetchWait is how long applyFetched waits for a peer's answer at first.
const fetchWait = 5 * time.Second

// applyFetched applies, for entry seq of p's stream, the full states of
// keys whose deltas the applier could not resolve (Unresolved), fetched
// from p, with the entry's watermark.
func (n *Node) applyFetched(p *peer, seq uint64, keys []crdt.KeyDelta) error {
	names := make([]crdt.KeyDelta, len(keys))
	for i, kd := range keys {
		names[i] = crdt.KeyDelta{DB: kd.DB, Key: kd.Key, Delta: &crdt.State{}}
	}
	// a request sent while the link was down waits for its timeout: a
	// short one first (the link is back by the time the entry comes
	// again), longer after each failure (a big state on a slow link)
	wait := fetchWait << min(p.fetchFails.Load(), 5)
	states, err := n.statesWithin(p.name, crdt.AppendBatch(nil, names), wait)
	if err != nil {
		p.fetchFails.Add(1)
		n.cfg.Log.Warn().Err(err).Str("peer", p.name).Uint64("seq", seq).Int("keys", len(keys)).Msg("fetching the states of keys whose APPEND could not be resolved failed; will retry")
		return err
	}
	p.fetchFails.Store(0)
	batch, err := crdt.DecodeMessage(states)
	if err != nil {
		return err
	}
	var newest crdt.HLC
	for _, kd := range batch {
		if h := kd.Delta.MaxHLC(); h.Compare(newest) > 0 {
			newest = h
		}
	}
	n.fetchedStates.Add(uint64(len(batch)))
	return n.apply.ApplyBatch(Batch{Origin: p.name, Seq: seq, Deltas: batch, Raw: states, Newest: newest})
}

// SetApplied restores the watermark of a peer read from disk at start.
func (n *Node) SetApplied(peer string, seq uint64) {
	for _, p := range n.peers {
		if p.name == peer {
			p.applied.Store(seq)
		}
	}
}

// PeerStatus is what INFO replication shows per peer.
type PeerStatus struct {
	Name        string
	Connected   bool
	AppliedFrom uint64 // last stream seq of the peer's deltas applied here
	AckedByPeer uint64 // last stream seq of our deltas the peer has applied
	Pending     uint64 // our deltas the peer has not applied yet
	LastApplyMs int64
	LagMs       int64
	Errors      uint64
	// Applied is how many batches from the peer were applied; LagP50/LagP99
	// are the lag from a write in the peer to its merge here.
	Applied        uint64
	LagP50, LagP99 time.Duration
	// DownFor is how long the link has been down (0 when up).
	DownFor time.Duration
}

// Status returns every peer's status.
func (n *Node) Status() []PeerStatus {
	var out []PeerStatus
	for _, p := range n.peers {
		st := PeerStatus{Name: p.name, AppliedFrom: p.applied.Load(), LastApplyMs: p.lastApply.Load(), Errors: p.errors.Load(),
			Applied: p.lag.count.Load(), LagP50: p.lag.quantile(0.5), LagP99: p.lag.quantile(0.99), Connected: n.t.Connected(p.name)}
		if ds := p.downSince.Load(); ds > 0 && !st.Connected {
			st.DownFor = time.Since(time.UnixMilli(ds))
		}
		if pr, err := n.t.Progress(n.ctx, p.name); err == nil {
			st.AckedByPeer, st.Pending = pr.AckFloor, pr.Pending
			if st.Pending > 0 && !pr.LastAck.IsZero() {
				st.LagMs = time.Since(pr.LastAck).Milliseconds()
			}
		}
		out = append(out, st)
	}
	return out
}

// Peers returns the peer names.
func (n *Node) Peers() []string {
	var out []string
	for _, p := range n.peers {
		out = append(out, p.name)
	}
	return out
}

// NumPeers returns how many peers are configured.
func (n *Node) NumPeers() int { return len(n.peers) }

// WaitApplied blocks until numPeers peers have applied every delta up to
// outbox sequence outSeq, or ctx ends; it returns how many have.
func (n *Node) WaitApplied(ctx context.Context, outSeq uint64, numPeers int) int {
	if outSeq == 0 {
		return len(n.peers)
	}
	var streamSeq uint64
	for {
		n.seqMu.Lock()
		s, ok := n.published[outSeq]
		n.seqMu.Unlock()
		if ok {
			streamSeq = s
			break
		}
		if n.lastPub.Load() >= outSeq { // published before this process kept the map
			break
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(2 * time.Millisecond):
		}
	}
	for {
		count := 0
		for _, p := range n.peers {
			if pr, err := n.t.Progress(n.ctx, p.name); err == nil && (streamSeq == 0 || pr.AckFloor >= streamSeq) {
				count++
			}
		}
		if count >= numPeers {
			return count
		}
		select {
		case <-ctx.Done():
			return count
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// ResetLag clears every peer's lag histogram (benchmarks measure windows).
func (n *Node) ResetLag() {
	for _, p := range n.peers {
		p.lag.reset()
	}
}

// Close stops the replicators and the publisher and closes the transport.
func (n *Node) Close() {
	n.cancel()
	n.wg.Wait()
	n.t.Close()
}

// AppliedVector returns, per peer, the last stream sequence of its deltas
// applied here.
func (n *Node) AppliedVector() map[string]uint64 {
	out := make(map[string]uint64, len(n.peers))
	for _, p := range n.peers {
		out[p.name] = p.applied.Load()
	}
	return out
}

// StreamSeqOf returns the stream sequence an outbox entry was published
// under, if this process published it.
func (n *Node) StreamSeqOf(outSeq uint64) (uint64, bool) {
	n.seqMu.Lock()
	defer n.seqMu.Unlock()
	s, ok := n.published[outSeq]
	return s, ok
}

// PeerProgress reports how far peer has applied this region's stream.
func (n *Node) PeerProgress(ctx context.Context, peer string) (Progress, error) {
	return n.t.Progress(ctx, peer)
}
