// Package server wires one Concord region together: persistence, the
// keyspace, the command table, the RESP server, background expiry and the
// outbox. cmd/concord parses flags into a Config and calls Start.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"concord/commands"
	"concord/crdt"
	"concord/keyspace"
	"concord/peering"
	"concord/persistence"
	"concord/resp"

	"github.com/rs/zerolog"
)

// Instance is a running region.
type Instance struct {
	cfg    Config
	Log    zerolog.Logger
	store  *persistence.Store
	KS     *keyspace.Keyspace
	Engine *commands.Engine
	srv    *resp.Server
	ln     net.Listener
	Node   *peering.Node

	metricsLn net.Listener
	tlsLn     net.Listener
	ae        aeStats
	removedMu sync.Mutex
	removed   map[string]bool // peers declared removed (CONCORD PEERS REMOVE)
	aeNow     chan struct{}   // wakes anti-entropy at once (a gap in a peer's stream)
	syncing   atomic.Bool     // started empty next to peers: not ready until resynced
	cancel    context.CancelFunc
	done      chan struct{}
	ckptMu    sync.Mutex // one checkpoint at a time
	started   time.Time
	bgsave    atomic.Bool // a BGSAVE is running
	gcStop    func()      // ends this instance's GC headroom (gctune.go)
	// checkpointing: a checkpoint is running (any: INFO persistence)
	checkpointing atomic.Bool
	hurry         atomic.Int32  // SAVEs or a shutdown waiting: a paced checkpoint stops sleeping
	savedWrites   atomic.Uint64 // the store's write count when the last checkpoint began
	freed         atomic.Int64  // keys packed, or keys and records checkpointed, since memLoop last took note
	packWakes     atomic.Int64  // times packLoop woke (for its test)
	ckptWakes     atomic.Int64  // times checkpointLoop woke (for its test)
	released      atomic.Int64  // times memLoop returned free memory to the OS
	idleGCs       atomic.Int64  // collections memLoop ran while idle
	ckptDone      chan struct{} // the checkpoint loop stopped
	crash         bool          // tests: Close without a last checkpoint
	nosave        atomic.Bool   // SHUTDOWN NOSAVE: likewise
	closeOnce     sync.Once
	closeErr      error
	stopOnce      sync.Once
	stopped       chan struct{}
}

type storeAdapter struct{ s *persistence.Store }

func (a storeAdapter) Submit(w []keyspace.Write, d, in []crdt.KeyDelta, r keyspace.Received) keyspace.Ticket {
	return a.s.SubmitReceived(toStore(w), d, in, r.Messages, r.Merged)
}

// ElemPageNames lets a checkpoint read back a key's stored element pages
// (keyspace.ElemPages).
func (a storeAdapter) ElemPageNames(db int, key string, n int, fn func(kind byte, name string)) (int, error) {
	return a.s.ElemPageNames(db, key, n, fn)
}

func toStore(w []keyspace.Write) []persistence.Write {
	if len(w) == 0 {
		return nil
	}
	pw := make([]persistence.Write, len(w))
	for i, x := range w {
		pw[i] = persistence.Write{DB: x.DB, Key: x.Key, Header: x.Header, ReplaceAll: x.ReplaceAll, Meta: x.Meta,
			Page: x.Page, Bucket: x.Bucket, Keys: x.Keys, Ends: x.Ends, Fan: x.Fan}
		if len(x.Elems) > 0 {
			pw[i].Elems = make([]persistence.Elem, len(x.Elems))
			for j, e := range x.Elems {
				pw[i].Elems[j] = persistence.Elem(e)
			}
		}
	}
	return pw
}

// NewLogger builds the zerolog logger the config asks for.
func NewLogger(cfg *Config) zerolog.Logger {
	lvl, _ := zerolog.ParseLevel(cfg.LogLevel)
	var l zerolog.Logger
	if cfg.LogFormat == "console" {
		l = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339})
	} else {
		l = zerolog.New(os.Stderr)
	}
	return l.Level(lvl).With().Timestamp().Str("region", cfg.Region).Logger()
}

