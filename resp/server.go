// Package resp owns client connections: the RESP2/RESP3 framing with hard
// input limits enforced before any allocation (a guard that validates the
// bytes redcon's ReadNextCommand then cuts into commands), per-client state
// (database, auth, MULTI, name, protocol), the reply writer, and how
// clients are served: one epoll loop on one thread (Linux, plain TCP;
// Redis's shape) or a goroutine per connection. Commands are served by a
// Handler that the commands package provides, the way net/http serves a
// Handler.
package resp

import (
	"errors"
	"io"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/redcon"
)

var nullName = "NULL"

// Handler serves commands.
type Handler interface {
	// Serve runs one command; args[0] is its name. The arguments point
	// into the connection's read buffer and are valid only until Serve
	// returns: a handler that keeps one (MULTI's queue) copies it.
	Serve(c *Conn, args [][]byte)
	// Closed is called once when a connection ends.
	Closed(c *Conn)
}

// Prefetcher is a Handler that can make use of the commands a client has
// pipelined before they are served: the server passes the names and
// first two arguments of the commands one read brought in (the first already
// handed out, the others peeked at) when there are two or more, so that the
// handler can bring their keys into the cache together. Only a hint: the
// commands are served as usual afterwards. The slices are valid only
// during the call.
type Prefetcher interface {
	Prefetch(c *Conn, cmds []Peeked)
}

// Config configures a Server.
type Config struct {
	Limits Limits
	// NeedAuth reports whether new clients must authenticate.
	NeedAuth   func() bool
	MaxClients int
	Log        zerolog.Logger
	// IdleTimeout closes a client idle for longer (0: never; CONFIG timeout).
	IdleTimeout func() time.Duration
	// CommandDeadline closes a client that takes longer to send one
	// command (slowloris); 0: no deadline.
	CommandDeadline func() time.Duration
	// Protected refuses non-loopback clients (protected mode with no
	// password on a non-loopback bind).
	Protected func() bool
	// OutputLimit returns the hard limit, soft limit and soft duration on a
	// client's pending reply bytes (0: none); a client over it is closed.
	OutputLimit func() (hard, soft int64, softFor time.Duration)
	// PoisonArgs overwrites every command's arguments once it is served, so
	// that a handler keeping one without copying it fails its tests. The
	// environment variable CONCORD_POISON_ARGS=1 turns it on (make test
	// does).
	PoisonArgs bool
	// EventLoop serves plain-TCP clients from one epoll loop on one thread
	// (Linux; Redis's shape) instead of a goroutine per connection; TLS
	// clients always get a goroutine.
	EventLoop bool
	// NoPrefetch: the server does not pass a pipeline's commands to a
	// Prefetcher handler before serving them.
	NoPrefetch bool
	// Loops is how many event loops share the clients (each on a thread
	// of its own; clients assigned round-robin); default 1, as Redis.
	Loops int
	// CommitNow, when set, commits the writes submitted so far in the
	// caller's goroutine: the event loop calls it once per pass instead of
	// handing its writes to the commit loop and waiting for it.
	CommitNow func()
	// HoldCommits(true) as a pass starts, (false) once it committed: the
	// writes of a pass wait for its CommitNow instead of waking the commit
	// loop one by one.
	HoldCommits func(bool)
}

// DeniedMessage is Redis's reply to a non-loopback client in protected mode.
const DeniedMessage = "-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to Redis you may adopt one of the following solutions: 1) Just disable protected mode sending the command 'CONFIG SET protected-mode no' from the loopback interface by connecting to Redis from the same host the server is running, however MAKE SURE Redis is not publicly accessible from internet if you do so. Use CONFIG REWRITE to make this change permanent. 2) Alternatively you can just disable the protected mode by editing the Redis configuration file, and setting the protected mode option to 'no', and then restarting the server. 3) If you started the server manually just for testing, restart it with the '--protected-mode no' option. 4) Set up an authentication password for the default user. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.\r\n"

// IsLoopback reports whether a client address is on the loopback interface
// (or a unix socket).
func IsLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return !ok || tcp.IP.IsLoopback()
}

// Server accepts connections and serves them with a Handler.
type Server struct {
	cfg     Config
	handler Handler
	pre     Prefetcher // the handler's, if it is one

	mu       sync.Mutex
	clients  map[int64]*Conn
	lns      []net.Listener
	closed   bool
	wg       sync.WaitGroup
	nextID   atomic.Int64
	Accepted atomic.Uint64
	Rejected atomic.Uint64 // connections closed for a protocol error
	// OutputLimited counts clients closed for their output buffer limit.
	OutputLimited atomic.Uint64

	blocked  atomic.Int64 // clients in a blocking command (WAIT)
	loopOnce sync.Once
	loops    []*evLoop
	loopErr  error
	nextLoop atomic.Uint64
}

// overOutputLimit applies client-output-buffer-limit to a reply of n bytes.
func (s *Server) overOutputLimit(c *Conn, n int64) bool {
	hard, soft, softFor := s.cfg.OutputLimit()
	if hard > 0 && n > hard {
		return true
	}
	if soft > 0 && n > soft {
		if c.softSince.IsZero() {
			c.softSince = time.Now()
		}
		return time.Since(c.softSince) > softFor
	}
	c.softSince = time.Time{}
	return false
}

