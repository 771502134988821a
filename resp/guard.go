package resp

import (
	"io"
	"strconv"
	"time"

	"github.com/tidwall/redcon"
)

// Limits bound what a client may send. Zero fields take Redis's defaults in
// Validate.
type Limits struct {
	MaxBulkLen      int64 // proto-max-bulk-len (512 MB)
	MaxMultibulkLen int64 // arguments per command (1M)
	MaxInlineLen    int   // inline request / header line (64 KB)
	MaxQueryBuffer  int64 // bytes of one command (1 GB, client-query-buffer-limit)
	// Before AUTH, when a password is required (Redis's fixed values).
	UnauthMultibulkLen int64 // 10
	UnauthBulkLen      int64 // 16384
}

// Validate fills defaults.
func (l *Limits) Validate() {
	if l.MaxBulkLen <= 0 {
		l.MaxBulkLen = 512 << 20
	}
	if l.MaxMultibulkLen <= 0 {
		l.MaxMultibulkLen = 1 << 20
	}
	if l.MaxInlineLen <= 0 {
		l.MaxInlineLen = 64 << 10
	}
	if l.MaxQueryBuffer <= 0 {
		l.MaxQueryBuffer = 1 << 30
	}
	if l.UnauthMultibulkLen <= 0 {
		l.UnauthMultibulkLen = 10
	}
	if l.UnauthBulkLen <= 0 {
		l.UnauthBulkLen = 16384
	}
}

// ProtocolError is a request that violates the protocol or a limit; the
// connection is answered "-ERR Protocol error: <msg>" and closed.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "Protocol error: " + e.Msg }

type gstate uint8

const (
	gStart gstate = iota
	gMultibulkLine
	gBulkHeader
	gBulkBody
	gInline
)

// guard sits between the socket and the server: it parses the RESP framing
// itself, checks every length against the limits before anything is
// buffered for it, turns inline commands into RESP, drops empty commands,
// and keeps only bytes it has validated. redcon's ReadNextCommand then cuts
// the complete commands out of those bytes without copying them: it never
// sees a length it could overflow or loop on.
type guard struct {
	src    io.Reader
	lim    *Limits
	authed func() bool

	in       []byte // raw bytes read, not yet consumed
	inStart  int
	out      []byte // validated bytes; out[pos:] not yet handed out
	pos      int
	ready    int      // complete commands in out[pos:]
	argv     [][]byte // the last command's arguments (reused)
	st       gstate
	line     []byte // header or inline line being collected
	args     int64  // bulks left in the current multibulk
	bulkLeft int64  // body bytes (incl. CRLF) left
	cmdBytes int64
	err      error
	oneCmd   bool // a complete command was produced since the last read
	// deadline, when set, is told before each socket read whether a command
	// is partly received (and since when) so it can set the read deadline.
	deadline func(midCommand bool, started time.Time)
	started  time.Time
}

func newGuard(src io.Reader, lim *Limits, authed func() bool) *guard {
	return &guard{src: src, lim: lim, authed: authed, in: make([]byte, 0, 16<<10)}
}

// errFraming is a command the guard validated that redcon would not cut out
// the same way: a bug, never a client's fault; the client is closed.
var errFraming = &ProtocolError{Msg: "internal framing mismatch"}

