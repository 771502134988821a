//go:build linux

package resp

import (
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// hasLoop: Linux serves plain-TCP clients from an event loop when
// Config.EventLoop is set.
const hasLoop = true

// errWouldBlock is a non-blocking socket with nothing more to read.
var errWouldBlock = errors.New("resp: would block")

// fdReader reads a non-blocking socket for the guard.
//
// A read that returns less than it asked for drained the socket at that
// moment, and with edge-triggered epoll whatever arrives after it is
// reported by a new event. So when the loop serves a client for an event
// that reported no hang-up or error (trustShort), the read after such a
// short read, which would only return EAGAIN, is skipped: one system call
// in three at a pipeline's pace (as Netty's edge-triggered transport does).
// A client served for any other reason (its pipeline's rest, a drained
// output, a finished blocking command, registration) is read until EAGAIN,
// as is one whose peer hung up (reading on is how its end is seen).
type fdReader struct {
	fd int
	// trustShort: this serve may skip the read after a short one;
	// short: the last read of this serve was short
	trustShort, short bool
	reads             uint64 // read system calls made
}

func (r *fdReader) Read(p []byte) (int, error) {
	if r.short && r.trustShort {
		r.short = false
		return 0, errWouldBlock
	}
	for {
		r.reads++
		n, err := rawRead(r.fd, p)
		switch {
		case n > 0:
			r.short = n < len(p)
			return n, nil
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, errWouldBlock
		case err == nil:
			return 0, io.EOF
		}
		return 0, err
	}
}

// loopConn keeps a client's addresses once its net.Conn is closed (the loop
// owns a duplicate of its descriptor).
type loopConn struct {
	net.Conn // nil: only the addresses are used
	r, l     net.Addr
}

func (a loopConn) RemoteAddr() net.Addr              { return a.r }
func (a loopConn) LocalAddr() net.Addr               { return a.l }
func (a loopConn) Close() error                      { return nil } // the loop closes the descriptor
func (a loopConn) SetReadDeadline(t time.Time) error { return nil } // the loop keeps the deadlines

// epollET is EPOLLET as the uint32 the event mask is (syscall's constant
// is a negative int).
const epollET = 1 << 31

// maxPassCommands bounds the commands one client runs per pass, so a long
// pipeline does not hold up the others (the rest run in the next pass).
const maxPassCommands = 1024

// evLoop serves plain-TCP clients Redis's way: one epoll loop on one locked
// OS thread reads every ready client, runs its commands, commits the
// pass's writes as one group, then writes every client's replies; no
// goroutine per connection, no park and wake per request. A command that
// blocks (WAIT) runs in a goroutine of its own while its client waits.
type evLoop struct {
	s      *Server
	epfd   int
	wakefd int // eventfd: new clients, kills, finished blocking commands, close

	mu        sync.Mutex // guards the lists the other goroutines append to
	adds      []*Conn
	unblocked []*Conn
	kills     []*Conn
	closing   bool
	stopped   bool // the descriptors are closed

	conns    map[int]*Conn // by descriptor; the loop thread's own
	again    []*Conn       // clients stopped at maxPassCommands
	pass     []*Conn       // clients served in this pass
	toBlock  []*Conn       // clients whose blocking command starts after the pass
	lastTick time.Time
	// passStart: unix ns when this pass's epoll_wait returned (a served
	// client's last activity)
	passStart int64
	done      chan struct{}
}

// startLoop creates the loop and its thread.
func (s *Server) startLoop() (*evLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	r, _, e := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if e != 0 {
		syscall.Close(epfd)
		return nil, e
	}
	l := &evLoop{s: s, epfd: epfd, wakefd: int(r), conns: make(map[int]*Conn), done: make(chan struct{})}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, l.wakefd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wakefd)}); err != nil {
		syscall.Close(epfd)
		syscall.Close(l.wakefd)
		return nil, err
	}
	go l.run()
	return l, nil
}