// Start opens the data dir, loads every key, and starts serving on
// cfg.Addr. It returns once the region accepts connections.
func Start(cfg Config) (*Instance, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := NewLogger(&cfg)
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create --dir: %w", err)
	}
	store, err := persistence.Open(persistence.Options{Dir: filepath.Join(cfg.Dir, "badger"), LogDir: filepath.Join(cfg.Dir, "log"), SegmentBytes: cfg.LogSegmentBytes, MemtableBytes: cfg.CheckpointMemtableBytes, CloseTimeout: cfg.StoreCloseTimeout, Fsync: cfg.Fsync, Region: cfg.Region, Log: log})
	if err != nil {
		return nil, err
	}
	replicated := cfg.Replicated()
	ks := keyspace.New(keyspace.Config{Region: cfg.Region, DBs: cfg.DBs, Digests: replicated,
		// with peers, deleted keys stay as tombstones until GC (a later issue)
		Stable: func() bool { return !replicated }}, storeAdapter{store})
	t0 := time.Now()
	n, bad, unresolved, corrupt, err := load(store, ks)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("load %s: %w", cfg.Dir, err)
	}
	if bad > 0 {
		log.Error().Int("keys", bad).Msg("stored states failed to decode and were skipped")
	}
	if unresolved > 0 {
		log.Warn().Int("deltas", unresolved).Msg("log entries of APPEND or SETRANGE extend values their keys no longer hold (keys rebuilt from the log): skipped")
	}
	for _, k := range corrupt {
		ks.Stats.CorruptRecords.Add(1)
		if cfg.Replicated() {
			log.Error().Int("db", k.DB).Str("key", k.Key).Msg("stored state failed its checksum: not served until repaired from a peer")
			ks.Quarantine(k)
			continue
		}
		if st := ks.Snapshot(k); st != nil {
			// the outbox still held its recent writes: keep what they rebuilt
			// and store it whole, replacing the damaged records
			log.Error().Int("db", k.DB).Str("key", k.Key).Msg("stored state failed its checksum: rebuilt from the outbox")
			t, _ := ks.Run([]keyspace.Key{k}, func(tx *keyspace.Tx) error { tx.Repair(k, st); return nil })
			if t != nil {
				if err := t.Wait(); err != nil {
					store.Close()
					return nil, err
				}
			}
			continue
		}
		// no peer can repair it: drop every record of the key, so that its
		// surviving parts cannot come back on a later start
		log.Error().Int("db", k.DB).Str("key", k.Key).Msg("stored state failed its checksum and no peer can repair it: key dropped")
		if err := store.WriteStates([]persistence.Write{{DB: k.DB, Key: k.Key, ReplaceAll: true}}); err != nil {
			store.Close()
			return nil, err
		}
		ks.Unstore(k) // and its page, by the checkpoint below
	}
	// after the damaged keys are quarantined, rebuilt or dropped: the pages
	// store them so (a quarantined key marked damaged)
	if err := migratePages(store, ks, log); err != nil {
		store.Close()
		return nil, err
	}
	log.Debug().Int("keys", n).Dur("took", time.Since(t0)).Msg("loaded")

	conf := commands.NewConfig()
	_, port, _ := net.SplitHostPort(cfg.Addr)
	for k, v := range map[string]string{"region": cfg.Region, "dir": cfg.Dir, "bind": cfg.Addr, "port": port,
		"appendfsync": cfg.Fsync, "requirepass": cfg.RequirePass, "maxclients": fmt.Sprint(cfg.MaxClients),
		"proto-max-bulk-len": fmt.Sprint(cfg.MaxBulkLen), "databases": fmt.Sprint(cfg.DBs)} {
		if err := conf.Set(k, v); err != nil {
			store.Close()
			return nil, fmt.Errorf("config %s: %v", k, err)
		}
	}
	eng := commands.New(ks, conf)
	eng.ACL.SetRequirePass(cfg.RequirePass)
	conf.OnSet("requirepass", func(v string) { eng.ACL.SetRequirePass(v) })
	if cfg.ACLFile != "" {
		conf.Set("aclfile", cfg.ACLFile)
		if err := eng.ACL.LoadFile(cfg.ACLFile); err != nil {
			store.Close()
			return nil, fmt.Errorf("--aclfile: %w", err)
		}
	}
	inf := &info{s: store}
	eng.Info = inf
	// settings read on every client read or flush, cached from CONFIG
	var idle, deadline atomic.Int64
	var outLimit atomic.Pointer[commands.OutputLimit]
	cacheLimits := func(string) {
		idle.Store(int64(time.Duration(conf.Int("timeout")) * time.Second))
		deadline.Store(int64(time.Duration(conf.Int("command-deadline")) * time.Second))
		lims, _ := commands.ParseOutputLimits(conf.Get("client-output-buffer-limit"))
		l := lims["normal"]
		outLimit.Store(&l)
	}
	cacheLimits("")
	for _, p := range []string{"timeout", "command-deadline", "client-output-buffer-limit"} {
		conf.OnSet(p, cacheLimits)
	}
	loopbackBind := isLoopbackBind(cfg.Addr) && (cfg.TLSAddr == "" || isLoopbackBind(cfg.TLSAddr))
	srv := resp.NewServer(resp.Config{
		Limits:          resp.Limits{MaxBulkLen: cfg.MaxBulkLen},
		NeedAuth:        eng.ACL.DefaultNeedsAuth,
		MaxClients:      cfg.MaxClients,
		EventLoop:       cfg.IO == "loop",
		Loops:           cfg.IOLoops,
		NoPrefetch:      cfg.IONoPrefetch,
		CommitNow:       store.CommitNow,
		HoldCommits:     store.Hold,
		Log:             log,
		IdleTimeout:     func() time.Duration { return time.Duration(idle.Load()) },
		CommandDeadline: func() time.Duration { return time.Duration(deadline.Load()) },
		OutputLimit: func() (int64, int64, time.Duration) {
			l := outLimit.Load()
			return l.Hard, l.Soft, l.SoftFor
		},
		Protected: func() bool {
			return !loopbackBind && conf.Get("protected-mode") == "yes" && !eng.ACL.DefaultNeedsAuth()
		},
	}, eng)
	conf.OnSet("proto-max-bulk-len", func(v string) { srv.Limits().MaxBulkLen = conf.Int("proto-max-bulk-len") })
	conf.OnSet("client-query-buffer-limit", func(v string) { srv.Limits().MaxQueryBuffer = conf.Int("client-query-buffer-limit") })
	eng.Attach(srv)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	var tlsLn net.Listener
	if cfg.TLSAddr != "" {
		tc, err := tlsConfig(&cfg)
		if err != nil {
			ln.Close()
			store.Close()
			return nil, err
		}
		if tlsLn, err = tls.Listen("tcp", cfg.TLSAddr, tc); err != nil {
			ln.Close()
			store.Close()
			return nil, fmt.Errorf("listen on --tls-addr %s: %w", cfg.TLSAddr, err)
		}
		go srv.Serve(tlsLn)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &Instance{tlsLn: tlsLn, cfg: cfg, Log: log, store: store, KS: ks, Engine: eng, srv: srv, ln: ln, cancel: cancel, done: make(chan struct{}), ckptDone: make(chan struct{}), started: time.Now(), stopped: make(chan struct{})}
	eng.Saver = in
	inf.in = in
	if len(corrupt) > 0 && !replicated {
		// store the rebuilt (or dropped) keys whole now, over the damage
		if err := in.checkpoint(); err != nil {
			log.Error().Err(err).Msg("checkpoint after repairs failed")
		}
	}
	go in.checkpointLoop(ctx)
	if replicated {
		pcfg := peering.Config{Region: cfg.Region, Dir: filepath.Join(cfg.Dir, "nats"), Listen: cfg.PeerListen,
			External: cfg.NATS, Peers: cfg.Peers, Fsync: cfg.Fsync, Retention: cfg.Retention, Log: log, Token: cfg.PeerToken,
			MaxMsgs: cfg.StreamMaxMsgs}
		if cfg.Bus != nil {
			pcfg.Transport = cfg.Bus.Transport(cfg.Region)
		}
		aeNow := make(chan struct{}, 1)
		pcfg.OnGap = func(peer string, from, to uint64) {
			log.Warn().Str("peer", peer).Uint64("from", from).Uint64("to", to).Msg("deltas aged out of the peer's stream before they were applied: resyncing through anti-entropy")
			in.syncing.Store(true)
			in.ae.gaps.Add(1)
			select {
			case aeNow <- struct{}{}:
			default:
			}
		}
		in.aeNow = aeNow
		if cfg.PeerTLSCertFile != "" {
			if pcfg.ServerTLS, pcfg.ClientTLS, err = peerTLS(&cfg); err != nil {
				cancel()
				ln.Close()
				store.Close()
				return nil, err
			}
		}
		node, err := peering.Start(pcfg, store, applier{ks: ks, store: store})
		if err != nil {
			cancel()
			ln.Close()
			store.Close()
			return nil, err
		}
		for _, p := range node.Peers() {
			if b := store.Meta("applied:" + p); len(b) == 8 {
				node.SetApplied(p, binary.BigEndian.Uint64(b))
			}
		}
		in.Node = node
		inf.node = node
		eng.Peers = in
		if b := store.Meta("removed-peers"); len(b) > 0 {
			in.removed = map[string]bool{}
			for _, p := range strings.Split(string(b), ",") {
				in.removed[p] = true
			}
		}
		eng.Repl = node
		if err := node.ServeFetch(in.serveFetch); err != nil {
			log.Warn().Err(err).Msg("cannot serve key repairs to peers")
		}
		if len(corrupt) > 0 {
			go in.repairLoop(ctx)
		}
		if cfg.AntiEntropyInterval > 0 {
			in.syncing.Store(n == 0 && len(cfg.Peers) > 0)
			go in.antiEntropy(ctx, cfg.AntiEntropyInterval, cfg.AntiEntropyBytesPerSec)
		}
		if cfg.GCInterval > 0 && len(cfg.Peers) > 0 {
			go in.tombstoneGC(ctx, cfg.GCInterval)
		}
	}
	go func() {
		defer close(in.done)
		if err := srv.Serve(ln); err != nil {
			log.Error().Err(err).Msg("serve failed")
		}
	}()
	if cfg.MetricsAddr != "" {
		mln, err := in.serveMetrics(cfg.MetricsAddr)
		if err != nil {
			in.Close()
			return nil, err
		}
		in.metricsLn = mln
	}
	go in.expireLoop(ctx, conf)
	if cfg.ColdAfter > 0 {
		go in.packLoop(ctx)
	}
	in.gcStop = gcHeadroom(cfg.GCHeadroom)
	go in.memLoop(ctx)
	go in.conflictLog(ctx)
	if !replicated {
		go peering.DiscardOutbox(ctx, store, time.Second, log)
	}
	ev := log.Info().Str("addr", ln.Addr().String()).Str("dir", cfg.Dir).Str("fsync", cfg.Fsync).Int("keys", n)
	if in.Node != nil {
		ev = ev.Str("peer_listen", in.Node.ListenAddr()).Strs("peers", in.Node.Peers())
	}
	ev.Msg("concord ready")
	return in, nil
}

