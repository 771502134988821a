package resp

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The connection-handling tests below run under the event loop and, with
// CONCORD_TEST_IO=goroutines, with a goroutine per connection: both shapes
// must behave the same to a client.

// testHandler: ECHO x, BLOCK ms (waits ms, then replies WOKE, holding up
// only its client), BIG n (a reply of n bytes), FAIL (a reply whose commit
// fails: it must never be sent).
type testHandler struct{}

type failTicket struct{}

func (failTicket) Wait() error { return errors.New("disk on fire") }

func (testHandler) Serve(c *Conn, args [][]byte) {
	switch strings.ToUpper(string(args[0])) {
	case "ECHO":
		c.Bulk(args[1])
	case "BLOCK":
		ms, _ := strconv.Atoi(string(args[1]))
		c.Block(func(ctx context.Context) {
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
				c.Simple("WOKE")
			case <-ctx.Done():
				c.Simple("CANCELLED")
			}
		})
	case "BIG":
		n, _ := strconv.Atoi(string(args[1]))
		c.Bulk([]byte(strings.Repeat("x", n)))
	case "FAIL":
		c.OK()
		c.Await(failTicket{})
	default:
		c.Err("ERR unknown")
	}
}
func (testHandler) Closed(c *Conn) {}

func startTestServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	return serve(t, cfg, testHandler{})
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func readLine(t *testing.T, c net.Conn, r *bufio.Reader, within time.Duration) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	l, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, l)
	}
	return l
}

// A command that blocks holds up its own client only, and the commands
// pipelined behind it are answered after it, in order.
func TestBlockHoldsUpOnlyItsClient(t *testing.T) {
	s, addr := startTestServer(t, Config{})
	a, ar := dial(t, addr)
	b, br := dial(t, addr)
	start := time.Now()
	a.Write([]byte("ECHO before\r\nBLOCK 400\r\nECHO after\r\n"))
	time.Sleep(20 * time.Millisecond) // A is blocked
	for i := 0; i < 5; i++ {
		b.Write([]byte("ECHO b\r\n"))
		if l := readLine(t, b, br, 200*time.Millisecond); l != "$1\r\n" {
			t.Fatalf("b: %q", l)
		}
		readLine(t, b, br, time.Second)
	}
	if since := time.Since(start); since > 300*time.Millisecond {
		t.Fatalf("the other client waited for the blocked one (%v)", since)
	}
	if n := s.BlockedClients(); n != 1 {
		t.Fatalf("%d blocked clients while one waits", n)
	}
	// the replies before the block come first (under the event loop at
	// once; with a goroutine per connection with the block's)
	if l := readLine(t, a, ar, time.Second); l != "$6\r\n" {
		t.Fatalf("first reply %q", l)
	}
	readLine(t, a, ar, time.Second)
	if l := readLine(t, a, ar, 2*time.Second); l != "+WOKE\r\n" {
		t.Fatalf("blocked reply %q", l)
	}
	if time.Since(start) < 400*time.Millisecond {
		t.Fatal("BLOCK replied early")
	}
	if l := readLine(t, a, ar, time.Second); l != "$5\r\n" {
		t.Fatalf("reply after the block %q", l)
	}
	if n := s.BlockedClients(); n != 0 {
		t.Fatalf("%d blocked clients after the wait", n)
	}
}

// Server.Kill closes a client at once, idle or blocked; Close returns while
// a client is blocked.
func TestKillAndCloseWithBlockedClient(t *testing.T) {
	s, addr := startTestServer(t, Config{})
	a, ar := dial(t, addr)
	a.Write([]byte("ECHO x\r\n"))
	readLine(t, a, ar, time.Second)
	readLine(t, a, ar, time.Second)
	s.Kill(s.Clients()[0])
	a.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := ar.ReadByte(); err == nil || errTimeout(err) != nil {
		t.Fatalf("killed client still open: %v", err)
	}
	b, _ := dial(t, addr)
	b.Write([]byte("BLOCK 5000\r\n"))
	for deadline := time.Now().Add(time.Second); s.NumClients() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the BLOCK is running
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close waited for a blocked client")
	}
}

