// Package commands owns the command table: one entry per Redis command with
// its arity, flags, key positions and handler, registered once per group
// file (strings.go, counters.go, sets.go, hashes.go, keys.go, expire.go,
// server.go, ...). Handlers parse arguments, call the keyspace and write the
// reply; errors become RESP replies in one place (errors.go). No storage or
// network code lives here.
package commands

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"concord/crdt"
	"concord/keyspace"
	"concord/resp"
)

// Cmd is one command's metadata and handler, like an entry of Redis's
// commands/*.json.
type Cmd struct {
	Name    string
	Arity   int // >0 exact, <0 at least -Arity
	Flags   []string
	First   int // first key position (0: none)
	Last    int // last key position (-1: last argument)
	Step    int
	Group   string
	Summary string
	Since   string
	ACL     []string
	Subs    []*Cmd
	Fn      func(c *Ctx)
	denyOOM bool // the "denyoom" flag: refused over maxmemory
	noAuth  bool // runs before AUTH (noAuthOK)
	inMulti bool // runs at once inside MULTI (multiOK)
	// elemHint: the argument after the key names a member or field
	// (Prefetch looks it up too)
	elemHint bool
	// valHint: it reads the value of its key (or of its field): Prefetch
	// brings a long value in too
	valHint bool
	upper   string // Name in upper case
	id      int    // index of its counters in Engine.byID (1..; 0 for subcommands)
}

// cmdStats are one engine's counters for one command (INFO commandstats).
type cmdStats struct {
	calls    atomic.Uint64
	usec     atomic.Uint64
	rejected atomic.Uint64
	failed   atomic.Uint64
	buckets  [len(LatencyBuckets)]atomic.Uint64
}

// LatencyBuckets are the upper bounds (seconds) of the command duration
// histogram.
var LatencyBuckets = [...]float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// CommandHistogram is one command's duration histogram.
type CommandHistogram struct {
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64 // cumulative
}

// CommandHistograms returns every called command's duration histogram.
func (e *Engine) CommandHistograms() map[string]CommandHistogram {
	out := map[string]CommandHistogram{}
	for c, st := range e.stats {
		n := st.calls.Load()
		if n == 0 {
			continue
		}
		h := CommandHistogram{Count: n, Sum: float64(st.usec.Load()) / 1e6, Buckets: map[float64]uint64{}}
		var cum uint64
		for i, b := range LatencyBuckets {
			cum += st.buckets[i].Load()
			h.Buckets[b] = cum
		}
		out[c.Name] = h
	}
	return out
}

