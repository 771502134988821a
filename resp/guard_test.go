package resp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/redcon"
)

// testLoop: the tests' servers use the event loop unless
// CONCORD_TEST_IO=goroutines (make test runs both).
var testLoop = os.Getenv("CONCORD_TEST_IO") != "goroutines"

// echo is a handler that replies with its arguments joined by spaces.
type echo struct{}

func (echo) Serve(c *Conn, args [][]byte) { c.Bulk(bytes.Join(args, []byte(" "))) }
func (echo) Closed(c *Conn)               {}

func startServer(t *testing.T, lim Limits, needAuth bool) (*Server, string) {
	t.Helper()
	return serve(t, Config{Limits: lim, NeedAuth: func() bool { return needAuth }}, echo{})
}

// serve starts a server with h on a free port (under the event loop unless
// CONCORD_TEST_IO=goroutines), closed when the test ends.
func serve(t *testing.T, cfg Config, h Handler) (*Server, string) {
	t.Helper()
	cfg.EventLoop = testLoop
	s := NewServer(cfg, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Close)
	return s, ln.Addr().String()
}

// send writes raw bytes and returns everything the server answers until
// it closes the connection or goes quiet.
func send(t *testing.T, addr string, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(raw))
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestGuardRejectsBadInput(t *testing.T) {
	_, addr := startServer(t, Limits{}, false)
	cases := []struct{ name, in, want string }{
		{"redcon panic: max int64 bulk", "*1\r\n$9223372036854775807\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"huge multibulk", "*9223372036854775807\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"multibulk overflow", "*99999999999999999999999\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"negative bulk", "*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"bulk over 512MB", "*1\r\n$4294967296\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"not a dollar", "*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"},
		{"garbage length", "*1\r\n$abc\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"bad terminator", "*1\r\n$4\r\nPINGxx", "-ERR Protocol error: invalid bulk length\r\n"},
		{"unbalanced quotes", "SET \"a\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"},
		{"inline too long", strings.Repeat("a", 70000), "-ERR Protocol error: too big inline request\r\n"},
		{"mbulk line too long", "*" + strings.Repeat("1", 70000), "-ERR Protocol error: too big mbulk count string\r\n"},
		{"good before bad", "*1\r\n$4\r\nPING\r\n*1\r\n$-1\r\n", "$4\r\nPING\r\n-ERR Protocol error: invalid bulk length\r\n"},
		{"empty multibulk ignored", "*0\r\n*-1\r\n*1\r\n$1\r\nx\r\n", "$1\r\nx\r\n"},
		{"inline with quotes", "SET \"a b\" 'c\\'d' \"\\x41\\n\"\r\n", "$14\r\nSET a b c'd A\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := send(t, addr, tc.in); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGuardUnauthenticatedLimits(t *testing.T) {
	_, addr := startServer(t, Limits{}, true)
	if got := send(t, addr, "*11\r\n"); got != "-ERR Protocol error: unauthenticated multibulk length\r\n" {
		t.Fatalf("got %q", got)
	}
	if got := send(t, addr, "*1\r\n$16385\r\n"); got != "-ERR Protocol error: unauthenticated bulk length\r\n" {
		t.Fatalf("got %q", got)
	}
}

// A client that claims a 4 GiB bulk and streams it slowly is cut off at the
// header, before anything is buffered for it; a limit-sized claim streamed
// slowly is bounded by the configured limit.
func TestGuardClaimedHugeBulkStreamedSlowly(t *testing.T) {
	_, addr := startServer(t, Limits{MaxBulkLen: 1 << 20}, false)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("*1\r\n$4294967296\r\n"))
	chunk := bytes.Repeat([]byte("x"), 4096)
	for i := 0; i < 10; i++ {
		if _, err := c.Write(chunk); err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if line != "-ERR Protocol error: invalid bulk length\r\n" {
		t.Fatalf("got %q", line)
	}
}

func TestGuardBigValidBulkAndPipeline(t *testing.T) {
	_, addr := startServer(t, Limits{}, false)
	val := strings.Repeat("v", 3<<20)
	in := "*2\r\n$3\r\nSET\r\n$" + itoa(len(val)) + "\r\n" + val + "\r\n" + strings.Repeat("PING\r\n", 1000)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Write([]byte(in))
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr, _ := r.ReadString('\n')
	if hdr != "$"+itoa(len(val)+4)+"\r\n" {
		t.Fatalf("header %q", hdr)
	}
	body := make([]byte, len(val)+6)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if l, _ := r.ReadString('\n'); l != "$4\r\n" {
			t.Fatalf("reply %d: %q", i, l)
		}
		r.ReadString('\n')
	}
}

func TestManyConnectionsOpenedAndDropped(t *testing.T) {
	s, addr := startServer(t, Limits{}, false)
	n := 100000
	if testing.Short() {
		n = 5000
	}
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if i%2 == 0 {
			c.Write([]byte("*2\r\n$4\r\nECHO\r\n$"))
		}
		c.Close()
	}
	// every connection is gone and the server still answers
	deadline := time.Now().Add(10 * time.Second)
	for s.NumClients() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.NumClients(); n != 0 {
		t.Fatalf("%d clients left", n)
	}
	if got := send(t, addr, "PING\r\n"); got != "$4\r\nPING\r\n" {
		t.Fatalf("got %q", got)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// FuzzGuard feeds arbitrary bytes through the guard and redcon's reader:
// never a panic, and every command produced comes from validated framing.
func FuzzGuard(f *testing.F) {
	for _, s := range []string{"*1\r\n$4\r\nPING\r\n", "*1\r\n$9223372036854775807\r\n", "*9223372036854775807\r\n",
		"SET a \"b c\"\r\n", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "*-1\r\n", "$-1\r\n", "*1\r\n$-1\r\n", "\r\n\r\n", "'\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := Limits{MaxBulkLen: 1 << 16, MaxMultibulkLen: 1 << 10}
		lim.Validate()
		whole, werr := readAllCommands(newGuard(bytes.NewReader(b), &lim, func() bool { return true }))
		// the same bytes in pieces of 1..7 bytes give the same commands
		split, serr := readAllCommands(newGuard(&chunkReader{b: b, n: 1 + len(b)%7}, &lim, func() bool { return true }))
		if werr == errFraming || serr == errFraming {
			t.Fatalf("guard and redcon disagree on %q", b)
		}
		if strings.Join(whole, "|") != strings.Join(split, "|") || (werr == nil) != (serr == nil) {
			t.Fatalf("whole %q (%v), split %q (%v)", whole, werr, split, serr)
		}
	})
}

// readAllCommands returns every command the guard produces (each joined
// with spaces) and the error that ended them (nil at EOF).
func readAllCommands(g *guard) ([]string, error) {
	var cmds []string
	for {
		args, err := g.next(true)
		if err == io.EOF {
			return cmds, nil
		}
		if err != nil {
			return cmds, err
		}
		if len(args) == 0 {
			return cmds, errors.New("empty command")
		}
		cmds = append(cmds, string(bytes.Join(args, []byte(" "))))
		if len(cmds) > 1000 {
			return cmds, nil
		}
	}
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n, len(r.b))
	copy(p, r.b[:k])
	r.b = r.b[k:]
	return k, nil
}

func newWriterForBench(w io.Writer) *redcon.Writer { return redcon.NewWriter(w) }

// parseLen agrees with strconv.ParseInt wherever a length can pass a limit
// (magnitude below 10^18) and refuses everything else.
func TestParseLenMatchesParseInt(t *testing.T) {
	inputs := []string{"", "0", "5", "-1", "+7", "-", "+", "12a", " 1", "1 ", "007",
		"999999999999999999", "1000000000000000000", "9223372036854775807", "-9223372036854775808", "99999999999999999999", "-0000000000000000001", "+00000000000000000000000000042"}
	r := rand.New(rand.NewPCG(1, 2))
	const alphabet = "0123456789-+ x"
	for i := 0; i < 20000; i++ {
		b := make([]byte, r.IntN(21))
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(b))
	}
	for _, in := range inputs {
		got, ok := parseLen([]byte(in))
		want, err := strconv.ParseInt(in, 10, 64)
		switch {
		case ok && (err != nil || got != want):
			t.Fatalf("parseLen(%q) = %d, ParseInt: %d %v", in, got, want, err)
		case !ok && err == nil && want < 1e18 && want > -1e18:
			t.Fatalf("parseLen(%q) refused what ParseInt reads as %d", in, want)
		}
	}
}

// keeper keeps the argument of each command without copying it, and
// replies with what the previous command's argument reads now.
type keeper struct{ kept []byte }

func (k *keeper) Serve(c *Conn, args [][]byte) {
	c.BulkString(string(k.kept))
	k.kept = args[len(args)-1]
}
func (k *keeper) Closed(c *Conn) {}

// With PoisonArgs a handler that keeps an argument past Serve sees it
// overwritten: the trap that make test sets for every handler.
func TestPoisonArgsCatchesKeptArguments(t *testing.T) {
	for _, on := range []bool{false, true} {
		s := NewServer(Config{PoisonArgs: on, EventLoop: testLoop}, &keeper{})
		s.cfg.PoisonArgs = on // whatever the environment says
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(ln)
		got := send(t, ln.Addr().String(), "*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n")
		s.Close()
		// served in one batch: unpoisoned, the kept slice still reads abc
		want := "$0\r\n\r\n$3\r\nabc\r\n"
		if on {
			want = "$0\r\n\r\n$3\r\n###\r\n"
		}
		if got != want {
			t.Fatalf("poison %v: got %q, want %q", on, got, want)
		}
	}
}

// A whole multibulk command in the read buffer is parsed in place (whole);
// anything else is left to the byte-by-byte states, untouched. Both give
// the same commands (FuzzGuard compares a whole read with 1..7-byte pieces,
// which go the slow way).
func TestGuardWholeCommands(t *testing.T) {
	lim := Limits{MaxBulkLen: 64, MaxMultibulkLen: 8, MaxInlineLen: 16, UnauthMultibulkLen: 2, UnauthBulkLen: 8}
	lim.Validate()
	for _, c := range []struct {
		in      string
		whole   bool
		unauthd bool
	}{
		{"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nxxx\r\n", true, false},
		{"*1\r\n$0\r\n\r\n", true, false},
		{"*+1\r\n$01\r\nx\r\n", true, false}, // what parseLen takes, as process takes it
		{"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI", true, false},
		{"*2\r\n$3\r\nGET\r\n$1\r\nk", false, false},             // the rest is still to come
		{"*2\n$3\r\nGET\r\n$1\r\nk\r\n", false, false},           // a bare LF
		{"*2\r\n$3\r\nGET\r\n$1\r\nkX\n", false, false},          // a body without its CRLF
		{"*0\r\n", false, false},                                 // ignored by process
		{"*9\r\n", false, false},                                 // over MaxMultibulkLen
		{"*1\r\n$65\r\n", false, false},                          // over MaxBulkLen
		{"*1\r\n$-1\r\n", false, false},                          // a negative length
		{"*1\r\n$00000000000000001\r\nx\r\n", false, false},      // a line over MaxInlineLen
		{"*1\r\n:1\r\n", false, false},                           // not a bulk
		{"GET k\r\n", false, false},                              // inline
		{"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", false, true}, // unauthenticated limits
		{"*1\r\n$9\r\n123456789\r\n", false, true},
		{"*2\r\n$1\r\na\r\n$8\r\n12345678\r\n", true, true},
	} {
		g := newGuard(bytes.NewReader(nil), &lim, func() bool { return !c.unauthd })
		g.in = append(g.in[:0], c.in...)
		args, ok := g.whole()
		if ok != c.whole {
			t.Fatalf("%q: whole %v, want %v", c.in, ok, c.whole)
		}
		if !ok {
			if g.inStart != 0 || len(g.out) != 0 {
				t.Fatalf("%q: consumed though not whole", c.in)
			}
			continue
		}
		slow, _ := readAllCommands(newGuard(&chunkReader{b: []byte(c.in), n: 1}, &lim, func() bool { return !c.unauthd }))
		if len(slow) == 0 || string(bytes.Join(args, []byte(" "))) != slow[0] {
			t.Fatalf("%q: whole gives %q, byte by byte %q", c.in, args, slow)
		}
		if a := args[0]; cap(a) != len(a) {
			t.Fatalf("%q: an argument's capacity reaches into the next", c.in)
		}
	}
}

// TestGuardPeek: peek sees the name and first two arguments of each whole
// multibulk command after the one handed out, stops at anything else,
// respects its capacity, and consumes nothing.
func TestGuardPeek(t *testing.T) {
	lim := Limits{}
	lim.Validate()
	get := func(k string) string { return "*2\r\n$3\r\nGET\r\n$" + strconv.Itoa(len(k)) + "\r\n" + k + "\r\n" }
	set := "*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$3\r\nxxx\r\n"
	for _, c := range []struct {
		in   string
		cap  int
		want string // "name arg" joined by "|"
	}{
		{get("a") + get("b") + set, 16, "GET a|GET b|SET k1 xxx"},
		{get("a") + get("bb") + set, 2, "GET a|GET bb"},
		{get("a") + "*2\r\n$3\r\nGET\r\n$1\r\nb", 16, "GET a"},      // the next is still to come
		{get("a") + "*1\r\n$4\r\nPING\r\n" + get("c"), 16, "GET a"}, // one argument: stop
		{get("a") + "GET b\r\n" + get("c"), 16, "GET a"},            // inline: stop
		{get("a") + "*2\r\n$3\r\nGET\r\n$99\r\nb\r\n", 16, "GET a"}, // a length past the buffer
		{get("a") + "*2\r\n$3\r\nGET\r\n$-1\r\n" + get("c"), 16, "GET a"},
		{"*2\r\n$3\r\nGET\r\n$1\r\nb\r\n", 0, ""},
		{"", 16, ""},
		{"*99999999999999999999\r\n", 16, ""},
	} {
		g := newGuard(bytes.NewReader(nil), &lim, func() bool { return true })
		g.in = append(g.in[:0], c.in...)
		got := g.peek(make([]Peeked, 0, c.cap))
		var s []string
		for _, p := range got {
			x := string(p.Name) + " " + string(p.Arg)
			if p.Arg2 != nil {
				x += " " + string(p.Arg2)
			}
			s = append(s, x)
		}
		if strings.Join(s, "|") != c.want {
			t.Fatalf("%q: peeked %q, want %q", c.in, strings.Join(s, "|"), c.want)
		}
		if g.inStart != 0 || len(g.out) != 0 || g.ready != 0 {
			t.Fatalf("%q: peek consumed input", c.in)
		}
		for _, p := range got {
			if cap(p.Name) != len(p.Name) || cap(p.Arg) != len(p.Arg) || cap(p.Arg2) != len(p.Arg2) {
				t.Fatalf("%q: a peeked argument's capacity reaches past it", c.in)
			}
		}
	}
	// in the middle of a command parsed byte by byte, peek sees nothing
	g := newGuard(&chunkReader{b: []byte(get("a") + get("b")), n: 3}, &lim, func() bool { return true })
	g.fill()
	g.process()
	if g.st == gStart {
		t.Fatal("the guard should be inside a command")
	}
	if got := g.peek(make([]Peeked, 0, 4)); len(got) != 0 {
		t.Fatalf("peeked %q mid-command", got)
	}
}

// bigSetGuard is a guard reading a SET of val in socket-sized pieces.
func bigSetGuard(val []byte) *guard {
	in := append([]byte("*2\r\n$3\r\nSET\r\n$"+itoa(len(val))+"\r\n"), val...)
	in = append(in, "\r\n"...)
	lim := Limits{}
	lim.Validate()
	return newGuard(&chunkReader{b: in, n: 64 << 10}, &lim, func() bool { return true })
}

// A big argument read in socket-sized pieces is buffered with at most
// about twice its size allocated on the way (append's 1.25× growth
// allocated five times a 100 MB SET's value).
func TestGuardBigBulkAllocations(t *testing.T) {
	val := bytes.Repeat([]byte("v"), 32<<20)
	g := bigSetGuard(val)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	args, err := g.next(true)
	runtime.ReadMemStats(&m1)
	if err != nil || len(args) != 2 || !bytes.Equal(args[1], val) {
		t.Fatalf("got %d args, err %v", len(args), err)
	}
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > uint64(len(val))*5/2 {
		t.Fatalf("allocated %d MB for a %d MB argument", alloc>>20, len(val)>>20)
	}
}

// Once a big command was served and nothing follows it, the guard keeps
// neither its buffer nor the arguments that pointed into it (an idle
// client after a 100 MB SET held 100 MB until its next command).
func TestGuardDropsBigBufferWhenIdle(t *testing.T) {
	val := bytes.Repeat([]byte("v"), 4<<20)
	g := bigSetGuard(val)
	if args, err := g.next(true); err != nil || len(args) != 2 || len(args[1]) != len(val) {
		t.Fatalf("got %d args, err %v", len(args), err)
	}
	if args, _ := g.next(false); args != nil {
		t.Fatalf("a command after the input: %q", args)
	}
	if cap(g.out) > 1<<20 {
		t.Fatalf("the guard keeps a %d-byte buffer", cap(g.out))
	}
	for i, a := range g.argv[:cap(g.argv)] {
		if cap(a) > 1<<20 {
			t.Fatalf("argument slot %d still points into a %d-byte buffer", i, cap(a))
		}
	}
}

// countingReader counts its Reads and returns a random 1..max bytes each.
type countingReader struct {
	b     []byte
	r     *rand.Rand
	max   int
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), 1+c.r.IntN(c.max), len(c.b))
	copy(p, c.b[:k])
	c.b = c.b[k:]
	return k, nil
}