// load reads every stored key (header and elements) into ks and re-merges
// the outbox.
// Unresolved counts deltas of APPEND or SETRANGE the log replayed that
// extend a value their key no longer held (crdt.ResolveExtend; a key
// rebuilt from the log alone): skipped.
func load(store *persistence.Store, ks *keyspace.Keyspace) (n, bad, unresolved int, corrupt []keyspace.Key, err error) {
	states := map[keyspace.Key]*crdt.State{}
	damaged := map[keyspace.Key]bool{}
	fans := map[keyspace.Key]int{} // element pages' layouts
	replay := func(seq uint64, b []byte, covered bool) error {
		kds, err := crdt.DecodeMessage(b) // a batch, or a peer's envelope of them (LogReceived)
		if err != nil {
			return fmt.Errorf("log entry %d: %w", seq, err)
		}
		for _, kd := range kds {
			k := keyspace.Key{DB: kd.DB, Key: kd.Key}
			if kd.DB >= ks.DBs() || covered && !damaged[k] {
				continue
			}
			if st := states[k]; st != nil && !damaged[k] {
				ks.Load(k, st)
				delete(states, k)
			}
			ks.Run([]keyspace.Key{k}, func(tx *keyspace.Tx) error {
				if tx.Resolve(k, &kd) {
					tx.Restore(k, kd.Delta)
				} else {
					// an APPEND's or SETRANGE's delta whose base is gone:
					// only a key rebuilt from the log alone (damaged)
					unresolved++
				}
				return nil
			})
		}
		return nil
	}
	err = store.Load(persistence.Loader{
		Header: func(db int, key string, b []byte) error {
			st, err := crdt.DecodeState(b)
			if err != nil {
				bad++
				return nil
			}
			states[keyspace.Key{DB: db, Key: key}] = st
			n++
			return nil
		},
		Elem: func(db int, key string, kind byte, name string, b []byte) error {
			st := states[keyspace.Key{DB: db, Key: key}]
			if st == nil || st.AddElement(kind, name, b) != nil {
				bad++
			}
			return nil
		},
		Corrupt: func(db int, key string) error {
			damaged[keyspace.Key{DB: db, Key: key}] = true
			return nil
		},
		ElemPages: func(db int, key string, fan int) {
			k := keyspace.Key{DB: db, Key: key}
			if f, seen := fans[k]; seen && f != fan {
				fan = -1 // two layouts: a checkpoint cut short
			}
			fans[k] = fan
		},
		Replay: func(seq uint64, b []byte) error { return replay(seq, b, false) },
		// entries a checkpoint covers still help rebuild a damaged key
		Covered: func(seq uint64, b []byte) error { return replay(seq, b, true) },
	})
	for k := range damaged { // a key with any damaged record is not served
		delete(states, k)
		corrupt = append(corrupt, k)
	}
	for k, st := range states {
		ks.Load(k, st)
	}
	for k, fan := range fans {
		ks.SetElemPages(k, fan)
	}
	return n, bad, unresolved, corrupt, err
}

