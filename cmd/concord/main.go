// Command concord runs one Concord region: a Redis-protocol server whose
// values are CRDTs persisted to Badger. Flags are listed by `concord -h` and
// documented in docs/configuration.md.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"concord/cmd/concord/server"
)

func main() {
	cfg, err := parse(os.Args[1:], os.Stderr)
	if err != nil {
		if err != flag.ErrHelp {
			fmt.Fprintln(os.Stderr, "concord:", err)
		}
		os.Exit(2)
	}
	in, err := server.Start(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "concord:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sig:
		in.Log.Info().Msg("shutting down")
	case <-in.Stopped():
		in.Log.Info().Msg("shut down by SHUTDOWN")
	}
	go func() { // a second signal: exit now, without the rest of the shutdown
		<-sig
		in.Log.Warn().Msg("second signal: exiting before the shutdown finished (the next start replays the log)")
		os.Exit(1)
	}()
	if err := in.Close(); err != nil {
		in.Log.Error().Err(err).Msg("close failed")
		os.Exit(1)
	}
}

// parse reads flags (and an optional --config file) into a validated Config.
func parse(args []string, out io.Writer) (server.Config, error) {
	var cfg server.Config
	var file string
	fs := flag.NewFlagSet("concord", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&file, "config", "", "config file of \"name value\" lines (flag names); flags override it")
	fs.StringVar(&cfg.Addr, "addr", server.DefaultAddr, "host:port clients connect to")
	fs.StringVar(&cfg.Region, "region", server.DefaultRegion, "this region's name")
	fs.StringVar(&cfg.Dir, "dir", server.DefaultDir, "data directory (Badger)")
	fs.StringVar(&cfg.Fsync, "fsync", server.DefaultFsync, "fsync policy: always, everysec or no")
	fs.StringVar(&cfg.RequirePass, "requirepass", "", "password clients must AUTH with (empty: none)")
	fs.StringVar(&cfg.ACLFile, "aclfile", "", "ACL file of \"user <name> <rules...>\" lines loaded at start")
	fs.StringVar(&cfg.LogLevel, "log-level", server.DefaultLogLevel, "log level: trace, debug, info, warn, error")
	fs.StringVar(&cfg.LogFormat, "log-format", "json", "log format: json or console")
	fs.IntVar(&cfg.MaxClients, "maxclients", 10000, "maximum connected clients")
	prefetch := fs.Bool("io-prefetch", true, "look up the keys of a client's pipelined commands together before serving them, so that their cache misses overlap")
	fs.IntVar(&cfg.IOLoops, "io-loops", 1, "event loops sharing the clients under --io loop, each on a thread of its own (1, as Redis: more only pays with cores to spare beside the clients)")
	fs.StringVar(&cfg.IO, "io", server.DefaultIO, "how clients are served: loop (one epoll loop on one thread, as Redis; Linux, plain TCP) or goroutines (one per connection; TLS clients always)")
	fs.Int64Var(&cfg.MaxBulkLen, "proto-max-bulk-len", 512<<20, "largest bulk string a client may send")
	fs.IntVar(&cfg.DBs, "databases", 16, "number of databases")
	fs.StringVar(&cfg.PeerListen, "peer-listen", "", "host:port where peers reach this region's embedded NATS (empty: not reachable)")
	fs.Var(peerFlag{&cfg.Peers}, "peer", "another region as NAME=nats://host:port (repeatable; the URL may be a proxy)")
	fs.StringVar(&cfg.NATS, "nats", "", "external NATS URL for this region instead of the embedded server")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "host:port for Prometheus /metrics, /healthz and /readyz (empty: off)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "also serve Go's runtime profiles at /debug/pprof/ on --metrics-addr")
	fs.DurationVar(&cfg.PeerDownAfter, "peer-down-after", 10*time.Second, "a peer unreachable this long makes /readyz report degraded")
	fs.StringVar(&cfg.TLSAddr, "tls-addr", "", "host:port for TLS clients (empty: off)")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "server certificate (PEM)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key-file", "", "server private key (PEM)")
	fs.StringVar(&cfg.TLSCACertFile, "tls-ca-cert-file", "", "CA that signs client certificates (PEM)")
	fs.StringVar(&cfg.TLSAuthClients, "tls-auth-clients", "yes", "with a CA: yes (require client certs), optional, or no")
	fs.StringVar(&cfg.PeerToken, "peer-token", "", "secret every region's NATS requires; set the same on every region")
	fs.StringVar(&cfg.PeerTLSCertFile, "peer-tls-cert-file", "", "this region's certificate for mutual TLS between regions (PEM)")
	fs.StringVar(&cfg.PeerTLSKeyFile, "peer-tls-key-file", "", "its private key (PEM)")
	fs.StringVar(&cfg.PeerTLSCAFile, "peer-tls-ca-cert-file", "", "the CA that signs every region's certificate (PEM)")
	fs.DurationVar(&cfg.AntiEntropyInterval, "anti-entropy-interval", 30*time.Second, "how often hash trees are compared with each peer (0: never)")
	fs.DurationVar(&cfg.CheckpointInterval, "checkpoint-interval", time.Minute, "how often changed key states are stored in the background (recovery replays the log written since)")
	fs.DurationVar(&cfg.ColdAfter, "cold-after", 10*time.Second, "keep a key packed in memory once nobody read or wrote it for this long (at most twice this; 0: never): a small string key takes ~10x less memory, its next access unpacks it")
	fs.IntVar(&cfg.ColdMaxWarm, "cold-max-warm", 1000000, "while more keys than this are warm (unpacked), keys go cold 1-2 s after their last access instead of --cold-after: bounds the memory of a bulk load (0: no limit)")
	fs.IntVar(&cfg.ColdMaxElements, "cold-max-elements", 128, "keys with more members or fields than this are never packed (an access would unpack them whole)")
	fs.Int64Var(&cfg.CheckpointLogBytes, "checkpoint-log-bytes", 64<<20, "store key states as soon as this much log was written since the last checkpoint (bounds recovery time)")
	fs.BoolVar(&cfg.CheckpointEager, "checkpoint-eager", false, "start a background checkpoint as soon as it is due; by default one due while the server is busy waits for a quiet 100 ms, at most until twice --checkpoint-interval or twice --checkpoint-log-bytes")
	fs.Int64Var(&cfg.GCHeadroom, "gc-headroom", 128<<20, "keep the Go collector's heap goal at least this many bytes above the live heap (fewer collections while busy, up to this much more RSS; 0: Go's own pacing, GOGC; a GOGC in the environment wins)")
	fs.Float64Var(&cfg.CheckpointCPU, "checkpoint-cpu", 0.25, "share of the time a background checkpoint runs, sleeping between shards for the rest (1: never sleeps; SAVE and BGSAVE run at full speed)")
	fs.DurationVar(&cfg.StoreCloseTimeout, "store-close-timeout", 30*time.Second, "at shutdown, stop waiting for the key states database (Badger) to close after this long, and exit with an error (its last flush failing forever: files deleted, disk gone); the log holds every acknowledged write")
	fs.Int64Var(&cfg.CheckpointMemtableBytes, "checkpoint-memtable-bytes", 8<<20, "size of each of the two in-memory tables checkpoints write key states through (Badger's memtables; larger: fewer table builds and compactions per checkpoint, more memory)")
	fs.Int64Var(&cfg.LogSegmentBytes, "log-segment-bytes", 64<<20, "start a new log segment file past this size (segments go once checkpointed and shipped)")
	fs.DurationVar(&cfg.GCInterval, "gc-interval", 10*time.Second, "how often tombstones every region has seen are dropped (0: never)")
	fs.IntVar(&cfg.AntiEntropyBytesPerSec, "anti-entropy-bytes-per-sec", 16<<20, "bound on anti-entropy repair traffic")
	fs.DurationVar(&cfg.Retention, "retention", 24*time.Hour, "how long this region's deltas stay in its stream for peers that are down")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if file != "" {
		fileArgs, err := server.ReadConfigFile(file)
		if err != nil {
			return cfg, err
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		ffs := flag.NewFlagSet("concord", flag.ContinueOnError)
		ffs.SetOutput(io.Discard)
		fs.VisitAll(func(f *flag.Flag) {
			switch {
			case f.Name == "config":
			case set[f.Name]: // the command line wins: parse the file's value into a scratch copy
				var scratch string
				ffs.StringVar(&scratch, f.Name, "", f.Usage)
			default:
				ffs.Var(f.Value, f.Name, f.Usage)
			}
		})
		if err := ffs.Parse(fileArgs); err != nil {
			return cfg, fmt.Errorf("%s: %v", file, err)
		}
	}
	cfg.IONoPrefetch = !*prefetch
	return cfg, cfg.Validate()
}

// peerFlag collects repeated --peer NAME=URL flags.
type peerFlag struct{ m *map[string]string }

func (p peerFlag) String() string {
	if p.m == nil || *p.m == nil {
		return ""
	}
	var parts []string
	for k, v := range *p.m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (p peerFlag) Set(v string) error {
	name, url, ok := strings.Cut(v, "=")
	if !ok || name == "" || url == "" {
		return fmt.Errorf("want NAME=nats://host:port, got %q", v)
	}
	if *p.m == nil {
		*p.m = map[string]string{}
	}
	if _, dup := (*p.m)[name]; dup {
		return fmt.Errorf("peer %s given twice", name)
	}
	(*p.m)[name] = url
	return nil
}