// wake interrupts the loop's epoll_wait.
func (l *evLoop) wake() {
	one := uint64(1)
	l.mu.Lock()
	if !l.stopped { // the descriptor's number may be reused once closed
		syscall.Write(l.wakefd, (*[8]byte)(unsafe.Pointer(&one))[:])
	}
	l.mu.Unlock()
}

// add hands an accepted client to the loop; false when it could not take
// it (the caller closes it).
func (l *evLoop) add(c *Conn, tc *net.TCPConn) bool {
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	fd := -1
	if cerr := rc.Control(func(s uintptr) { fd, err = syscall.Dup(int(s)) }); cerr != nil || err != nil {
		return false
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil { // shared with tc's: already so
		syscall.Close(fd)
		return false
	}
	c.nc = loopConn{r: tc.RemoteAddr(), l: tc.LocalAddr()}
	tc.Close() // the runtime's poller lets go of the socket; fd keeps it open
	c.fd = fd
	c.loop = l
	c.rd = &fdReader{fd: fd}
	c.g = newGuard(c.rd, &l.s.cfg.Limits, c.Authed)
	c.g.deadline = func(bool, time.Time) {} // the guard tracks when a partial command started
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		syscall.Close(fd)
		return false
	}
	l.adds = append(l.adds, c)
	l.mu.Unlock()
	l.wake()
	return true
}

// kill closes a client from another goroutine (CLIENT KILL).
func (l *evLoop) kill(c *Conn) {
	l.mu.Lock()
	l.kills = append(l.kills, c)
	l.mu.Unlock()
	l.wake()
}

// stop closes every client and ends the loop.
func (l *evLoop) stop() {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.wake()
	<-l.done
}

func (l *evLoop) run() {
	runtime.LockOSThread()
	defer close(l.done)
	events := make([]syscall.EpollEvent, 512)
	for {
		timeout := 100
		if len(l.again) > 0 {
			timeout = 0
		}
		n, err := rawEpollWait(l.epfd, events) // what is ready now, without giving up the P
		if n == 0 && err == nil && timeout != 0 {
			n, err = syscall.EpollWait(l.epfd, events, timeout)
		}
		if err != nil && err != syscall.EINTR {
			l.s.cfg.Log.Error().Err(err).Msg("epoll_wait failed; closing the event loop's clients")
			l.closeAll()
			return
		}
		l.pass = l.pass[:0]
		l.passStart = time.Now().UnixNano() // every client served now was active now
		if hold := l.s.cfg.HoldCommits; hold != nil {
			hold(true)
		}
		again := l.again
		l.again = nil
		for _, c := range again {
			l.serve(c)
		}
		for i := 0; i < n; i++ {
			fd := int(events[i].Fd)
			if fd == l.wakefd {
				var b [8]byte
				syscall.Read(l.wakefd, b[:])
				if l.wakeups() {
					if hold := l.s.cfg.HoldCommits; hold != nil {
						hold(false) // or the store would never wake its commit loop again
					}
					return
				}
				continue
			}
			c := l.conns[fd]
			if c == nil {
				continue
			}
			ev := events[i].Events
			if ev&syscall.EPOLLOUT != 0 && c.outOff < len(c.out.b) {
				if !l.write(c) || c.outOff < len(c.out.b) {
					continue // gone, or still not drained
				}
				l.serve(c) // drained: what it sent meanwhile
			}
			if ev&^uint32(syscall.EPOLLOUT) != 0 {
				c.rd.trustShort = ev&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) == 0
				l.serve(c)
				c.rd.trustShort = false
			}
		}
		l.finishPass()
		if hold := l.s.cfg.HoldCommits; hold != nil {
			hold(false)
		}
		if now := time.Now(); now.Sub(l.lastTick) >= 100*time.Millisecond {
			l.lastTick = now
			l.deadlines(now)
		}
	}
}