func (in *Instance) expireLoop(ctx context.Context, conf *commands.Config) {
	for {
		hz := conf.Int("hz")
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second / time.Duration(max(hz, 1))):
		}
		// as Redis's slow cycle: up to 25% of the period (+2% per effort
		// step), for as long as the keys it looks at are mostly stale
		effort := max(conf.Int("active-expire-effort"), 1)
		spend := time.Second / time.Duration(max(hz, 1)) * time.Duration(25+2*(effort-1)) / 100
		in.KS.ExpireCycle(math.MaxInt, spend)
	}
}

// packLoop packs the keys nobody accessed during the last period (see
// keyspace.PackCold). The memory they held returns to the OS as Go's
// scavenger releases it (after the next collection); MEMORY PURGE does it at
// once — not done here: it stalls every allocating goroutine meanwhile.
func (in *Instance) packLoop(ctx context.Context) {
	// one sweep per period, spread over it in parts (a burst would delay
	// commands and the apply path); the period shrinks to pressurePeriod
	// while more than ColdMaxWarm keys are warm, polled every 100 ms when
	// there is a limit. The loop wakes for its parts and polls only (it
	// woke 64 times a second, an idle server's too)
	partsOf := func(period time.Duration) time.Duration { return min(64, max(1, period/(10*time.Millisecond))) }
	next := time.Now().Add(in.cfg.ColdAfter / partsOf(in.cfg.ColdAfter))
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var pace idlePace // (an idle server's warm keys do not grow)
	for part := 0; ; {
		wait := time.Until(next)
		if in.cfg.ColdMaxWarm > 0 {
			wait = min(wait, pace.poll(in.activity(), time.Now(), 100*time.Millisecond, idlePoll))
		}
		t.Reset(max(0, wait))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		in.packWakes.Add(1)
		period := in.cfg.ColdAfter
		if limit := in.cfg.ColdMaxWarm; limit > 0 && in.KS.Stats.WarmKeys.Load() > int64(limit) {
			period = min(period, pressurePeriod)
		}
		parts := partsOf(period)
		now := time.Now()
		if next.Sub(now) > period/parts {
			next = now // the period just shrank: its parts start now
		}
		if now.Before(next) {
			continue
		}
		next = now.Add(period / parts)
		part = (part + 1) % int(parts)
		if n := in.KS.PackColdPart(in.cfg.ColdMaxElements, part, int(parts)); n > 0 {
			in.freed.Add(int64(n))
			in.Log.Debug().Int("keys", n).Int("part", part).Msg("packed cold keys")
		}
	}
}

