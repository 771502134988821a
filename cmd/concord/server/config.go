package server

import (
	"bufio"

	"concord/peering"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Config is everything one Concord region needs to start. Validate fills
// defaults and refuses bad values with a one-line reason.
type Config struct {
	Addr        string // client listen address
	Region      string
	Dir         string
	Fsync       string // always | everysec | no
	RequirePass string
	ACLFile     string // users loaded at start (ACL LOAD/SAVE use it too)
	LogLevel    string // trace debug info warn error
	LogFormat   string // json | console
	MaxClients  int
	// IO is how clients are served: "loop" (one epoll loop on one thread,
	// Redis's shape; Linux, plain TCP) or "goroutines" (one per
	// connection; always for TLS clients). Default loop.
	IO string
	// IOLoops is how many event loops share the clients under IO "loop",
	// each on a thread of its own (default 1, as Redis).
	IOLoops int
	// IONoPrefetch turns off the prefetch of a pipeline's keys
	// (--io-prefetch=false; resp.Prefetcher).
	IONoPrefetch bool
	MaxBulkLen   int64
	DBs          int

	// Replication (DESIGN §6, §7).
	PeerListen string            // where peers reach this region's embedded NATS
	Peers      map[string]string // other region -> NATS URL (possibly a proxy)
	NATS       string            // external NATS URL instead of the embedded server
	Retention  time.Duration     // how long this region's deltas stay in its stream

	MetricsAddr string // where /metrics, /healthz and /readyz are served ("" = off)
	Pprof       bool   // also serve Go's profiles (/debug/pprof/) on MetricsAddr
	// PeerDownAfter: a peer unreachable this long makes /readyz "degraded".
	PeerDownAfter time.Duration

	// TLS for clients.
	TLSAddr        string
	TLSCertFile    string
	TLSKeyFile     string
	TLSCACertFile  string
	TLSAuthClients string // yes | no | optional (with a CA)

	// PeerToken is a secret every region's NATS requires: only configured
	// regions can read or publish deltas.
	PeerToken string
	// Mutual TLS on the links between regions: this region's certificate
	// (used as server and client) and the CA that signs every region's.
	PeerTLSCertFile, PeerTLSKeyFile, PeerTLSCAFile string

	// AntiEntropyInterval is how often hash trees are compared with each
	// peer (0: never); AntiEntropyBytesPerSec bounds the repair traffic.
	AntiEntropyInterval    time.Duration
	AntiEntropyBytesPerSec int
	// GCInterval is how often causally stable tombstones are collected
	// (0: never).
	GCInterval time.Duration
	// CheckpointInterval and CheckpointLogBytes: key states are stored in
	// the background (a checkpoint) this often, or as soon as this much log
	// was written since the last one; recovery replays the log after it.
	CheckpointInterval time.Duration
	CheckpointLogBytes int64
	// CheckpointEager starts a checkpoint as soon as it is due. Without
	// it, one that falls due while commands are being served (or peers'
	// deltas applied) waits for a quiet 100 ms, at most until twice the
	// interval or twice the log bytes: a burst is not slowed by one.
	CheckpointEager bool
	// CheckpointCPU is the share of the time a background checkpoint runs
	// (it sleeps between shards for the rest; default 0.25, 1: never):
	// SAVE, BGSAVE and the one at shutdown run at full speed.
	CheckpointCPU float64
	// CheckpointMemtableBytes sizes the Badger memtables checkpoints write
	// the key states through (default 8 MiB; see persistence.Options).
	CheckpointMemtableBytes int64
	// StoreCloseTimeout bounds the wait for the key states database to
	// close at shutdown (see persistence.Options.CloseTimeout; 0: 30 s).
	StoreCloseTimeout time.Duration
	// GCHeadroom keeps the Go collector's heap goal at least this many
	// bytes above the live heap (see gctune.go; 0: Go's own pacing, GOGC).
	GCHeadroom int64
	// LogSegmentBytes: the log starts a new segment file past this size
	// (and at every checkpoint); a segment is deleted once a checkpoint
	// covers it and peers have its outbox entries.
	LogSegmentBytes int64
	// ColdAfter: a key nobody read or wrote for this long (at most twice
	// this) is kept packed in memory until its next access (0: never);
	// keys with more than ColdMaxElements members or fields stay unpacked.
	ColdAfter       time.Duration
	ColdMaxElements int
	// ColdMaxWarm: while more keys than this are warm (in memory unpacked),
	// keys go cold after one second instead of ColdAfter (0: no limit).
	ColdMaxWarm int
	// StreamMaxMsgs bounds this region's stream by message count (tests
	// only: it makes a partitioned peer miss deltas).
	StreamMaxMsgs int64

	// Bus, when set (tests only), carries replication in memory instead of
	// NATS; Peers then only name the other regions.
	Bus *peering.Bus
}

// Replicated reports whether this region runs peering (embedded NATS).
func (c *Config) Replicated() bool { return c.PeerListen != "" || len(c.Peers) > 0 || c.NATS != "" }

// Defaults of every setting (docs/configuration.md lists the same).
const (
	DefaultAddr     = "127.0.0.1:6379"
	DefaultRegion   = "local"
	DefaultDir      = "./data"
	DefaultFsync    = "everysec"
	DefaultLogLevel = "info"
)

var regionRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// DefaultIO is Config.IO's default (tests run the suite under both).
var DefaultIO = "loop"

// Validate fills defaults and checks every value.
func (c *Config) Validate() error {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	if c.Fsync == "" {
		c.Fsync = DefaultFsync
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.LogFormat == "" {
		c.LogFormat = "json"
	}
	if c.MaxClients == 0 {
		c.MaxClients = 10000
	}
	if c.IO == "" {
		c.IO = DefaultIO
	}
	if c.IOLoops == 0 {
		c.IOLoops = 1
	}
	if c.MaxBulkLen == 0 {
		c.MaxBulkLen = 512 << 20
	}
	if c.DBs == 0 {
		c.DBs = 16
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || port == "" {
		return fmt.Errorf("--addr %q: want host:port", c.Addr)
	}
	if !regionRe.MatchString(c.Region) {
		return fmt.Errorf("--region %q: want 1-64 letters, digits, '-' or '_'", c.Region)
	}
	switch c.Fsync {
	case "always", "everysec", "no":
	default:
		return fmt.Errorf("--fsync %q: want always, everysec or no", c.Fsync)
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil || c.LogLevel == "" {
		return fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		return fmt.Errorf("--log-format %q: want json or console", c.LogFormat)
	}
	if c.IO != "loop" && c.IO != "goroutines" {
		return fmt.Errorf("--io %q: want loop or goroutines", c.IO)
	}
	if c.IOLoops < 1 || c.IOLoops > 64 {
		return fmt.Errorf("--io-loops %d: want 1 to 64", c.IOLoops)
	}
	if c.MaxClients < 1 {
		return fmt.Errorf("--maxclients %d: want at least 1", c.MaxClients)
	}
	if c.MaxBulkLen < 1<<20 {
		return fmt.Errorf("--proto-max-bulk-len %d: want at least 1048576", c.MaxBulkLen)
	}
	if c.DBs < 1 || c.DBs > 256 {
		return fmt.Errorf("--databases %d: want 1 to 256", c.DBs)
	}
	for name, url := range c.Peers {
		if !regionRe.MatchString(name) || name == c.Region {
			return fmt.Errorf("--peer %s=%s: the name must be another region's (1-64 letters, digits, '-' or '_')", name, url)
		}
		if url == "" {
			return fmt.Errorf("--peer %s=: want NAME=nats://host:port", name)
		}
	}
	if c.PeerListen != "" {
		if _, _, err := net.SplitHostPort(c.PeerListen); err != nil {
			return fmt.Errorf("--peer-listen %q: want host:port", c.PeerListen)
		}
	}
	if c.Pprof && c.MetricsAddr == "" {
		return fmt.Errorf("--pprof serves profiles on --metrics-addr: set it too")
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("--metrics-addr %q: want host:port", c.MetricsAddr)
		}
	}
	if c.AntiEntropyBytesPerSec == 0 {
		c.AntiEntropyBytesPerSec = 16 << 20
	}
	if c.AntiEntropyInterval < 0 || c.AntiEntropyBytesPerSec < 0 {
		return fmt.Errorf("--anti-entropy-interval and --anti-entropy-bytes-per-sec must not be negative")
	}
	if c.PeerDownAfter == 0 {
		c.PeerDownAfter = 10 * time.Second
	}
	if c.TLSAddr != "" {
		if _, _, err := net.SplitHostPort(c.TLSAddr); err != nil {
			return fmt.Errorf("--tls-addr %q: want host:port", c.TLSAddr)
		}
		if c.TLSCertFile == "" || c.TLSKeyFile == "" {
			return fmt.Errorf("--tls-addr needs --tls-cert-file and --tls-key-file")
		}
	}
	if (c.PeerTLSCertFile != "" || c.PeerTLSKeyFile != "" || c.PeerTLSCAFile != "") && (c.PeerTLSCertFile == "" || c.PeerTLSKeyFile == "" || c.PeerTLSCAFile == "") {
		return fmt.Errorf("--peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-cert-file go together")
	}
	switch c.TLSAuthClients {
	case "":
		c.TLSAuthClients = "yes"
	case "yes", "no", "optional":
	default:
		return fmt.Errorf("--tls-auth-clients %q: want yes, no or optional", c.TLSAuthClients)
	}
	if c.Retention == 0 {
		c.Retention = 24 * time.Hour
	}
	if c.ColdMaxElements == 0 {
		c.ColdMaxElements = 128
	}
	if c.ColdAfter < 0 || c.ColdMaxElements < 0 || c.ColdMaxWarm < 0 {
		return fmt.Errorf("--cold-after, --cold-max-elements and --cold-max-warm must not be negative: %v, %d, %d", c.ColdAfter, c.ColdMaxElements, c.ColdMaxWarm)
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = time.Minute
	}
	if c.CheckpointLogBytes == 0 {
		c.CheckpointLogBytes = 64 << 20
	}
	if c.LogSegmentBytes == 0 {
		c.LogSegmentBytes = 64 << 20
	}
	if c.LogSegmentBytes < 64<<10 {
		return fmt.Errorf("--log-segment-bytes %d: want at least 64 KiB", c.LogSegmentBytes)
	}
	if c.CheckpointMemtableBytes == 0 {
		c.CheckpointMemtableBytes = 8 << 20
	}
	if c.CheckpointMemtableBytes < 1<<20 || c.CheckpointMemtableBytes > 1<<30 {
		return fmt.Errorf("--checkpoint-memtable-bytes %d: want 1 MiB to 1 GiB", c.CheckpointMemtableBytes)
	}
	if c.StoreCloseTimeout == 0 {
		c.StoreCloseTimeout = 30 * time.Second
	}
	if c.StoreCloseTimeout < 0 {
		return fmt.Errorf("--store-close-timeout %v: must not be negative", c.StoreCloseTimeout)
	}
	if c.CheckpointCPU == 0 {
		c.CheckpointCPU = 0.25
	}
	if !(c.CheckpointCPU > 0 && c.CheckpointCPU <= 1) {
		return fmt.Errorf("--checkpoint-cpu %v: want more than 0, at most 1", c.CheckpointCPU)
	}
	if c.GCHeadroom < 0 {
		return fmt.Errorf("--gc-headroom %d: must not be negative", c.GCHeadroom)
	}
	if c.CheckpointInterval < 10*time.Millisecond || c.CheckpointLogBytes < 1<<20 {
		return fmt.Errorf("--checkpoint-interval (>= 10ms) and --checkpoint-log-bytes (>= 1 MiB) out of range: %v, %d", c.CheckpointInterval, c.CheckpointLogBytes)
	}
	if c.Retention < time.Minute {
		return fmt.Errorf("--retention %v: want at least 1m", c.Retention)
	}
	abs, err := filepath.Abs(c.Dir)
	if err != nil {
		return fmt.Errorf("--dir %q: %v", c.Dir, err)
	}
	c.Dir = abs
	return nil
}

// ReadConfigFile reads "name value" lines (flag names without dashes, '#'
// comments) and returns them as flag arguments, so a file and the command
// line share one parser; flags given on the command line win.
func ReadConfigFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var args []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want \"name value\"", path, n)
		}
		args = append(args, "--"+name+"="+strings.Trim(strings.TrimSpace(val), `"`))
	}
	return args, sc.Err()
}