// next returns the arguments of the next complete command. With wait it
// reads the socket until there is one; without, it returns nil when no
// complete command is buffered (it still validates bytes already read, so
// the commands pipelined behind an AUTH meet the limits that follow it).
// The arguments point into the guard's buffer: they are valid until the
// next call, and a handler that keeps one must copy it.
func (g *guard) next(wait bool) ([][]byte, error) {
	for g.ready == 0 {
		if g.err != nil {
			return nil, g.err
		}
		g.compact()
		if g.inStart >= len(g.in) {
			if !wait {
				return nil, nil
			}
			fill := g.fill
			if g.st == gBulkBody && g.bulkLeft >= bigBody {
				fill = g.fillBody
			}
			if err := fill(); err != nil {
				g.err = err
				continue
			}
		}
		if g.st == gStart && g.pos == len(g.out) {
			if args, ok := g.whole(); ok {
				return args, nil
			}
		}
		g.oneCmd = false
		g.process()
	}
	complete, args, _, left, err := redcon.ReadNextCommand(g.out[g.pos:], g.argv[:0])
	if err != nil || !complete || len(args) == 0 {
		g.ready, g.err = 0, errFraming
		return nil, g.err
	}
	g.argv = args
	g.pos = len(g.out) - len(left)
	g.ready--
	return args, nil
}

// compact drops the bytes already handed out, keeping a partial command.
func (g *guard) compact() {
	if g.pos == 0 {
		return
	}
	if g.pos == len(g.out) && cap(g.out) > 1<<20 { // do not keep a big command's buffer
		g.out = nil
		clear(g.argv) // (the last command's arguments point into it)
		g.argv = g.argv[:0]
	} else {
		g.out = g.out[:copy(g.out, g.out[g.pos:])]
	}
	g.pos = 0
}

// whole returns the multibulk command at g.in[g.inStart:] in place when
// all of it is there and every line ends in CRLF, after the checks process
// makes; anything else (a command split across reads, an inline command,
// bare-LF lines, input to refuse) is left to process, which produces the
// same commands (FuzzGuard compares the two) and the errors. Its arguments
// point into g.in, valid until the next call of next.
func (g *guard) whole() ([][]byte, bool) {
	b := g.in[g.inStart:]
	if len(b) < 4 || b[0] != '*' {
		return nil, false
	}
	line, i, ok := crlfLine(b, 1, g.lim.MaxInlineLen)
	if !ok {
		return nil, false
	}
	n, ok := parseLen(line)
	if !ok || n <= 0 || n > g.lim.MaxMultibulkLen || (n > g.lim.UnauthMultibulkLen && !g.authed()) {
		return nil, false
	}
	total := int64(len(line) + 3)
	args := g.argv[:0]
	for a := int64(0); a < n; a++ {
		if i >= len(b) || b[i] != '$' {
			return nil, false
		}
		line, j, ok := crlfLine(b, i, g.lim.MaxInlineLen)
		if !ok {
			return nil, false
		}
		m, ok := parseLen(line[1:])
		if !ok || m < 0 || m > g.lim.MaxBulkLen || (m > g.lim.UnauthBulkLen && !g.authed()) {
			return nil, false
		}
		if total += int64(len(line)) + 2 + m + 2; total > g.lim.MaxQueryBuffer {
			return nil, false
		}
		end := int64(j) + m
		if end+2 > int64(len(b)) || b[end] != '\r' || b[end+1] != '\n' {
			return nil, false
		}
		args = append(args, b[j:end:end])
		i = int(end + 2)
	}
	g.argv = args
	g.inStart += i
	g.started = time.Time{}
	return args, true
}

// Peeked is a command seen ahead in a connection's buffer before it is
// served: its name and first two arguments (Arg2 nil if none), pointing
// into the buffer (valid until the next command is read). Prefetcher gets
// them.
type Peeked struct{ Name, Arg, Arg2 []byte }