// memLoop returns free memory to the OS once sweeps packed many keys (or a
// checkpoint stored many: its encodings are garbage now) and then no
// command ran and no peer's delta was applied for idleBeforeRelease. A busy
// server collects on its own and Go's scavenger returns what exceeds the
// next heap goal; an idle one has no collection for two minutes and keeps
// the heap's high-water mark resident. FreeOSMemory (a collection, then
// everything free returned) pauses allocations while it works: only a
// server idle that long takes it.
// A server idle for a tick with a quarter of its runway to the next
// collection allocated since the last one collects then (no release): the
// next burst does not pay for a collection it did not cause.
// It also samples the heap for maxmemory every 100 ms.
func (in *Instance) memLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	release := false
	lastCalls, lastActive := uint64(0), time.Now()
	// again: when a release (not itself a second one) is to be followed by
	// a second once the server stayed idle that long after it. A release
	// can land while background work (a checkpoint's Badger flush, a
	// sweep) still holds its memory: that memory then becomes garbage no
	// idle tick sees (the garbage is measured against the live heap of the
	// release's own collection) and stayed resident (1M keys: 175 MB live
	// at a release just after a SAVE, 94 MB at the next collection).
	var again time.Time
	for tick := 0; ; tick++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		in.Engine.RefreshMemory()
		calls := in.activity()
		idle := calls == lastCalls // for a tick at least
		if !idle {
			lastCalls, lastActive = calls, time.Now()
		}
		if idle && in.cfg.GCHeadroom > 0 {
			g := heapGarbage()
			if idleCollect(g, runtimeMetric("/gc/heap/live:bytes"), runtimeMetric("/gc/heap/goal:bytes")) {
				// collect now, while nothing waits for the CPU: a burst
				// starting later has the whole runway before its own
				// collection (make bench's P=16 rows with one in them were
				// 0.6–0.8× Redis, ~1× without)
				runtime.GC()
				in.idleGCs.Add(1)
				release = release || g >= garbageBeforeRelease
			}
		}
		if tick%10 != 0 {
			continue
		}
		if in.freed.Load() >= gcAfterPacked || heapGarbage() >= garbageBeforeRelease {
			in.freed.Store(0)
			release = true
		}
		second := !again.IsZero() && time.Now().After(again)
		if idle && (release || second) && time.Since(lastActive) >= idleBeforeRelease {
			release = false
			again = time.Time{}
			if !second {
				again = time.Now().Add(idleBeforeRelease)
			}
			debug.FreeOSMemory()
			in.released.Add(1)
			in.Log.Debug().Bool("second", second).Msg("idle: returned free memory to the OS")
		}
	}
}

// gcAfterPacked is how many keys packed (or checkpointed) make an idle
// server return free memory (a 3-byte string key frees ~500 B of heap when
// packed); a variable for tests.
var gcAfterPacked int64 = 50000

// garbageBeforeRelease is how much garbage in the heap (allocated since
// the last collection and not live then) makes an idle server collect and
// return free memory: a large value written (its request, log entry and
// copies for peers: ~5× its size) or a burst under --gc-headroom would
// otherwise stay resident until Go's forced collection, every 2 minutes,
// and its pages after (a variable for tests).
var garbageBeforeRelease uint64 = 64 << 20

// heapGarbage estimates the heap's garbage: its objects' bytes now less
// what the last collection found live.
func heapGarbage() uint64 {
	objs, live := runtimeMetric("/memory/classes/heap/objects:bytes"), runtimeMetric("/gc/heap/live:bytes")
	return objs - min(objs, live)
}

// idleCollect tells whether an idle server collects: once what was
// allocated since the last collection (garbage, and objects not yet
// marked live) is a quarter of the runway from the live heap to the
// collector's goal (with --gc-headroom at least that much: 32 MiB of the
// default 128). Relative to the runway, not a fixed size: a collection
// marks the whole live heap, and a big heap with a trickle of writes
// would otherwise be marked again and again for little garbage.
func idleCollect(allocated, live, goal uint64) bool {
	return goal > live && allocated >= (goal-live)/4
}

// idleBeforeRelease is how long a server must have been idle before it
// returns free memory to the OS at once (a variable for tests).
var idleBeforeRelease = 10 * time.Second

// pressurePeriod is the sweep period while too many keys are warm.
const pressurePeriod = time.Second

// Addr returns the address clients connect to.
func (in *Instance) Addr() string { return in.ln.Addr().String() }

// Close stops serving, commits what is pending and closes the store (once;
// later calls wait for the first and return its error).
func (in *Instance) Close() error {
	in.closeOnce.Do(func() { in.closeErr = in.close() })
	return in.closeErr
}

// Shutdown is SHUTDOWN: Close in the background, with or without the last
// checkpoint; Stopped is closed once it is done.
func (in *Instance) Shutdown(save bool) {
	in.stopOnce.Do(func() {
		in.nosave.Store(!save)
		go func() {
			in.Close()
			close(in.stopped)
		}()
	})
}

// Stopped is closed once a SHUTDOWN has closed the instance (Close's
// error is then Close's return value).
func (in *Instance) Stopped() <-chan struct{} { return in.stopped }