// wakeups registers new clients, closes killed ones, resumes clients whose
// blocking command finished; true when the loop is to end.
func (l *evLoop) wakeups() bool {
	l.mu.Lock()
	adds, unblocked, kills, closing := l.adds, l.unblocked, l.kills, l.closing
	l.adds, l.unblocked, l.kills = nil, nil, nil
	l.mu.Unlock()
	if closing {
		for _, c := range adds {
			l.conns[c.fd] = c
		}
		l.closeAll()
		return true
	}
	for _, c := range adds {
		l.conns[c.fd] = c
		ev := &syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | epollET, Fd: int32(c.fd)}
		if err := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, c.fd, ev); err != nil {
			l.close(c)
			continue
		}
		l.serve(c) // what it sent before it was registered
	}
	for _, c := range kills {
		if l.conns[c.fd] == c && !c.blocked {
			l.close(c)
		}
	}
	for _, c := range unblocked {
		if l.conns[c.fd] != c {
			continue
		}
		c.blocked = false
		if c.killed.Load() {
			l.close(c)
			continue
		}
		c.w.Flush()
		if l.write(c) {
			l.serve(c)
		}
	}
	return false
}

// serve runs the commands the client sent, up to maxPassCommands.
func (l *evLoop) serve(c *Conn) {
	if l.conns[c.fd] != c || c.blocked || c.inPass || c.outOff < len(c.out.b) {
		return // resumed when its command finishes, or its output drains
	}
	if c.closeAfter || c.killed.Load() { // QUIT's reply drained: nothing more is read
		l.close(c)
		return
	}
	c.inPass = true
	c.rd.short = false // (a short read of an earlier serve says nothing now)
	l.pass = append(l.pass, c)
	c.lastActive.Store(l.passStart)
	c.CallClock = 0
	for i := 0; ; i++ {
		if i == maxPassCommands {
			l.again = append(l.again, c)
			return
		}
		reads := c.rd.reads
		args, err := c.g.next(true)
		if c.rd.reads != reads {
			c.CallClock = 0 // the command did not follow the last at once
		}
		if err == nil {
			l.s.prefetchAhead(c, c.g, args, c.rd.reads != reads)
		}
		if err == errWouldBlock {
			c.g.err = nil
			return
		}
		if err != nil {
			var pe *ProtocolError
			if errors.As(err, &pe) {
				l.s.Rejected.Add(1)
				c.w.WriteError("ERR " + pe.Error())
			}
			c.closeAfter = true
			return
		}
		if l.s.serveOne(c, args) {
			return
		}
		if c.blockFn != nil {
			c.blocked = true
			l.toBlock = append(l.toBlock, c)
			return
		}
	}
}

// finishPass commits the pass's writes, then sends every served client
// its replies and starts the pass's blocking commands.
func (l *evLoop) finishPass() {
	if len(l.pass) == 0 {
		return
	}
	committed := false
	for _, c := range l.pass {
		if c.pending == nil {
			continue
		}
		if !committed && l.s.cfg.CommitNow != nil {
			l.s.cfg.CommitNow() // one group for the whole pass, no hand-off
			committed = true
		}
		err := c.pending.Wait()
		c.pending = nil
		if err != nil {
			// never acknowledge what is not durable: drop the replies
			l.s.cfg.Log.Error().Err(err).Int64("client", c.ID).Msg("commit failed; closing client")
			c.dropReplies = true
		}
	}
	for _, c := range l.pass {
		c.inPass = false
		if l.conns[c.fd] != c {
			continue
		}
		c.w.Flush()
		if c.dropReplies {
			l.close(c)
			continue
		}
		if l.s.overOutputLimit(c, int64(len(c.out.b)-c.outOff)) {
			l.s.OutputLimited.Add(1)
			l.s.cfg.Log.Warn().Int64("client", c.ID).Str("addr", c.RemoteAddr()).Int("bytes", len(c.out.b)-c.outOff).Msg("client closed for overcoming of output buffer limits")
			l.close(c)
			continue
		}
		if !l.write(c) {
			continue
		}
		if (c.closeAfter || c.killed.Load()) && c.outOff == len(c.out.b) {
			l.close(c) // else once the rest is written (serve closes it)
		}
	}
	for _, c := range l.toBlock {
		if l.conns[c.fd] != c {
			continue
		}
		fn := c.blockFn
		c.blockFn = nil
		go func() {
			fn()
			l.mu.Lock()
			l.unblocked = append(l.unblocked, c)
			l.mu.Unlock()
			l.wake()
		}()
	}
	l.toBlock = l.toBlock[:0]
}

