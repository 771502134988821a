package integration

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// proxy is an in-process TCP proxy on a link between regions that tests can
// cut (reset every connection and refuse new ones), blackhole (keep
// connections open but drop every byte), delay and heal.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	mode   string // "ok", "cut", "blackhole"
	delay  time.Duration
	conns  map[net.Conn]bool
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, mode: "ok", conns: map[net.Conn]bool{}}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.set("cut", 0) })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// setTarget points the proxy at a (new) upstream address.
func (p *proxy) setTarget(t string) { p.mu.Lock(); p.target = t; p.mu.Unlock() }

func (p *proxy) set(mode string, delay time.Duration) {
	p.mu.Lock()
	p.mode, p.delay = mode, delay
	if mode == "cut" {
		for c := range p.conns {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // reset, not a clean close
			}
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
	p.mu.Unlock()
}

func (p *proxy) cut()                 { p.set("cut", 0) }
func (p *proxy) blackhole()           { p.set("blackhole", 0) }
func (p *proxy) heal()                { p.set("ok", 0) }
func (p *proxy) slow(d time.Duration) { p.set("ok", d) }
func (p *proxy) state() (string, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if m, _ := p.state(); m == "cut" {
			c.Close()
			continue
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) pipe(from, to net.Conn) {
	defer from.Close()
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			mode, d := p.state()
			switch mode {
			case "cut":
				return
			case "blackhole":
				continue
			}
			if d > 0 {
				time.Sleep(d)
			}
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}