func (in *Instance) close() error {
	in.hurry.Add(1)
	in.cancel()
	if in.gcStop != nil {
		in.gcStop()
	}
	if in.metricsLn != nil {
		in.metricsLn.Close()
	}
	if in.tlsLn != nil {
		in.tlsLn.Close()
	}
	in.srv.Close()
	<-in.done
	if in.Node != nil {
		in.Node.Close()
	}
	<-in.ckptDone
	if in.crash || in.nosave.Load() {
		return in.store.Close()
	}
	// a last checkpoint: the next start replays (almost) nothing
	if err := in.checkpoint(); err != nil {
		in.Log.Error().Err(err).Msg("final checkpoint failed; the next start replays the log")
	}
	return in.store.Close()
}

// TLSAddr returns the TLS listener's address ("" when off).
func (in *Instance) TLSAddr() string {
	if in.tlsLn == nil {
		return ""
	}
	return in.tlsLn.Addr().String()
}

// MetricsAddr returns where /metrics is served ("" when off).
func (in *Instance) MetricsAddr() string {
	if in.metricsLn == nil {
		return ""
	}
	return in.metricsLn.Addr().String()
}

// PeerAddr returns where peers reach this region ("" when not listening).
func (in *Instance) PeerAddr() string {
	if in.Node == nil {
		return ""
	}
	return in.Node.ListenAddr()
}

// applier is the apply path: a peer's message merges into the keys under
// their locks, and the log holds the message and the peer's new watermark
// before ApplyBatch returns. With a store, it commits a message's
// transactions itself, as one group (Store.Hold, Store.CommitNow), as the
// event loop commits a pass: it waits for them anyway before the message
// is acknowledged, and this saves the commit loop's wake-up per
// transaction and moves the deltas' hand-back to their pools (crdt.Release)
// to the P that takes them again (the benchmark's time within noise; the
// futex wake-ups gone from the profile, one group commit per message).
type applier struct {
	ks    *keyspace.Keyspace
	store *persistence.Store // nil: the commit loop commits
}

