package resp

import (
	"context"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"
)

// Ticket is a pending durable commit; replies are sent only after it.
type Ticket interface{ Wait() error }

// Reply modes of CLIENT REPLY.
const (
	ReplyOn = iota
	ReplyOff
	ReplySkip
)

// Watch is one WATCHed key and the version it had.
type Watch struct {
	DB  int
	Key string
	Ver uint64
}

// Conn is one client connection and its state.
type Conn struct {
	ID      int64
	srv     *Server
	nc      net.Conn
	w       *redcon.Writer // writes into out; flush sends out to the socket
	out     outBuf
	Created time.Time

	// peeked holds the commands one read brought in, for Prefetcher;
	// ahead counts those after the one being served not yet served
	peeked [maxPeek]Peeked
	ahead  int

	Proto   int // 2 or 3
	DB      int
	Name    string
	LibName string
	LibVer  string
	User    string
	authed  atomic.Bool

	InMulti  bool
	Queue    [][][]byte
	MultiErr bool
	Watches  []Watch

	ReplyMode int
	skipNext  bool

	// LastWrite is the ticket of this client's latest write (for WAIT).
	LastWrite Ticket

	LastCmd atomic.Pointer[string] // the last command's name (points into the command table)
	// LastLookup: the handler's own record of the command it found for
	// this connection's last command name (the connection's goroutine or
	// loop only)
	LastLookup any
	// CallClock: when the handler's last command for this connection
	// ended (its own monotonic reading), while the next command follows it
	// at once (pipelined, already read): the next one's start, one clock
	// read fewer. The server sets it to 0 whenever that is not so.
	CallClock  time.Duration
	lastActive atomic.Int64
	pending    Ticket
	closeAfter bool
	softSince  time.Time // when the output first exceeded the soft limit
	killed     atomic.Bool

	// under the event loop (g != nil): the socket, the reader, how much of
	// out is written, and the state of a blocking command
	fd          int
	loop        *evLoop
	rd          *fdReader // the guard's source
	g           *guard
	outOff      int
	inPass      bool
	blocked     bool
	blockFn     func()
	dropReplies bool
	blockMu     sync.Mutex
	blockCancel context.CancelFunc // a blocking command's wait (Kill ends it)
}

// Block runs fn, the waiting part of a command (WAIT), without holding up
// other clients: under the event loop fn runs in a goroutine of its own
// once the replies before it are sent, and this client's next commands
// wait for it; with a goroutine per connection it runs here. fn writes the
// command's reply; its ctx ends when the client is killed or the server
// closes, so a wait never outlives its client.
func (c *Conn) Block(fn func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	c.blockMu.Lock()
	c.blockCancel = cancel
	c.blockMu.Unlock()
	if c.killed.Load() {
		cancel()
	}
	run := func() {
		c.srv.blocked.Add(1)
		fn(ctx)
		c.srv.blocked.Add(-1)
		c.cancelBlock()
	}
	if c.g == nil {
		run()
		return
	}
	c.blockFn = run
}

// cancelBlock ends the wait of a blocking command, if one runs.
func (c *Conn) cancelBlock() {
	c.blockMu.Lock()
	if c.blockCancel != nil {
		c.blockCancel()
		c.blockCancel = nil
	}
	c.blockMu.Unlock()
}

// Authed reports whether the client has authenticated (or needs not).
func (c *Conn) Authed() bool { return c.authed.Load() }

// SetAuthed marks the client authenticated as user.
func (c *Conn) SetAuthed(ok bool, user string) { c.authed.Store(ok); c.User = user }

// RemoteAddr returns the client's address.
func (c *Conn) RemoteAddr() string { return c.nc.RemoteAddr().String() }

// LocalAddr returns the server-side address.
func (c *Conn) LocalAddr() string { return c.nc.LocalAddr().String() }

// Server returns the server the connection belongs to.
func (c *Conn) Server() *Server { return c.srv }

// Await makes the replies written so far wait for t before they are sent.
func (c *Conn) Await(t Ticket) {
	if t != nil {
		c.pending = t
	}
}

// CloseAfterReply closes the connection once the current replies are sent.
func (c *Conn) CloseAfterReply() { c.closeAfter = true }