// NewServer returns a server; Serve starts it on a listener.
func NewServer(cfg Config, h Handler) *Server {
	cfg.Limits.Validate()
	if cfg.NeedAuth == nil {
		cfg.NeedAuth = func() bool { return false }
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 10000
	}
	zero := func() time.Duration { return 0 }
	if cfg.IdleTimeout == nil {
		cfg.IdleTimeout = zero
	}
	if cfg.CommandDeadline == nil {
		cfg.CommandDeadline = zero
	}
	if cfg.Protected == nil {
		cfg.Protected = func() bool { return false }
	}
	if cfg.OutputLimit == nil {
		cfg.OutputLimit = func() (int64, int64, time.Duration) { return 0, 0, 0 }
	}
	if os.Getenv("CONCORD_POISON_ARGS") == "1" {
		cfg.PoisonArgs = true
	}
	pre, _ := h.(Prefetcher)
	if cfg.NoPrefetch {
		pre = nil
	}
	return &Server{cfg: cfg, handler: h, pre: pre, clients: make(map[int64]*Conn)}
}

// Multiplexing names how plain-TCP clients are served, as INFO's
// multiplexing_api: "epoll" (the event loop) or "goroutines".
func (s *Server) Multiplexing() string {
	if s.cfg.EventLoop && hasLoop {
		return "epoll"
	}
	return "goroutines"
}

// Limits returns the input limits in force.
func (s *Server) Limits() *Limits { return &s.cfg.Limits }

// Serve accepts connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed { // Close ran before this listener was registered
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		s.Accepted.Add(1)
		s.wg.Add(1)
		if tc, ok := nc.(*net.TCPConn); ok && s.cfg.EventLoop && hasLoop {
			s.loopOnce.Do(s.startLoops)
			if s.loopErr == nil && len(s.loops) > 0 { // none once Close ran
				l := s.loops[(s.nextLoop.Add(1)-1)%uint64(len(s.loops))]
				if c := s.admit(nc); c != nil && !l.add(c, tc) {
					s.drop(c)
				}
				continue
			}
		}
		go s.serveConn(nc)
	}
}

// startLoops starts the event loops (Config.Loops).
func (s *Server) startLoops() {
	for i := 0; i < max(1, s.cfg.Loops); i++ {
		l, err := s.startLoop()
		if err != nil {
			s.loopErr = err
			s.cfg.Log.Error().Err(err).Msg("event loop unavailable: serving clients with a goroutine each")
			for _, l := range s.loops {
				l.stop()
			}
			s.loops = nil
			return
		}
		s.loops = append(s.loops, l)
	}
}

// admit registers an accepted client, or refuses it (protected mode, max
// clients) and returns nil; it owns the WaitGroup count of a refused one.
func (s *Server) admit(nc net.Conn) *Conn {
	c := &Conn{ID: s.nextID.Add(1), srv: s, nc: nc, Created: time.Now(), Proto: 2}
	c.w = redcon.NewWriter(&c.out)
	c.LastCmd.Store(&nullName)
	c.lastActive.Store(time.Now().UnixNano())
	c.authed.Store(!s.cfg.NeedAuth())
	if s.cfg.Protected() && !IsLoopback(nc.RemoteAddr()) {
		nc.Write([]byte(DeniedMessage))
		nc.Close()
		s.wg.Done()
		return nil
	}
	s.mu.Lock()
	if len(s.clients) >= s.cfg.MaxClients || s.closed {
		s.mu.Unlock()
		nc.Write([]byte("-ERR max number of clients reached\r\n"))
		nc.Close()
		s.wg.Done()
		return nil
	}
	s.clients[c.ID] = c
	s.mu.Unlock()
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return c
}

// drop ends an admitted client that the event loop could not take.
func (s *Server) drop(c *Conn) {
	s.mu.Lock()
	delete(s.clients, c.ID)
	s.mu.Unlock()
	c.nc.Close()
	s.handler.Closed(c)
	s.wg.Done()
}

