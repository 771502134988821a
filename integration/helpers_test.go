// Package integration tests Concord end to end: real clients (go-redis,
// redis-cli, redis-benchmark) against regions started by the tests on free
// loopback ports, a reply-by-reply comparison with a real redis-server, and
// crash recovery of the concord binary.
package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"concord/cmd/concord/server"

	"github.com/redis/go-redis/v9"
)

// startConcord starts a region in-process on a free port.
// CONCORD_TEST_IO=goroutines runs the suite with a goroutine per
// connection instead of the event loop (make test runs both).
func init() {
	if io := os.Getenv("CONCORD_TEST_IO"); io != "" {
		server.DefaultIO = io
	}
}

func startConcord(t testing.TB, mod func(*server.Config)) *server.Instance {
	t.Helper()
	// keys go cold (packed) 30-60 ms after their last access: every test
	// also exercises packing and unpacking between commands
	cfg := server.Config{Addr: "127.0.0.1:0", Region: "A", Dir: t.TempDir(), LogLevel: "warn", ColdAfter: 30 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	in, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

// envInt returns the environment variable name as a positive number, or
// def (a benchmark's knob).
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func client(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: false})
	t.Cleanup(func() { c.Close() })
	return c
}

// checkFor retries fn until it succeeds or the time is up (nats-server's
// helper of the same name).
func checkFor(t testing.TB, total, every time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(every)
	}
	t.Fatalf("timed out after %v: %v", total, err)
}

func need(t testing.TB, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s is missing: install redis-tools/redis-server (make test does)", bin)
	}
	return p
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startRedis starts a real redis-server on a free port.
func startRedis(t testing.TB, extra ...string) string {
	t.Helper()
	bin := need(t, "redis-server")
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", t.TempDir(), "--daemonize", "no", "--logfile", ""}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ok := false
		for i := 0; i < 100; i++ {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				ok = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if ok {
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			return addr
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
	t.Fatal("redis-server did not start")
	return ""
}

var buildOnce sync.Once
var binPath string
var buildErr error

// concordBinary builds cmd/concord once per test run.
func concordBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "concord-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "concord")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/concord").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a concord process.
type proc struct {
	cmd      *exec.Cmd
	addr     string
	log      *strings.Builder
	peerAddr string // where peers reach its NATS (from the ready line)
}

// startProc runs the concord binary and waits for its ready line.
func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	bin := concordBinary(t)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, append([]string{"--addr", addr, "--io", server.DefaultIO}, args...)...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, addr: addr, log: &strings.Builder{}}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			p.log.WriteString(sc.Text() + "\n")
			if !sent && strings.Contains(sc.Text(), "concord ready") {
				if m := peerListenRe.FindStringSubmatch(sc.Text()); m != nil {
					p.peerAddr = m[1]
				}
				ready <- true
				sent = true
			}
		}
		if !sent {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			t.Fatalf("concord exited before ready:\n%s", p.log.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("concord not ready in 30s:\n%s", p.log.String())
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

func (p *proc) kill9() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

var ctx = context.Background()

var peerListenRe = regexp.MustCompile(`"peer_listen":"([^"]+)"`)