// SkipNextReply drops the reply of the next command (CLIENT REPLY SKIP).
func (c *Conn) SkipNextReply() { c.skipNext = true }

// Idle returns the time since the last command.
func (c *Conn) Idle() time.Duration {
	return time.Since(time.Unix(0, c.lastActive.Load()))
}

// --- reply writing (RESP2 and RESP3) ---

// Simple writes a simple string (+OK).
func (c *Conn) Simple(s string) { c.w.WriteString(s) }

// OK writes +OK.
func (c *Conn) OK() { c.w.WriteString("OK") }

// Err writes an error; msg starts with its code (ERR, WRONGTYPE, ...).
func (c *Conn) Err(msg string) {
	msg = strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)
	c.w.WriteRaw([]byte("-" + msg + "\r\n"))
}

// Int writes an integer.
func (c *Conn) Int(n int64) { c.w.WriteInt64(n) }

// Bulk writes a bulk string. One of bigReply bytes or more goes straight
// into the output, once what was written before it is there: through
// redcon's buffer it was copied twice (a GET of a 1 MB value).
func (c *Conn) Bulk(b []byte) {
	if len(b) < bigReply {
		c.w.WriteBulk(b)
		return
	}
	c.w.Flush()
	o := slices.Grow(c.out.b, len(b)+24)
	o = strconv.AppendInt(append(o, '$'), int64(len(b)), 10)
	o = append(append(o, '\r', '\n'), b...)
	c.out.b = append(o, '\r', '\n')
}

// bigReply is the shortest value Bulk writes into the output itself.
const bigReply = 16 << 10

// BulkString writes a bulk string.
func (c *Conn) BulkString(s string) { c.w.WriteBulkString(s) }

// Null writes a null bulk (RESP2 $-1, RESP3 _).
func (c *Conn) Null() {
	if c.Proto == 3 {
		c.w.WriteRaw([]byte("_\r\n"))
		return
	}
	c.w.WriteNull()
}

// NullArray writes a null array (RESP2 *-1, RESP3 _).
func (c *Conn) NullArray() {
	if c.Proto == 3 {
		c.w.WriteRaw([]byte("_\r\n"))
		return
	}
	c.w.WriteRaw([]byte("*-1\r\n"))
}

// Array starts an array of n elements.
func (c *Conn) Array(n int) { c.w.WriteArray(n) }

// Map starts a map of n pairs (a flat array of 2n under RESP2).
func (c *Conn) Map(n int) {
	if c.Proto == 3 {
		c.w.WriteRaw([]byte("%" + strconv.Itoa(n) + "\r\n"))
		return
	}
	c.w.WriteArray(2 * n)
}

// Set starts a set of n elements (an array under RESP2).
func (c *Conn) Set(n int) {
	if c.Proto == 3 {
		c.w.WriteRaw([]byte("~" + strconv.Itoa(n) + "\r\n"))
		return
	}
	c.w.WriteArray(n)
}

// Double writes a float (a bulk string under RESP2), formatted like Redis.
func (c *Conn) Double(f float64) {
	if c.Proto == 3 {
		c.w.WriteRaw([]byte("," + FormatDouble(f) + "\r\n"))
		return
	}
	c.w.WriteBulkString(FormatDouble(f))
}

// Raw writes bytes as they are.
func (c *Conn) Raw(b []byte) { c.w.WriteRaw(b) }

// FormatDouble formats f the way Redis replies with doubles (%.17g).
func FormatDouble(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return strconv.FormatFloat(f, 'g', 17, 64)
}

// outBuf collects a batch's replies (redcon's Writer flushes into it), so
// the server knows their length without copying them.
type outBuf struct{ b []byte }

func (o *outBuf) Write(p []byte) (int, error) {
	o.b = append(o.b, p...)
	return len(p), nil
}

// flush sends the collected replies to the client.
func (c *Conn) flush() error {
	c.w.Flush()
	if len(c.out.b) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.out.b)
	if cap(c.out.b) > 1<<20 { // do not keep a big reply's buffer for good
		c.out.b = nil
	} else {
		c.out.b = c.out.b[:0]
	}
	return err
}
