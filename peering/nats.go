package peering

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsTransport runs over NATS JetStream (DESIGN §6): stream OUT_<region>
// on this region's server (embedded or external), one durable consumer
// to_<peer> per peer created here, and a client connection to each peer's
// server that pulls to_<this region>.
type natsTransport struct {
	cfg    Config
	ns     *natsserver.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	stream string
	mu     sync.Mutex
	links  map[string]*nats.Conn
}

func streamName(region string) string { return "OUT_" + region }
func subject(region string) string    { return "delta." + region }
func consumerName(peer string) string { return "to_" + peer }

// NewNATS starts the embedded server (unless cfg.External), and ensures this
// region's stream and one durable consumer per peer.
func NewNATS(cfg Config) (Transport, error) {
	t := &natsTransport{cfg: cfg, stream: streamName(cfg.Region), links: map[string]*nats.Conn{}}
	var err error
	if cfg.External != "" {
		t.nc, err = nats.Connect(cfg.External, t.connOpts("concord-"+cfg.Region)...)
	} else {
		if t.ns, err = t.startServer(); err != nil {
			return nil, err
		}
		t.nc, err = nats.Connect("", append(t.connOpts("concord-"+cfg.Region), nats.InProcessServer(t.ns))...)
	}
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("connect to own NATS: %w", err)
	}
	if t.js, err = jetstream.New(t.nc); err != nil {
		t.Close()
		return nil, err
	}
	if err := t.ensureStream(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func (t *natsTransport) startServer() (*natsserver.Server, error) {
	opts := &natsserver.Options{
		ServerName: "concord-" + t.cfg.Region, JetStream: true, StoreDir: t.cfg.Dir,
		NoSigs: true, NoLog: true, DisableJetStreamBanner: true,
		PingInterval: 2 * time.Second, MaxPingsOut: 2, Authorization: t.cfg.Token,
		MaxPayload: 64 << 20, // one delta batch or anti-entropy answer per message
	}
	if t.cfg.ServerTLS != nil {
		opts.TLS, opts.TLSVerify, opts.TLSConfig, opts.TLSTimeout = true, true, t.cfg.ServerTLS, 2
	}
	switch t.cfg.Fsync {
	case "always":
		opts.SyncAlways = true
	case "everysec":
		opts.SyncInterval = time.Second
	}
	if t.cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(t.cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("--peer-listen %q: %v", t.cfg.Listen, err)
		}
		opts.Host = host
		if opts.Port, err = strconv.Atoi(port); err != nil {
			return nil, fmt.Errorf("--peer-listen %q: bad port", t.cfg.Listen)
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

func (t *natsTransport) ListenAddr() string {
	if t.ns == nil || t.cfg.Listen == "" {
		return ""
	}
	if a, ok := t.ns.Addr().(*net.TCPAddr); ok {
		return a.String()
	}
	return ""
}

func (t *natsTransport) connOpts(name string) []nats.Option {
	opts := []nats.Option{
		nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(2 * time.Second), nats.MaxPingsOutstanding(2),
		nats.RetryOnFailedConnect(true), nats.IgnoreDiscoveredServers(), nats.NoCallbacksAfterClientClose(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			t.cfg.Log.Debug().Err(err).Msg("nats async error")
		}),
	}
	if t.cfg.Token != "" {
		opts = append(opts, nats.Token(t.cfg.Token))
	}
	if t.cfg.ClientTLS != nil {
		opts = append(opts, nats.Secure(t.cfg.ClientTLS))
	}
	return opts
}

func (t *natsTransport) ensureStream() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := t.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: t.stream, Subjects: []string{subject(t.cfg.Region)}, Storage: jetstream.FileStorage,
		Replicas: 1, Duplicates: 2 * time.Minute, MaxAge: t.cfg.Retention, MaxBytes: t.cfg.MaxBytes, MaxMsgs: t.cfg.MaxMsgs,
		Discard: jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("stream %s: %w", t.stream, err)
	}
	for name := range t.cfg.Peers {
		_, err := t.js.CreateOrUpdateConsumer(ctx, t.stream, jetstream.ConsumerConfig{
			Durable: consumerName(name), AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			MaxAckPending: 10000, AckWait: 5 * time.Second, FilterSubject: subject(t.cfg.Region),
		})
		if err != nil {
			return fmt.Errorf("consumer %s on %s: %w", consumerName(name), t.stream, err)
		}
	}
	return nil
}