// Big bulk bodies are read straight into the guard's output (fillBody):
// the commands are the same as from the whole input, whatever sizes the
// reads return, a body that does not end in CRLF is refused there too,
// and a 100 KB argument takes a few reads, not one per 16 KiB.
func TestGuardBigBodyReadsDirectly(t *testing.T) {
	lim := Limits{}
	lim.Validate()
	r := rand.New(rand.NewPCG(5, 6))
	for round := 0; round < 200; round++ {
		var in []byte
		for i := 0; i < 1+r.IntN(5); i++ {
			val := bytes.Repeat([]byte{byte('a' + i)}, []int{3, 40 << 10, 100 << 10, 300 << 10}[r.IntN(4)])
			in = append(in, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$"+itoa(len(val))+"\r\n"...)
			in = append(append(in, val...), "\r\n"...)
			in = append(in, "PING\r\n"...)
		}
		bad := r.IntN(4) == 0
		if bad { // a body one byte longer than announced
			i := bytes.LastIndex(in, []byte("\r\nPING"))
			in = append(in[:i:i], append([]byte("x"), in[i:]...)...)
		}
		whole, werr := readAllCommands(newGuard(bytes.NewReader(in), &lim, func() bool { return true }))
		split, serr := readAllCommands(newGuard(&countingReader{b: in, r: r, max: []int{7, 5000, 1 << 20}[r.IntN(3)]}, &lim, func() bool { return true }))
		if strings.Join(whole, "|") != strings.Join(split, "|") || (werr == nil) != (serr == nil) {
			t.Fatalf("round %d: whole %d commands (%v), split %d (%v)", round, len(whole), werr, len(split), serr)
		}
		if bad != (werr != nil) {
			t.Fatalf("round %d: a body longer than announced: error %v", round, werr)
		}
	}
	val := bytes.Repeat([]byte("v"), 100<<10)
	in := append([]byte("*2\r\n$3\r\nSET\r\n$"+itoa(len(val))+"\r\n"), val...)
	cr := &countingReader{b: append(in, "\r\n"...), r: r, max: 1 << 30}
	g := newGuard(cr, &lim, func() bool { return true })
	if args, err := g.next(true); err != nil || len(args) != 2 || !bytes.Equal(args[1], val) {
		t.Fatalf("%d args, %v", len(args), err)
	}
	if cr.reads > 4 {
		t.Fatalf("a 100 KB argument took %d reads", cr.reads)
	}
	// a big body read in one piece that does not end in CRLF
	cr = &countingReader{b: append(in, "xy\r\n"...), r: r, max: 1 << 30}
	var pe *ProtocolError
	if args, err := newGuard(cr, &lim, func() bool { return true }).next(true); !errors.As(err, &pe) || err == errFraming || pe.Msg != "invalid bulk length" {
		t.Fatalf("a body without its CRLF: %d args, %v", len(args), err)
	}
}

// arrayEcho replies with its arguments as an array of bulks.
type arrayEcho struct{}

func (arrayEcho) Serve(c *Conn, args [][]byte) {
	c.Array(len(args))
	for _, a := range args {
		c.Bulk(a)
	}
}
func (arrayEcho) Closed(c *Conn) {}

// A big reply written straight into the output (Conn.Bulk) keeps its
// place among the small replies around it, in one pipeline and within
// one reply (an array's header and small elements before it).
func TestBigReplyKeepsOrder(t *testing.T) {
	_, addr := startServer(t, Limits{}, false)
	_, arrAddr := serve(t, Config{}, arrayEcho{})
	{
		val := strings.Repeat("w", 50<<10)
		c, err := net.Dial("tcp", arrAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go c.Write([]byte("*3\r\n$1\r\na\r\n$" + itoa(len(val)) + "\r\n" + val + "\r\n$1\r\nb\r\n"))
		want := "*3\r\n$1\r\na\r\n$" + itoa(len(val)) + "\r\n" + val + "\r\n$1\r\nb\r\n"
		got := make([]byte, len(want))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
			t.Fatalf("array reply differs (%v): %q...", err, got[:min(len(got), 40)])
		}
	}
	val := strings.Repeat("v", 100<<10)
	in := "PING\r\n*2\r\n$4\r\nECHO\r\n$" + itoa(len(val)) + "\r\n" + val + "\r\nPING\r\n" +
		"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n*2\r\n$4\r\nECHO\r\n$" + itoa(len(val)) + "\r\n" + val + "\r\n"
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Write([]byte(in))
	want := "$4\r\nPING\r\n$" + itoa(len(val)+5) + "\r\nECHO " + val + "\r\n$4\r\nPING\r\n$8\r\nECHO abc\r\n$" + itoa(len(val)+5) + "\r\nECHO " + val + "\r\n"
	got := make([]byte, len(want))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("replies differ (%v): %q...", err, got[:min(len(got), 40)])
	}
}