// peek appends to dst (up to its capacity) the name and first arguments of
// each whole multibulk command of two or more arguments buffered after the
// last one handed out, without consuming or checking them: only a hint of
// what comes next (a later command may be refused or parsed otherwise).
// It stops at anything else.
func (g *guard) peek(dst []Peeked) []Peeked {
	if g.st != gStart || g.pos != len(g.out) || g.ready != 0 {
		return dst
	}
	b := g.in[g.inStart:]
	i := 0
	for len(dst) < cap(dst) && i < len(b) && b[i] == '*' {
		line, j, ok := crlfLine(b, i+1, 24)
		if !ok {
			break
		}
		n, ok := parseLen(line)
		if !ok || n < 2 {
			break
		}
		var p Peeked
		for a := int64(0); a < n; a++ {
			if j >= len(b) || b[j] != '$' {
				return dst
			}
			line, k, ok := crlfLine(b, j, 24)
			if !ok {
				return dst
			}
			m, ok := parseLen(line[1:])
			if !ok || m < 0 || m > int64(len(b)-k-2) {
				return dst
			}
			switch a {
			case 0:
				p.Name = b[k : k+int(m) : k+int(m)]
			case 1:
				p.Arg = b[k : k+int(m) : k+int(m)]
			case 2:
				p.Arg2 = b[k : k+int(m) : k+int(m)]
			}
			j = k + int(m) + 2
		}
		dst = append(dst, p)
		i = j
	}
	return dst
}

// crlfLine returns the line of b starting at from without its CRLF, and
// the index after it; false when b has no complete line there ending in
// CRLF within max bytes (counted with the CRLF, as process counts a line).
func crlfLine(b []byte, from, max int) ([]byte, int, bool) {
	for k := from; k < len(b) && k-from < max; k++ {
		if b[k] == '\n' {
			if k == from || b[k-1] != '\r' {
				return nil, 0, false
			}
			return b[from : k-1], k + 1, true
		}
	}
	return nil, 0, false
}