func (t *natsTransport) PublishBatch(ctx context.Context, seqs []uint64, entries [][]byte) ([]uint64, error) {
	futs := make([]jetstream.PubAckFuture, 0, len(seqs))
	var perr error
	for i, seq := range seqs {
		f, err := t.js.PublishAsync(subject(t.cfg.Region), entries[i], jetstream.WithMsgID(t.cfg.Region+"-"+strconv.FormatUint(seq, 10)))
		if err != nil {
			perr = err
			break
		}
		futs = append(futs, f)
	}
	out := make([]uint64, 0, len(futs))
	for _, f := range futs {
		select {
		case ack := <-f.Ok():
			out = append(out, ack.Sequence)
			continue
		case err := <-f.Err():
			return out, err
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	return out, perr
}

func (t *natsTransport) Consume(ctx context.Context, peer string, apply func(uint64, []byte) error) {
	log := t.cfg.Log.With().Str("peer", peer).Logger()
	nc, err := nats.Connect(t.cfg.Peers[peer], t.connOpts("concord-"+t.cfg.Region+"-from-"+peer)...)
	if err != nil {
		log.Error().Err(err).Msg("peer connection failed")
		return
	}
	defer nc.Close()
	t.mu.Lock()
	t.links[peer] = nc
	t.mu.Unlock()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Error().Err(err).Msg("jetstream")
		return
	}
	var cons jetstream.Consumer
	for ctx.Err() == nil { // the peer creates the consumer when it starts
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		cons, err = js.Consumer(cctx, streamName(peer), consumerName(t.cfg.Region))
		cancel()
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	if ctx.Err() != nil {
		return
	}
	log.Info().Msg("replicating from peer")
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			m.Nak()
			return
		}
		switch err := apply(md.Sequence.Stream, m.Data()); {
		case errors.Is(err, ErrPoison):
			m.Term()
		case err != nil:
			m.Nak()
		default:
			m.Ack()
		}
	}, jetstream.PullHeartbeat(time.Second), jetstream.PullMaxMessages(1000),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { log.Debug().Err(err).Msg("consume") }))
	if err != nil {
		log.Error().Err(err).Msg("consume failed")
		return
	}
	<-ctx.Done()
	cc.Stop()
}

func (t *natsTransport) Progress(ctx context.Context, peer string) (Progress, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := t.js.Consumer(ctx, t.stream, consumerName(peer))
	if err != nil {
		return Progress{}, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return Progress{}, err
	}
	p := Progress{AckFloor: info.AckFloor.Stream, Pending: info.NumPending + uint64(info.NumAckPending)}
	if info.AckFloor.Last != nil {
		p.LastAck = *info.AckFloor.Last
	}
	return p, nil
}

func (t *natsTransport) Connected(peer string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	nc := t.links[peer]
	return nc != nil && nc.IsConnected()
}

func (t *natsTransport) Close() {
	if t.nc != nil {
		t.nc.Drain()
		t.nc.Close()
	}
	if t.ns != nil {
		t.ns.Shutdown()
		t.ns.WaitForShutdown()
	}
}

func (t *natsTransport) MaxPayload() int { return int(t.nc.MaxPayload()) }

func fetchSubject(region string) string { return "concord.fetch." + region }

func (t *natsTransport) ServeFetch(fn func([]byte) []byte) error {
	_, err := t.nc.Subscribe(fetchSubject(t.cfg.Region), func(m *nats.Msg) { m.Respond(fn(m.Data)) })
	return err
}

func (t *natsTransport) Fetch(ctx context.Context, peer string, req []byte) ([]byte, error) {
	t.mu.Lock()
	nc := t.links[peer]
	t.mu.Unlock()
	if nc == nil || !nc.IsConnected() {
		return nil, errors.New("peering: no link to " + peer)
	}
	m, err := nc.RequestWithContext(ctx, fetchSubject(peer), req)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}
