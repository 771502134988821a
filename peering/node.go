package peering

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"concord/crdt"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	Log       zerolog.Logger
}

// Source is the part of persistence the publisher drains.
type Source interface {
	Outbox
	ReadOutbox(after uint64, max int) ([]uint64, [][]byte, error)
	OutboxNotify() <-chan struct{}
}

// Applier merges a batch of deltas from origin (stream sequence seq) and
// returns once the merged states and the watermark are durable.
type Applier interface {
	ApplyBatch(origin string, seq uint64, batch []crdt.KeyDelta) error
}

// Node is a region's JetStream server (or client of an external one), its
// outbox publisher and its replicators, one per peer.
type Node struct {
	cfg     Config
	ns      *natsserver.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	src     Source
	apply   Applier
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stream  string
	peers   []*peer
	seqMu   sync.Mutex
	seqCond *sync.Cond
	// published maps outbox sequences to stream sequences (for WAIT).
	published map[uint64]uint64
	pubOrder  []uint64
	lastPub   atomic.Uint64 // last outbox seq published and acked
}

type peer struct {
	name      string
	url       string
	nc        atomic.Pointer[nats.Conn]
	applied   atomic.Uint64 // last stream seq of OUT_<peer> applied here
	lastApply atomic.Int64  // unix ms
	errors    atomic.Uint64
	lag       lagHist
}

func streamName(region string) string { return "OUT_" + region }
func subject(region string) string    { return "delta." + region }
func consumerName(peer string) string { return "to_" + peer }

// Start starts the embedded server (unless External), ensures this region's
// stream and one durable consumer per peer, and starts the publisher and the
// replicators. Peers may be down: replicators retry forever.
func Start(cfg Config, src Source, apply Applier) (*Node, error) {
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 8 << 30
	}
	n := &Node{cfg: cfg, src: src, apply: apply, stream: streamName(cfg.Region), published: map[uint64]uint64{}}
	n.seqCond = sync.NewCond(&n.seqMu)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	var err error
	if cfg.External != "" {
		n.nc, err = nats.Connect(cfg.External, n.connOpts("concord-"+cfg.Region)...)
	} else {
		if n.ns, err = n.startServer(); err != nil {
			return nil, err
		}
		n.nc, err = nats.Connect("", append(n.connOpts("concord-"+cfg.Region), nats.InProcessServer(n.ns))...)
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("connect to own NATS: %w", err)
	}
	if n.js, err = jetstream.New(n.nc); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.ensureStream(); err != nil {
		n.Close()
		return nil, err
	}
	for name, url := range cfg.Peers {
		n.peers = append(n.peers, &peer{name: name, url: url})
	}
	sort.Slice(n.peers, func(i, j int) bool { return n.peers[i].name < n.peers[j].name })
	_, trimmed := src.OutboxSeq()
	n.lastPub.Store(trimmed)
	n.wg.Add(1)
	go n.publishLoop()
	for _, p := range n.peers {
		n.wg.Add(1)
		go n.replicate(p)
	}
	return n, nil
}

func (n *Node) startServer() (*natsserver.Server, error) {
	opts := &natsserver.Options{
		ServerName: "concord-" + n.cfg.Region, JetStream: true, StoreDir: filepath.Join(n.cfg.Dir),
		NoSigs: true, NoLog: true, DisableJetStreamBanner: true,
		PingInterval: 2 * time.Second, MaxPingsOut: 2,
	}
	switch n.cfg.Fsync {
	case "always":
		opts.SyncAlways = true
	case "everysec":
		opts.SyncInterval = time.Second
	}
	if n.cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(n.cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("--peer-listen %q: %v", n.cfg.Listen, err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("--peer-listen %q: bad port", n.cfg.Listen)
		}
		if opts.Port == 0 {
			opts.Port = natsserver.RANDOM_PORT
		}
	}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded NATS did not start in 10s")
	}
	return ns, nil
}

// ListenAddr returns where peers reach the embedded server ("" if none).
func (n *Node) ListenAddr() string {
	if n.ns == nil || n.cfg.Listen == "" {
		return ""
	}
	if a, ok := n.ns.Addr().(*net.TCPAddr); ok {
		return a.String()
	}
	return ""
}

func (n *Node) connOpts(name string) []nats.Option {
	return []nats.Option{
		nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(2 * time.Second), nats.MaxPingsOutstanding(2),
		nats.RetryOnFailedConnect(true), nats.IgnoreDiscoveredServers(), nats.NoCallbacksAfterClientClose(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			n.cfg.Log.Debug().Err(err).Msg("nats async error")
		}),
	}
}

func (n *Node) ensureStream() error {
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	_, err := n.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: n.stream, Subjects: []string{subject(n.cfg.Region)}, Storage: jetstream.FileStorage,
		Replicas: 1, Duplicates: 2 * time.Minute, MaxAge: n.cfg.Retention, MaxBytes: n.cfg.MaxBytes,
		Discard: jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.stream, err)
	}
	for name := range n.cfg.Peers {
		_, err := n.js.CreateOrUpdateConsumer(ctx, n.stream, jetstream.ConsumerConfig{
			Durable: consumerName(name), AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			MaxAckPending: 10000, AckWait: 5 * time.Second, FilterSubject: subject(n.cfg.Region),
		})
		if err != nil {
			return fmt.Errorf("consumer %s on %s: %w", consumerName(name), n.stream, err)
		}
	}
	return nil
}