func (a applier) ApplyBatch(b peering.Batch) error {
	if a.store != nil {
		a.store.Hold(true)
		defer a.store.Hold(false) // (wakes the commit loop for what others submitted meanwhile)
	}
	batch, origin := b.Deltas, b.Origin
	var wm [8]byte
	binary.BigEndian.PutUint64(wm[:], b.Seq)
	// in chunks: a transaction locks the shards of every key it names, and
	// a big batch (a stream message carries up to 768 KiB) under one lock
	// hold would stall the clients of all those shards (under the event
	// loop, every client) for the whole batch. The watermark goes with the
	// last chunk, and so does the message, logged as it came (when Raw is
	// known; else each chunk's deltas are encoded into its own entry): a
	// crash before the last chunk is logged gets the message delivered
	// again, and merging a delta twice changes nothing.
	var tickets []keyspace.Ticket
	keys := make([]keyspace.Key, 0, min(applyChunk, len(batch))) // each chunk's in turn
	merged := false
	// deltas that extend a value this region no longer holds (see
	// crdt.Extend): not merged; the watermark waits for their keys' states
	// (peering.Unresolved)
	var unresolved []crdt.KeyDelta
	for start := 0; start == 0 || start < len(batch); start += applyChunk {
		chunk := batch[start:min(start+applyChunk, len(batch))]
		keys = keys[:0]
		for _, kd := range chunk {
			if kd.DB < a.ks.DBs() {
				keys = append(keys, keyspace.Key{DB: kd.DB, Key: kd.Key})
			}
		}
		merged = merged || len(keys) > 0
		last := start+applyChunk >= len(batch)
		t, err := a.ks.Run(keys, func(tx *keyspace.Tx) error {
			if b.Raw != nil && len(keys) > 0 {
				tx.See(b.Newest)
			}
			// each 16 keys looked up together first, so that their cache
			// misses overlap (keyspace.Prefetch)
			k := 0
			for i := range chunk {
				kd := &chunk[i]
				if kd.DB < a.ks.DBs() {
					if k%keyspace.MaxPrefetch == 0 {
						tx.Prefetch(keys[k:])
					}
					switch {
					case !tx.Resolve(keys[k], kd):
						unresolved = append(unresolved, *kd)
					case b.Raw != nil:
						tx.MergeReceived(keys[k], kd.Delta, origin)
					default:
						tx.ApplyRemote(keys[k], kd.Delta, origin)
					}
					k++
				}
			}
			if last {
				if b.Raw != nil && merged {
					tx.LogReceived(b.Raw)
				}
				if len(unresolved) == 0 {
					tx.SetMeta("applied:"+origin, wm[:])
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if t != nil {
			tickets = append(tickets, t)
		}
	}
	if a.store != nil && len(tickets) > 0 {
		a.store.CommitNow()
	}
	for _, t := range tickets {
		if err := t.Wait(); err != nil {
			return err
		}
	}
	if len(unresolved) > 0 {
		return &peering.Unresolved{Keys: unresolved}
	}
	return nil
}

// applyChunk is how many inbound deltas one transaction applies.
const applyChunk = 256

// Wait blocks until the server stops.
func (in *Instance) Wait() { <-in.done }

type info struct {
	s    *persistence.Store
	node *peering.Node
	in   *Instance
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (i *info) Persistence() []string {
	st := i.s.Stats()
	last, _ := i.s.OutboxSeq()
	trimmed, inSeq := i.s.Trimmed(), i.s.InboundSeq()
	lsm, vlog, segs, logSize := i.s.Size()
	lines := []string{
		fmt.Sprintf("group_commits:%d", st.Groups), fmt.Sprintf("group_commit_writes:%d", st.Writes),
		fmt.Sprintf("fsyncs:%d", st.Syncs), fmt.Sprintf("last_fsync_time:%d", st.LastSyncUnix),
		fmt.Sprintf("commit_errors:%d", st.Errors), fmt.Sprintf("outbox_seq:%d", last),
		fmt.Sprintf("outbox_trimmed:%d", trimmed), fmt.Sprintf("badger_lsm_bytes:%d", lsm),
		fmt.Sprintf("badger_vlog_bytes:%d", vlog), fmt.Sprintf("checkpoints:%d", st.Checkpoints),
		fmt.Sprintf("checkpoint_keys:%d", st.CheckpointKeys), fmt.Sprintf("last_checkpoint_time:%d", st.LastCheckpoint),
		fmt.Sprintf("last_checkpoint_seconds:%.3f", st.LastCheckpointS), fmt.Sprintf("log_bytes_since_checkpoint:%d", st.LogBytes),
		fmt.Sprintf("inbound_seq:%d", inSeq), fmt.Sprintf("log_segments:%d", segs), fmt.Sprintf("log_file_bytes:%d", logSize),
	}
	return append([]string{fmt.Sprintf("aof_current_size:%d", logSize)}, lines...)
}

// ResetStats implements commands.InfoSource: CONFIG RESETSTAT starts the
// replication lag histograms afresh.
func (i *info) ResetStats() {
	if i.node != nil {
		i.node.ResetLag()
	}
}

func (i *info) Replication() []string {
	if i.node == nil {
		return []string{"peers:0"}
	}
	sts := i.node.Status()
	lines := []string{fmt.Sprintf("peers:%d", len(sts)), fmt.Sprintf("extend_fetches:%d", i.node.FetchedStates())}
	if i.in != nil {
		lines = append(lines, fmt.Sprintf("antientropy_rounds:%d", i.in.ae.rounds.Load()),
			fmt.Sprintf("antientropy_keys_repaired:%d", i.in.ae.repaired.Load()),
			fmt.Sprintf("antientropy_bytes:%d", i.in.ae.bytes.Load()),
			fmt.Sprintf("resyncing:%d", b2i(i.in.syncing.Load())),
			fmt.Sprintf("stream_gaps:%d", i.in.ae.gaps.Load()))
	}
	for n, st := range sts {
		link := "down"
		if st.Connected {
			link = "up"
		}
		ago := int64(-1)
		if st.LastApplyMs > 0 {
			ago = time.Now().UnixMilli() - st.LastApplyMs
		}
		lines = append(lines, fmt.Sprintf("peer%d:name=%s,link=%s,applied_from_peer=%d,applied_by_peer=%d,lag_ops=%d,lag_ms=%d,last_apply_ms_ago=%d,errors=%d,apply_lag_p50_ms=%.3f,apply_lag_p99_ms=%.3f",
			n, st.Name, link, st.AppliedFrom, st.AckedByPeer, st.Pending, st.LagMs, ago, st.Errors,
			float64(st.LagP50.Microseconds())/1000, float64(st.LagP99.Microseconds())/1000))
	}
	return lines
}

// ErrUsage marks a configuration error (exit status 2).
var ErrUsage = errors.New("usage")

func isLoopbackBind(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsConfig builds the client-facing TLS configuration.
func tlsConfig(cfg *Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.TLSCACertFile != "" {
		pem, err := os.ReadFile(cfg.TLSCACertFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca-cert-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca-cert-file %s: no certificate found", cfg.TLSCACertFile)
		}
		tc.ClientCAs = pool
		switch cfg.TLSAuthClients {
		case "yes":
			tc.ClientAuth = tls.RequireAndVerifyClientCert
		case "optional":
			tc.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	return tc, nil
}

// NumClients returns the number of connected clients.
func (in *Instance) NumClients() int { return in.srv.NumClients() }

// peerTLS builds mutual TLS for the links between regions.
func peerTLS(cfg *Config) (server, client *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(cfg.PeerTLSCertFile, cfg.PeerTLSKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--peer-tls-cert-file/--peer-tls-key-file: %w", err)
	}
	pem, err := os.ReadFile(cfg.PeerTLSCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--peer-tls-ca-cert-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("--peer-tls-ca-cert-file %s: no certificate found", cfg.PeerTLSCAFile)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client, nil
}

// conflictLog writes one line when conflict resolutions happened in the last
// ten seconds (bursts are summarised, not logged one by one).
func (in *Instance) conflictLog(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	var last [3]uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := &in.KS.Stats
		now := [3]uint64{st.ConflictsLWW.Load(), st.ConflictsType.Load(), st.ConflictsNum.Load()}
		if now != last {
			in.Log.Warn().Uint64("lww", now[0]-last[0]).Uint64("type", now[1]-last[1]).Uint64("non_numeric_base", now[2]-last[2]).
				Msg("conflicts resolved (CONCORD CONFLICTS lists them)")
			last = now
		}
	}
}

// Requests peers send each other (one byte of kind, then the body):
// 'F' + batch of keys -> their full states; 'R' -> each database's
// anti-entropy root; 'B' + db -> its bucket digests; 'K' + db + bucket ->
// the full states of the keys in that bucket; 'D' + db + bucket -> the
// names and key digests of the keys in that bucket (see keyDigests); 'S' +
// db + shard + mask -> the same for the buckets of a shard set in mask
// (see keyspace.DigestsInShard; a peer of an older build answers nothing).
const (
	reqFetch   = peering.ReqStates
	reqRoots   = 'R'
	reqBuckets = 'B'
	reqKeys    = 'K'
	reqVector  = 'W'
	reqDigests = 'D'
	reqShard   = 'S'
)

// serveFetch answers a peer's request.
func (in *Instance) serveFetch(req []byte) []byte {
	if len(req) == 0 {
		return nil
	}
	body := req[1:]
	switch req[0] {
	case reqFetch:
		kds, err := crdt.DecodeBatch(body)
		if err != nil {
			return nil
		}
		keys := make([]keyspace.Key, len(kds))
		for i, kd := range kds {
			keys[i] = keyspace.Key{DB: kd.DB, Key: kd.Key}
		}
		return in.statesOf(keys)
	case reqVector:
		return in.appliedVector()
	case reqRoots:
		var out []byte
		for _, r := range in.KS.Roots() {
			out = binary.LittleEndian.AppendUint64(out, r)
		}
		return out
	case reqBuckets:
		db, n := binary.Uvarint(body)
		if n <= 0 || db >= uint64(in.KS.DBs()) {
			return nil
		}
		var out []byte
		for _, b := range in.KS.Buckets(int(db)) {
			out = binary.LittleEndian.AppendUint64(out, b)
		}
		return out
	case reqKeys:
		db, n := binary.Uvarint(body)
		b, m := binary.Uvarint(body[max(n, 0):])
		if n <= 0 || m <= 0 || db >= uint64(in.KS.DBs()) {
			return nil
		}
		var keys []keyspace.Key
		for _, k := range in.KS.KeysIn(int(db), []int{int(b)}) {
			keys = append(keys, keyspace.Key{DB: int(db), Key: k})
		}
		return in.statesOf(keys)
	case reqDigests:
		db, n := binary.Uvarint(body)
		b, m := binary.Uvarint(body[max(n, 0):])
		if n <= 0 || m <= 0 || db >= uint64(in.KS.DBs()) || b >= keyspace.NumBuckets {
			return nil
		}
		return in.keyDigests(int(db), int(b))
	case reqShard:
		db, n := binary.Uvarint(body)
		sh, m := binary.Uvarint(body[max(n, 0):])
		mask, o := binary.Uvarint(body[max(n, 0)+max(m, 0):])
		if n <= 0 || m <= 0 || o <= 0 || db >= uint64(in.KS.DBs()) || sh >= keyspace.NumBuckets/keyspace.BucketsPerShard || mask >= 1<<keyspace.BucketsPerShard {
			return nil
		}
		return in.shardDigests(int(db), int(sh), uint32(mask))
	}
	return nil
}

// statesOf encodes the full states (tombstones included) of keys.
func (in *Instance) statesOf(keys []keyspace.Key) []byte {
	var out []crdt.KeyDelta
	for _, k := range keys {
		if st := in.KS.Snapshot(k); st != nil {
			st.Scoped, st.ExpTouched = false, false
			out = append(out, crdt.KeyDelta{DB: k.DB, Key: k.Key, Delta: st})
		}
	}
	return crdt.AppendBatch(nil, out)
}

// repairLoop restores quarantined keys from the first peer that answers.
func (in *Instance) repairLoop(ctx context.Context) {
	for ctx.Err() == nil {
		keys := in.KS.QuarantinedKeys()
		if len(keys) == 0 {
			return
		}
		req := make([]crdt.KeyDelta, len(keys))
		for i, k := range keys {
			req[i] = crdt.KeyDelta{DB: k.DB, Key: k.Key, Delta: &crdt.State{}}
		}
		// as many as one request asks for (a request is one message); the
		// rest at once after
		req = req[:fetchBatch(req)]
		more := len(req) < len(keys)
		keys = keys[:len(req)]
		repaired := false
		for _, peer := range in.Node.Peers() {
			fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := in.Node.Fetch(fctx, peer, append([]byte{reqFetch}, crdt.AppendBatch(nil, req)...))
			cancel()
			if err != nil {
				continue
			}
			kds, err := crdt.DecodeBatch(resp)
			if err != nil {
				continue
			}
			for _, kd := range kds {
				k := keyspace.Key{DB: kd.DB, Key: kd.Key}
				t, _ := in.KS.Run([]keyspace.Key{k}, func(tx *keyspace.Tx) error { tx.ApplyRemote(k, kd.Delta, peer); return nil })
				if t != nil {
					t.Wait()
				}
			}
			for _, k := range keys { // the peer's answer is the state now (absent keys stay absent)
				in.KS.Release(k)
				in.KS.Stats.KeysRepaired.Add(1)
			}
			in.Log.Info().Str("peer", peer).Int("keys", len(keys)).Msg("repaired damaged keys from peer")
			repaired = true
			break
		}
		if repaired && more {
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