// errTimeout returns err when it is a timeout (so errors.Is matches it), nil
// otherwise.
func errTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return nil
}

// An idle client is closed after the idle timeout; a client that sends
// half a command is closed after the command deadline; an active client is
// not.
func TestIdleAndCommandDeadlines(t *testing.T) {
	_, addr := startTestServer(t, Config{
		IdleTimeout:     func() time.Duration { return 300 * time.Millisecond },
		CommandDeadline: func() time.Duration { return 300 * time.Millisecond },
	})
	idle, ir := dial(t, addr)
	half, hr := dial(t, addr)
	busy, br := dial(t, addr)
	half.Write([]byte("*2\r\n$4\r\nECHO\r\n$5\r\nab"))
	start := time.Now()
	closed := func(c net.Conn, r *bufio.Reader) bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		_, err := r.ReadByte()
		return err != nil && errTimeout(err) == nil
	}
	var idleAt, halfAt time.Duration
	for time.Since(start) < 2*time.Second && (idleAt == 0 || halfAt == 0) {
		busy.Write([]byte("ECHO z\r\n"))
		if l := readLine(t, busy, br, time.Second); l != "$1\r\n" {
			t.Fatalf("busy client: %q", l)
		}
		readLine(t, busy, br, time.Second)
		if idleAt == 0 && closed(idle, ir) {
			idleAt = time.Since(start)
		}
		if halfAt == 0 && closed(half, hr) {
			halfAt = time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if idleAt < 250*time.Millisecond || idleAt > 1500*time.Millisecond {
		t.Fatalf("idle client closed after %v (timeout 300ms)", idleAt)
	}
	if halfAt < 250*time.Millisecond || halfAt > 1500*time.Millisecond {
		t.Fatalf("half-sent command closed after %v (deadline 300ms)", halfAt)
	}
}

// A client that does not read its replies holds only itself up: others
// are served meanwhile, and it gets every byte once it reads.
func TestSlowReaderGetsEverythingWhileOthersAreServed(t *testing.T) {
	_, addr := startTestServer(t, Config{})
	slow, sr := dial(t, addr)
	const n, size = 8, 1 << 20
	slow.Write([]byte(strings.Repeat("BIG "+strconv.Itoa(size)+"\r\n", n)))
	time.Sleep(100 * time.Millisecond) // its replies fill the socket buffers
	b, br := dial(t, addr)
	for i := 0; i < 20; i++ {
		b.Write([]byte("ECHO b\r\n"))
		// (if the loop waited for the slow reader, this would never come:
		// it reads only after these)
		if l := readLine(t, b, br, 3*time.Second); l != "$1\r\n" {
			t.Fatalf("other client: %q", l)
		}
		readLine(t, b, br, time.Second)
	}
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n; i++ {
		hdr, err := sr.ReadString('\n')
		if err != nil || hdr != "$"+strconv.Itoa(size)+"\r\n" {
			t.Fatalf("reply %d header %q: %v", i, hdr, err)
		}
		if _, err := io.CopyN(io.Discard, sr, size+2); err != nil {
			t.Fatalf("reply %d body: %v", i, err)
		}
	}
}

// A client over the output buffer's hard limit is closed.
func TestOutputLimitClosesClient(t *testing.T) {
	s, addr := startTestServer(t, Config{OutputLimit: func() (int64, int64, time.Duration) { return 1 << 20, 0, 0 }})
	c, r := dial(t, addr)
	c.Write([]byte(strings.Repeat("BIG 400000\r\n", 4)))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.Copy(io.Discard, r); errTimeout(err) != nil {
		t.Fatal("client over the output limit not closed")
	}
	if s.OutputLimited.Load() != 1 {
		t.Fatalf("OutputLimited %d", s.OutputLimited.Load())
	}
}

// Replies whose commit failed are never sent: the client is closed.
func TestFailedCommitSendsNothing(t *testing.T) {
	_, addr := startTestServer(t, Config{})
	c, r := dial(t, addr)
	c.Write([]byte("ECHO a\r\nFAIL\r\n"))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	got, err := io.ReadAll(r)
	if errTimeout(err) != nil {
		t.Fatal("client not closed after a failed commit")
	}
	if len(got) != 0 {
		t.Fatalf("sent %q before a failed commit", got)
	}
}

// With several event loops clients are spread over them; each is served,
// killed and closed like under one.
func TestSeveralLoops(t *testing.T) {
	s, addr := startTestServer(t, Config{Loops: 3})
	var conns []net.Conn
	var readers []*bufio.Reader
	for i := 0; i < 9; i++ {
		c, r := dial(t, addr)
		conns, readers = append(conns, c), append(readers, r)
	}
	for round := 0; round < 3; round++ {
		for i, c := range conns {
			c.Write([]byte("ECHO " + strconv.Itoa(i) + "\r\n"))
		}
		for i, c := range conns {
			readLine(t, c, readers[i], time.Second)
			if l := readLine(t, c, readers[i], time.Second); l != strconv.Itoa(i)+"\r\n" {
				t.Fatalf("client %d: %q", i, l)
			}
		}
	}
	if testLoop && len(s.loops) != 3 {
		t.Fatalf("%d loops", len(s.loops))
	}
	for _, c := range s.Clients()[:4] {
		s.Kill(c)
	}
	for deadline := time.Now().Add(2 * time.Second); s.NumClients() != 5; {
		if time.Now().After(deadline) {
			t.Fatalf("%d clients after killing 4 of 9", s.NumClients())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A pipeline longer than one pass's share (maxPassCommands) is answered
// whole and in order, while another client is served in between.
func TestLongPipelineSpansPasses(t *testing.T) {
	_, addr := startTestServer(t, Config{})
	a, ar := dial(t, addr)
	b, br := dial(t, addr)
	const n = 3*maxPassCommands + 17
	var req strings.Builder
	for i := 0; i < n; i++ {
		req.WriteString("ECHO " + strconv.Itoa(i) + "\r\n")
	}
	go a.Write([]byte(req.String()))
	b.Write([]byte("ECHO b\r\n"))
	readLine(t, b, br, 2*time.Second)
	for i := 0; i < n; i++ {
		readLine(t, a, ar, 2*time.Second)
		if l := readLine(t, a, ar, 2*time.Second); l != strconv.Itoa(i)+"\r\n" {
			t.Fatalf("reply %d: %q", i, l)
		}
	}
}

// Nothing sent after QUIT runs, even when QUIT's replies leave on a short
// write (the client reads them late).
func TestNothingRunsAfterQuitBehindSlowOutput(t *testing.T) {
	s := NewServer(Config{EventLoop: testLoop}, quitHandler{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Close)
	c, r := dial(t, ln.Addr().String())
	c.Write([]byte("BIG 8388608\r\nQUIT\r\nRAN\r\n"))
	time.Sleep(200 * time.Millisecond) // the big reply fills the socket
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(r)
	if !strings.HasSuffix(string(got), "+OK\r\n") || strings.Contains(string(got), "RAN") {
		t.Fatalf("after QUIT: %q", got[max(0, len(got)-40):])
	}
	if ran.Load() {
		t.Fatal("a command after QUIT ran")
	}
}

var ran atomic.Bool

// quitHandler: testHandler's BIG, QUIT (OK, then close), RAN (records
// that it ran).
type quitHandler struct{ testHandler }

func (h quitHandler) Serve(c *Conn, args [][]byte) {
	switch strings.ToUpper(string(args[0])) {
	case "QUIT":
		c.OK()
		c.CloseAfterReply()
	case "RAN":
		ran.Store(true)
		c.Simple("RAN")
	default:
		h.testHandler.Serve(c, args)
	}
}

// Pipelines arriving in pieces, with pauses between them, from several
// clients at once, all get every reply in order: under the event loop each
// piece is a short read after which the read that would return EAGAIN is
// skipped, so a piece arriving later must be reported by a new event.
func TestPipelinesInPiecesGetEveryReply(t *testing.T) {
	_, addr := startTestServer(t, Config{})
	done := make(chan error, 4)
	for cl := 0; cl < 4; cl++ {
		go func(cl int) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for round := 0; round < 150; round++ {
				var req strings.Builder
				for i := 0; i < 3; i++ {
					v := strconv.Itoa(cl*1000000 + round*10 + i)
					req.WriteString("*2\r\n$4\r\nECHO\r\n$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n")
				}
				b := []byte(req.String())
				for len(b) > 0 { // in 1 to 4 pieces, a pause after each
					n := 1 + (round*7+len(b))%(len(b)/2+1)
					if round%4 == 0 {
						n = len(b)
					}
					if _, err := c.Write(b[:n]); err != nil {
						done <- err
						return
					}
					b = b[n:]
					time.Sleep(time.Duration(round%3) * 100 * time.Microsecond)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for i := 0; i < 3; i++ {
					want := strconv.Itoa(cl*1000000+round*10+i) + "\r\n"
					r.ReadString('\n')
					if l, err := r.ReadString('\n'); err != nil || l != want {
						done <- errors.New("client " + strconv.Itoa(cl) + " round " + strconv.Itoa(round) + ": got " + strconv.Quote(l) + ", want " + strconv.Quote(want) + " " + errString(err))
						return
					}
				}
			}
			done <- nil
		}(cl)
	}
	for i := 0; i < 4; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// prefetchHandler records what Prefetch is given.
type prefetchHandler struct {
	testHandler
	mu  sync.Mutex
	got []string // one entry per call: "name arg|name arg|..."
}

func (h *prefetchHandler) Prefetch(c *Conn, cmds []Peeked) {
	var s []string
	for _, p := range cmds {
		s = append(s, string(p.Name)+" "+string(p.Arg))
	}
	h.mu.Lock()
	h.got = append(h.got, strings.Join(s, "|"))
	h.mu.Unlock()
}

func (h *prefetchHandler) calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

// A Prefetcher gets the commands a read brought in,
// before they are served, when there are two or more; never a lone
// command's, never with NoPrefetch; every command is still served.
func TestPrefetcherSeesPipelines(t *testing.T) {
	for _, off := range []bool{false, true} {
		h := &prefetchHandler{}
		_, addr := serve(t, Config{NoPrefetch: off}, h)
		c, r := dial(t, addr)
		if _, err := c.Write([]byte("*2\r\n$4\r\nECHO\r\n$1\r\nz\r\n")); err != nil {
			t.Fatal(err)
		}
		readLine(t, c, r, 5*time.Second)
		readLine(t, c, r, 5*time.Second)
		var pipe strings.Builder
		for _, k := range []string{"a", "b", "c", "d", "e"} {
			pipe.WriteString("*2\r\n$4\r\nECHO\r\n$1\r\n" + k + "\r\n")
		}
		if _, err := c.Write([]byte(pipe.String())); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"a", "b", "c", "d", "e"} {
			readLine(t, c, r, 5*time.Second)
			if got := strings.TrimSpace(readLine(t, c, r, 5*time.Second)); got != k {
				t.Fatalf("reply %q, want %q", got, k)
			}
		}
		got := h.calls()
		switch {
		case off:
			if len(got) != 0 {
				t.Fatalf("prefetch off: got %q", got)
			}
		case len(got) != 1 || got[0] != "ECHO a|ECHO b|ECHO c|ECHO d|ECHO e":
			t.Fatalf("prefetched %q, want the five commands in one call", got)
		}
	}
}