func (g *guard) fill() error {
	g.tellDeadline()
	buf := g.in[:cap(g.in)]
	n, err := g.src.Read(buf)
	g.in = buf[:n]
	g.inStart = 0
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// bigBody is the rest of a bulk body from which the guard reads it
// straight into its output (fillBody).
const bigBody = 32 << 10

// fillBody reads the rest of a big bulk body straight into g.out, as
// Redis reads a big argument into the buffer it keeps: no copy through
// g.in, and each read as large as g.out's room (growOut: the buffer
// doubles, so memory still follows what was sent, not what was
// announced) rather than g.in's 16 KiB — a 100 KB SET took seven reads.
func (g *guard) fillBody() error {
	g.tellDeadline()
	if cap(g.out)-len(g.out) < bigBody {
		g.growOut(bigBody)
	}
	room := min(int64(cap(g.out)-len(g.out)), g.bulkLeft)
	buf := g.out[len(g.out) : len(g.out)+int(room)]
	n, err := g.src.Read(buf)
	if n <= 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	if !g.bodyEnds(buf[:n]) {
		return nil // (g.err set)
	}
	g.out = g.out[:len(g.out)+n]
	g.tookBody(int64(n))
	return nil
}

// bodyEnds checks that chunk, the next bytes of a bulk body, end it with
// CRLF where the body ends.
func (g *guard) bodyEnds(chunk []byte) bool {
	n := int64(len(chunk))
	for j := max(int64(0), g.bulkLeft-2); j < n; j++ {
		want := byte('\n')
		if g.bulkLeft-j == 2 {
			want = '\r'
		}
		if chunk[j] != want {
			g.fail("invalid bulk length")
			return false
		}
	}
	return true
}

// tookBody accounts n more bytes of the bulk body taken into g.out.
func (g *guard) tookBody(n int64) {
	g.bulkLeft -= n
	if g.bulkLeft == 0 {
		g.args--
		if g.args == 0 {
			g.st = gStart
			g.oneCmd = true
			g.ready++
		} else {
			g.st = gBulkHeader
		}
	}
}

// tellDeadline tells the deadline, before a socket read, whether a
// command is partly received and since when.
func (g *guard) tellDeadline() {
	if g.deadline != nil {
		mid := g.st != gStart || len(g.line) > 0 || len(g.out) > g.pos
		if mid && g.started.IsZero() {
			// the clock of a partly received command starts when the
			// read that began it ends (one clock read per such command,
			// not one per command)
			g.started = time.Now()
		}
		g.deadline(mid, g.started)
	}
}

func (g *guard) fail(msg string) {
	g.err = &ProtocolError{Msg: msg}
	g.in = g.in[:0]
	g.inStart = 0
}

// growOut makes room in g.out for n more bytes of a bulk body: doubled,
// or the rest of the bulk once that is at most twice the buffer. append's
// growth (1.25× for big slices) allocated 5× a 100 MB argument on the
// way; this allocates about twice it, and never more than three times
// what the client has sent (a length announced is not memory granted).
func (g *guard) growOut(n int) {
	room := max(n, cap(g.out))
	if g.bulkLeft <= 2*int64(cap(g.out)) {
		room = max(n, int(g.bulkLeft))
	}
	want := len(g.out) + room
	out := make([]byte, len(g.out), want)
	copy(out, g.out)
	g.out = out
}

// process consumes raw input into validated output.
func (g *guard) process() {
	for g.inStart < len(g.in) && g.err == nil {
		if g.st == gStart && (g.ready > 0 || g.oneCmd && !g.authed()) {
			return // (the next command may be whole: next tries that first)
		}
		b := g.in[g.inStart:]
		switch g.st {
		case gStart:
			g.cmdBytes = 0
			g.started = time.Time{} // set by fill if the command spans reads
			g.line = g.line[:0]
			if b[0] == '*' {
				g.st = gMultibulkLine
				g.inStart++
			} else {
				g.st = gInline
			}
		case gMultibulkLine, gBulkHeader, gInline:
			i := indexByte(b, '\n')
			take := b
			if i >= 0 {
				take = b[:i+1]
			}
			if len(g.line)+len(take) > g.lim.MaxInlineLen {
				switch g.st {
				case gInline:
					g.fail("too big inline request")
				case gMultibulkLine:
					g.fail("too big mbulk count string")
				default:
					g.fail("too big bulk count string")
				}
				return
			}
			g.line = append(g.line, take...)
			g.inStart += len(take)
			if i < 0 {
				continue
			}
			line := trimCRLF(g.line)
			switch g.st {
			case gInline:
				g.inline(line)
			case gMultibulkLine:
				g.multibulk(line)
			default:
				g.bulkHeader(line)
			}
			g.line = g.line[:0]
		case gBulkBody:
			n := int64(len(b))
			if n > g.bulkLeft {
				n = g.bulkLeft
			}
			chunk := b[:n]
			if !g.bodyEnds(chunk) { // (the body must end with CRLF)
				return
			}
			if len(g.out)+int(n) > cap(g.out) {
				g.growOut(int(n))
			}
			g.out = append(g.out, chunk...)
			g.inStart += int(n)
			g.tookBody(n)
		}
	}
}

func (g *guard) count(n int) bool {
	g.cmdBytes += int64(n)
	if g.cmdBytes > g.lim.MaxQueryBuffer {
		g.fail("query buffer limit exceeded")
		return false
	}
	return true
}

// parseLen reads a length line's number as strconv.ParseInt would (a sign,
// decimal digits) without allocating; more than 18 digits is refused (every
// limit is below 10^18).
func parseLen(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg, b = b[0] == '-', b[1:]
	}
	for len(b) > 1 && b[0] == '0' {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

func (g *guard) multibulk(line []byte) {
	n, ok := parseLen(line)
	if !ok || n > g.lim.MaxMultibulkLen {
		g.fail("invalid multibulk length")
		return
	}
	if !g.authed() && n > g.lim.UnauthMultibulkLen {
		g.fail("unauthenticated multibulk length")
		return
	}
	if n <= 0 { // Redis ignores empty multibulks
		g.st = gStart
		return
	}
	g.args = n
	g.st = gBulkHeader
	g.out = append(g.out, '*')
	g.out = append(g.out, line...)
	g.out = append(g.out, '\r', '\n')
	g.count(len(line) + 3)
}

func (g *guard) bulkHeader(line []byte) {
	if len(line) == 0 || line[0] != '$' {
		c := "\\n"
		if len(line) > 0 {
			c = string(line[0])
		}
		g.fail("expected '$', got '" + c + "'")
		return
	}
	n, ok := parseLen(line[1:])
	if !ok || n < 0 || n > g.lim.MaxBulkLen {
		g.fail("invalid bulk length")
		return
	}
	if !g.authed() && n > g.lim.UnauthBulkLen {
		g.fail("unauthenticated bulk length")
		return
	}
	if !g.count(len(line) + 2 + int(n) + 2) {
		return
	}
	g.out = append(g.out, line...)
	g.out = append(g.out, '\r', '\n')
	g.bulkLeft = n + 2
	g.st = gBulkBody
}

func (g *guard) inline(line []byte) {
	g.st = gStart
	args, ok := splitArgs(line)
	if !ok {
		g.fail("unbalanced quotes in request")
		return
	}
	if len(args) == 0 {
		return
	}
	if !g.authed() && int64(len(args)) > g.lim.UnauthMultibulkLen {
		g.fail("unauthenticated multibulk length")
		return
	}
	g.out = append(g.out, '*')
	g.out = strconv.AppendInt(g.out, int64(len(args)), 10)
	g.out = append(g.out, '\r', '\n')
	for _, a := range args {
		g.out = append(g.out, '$')
		g.out = strconv.AppendInt(g.out, int64(len(a)), 10)
		g.out = append(g.out, '\r', '\n')
		g.out = append(g.out, a...)
		g.out = append(g.out, '\r', '\n')
	}
	g.oneCmd = true
	g.ready++
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func trimCRLF(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// splitArgs splits an inline request like Redis's sdssplitargs.
func splitArgs(line []byte) ([][]byte, bool) {
	var args [][]byte
	i := 0
	for {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == '\n' || line[i] == '\r' || line[i] == '\v' || line[i] == '\f') {
			i++
		}
		if i >= len(line) {
			return args, true
		}
		var cur []byte
		inq, insq := false, false
		for done := false; !done; {
			if inq {
				if i >= len(line) {
					return nil, false
				}
				c := line[i]
				if c == '\\' && i+3 < len(line) && line[i+1] == 'x' && isHex(line[i+2]) && isHex(line[i+3]) {
					cur = append(cur, hexVal(line[i+2])<<4|hexVal(line[i+3]))
					i += 3
				} else if c == '\\' && i+1 < len(line) {
					i++
					switch line[i] {
					case 'n':
						cur = append(cur, '\n')
					case 'r':
						cur = append(cur, '\r')
					case 't':
						cur = append(cur, '\t')
					case 'b':
						cur = append(cur, '\b')
					case 'a':
						cur = append(cur, '\a')
					default:
						cur = append(cur, line[i])
					}
				} else if c == '"' {
					if i+1 < len(line) && line[i+1] != ' ' && line[i+1] != '\t' {
						return nil, false
					}
					done = true
				} else {
					cur = append(cur, c)
				}
			} else if insq {
				if i >= len(line) {
					return nil, false
				}
				c := line[i]
				if c == '\\' && i+1 < len(line) && line[i+1] == '\'' {
					i++
					cur = append(cur, '\'')
				} else if c == '\'' {
					if i+1 < len(line) && line[i+1] != ' ' && line[i+1] != '\t' {
						return nil, false
					}
					done = true
				} else {
					cur = append(cur, c)
				}
			} else {
				if i >= len(line) {
					break
				}
				switch c := line[i]; c {
				case ' ', '\n', '\r', '\t', 0:
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					cur = append(cur, c)
				}
			}
			if i < len(line) {
				i++
			}
		}
		if cur == nil {
			cur = []byte{}
		}
		args = append(args, cur)
	}
}