func (cmd *Cmd) has(flag string) bool {
	for _, f := range cmd.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

// Ctx is what a handler gets: the arguments, the client and the keyspace.
type Ctx struct {
	Args [][]byte
	Conn *resp.Conn
	Cmd  *Cmd
	ks   *keyspace.Keyspace
	e    *Engine
	tx   *keyspace.Tx // set inside EXEC: the whole keyspace is held
	kbuf [1]keyspace.Key
	// start is the monotonic clock as the command started (0: not read):
	// its transaction's time, without another clock read
	start time.Duration
}

// Engine is the command table plus the server-wide state commands share
// (configuration, slow log, start time). It implements resp.Handler.
type Engine struct {
	cmds    map[string]*Cmd
	names   map[string]*Cmd // cmds by name in lower case and in upper case (Lookup)
	stats   map[*Cmd]*cmdStats
	byID    []*cmdStats // stats by Cmd.id
	ks      *keyspace.Keyspace
	Config  *Config
	Info    InfoSource
	Repl    Replication
	Peers   PeerAdmin
	Saver   Saver
	ACL     *ACL
	started time.Time
	slow    slowlog
	latency latencyMonitor
	// settings read on every command, cached from CONFIG
	latencyThreshold atomic.Int64
	slowlogThreshold atomic.Int64
	maxMemory        atomic.Int64 // maxmemory (0: none)
	usedMem          atomic.Int64 // heap in use, sampled by RefreshMemory
	srv              *resp.Server
	mu               sync.Mutex
	errs             map[string]uint64 // error counts by prefix
}

// InfoSource supplies INFO sections owned by other packages (persistence,
// replication); each returns "name:value" lines.
type InfoSource interface {
	Persistence() []string
	Replication() []string
	// ResetStats clears the statistics CONFIG RESETSTAT clears (the
	// replication lag histograms)
	ResetStats()
}

// Saver is what SAVE, BGSAVE, BGREWRITEAOF, LASTSAVE and SHUTDOWN need: Concord's
// save is a checkpoint (the key states changed since the last one are
// stored and the log they cover dropped), Redis's RDB save and AOF rewrite
// in one.
type Saver interface {
	Save() error
	// BackgroundSave starts a checkpoint unless one is running (false).
	BackgroundSave() bool
	Saving() bool
	// LastSave is the Unix time of the last successful checkpoint (of the
	// start when none ran yet).
	LastSave() int64
	// ChangesSinceSave counts the writes logged (local and merged from
	// peers) since the last checkpoint began.
	ChangesSinceSave() uint64
	// Shutdown stops the server in the background (after a last
	// checkpoint when save is set; without one the next start replays
	// the log: nothing acknowledged is lost either way).
	Shutdown(save bool)
}

// PeerAdmin is what CONCORD PEERS needs: the peers and which of them were
// declared removed (they no longer hold back tombstone GC).
type PeerAdmin interface {
	PeerNames() []string
	Removed(name string) bool
	SetRemoved(name string, removed bool) error
}

// Replication is what WAIT needs from peering.
type Replication interface {
	// WaitApplied blocks until n peers applied every delta up to outbox
	// sequence seq (or ctx ends) and returns how many have.
	WaitApplied(ctx context.Context, seq uint64, n int) int
	NumPeers() int
}

// groups are the command tables, one per file.
func groups() [][]*Cmd {
	return [][]*Cmd{stringCmds, counterCmds, setCmds, hashCmds, keyCmds, expireCmds, connCmds, serverCmds, multiCmds,
		{commandCmd, waitCmd, aclCmd, latencyCmd}}
}

// numCmds counts the commands of groups() (their ids are 1..numCmds).
var numCmds int

// flags derived from the tables once (every engine shares them).
func init() {
	for _, group := range groups() {
		for _, cmd := range group {
			cmd.denyOOM = slices.Contains(cmd.Flags, "denyoom")
			cmd.noAuth, cmd.inMulti = noAuthOK[cmd.Name], multiOK[cmd.Name]
			// a set or hash command of one key: its second argument is
			// (usually) a member or field, prefetched with the key
			cmd.elemHint = (cmd.Group == "set" || cmd.Group == "hash") && cmd.First == 1 && cmd.Last == 1
			cmd.valHint = valReaders[cmd.Name]
			cmd.upper = strings.ToUpper(cmd.Name)
			numCmds++
			cmd.id = numCmds
		}
	}
}

// New builds the command table over ks.
func New(ks *keyspace.Keyspace, cfg *Config) *Engine {
	e := &Engine{cmds: make(map[string]*Cmd), names: make(map[string]*Cmd), ks: ks, Config: cfg, started: time.Now(), errs: map[string]uint64{}}
	for _, group := range groups() {
		for _, cmd := range group {
			e.cmds[cmd.Name] = cmd
			e.names[cmd.Name] = cmd
			e.names[cmd.upper] = cmd
		}
	}
	e.ACL = newACL(e)
	cache := func(string) {
		e.latencyThreshold.Store(cfg.Int("latency-monitor-threshold"))
		e.slowlogThreshold.Store(cfg.Int("slowlog-log-slower-than"))
	}
	cache("")
	cfg.OnSet("latency-monitor-threshold", cache)
	cfg.OnSet("slowlog-log-slower-than", cache)
	e.stats = make(map[*Cmd]*cmdStats, len(e.cmds))
	e.byID = make([]*cmdStats, numCmds+1)
	for _, c := range e.cmds {
		e.stats[c] = &cmdStats{}
		e.byID[c.id] = e.stats[c]
	}
	limit := func(string) { e.maxMemory.Store(cfg.Int("maxmemory")) }
	limit("")
	cfg.OnSet("maxmemory", limit)
	return e
}

// RefreshMemory samples the heap in use for maxmemory (the server calls it
// a few times a second: reading it on every write would cost more than
// the write).
func (e *Engine) RefreshMemory() { e.usedMem.Store(int64(usedMemory())) }

// overMemory reports whether commands that may add data are refused.
func (e *Engine) overMemory() bool {
	lim := e.maxMemory.Load()
	return lim > 0 && e.usedMem.Load() > lim
}

// Attach gives the engine the server it runs on (CLIENT LIST, INFO clients).
func (e *Engine) Attach(s *resp.Server) { e.srv = s }

// Lookup returns a command by name (any case), without allocating.
func (e *Engine) Lookup(name []byte) *Cmd {
	if c, ok := e.names[string(name)]; ok { // all lower or all upper case
		return c
	}
	var buf [32]byte
	if len(name) > len(buf) {
		return e.cmds[strings.ToLower(string(name))]
	}
	for i, ch := range name {
		if ch >= 'A' && ch <= 'Z' {
			ch += 32
		}
		buf[i] = ch
	}
	return e.cmds[string(buf[:len(name)])]
}

func (e *Engine) sorted() []*Cmd {
	out := make([]*Cmd, 0, len(e.cmds))
	for _, c := range e.cmds {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// noAuthOK lists the commands a client may run before AUTH.
var noAuthOK = map[string]bool{"auth": true, "hello": true, "quit": true, "reset": true}

// multiOK lists the commands that run at once inside MULTI.
var multiOK = map[string]bool{"exec": true, "discard": true, "multi": true, "watch": true, "quit": true, "reset": true}

// valReaders read their key's string value, or their field's (Prefetch
// brings it in with the key).
var valReaders = map[string]bool{"get": true, "getex": true, "getdel": true, "getset": true, "getrange": true, "substr": true, "append": true, "hget": true}

func argErr(name string) string {
	return "ERR wrong number of arguments for '" + name + "' command"
}

func checkArity(cmd *Cmd, n int) bool {
	return (cmd.Arity > 0 && n == cmd.Arity) || (cmd.Arity < 0 && n >= -cmd.Arity)
}

// Serve dispatches one command.
func (e *Engine) Serve(conn *resp.Conn, args [][]byte) {
	cmd, _ := conn.LastLookup.(*Cmd) // a pipeline repeats a command
	if cmd == nil || string(args[0]) != cmd.Name && string(args[0]) != cmd.upper {
		cmd = e.Lookup(args[0])
		conn.LastLookup = cmd
	}
	if cmd == nil {
		e.countErr("ERR")
		conn.Err(unknownCommand(args))
		if conn.InMulti {
			conn.MultiErr = true
		}
		return
	}
	if conn.LastCmd.Load() != &cmd.Name { // (a pipeline repeats a command: no locked store)
		conn.LastCmd.Store(&cmd.Name)
	}
	if !conn.Authed() && !cmd.noAuth {
		e.reject(cmd, conn, "NOAUTH Authentication required.")
		return
	}
	if !checkArity(cmd, len(args)) {
		e.reject(cmd, conn, argErr(cmd.Name))
		if conn.InMulti {
			conn.MultiErr = true
		}
		return
	}
	if !cmd.noAuth {
		if msg := e.ACL.check(conn, cmd, args); msg != "" {
			e.reject(cmd, conn, msg)
			if conn.InMulti {
				conn.MultiErr = true
			}
			return
		}
	}
	if cmd.denyOOM && e.overMemory() {
		e.reject(cmd, conn, "OOM command not allowed when used memory > 'maxmemory'.")
		if conn.InMulti {
			conn.MultiErr = true
		}
		return
	}
	if conn.InMulti && !cmd.inMulti {
		conn.Queue = append(conn.Queue, cloneArgs(args))
		conn.Simple("QUEUED")
		return
	}
	c := ctxPool.Get().(*Ctx)
	*c = Ctx{Args: args, Conn: conn, Cmd: cmd, ks: e.ks, e: e}
	e.call(c)
	*c = Ctx{} // a handler never keeps its Ctx after returning
	ctxPool.Put(c)
}

var ctxPool = sync.Pool{New: func() any { return new(Ctx) }}

// Calls returns how many commands ran (INFO's total_commands_processed).
func (e *Engine) Calls() uint64 {
	var n uint64
	for _, st := range e.stats {
		n += st.calls.Load()
	}
	return n
}

// DataCalls returns how many commands ran on the data: all but the
// connection and server groups' (PING, INFO, CLIENT, CONFIG, SAVE...),
// so that a monitor's polls and a pool's health checks do not make an
// idle server look busy (it returns free memory only when idle).
func (e *Engine) DataCalls() uint64 {
	var n uint64
	for c, st := range e.stats {
		if c.Group != "connection" && c.Group != "server" {
			n += st.calls.Load()
		}
	}
	return n
}

func (e *Engine) call(c *Ctx) {
	start := c.Conn.CallClock // the last command's end when this one followed it at once
	if start == 0 {
		start = keyspace.Monotonic()
	}
	c.start = start
	c.Cmd.Fn(c)
	end := keyspace.Monotonic()
	c.Conn.CallClock = end
	d := end - start
	st := e.byID[c.Cmd.id]
	st.calls.Add(1)
	st.usec.Add(uint64(d.Microseconds()))
	for i, b := range LatencyBuckets {
		if d.Seconds() <= b {
			st.buckets[i].Add(1)
			break
		}
	}
	e.latency.Observe(e.latencyThreshold.Load(), "command", d)
	e.slow.record(e.slowlogThreshold.Load(), e.Config, c, d)
}

func (e *Engine) reject(cmd *Cmd, conn *resp.Conn, msg string) {
	e.stats[cmd].rejected.Add(1)
	e.countErr(strings.SplitN(msg, " ", 2)[0])
	conn.Err(msg)
}

func (e *Engine) countErr(prefix string) {
	e.mu.Lock()
	e.errs[prefix]++
	e.mu.Unlock()
}

// Closed forgets a client's state.
func (e *Engine) Closed(c *resp.Conn) {}

func cloneArgs(args [][]byte) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = append([]byte(nil), a...)
	}
	return out
}

func unknownCommand(args [][]byte) string {
	var b strings.Builder
	b.WriteString("ERR unknown command '")
	b.WriteString(truncate(string(args[0]), 128))
	b.WriteString("', with args beginning with: ")
	for _, a := range args[1:] {
		if b.Len() > 256 {
			break
		}
		b.WriteString("'" + truncate(string(a), 128) + "' ")
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// --- helpers for handlers ---

func (c *Ctx) key(i int) keyspace.Key { return keyspace.Key{DB: c.Conn.DB, Key: string(c.Args[i])} }

func (c *Ctx) keys(from, to, step int) []keyspace.Key {
	var out []keyspace.Key
	for i := from; i < to && i < len(c.Args); i += step {
		out = append(out, c.key(i))
	}
	return out
}

// run executes fn over keys (or inside the EXEC that holds everything) and
// writes err as the reply when fn fails.
func (c *Ctx) run(keys []keyspace.Key, fn func(tx *keyspace.Tx) error) bool {
	if c.ks.Quarantined(keys) {
		c.fail(ErrRepairing)
		return false
	}
	var err error
	if c.tx != nil {
		err = fn(c.tx)
	} else {
		var t keyspace.Ticket
		if c.start != 0 {
			t, err = c.ks.RunAt(c.start, keys, fn)
		} else {
			t, err = c.ks.Run(keys, fn)
		}
		if t != nil {
			c.Conn.Await(t)
			c.Conn.LastWrite = t
		}
	}
	if err != nil {
		c.fail(err)
		return false
	}
	return true
}

// run1 runs fn on the key at argument i.
func (c *Ctx) run1(i int, fn func(tx *keyspace.Tx, k keyspace.Key) error) bool {
	k := c.key(i)
	c.kbuf[0] = k
	return c.run(c.kbuf[:], func(tx *keyspace.Tx) error { return fn(tx, k) })
}

// all runs fn holding the whole keyspace.
func (c *Ctx) all(fn func(tx *keyspace.Tx) error) bool {
	if c.tx != nil {
		if err := fn(c.tx); err != nil {
			c.fail(err)
			return false
		}
		return true
	}
	t, err := c.ks.RunAll(fn)
	if t != nil {
		c.Conn.Await(t)
		c.Conn.LastWrite = t
	}
	if err != nil {
		c.fail(err)
		return false
	}
	return true
}

// get returns k's state if it has type t (nil if absent), counting hits.
func (c *Ctx) get(tx *keyspace.Tx, k keyspace.Key, t crdt.Type) (*crdt.State, error) {
	st := tx.Get(k)
	if st == nil {
		c.ks.Stats.KeyspaceMiss.Add(1)
		return nil, nil
	}
	if st.Type() != t {
		return nil, ErrWrongType
	}
	c.ks.Stats.KeyspaceHits.Add(1)
	return st, nil
}

// writable returns k's state for a write of type t: WRONGTYPE when it holds
// another type, an empty state when absent (tombstone metadata included).
func writable(tx *keyspace.Tx, k keyspace.Key, t crdt.Type) (*crdt.State, error) {
	if typ := tx.Type(k); typ != crdt.TypeNone && typ != t {
		return nil, ErrWrongType
	}
	return tx.State(k), nil
}

func (c *Ctx) arg(i int) string { return string(c.Args[i]) }

func (c *Ctx) argIs(i int, s string) bool { return strings.EqualFold(string(c.Args[i]), s) }

func (c *Ctx) bulks(items []string) {
	c.Conn.Array(len(items))
	for _, s := range items {
		c.Conn.BulkString(s)
	}
}

func watchOf(k keyspace.Key, ver uint64) resp.Watch {
	return resp.Watch{DB: k.DB, Key: k.Key, Ver: ver}
}

// CommandStats returns, per command name, calls and rejected+failed calls.
func (e *Engine) CommandStats() map[string][2]uint64 {
	out := make(map[string][2]uint64, len(e.stats))
	for c, st := range e.stats {
		if n, bad := st.calls.Load(), st.rejected.Load()+st.failed.Load(); n > 0 || bad > 0 {
			out[c.Name] = [2]uint64{n, bad}
		}
	}
	return out
}

// Prefetch brings the keys of a client's pipelined commands into the cache
// before they run (resp.Prefetcher): the first key of each command that
// has one in first position, in the client's database. Unauthenticated
// clients get nothing prefetched.
func (e *Engine) Prefetch(conn *resp.Conn, cmds []resp.Peeked) {
	if !conn.Authed() {
		return
	}
	var kbuf, ebuf [keyspace.MaxPrefetch][]byte
	keys, elems := kbuf[:0], ebuf[:0]
	var vals uint32
	last, _ := conn.LastLookup.(*Cmd)
	for _, p := range cmds {
		cmd := last
		if cmd == nil || string(p.Name) != cmd.Name && string(p.Name) != cmd.upper {
			cmd = e.names[string(p.Name)]
		}
		if cmd == nil || cmd.First != 1 || p.Arg == nil {
			continue
		}
		if cmd.valHint {
			vals |= 1 << len(keys)
		}
		keys = append(keys, p.Arg)
		var elem []byte
		if cmd.elemHint {
			elem = p.Arg2
		}
		elems = append(elems, elem)
		if len(keys) == cap(keys) {
			break
		}
	}
	if len(keys) > 1 {
		e.ks.Prefetch(conn.DB, keys, elems, vals)
	}
}
