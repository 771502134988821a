// Package server wires one Concord region together: persistence, the
// keyspace, the command table, the RESP server, background expiry and the
// outbox. cmd/concord parses flags into a Config and calls Start.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
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
	cancel context.CancelFunc
	done   chan struct{}
}

type storeAdapter struct{ s *persistence.Store }

func (a storeAdapter) Submit(w []keyspace.Write, d []crdt.KeyDelta) keyspace.Ticket {
	pw := make([]persistence.Write, len(w))
	for i, x := range w {
		pw[i] = persistence.Write{DB: x.DB, Key: x.Key, Header: x.Header, ReplaceAll: x.ReplaceAll}
		if len(x.Elems) > 0 {
			pw[i].Elems = make([]persistence.Elem, len(x.Elems))
			for j, e := range x.Elems {
				pw[i].Elems[j] = persistence.Elem(e)
			}
		}
	}
	return a.s.Submit(pw, d)
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
	store, err := persistence.Open(persistence.Options{Dir: cfg.Dir, Fsync: cfg.Fsync, Region: cfg.Region, Log: log})
	if err != nil {
		return nil, err
	}
	ks := keyspace.New(keyspace.Config{Region: cfg.Region, DBs: cfg.DBs}, storeAdapter{store})
	t0 := time.Now()
	n, bad, err := load(store, ks)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("load %s: %w", cfg.Dir, err)
	}
	if bad > 0 {
		log.Error().Int("keys", bad).Msg("stored states failed to decode and were skipped")
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
	eng.Info = info{store}
	srv := resp.NewServer(resp.Config{
		Limits:     resp.Limits{MaxBulkLen: cfg.MaxBulkLen},
		NeedAuth:   func() bool { return conf.Get("requirepass") != "" },
		MaxClients: cfg.MaxClients,
		Log:        log,
	}, eng)
	conf.OnSet("proto-max-bulk-len", func(v string) { srv.Limits().MaxBulkLen = conf.Int("proto-max-bulk-len") })
	conf.OnSet("client-query-buffer-limit", func(v string) { srv.Limits().MaxQueryBuffer = conf.Int("client-query-buffer-limit") })
	eng.Attach(srv)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &Instance{cfg: cfg, Log: log, store: store, KS: ks, Engine: eng, srv: srv, ln: ln, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		if err := srv.Serve(ln); err != nil {
			log.Error().Err(err).Msg("serve failed")
		}
	}()
	go in.expireLoop(ctx, conf)
	go peering.DiscardOutbox(ctx, store, time.Second, log)
	log.Info().Str("addr", ln.Addr().String()).Str("dir", cfg.Dir).Str("fsync", cfg.Fsync).Int("keys", n).Msg("concord ready")
	return in, nil
}

// load reads every stored key (header and elements) into ks and re-merges
// the outbox.
func load(store *persistence.Store, ks *keyspace.Keyspace) (n, bad int, err error) {
	states := map[keyspace.Key]*crdt.State{}
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
		Replay: func(seq uint64, b []byte) error {
			kds, err := crdt.DecodeBatch(b)
			if err != nil {
				return fmt.Errorf("outbox entry %d: %w", seq, err)
			}
			for _, kd := range kds {
				k := keyspace.Key{DB: kd.DB, Key: kd.Key}
				if kd.DB >= ks.DBs() {
					continue
				}
				if st := states[k]; st != nil {
					ks.Load(k, st)
					delete(states, k)
				}
				t, _ := ks.Run([]keyspace.Key{k}, func(tx *keyspace.Tx) error {
					tx.Repair(k, kd.Delta)
					return nil
				})
				if t != nil {
					if err := t.Wait(); err != nil {
						return err
					}
				}
			}
			return nil
		},
	})
	for k, st := range states {
		ks.Load(k, st)
	}
	return n, bad, err
}

func (in *Instance) expireLoop(ctx context.Context, conf *commands.Config) {
	for {
		hz := conf.Int("hz")
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second / time.Duration(max(hz, 1))):
		}
		in.KS.ExpireCycle(int(200 * conf.Int("active-expire-effort")))
	}
}

// Addr returns the address clients connect to.
func (in *Instance) Addr() string { return in.ln.Addr().String() }

// Close stops serving, commits what is pending and closes the store.
func (in *Instance) Close() error {
	in.cancel()
	in.srv.Close()
	<-in.done
	return in.store.Close()
}

// Wait blocks until the server stops.
func (in *Instance) Wait() { <-in.done }

type info struct{ s *persistence.Store }

func (i info) Persistence() []string {
	st := i.s.Stats()
	last, trimmed := i.s.OutboxSeq()
	lsm, vlog := i.s.Size()
	return []string{
		fmt.Sprintf("group_commits:%d", st.Groups), fmt.Sprintf("group_commit_writes:%d", st.Writes),
		fmt.Sprintf("fsyncs:%d", st.Syncs), fmt.Sprintf("last_fsync_time:%d", st.LastSyncUnix),
		fmt.Sprintf("commit_errors:%d", st.Errors), fmt.Sprintf("outbox_seq:%d", last),
		fmt.Sprintf("outbox_trimmed:%d", trimmed), fmt.Sprintf("badger_lsm_bytes:%d", lsm),
		fmt.Sprintf("badger_vlog_bytes:%d", vlog),
	}
}

func (i info) Replication() []string { return []string{"peers:0"} }

// ErrUsage marks a configuration error (exit status 2).
var ErrUsage = errors.New("usage")