func (s *Server) serveConn(nc net.Conn) {
	c := s.admit(nc)
	if c == nil {
		return
	}
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c.ID)
		s.mu.Unlock()
		nc.Close()
		s.handler.Closed(c)
	}()
	g := newGuard(nc, &s.cfg.Limits, c.Authed)
	g.deadline = func(midCommand bool, started time.Time) {
		var dl time.Time
		if d := s.cfg.CommandDeadline(); midCommand && d > 0 {
			dl = started.Add(d)
		} else if d := s.cfg.IdleTimeout(); !midCommand && d > 0 {
			dl = time.Now().Add(d)
		}
		if !c.killed.Load() {
			nc.SetReadDeadline(dl)
		}
	}
	for {
		args, err := g.next(true)
		if err != nil {
			var pe *ProtocolError
			if errors.As(err, &pe) {
				s.Rejected.Add(1)
				c.w.WriteError("ERR " + pe.Error())
				c.flush()
			} else if !errors.Is(err, io.EOF) && !c.killed.Load() {
				s.cfg.Log.Debug().Err(err).Int64("client", c.ID).Msg("read failed")
			}
			return
		}
		c.lastActive.Store(time.Now().UnixNano())
		// serve every complete command buffered, then send their replies
		// together (a protocol error behind them is reported on the next
		// round, after these replies)
		c.CallClock = 0
		for read := true; args != nil; args, _ = g.next(false) { // (never reading: the commands follow one another)
			s.prefetchAhead(c, g, args, read)
			read = false
			if s.serveOne(c, args) {
				break
			}
		}
		if c.pending != nil {
			err := c.pending.Wait()
			c.pending = nil
			if err != nil {
				// never acknowledge what is not durable: drop the replies
				s.cfg.Log.Error().Err(err).Int64("client", c.ID).Msg("commit failed; closing client")
				return
			}
		}
		if c.killed.Load() {
			return // killed (CLIENT KILL, shutdown): nothing more is sent
		}
		c.w.Flush()
		if s.overOutputLimit(c, int64(len(c.out.b))) {
			s.OutputLimited.Add(1)
			s.cfg.Log.Warn().Int64("client", c.ID).Str("addr", c.RemoteAddr()).Int("bytes", len(c.out.b)).Msg("client closed for overcoming of output buffer limits")
			return
		}
		if err := c.flush(); err != nil || c.closeAfter || c.killed.Load() {
			return
		}
	}
}

// serveOne runs one command and applies CLIENT REPLY; it reports whether
// the connection is to close after the replies so far.
func (s *Server) serveOne(c *Conn, args [][]byte) bool {
	c.w.Flush() // into c.out: its length marks where this reply starts
	mark := len(c.out.b)
	s.handler.Serve(c, args)
	if s.cfg.PoisonArgs {
		poison(args)
	}
	if c.ReplyMode == ReplyOff || c.ReplyMode == ReplySkip {
		c.w.Flush()
		c.out.b = c.out.b[:mark]
		if c.ReplyMode == ReplySkip {
			c.ReplyMode = ReplyOn
		}
	}
	if c.skipNext {
		c.skipNext = false
		c.ReplyMode = ReplySkip
	}
	return c.closeAfter || c.killed.Load()
}

// poison overwrites served arguments (see Config.PoisonArgs).
func poison(args [][]byte) {
	for _, a := range args {
		for i := range a {
			a[i] = '#'
		}
	}
}

// Clients returns the connected clients ordered by ID.
func (s *Server) Clients() []*Conn {
	s.mu.Lock()
	out := make([]*Conn, 0, len(s.clients))
	for _, c := range s.clients {
		out = append(out, c)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// BlockedClients returns how many clients wait in a blocking command
// (INFO's blocked_clients).
func (s *Server) BlockedClients() int64 { return s.blocked.Load() }

// NumClients returns the number of connected clients.
func (s *Server) NumClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// Kill closes a client connection.
func (s *Server) Kill(c *Conn) {
	c.killed.Store(true)
	c.cancelBlock()
	if c.g != nil {
		c.loop.kill(c)
		return
	}
	c.nc.SetReadDeadline(time.Now())
}

// Close stops accepting, closes every connection and waits for them.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for _, ln := range s.lns {
		ln.Close()
	}
	for _, c := range s.clients {
		c.cancelBlock()
		if c.g == nil {
			c.killed.Store(true)
			c.nc.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()
	s.loopOnce.Do(func() {}) // no loop starts after this
	for _, l := range s.loops {
		l.stop()
	}
	s.wg.Wait()
}

// maxPeek is how many commands of a pipeline prefetch looks at (as many
// as keyspace.MaxPrefetch looks up; resp does not import keyspace).
const maxPeek = 16

// prefetch passes the command just read (args) and those buffered behind
// it to the handler's Prefetch, when a pipeline brought two or more.
// prefetchAhead prefetches before args is served: after a read, and again
// once the commands a prefetch covered were served (a 16 KiB read brings
// hundreds of a deep pipeline's commands, a prefetch covers maxPeek: at
// -P 1000 the key lookups' cache misses were 30% of SET's profile).
func (s *Server) prefetchAhead(c *Conn, g *guard, args [][]byte, read bool) {
	switch {
	case s.pre == nil:
	case read || c.ahead <= 0:
		s.prefetch(c, g, args)
	default:
		c.ahead--
	}
}

func (s *Server) prefetch(c *Conn, g *guard, args [][]byte) {
	p := Peeked{Name: args[0]}
	if len(args) > 1 {
		p.Arg = args[1]
	}
	if len(args) > 2 {
		p.Arg2 = args[2]
	}
	cmds := append(c.peeked[:0], p)
	if cmds = g.peek(cmds); len(cmds) > 1 {
		s.pre.Prefetch(c, cmds)
	}
	c.ahead = len(cmds) - 1
	clear(cmds) // (no references into the buffer kept)
}