// publishLoop ships outbox entries in order, one message per entry with the
// ID R-<seq> (so a retried publish is de-duplicated), and trims the outbox
// only after the stream acknowledged.
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
			futs := make([]jetstream.PubAckFuture, 0, len(seqs))
			for i, seq := range seqs {
				f, err := n.js.PublishAsync(subject(n.cfg.Region), entries[i], jetstream.WithMsgID(n.cfg.Region+"-"+strconv.FormatUint(seq, 10)))
				if err != nil {
					break
				}
				futs = append(futs, f)
			}
			done := uint64(0)
		acks:
			for i, f := range futs {
				select {
				case ack := <-f.Ok():
					n.recordPublished(seqs[i], ack.Sequence)
					done = seqs[i]
					continue
				case err := <-f.Err():
					n.cfg.Log.Debug().Err(err).Uint64("seq", seqs[i]).Msg("publish failed; will retry")
				case <-n.ctx.Done():
				}
				break acks
			}
			if done == 0 {
				time.Sleep(100 * time.Millisecond)
				break
			}
			n.lastPub.Store(done)
			if err := n.src.TrimOutbox(done); err != nil {
				n.cfg.Log.Warn().Err(err).Msg("outbox trim failed")
			}
		}
	}
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

// replicate consumes OUT_<peer> through to_<this region> on the peer's
// server, forever: connect (retrying), bind to the consumer (waiting for the
// peer to create it), apply each message durably, then ack.
func (n *Node) replicate(p *peer) {
	defer n.wg.Done()
	log := n.cfg.Log.With().Str("peer", p.name).Logger()
	nc, err := nats.Connect(p.url, n.connOpts("concord-"+n.cfg.Region+"-from-"+p.name)...)
	if err != nil {
		log.Error().Err(err).Msg("peer connection failed")
		return
	}
	defer nc.Close()
	p.nc.Store(nc)
	js, err := jetstream.New(nc)
	if err != nil {
		log.Error().Err(err).Msg("jetstream")
		return
	}
	var cons jetstream.Consumer
	for n.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
		cons, err = js.Consumer(ctx, streamName(p.name), consumerName(n.cfg.Region))
		cancel()
		if err == nil {
			break
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	if n.ctx.Err() != nil {
		return
	}
	log.Info().Msg("replicating from peer")
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			m.Nak()
			return
		}
		batch, err := crdt.DecodeBatch(m.Data())
		if err != nil {
			p.errors.Add(1)
			log.Error().Err(err).Uint64("seq", md.Sequence.Stream).Msg("undecodable delta batch; skipped")
			m.Term()
			return
		}
		if err := n.apply.ApplyBatch(p.name, md.Sequence.Stream, batch); err != nil {
			p.errors.Add(1)
			m.Nak()
			return
		}
		if md.Sequence.Stream > p.applied.Load() {
			p.applied.Store(md.Sequence.Stream)
		}
		now := time.Now()
		p.lastApply.Store(now.UnixMilli())
		var newest int64
		for _, kd := range batch {
			newest = max(newest, kd.Delta.MaxHLC().Phys)
		}
		if newest > 0 {
			p.lag.observe(now.Sub(time.UnixMilli(newest)))
		}
		m.Ack()
	}, jetstream.PullHeartbeat(time.Second), jetstream.PullMaxMessages(1000),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			log.Debug().Err(err).Msg("consume")
		}))
	if err != nil {
		log.Error().Err(err).Msg("consume failed")
		return
	}
	<-n.ctx.Done()
	cc.Stop()
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
}

// Status returns every peer's status.
func (n *Node) Status() []PeerStatus {
	var out []PeerStatus
	for _, p := range n.peers {
		st := PeerStatus{Name: p.name, AppliedFrom: p.applied.Load(), LastApplyMs: p.lastApply.Load(), Errors: p.errors.Load(),
			Applied: p.lag.count.Load(), LagP50: p.lag.quantile(0.5), LagP99: p.lag.quantile(0.99)}
		if nc := p.nc.Load(); nc != nil {
			st.Connected = nc.IsConnected()
		}
		if info, err := n.consumerInfo(p.name); err == nil {
			st.AckedByPeer = info.AckFloor.Stream
			st.Pending = info.NumPending + uint64(info.NumAckPending)
			if st.Pending > 0 && info.AckFloor.Last != nil {
				st.LagMs = time.Since(*info.AckFloor.Last).Milliseconds()
			}
		}
		out = append(out, st)
	}
	return out
}

func (n *Node) consumerInfo(peer string) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(n.ctx, time.Second)
	defer cancel()
	c, err := n.js.Consumer(ctx, n.stream, consumerName(peer))
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// Peers returns the peer names.
func (n *Node) Peers() []string {
	var out []string
	for _, p := range n.peers {
		out = append(out, p.name)
	}
	return out
}

// WaitApplied blocks until numPeers peers have applied every delta up to
// outbox sequence outSeq, or ctx ends; it returns how many have.
func (n *Node) WaitApplied(ctx context.Context, outSeq uint64, numPeers int) int {
	if outSeq == 0 {
		return len(n.peers)
	}
	// wait until the entry is published and its stream sequence known
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
			streamSeq = 0
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
			if info, err := n.consumerInfo(p.name); err == nil && (streamSeq == 0 || info.AckFloor.Stream >= streamSeq) {
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

// Close stops the replicators and the publisher and shuts the server down.
func (n *Node) Close() {
	n.cancel()
	n.wg.Wait()
	if n.nc != nil {
		n.nc.Drain()
		n.nc.Close()
	}
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
}

// NumPeers returns how many peers are configured.
func (n *Node) NumPeers() int { return len(n.peers) }

// ResetLag clears every peer's lag histogram (benchmarks measure windows).
func (n *Node) ResetLag() {
	for _, p := range n.peers {
		p.lag.reset()
	}
}