// write sends the client's pending output; false when the client is gone.
// A short write keeps the rest until the socket is writable again (the
// client is not read meanwhile).
func (l *evLoop) write(c *Conn) bool {
	for c.outOff < len(c.out.b) {
		n, err := rawWrite(c.fd, c.out.b[c.outOff:])
		if n > 0 {
			c.outOff += n
			continue
		}
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return true
		}
		l.close(c)
		return false
	}
	if cap(c.out.b) > 1<<20 { // do not keep a big reply's buffer for good
		c.out.b = nil
	} else {
		c.out.b = c.out.b[:0]
	}
	c.outOff = 0
	return true
}

// deadlines closes clients idle past the idle timeout, or that took longer
// than the command deadline to send one command (slowloris).
func (l *evLoop) deadlines(now time.Time) {
	idle, cmd := l.s.cfg.IdleTimeout(), l.s.cfg.CommandDeadline()
	for _, c := range l.conns {
		if c.blocked {
			continue
		}
		g := c.g
		mid := g.st != gStart || len(g.line) > 0 || len(g.out) > g.pos
		switch {
		case mid && cmd > 0 && !g.started.IsZero() && now.Sub(g.started) > cmd:
			l.close(c)
		case !mid && idle > 0 && now.Sub(time.Unix(0, c.lastActive.Load())) > idle:
			l.close(c)
		}
	}
}

// close ends a client: its descriptor, its registration, its state.
func (l *evLoop) close(c *Conn) {
	if l.conns[c.fd] != c {
		return
	}
	delete(l.conns, c.fd)
	syscall.Close(c.fd) // also removes it from the epoll set
	c.killed.Store(true)
	c.cancelBlock()
	l.s.mu.Lock()
	delete(l.s.clients, c.ID)
	l.s.mu.Unlock()
	l.s.handler.Closed(c)
	l.s.wg.Done()
}

func (l *evLoop) closeAll() {
	l.mu.Lock()
	l.closing = true // add refuses clients from now on
	adds := l.adds
	l.adds = nil
	l.mu.Unlock()
	for _, c := range adds {
		l.conns[c.fd] = c
	}
	for _, c := range l.conns {
		l.close(c)
	}
	l.mu.Lock()
	l.stopped = true
	syscall.Close(l.epfd)
	syscall.Close(l.wakefd)
	l.mu.Unlock()
}

// The loop's socket reads and writes and its first epoll_wait of a pass are
// raw system calls: they never block (the sockets are non-blocking, the wait
// has no timeout), so the loop keeps its P through them. Through the
// runtime's entersyscall, a call that spans one of sysmon's ticks (20 µs,
// common for a loopback write that runs the peer's receive path) lets sysmon
// hand the loop's P to any runnable goroutine — a checkpoint, the GC's
// workers, Badger — and the loop then waits for a P, up to a 10 ms
// preemption slice each time: a loop thread busy 1.5 of 1.5 s without a
// checkpoint ran only 1.0 s of them beside one (the rest asleep, off the
// run queue). Only the blocking wait goes through the runtime.

func rawRead(fd int, p []byte) (int, error)  { return rawRW(syscall.SYS_READ, fd, p) }
func rawWrite(fd int, p []byte) (int, error) { return rawRW(syscall.SYS_WRITE, fd, p) }

func rawRW(trap uintptr, fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// rawEpollWait returns the events ready now (a zero timeout).
func rawEpollWait(epfd int, events []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
