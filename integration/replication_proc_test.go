package integration

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// procCluster is N concord processes linked through proxies.
type procCluster struct {
	*cluster
	procs map[string]*proc
	nats  map[string]string
	fsync string
	extra []string // more flags for every process
}

func startProcCluster(t testing.TB, n int, fsync string, extra ...string) *procCluster {
	t.Helper()
	return newProcCluster(t, n, fsync, false, extra)
}

// startDirectProcCluster is startProcCluster with the regions linked
// straight to each other's NATS ports (picked free first), not through
// proxies: for measurements, where the proxies' own CPU and scheduling in
// the test process would be measured too. Links cannot be cut.
func startDirectProcCluster(t testing.TB, n int, fsync string, extra ...string) *procCluster {
	t.Helper()
	return newProcCluster(t, n, fsync, true, extra)
}

func newProcCluster(t testing.TB, n int, fsync string, direct bool, extra []string) *procCluster {
	pc := &procCluster{cluster: &cluster{links: map[string]map[string]*proxy{}, dirs: map[string]string{}, clients: map[string]*redis.Client{}},
		procs: map[string]*proc{}, nats: map[string]string{}, fsync: fsync, extra: extra}
	for i := 0; i < n; i++ {
		name := string(rune('A' + i))
		pc.names = append(pc.names, name)
		pc.nats[name] = "127.0.0.1:0" // the real port comes from the ready line
		if direct {
			pc.nats[name] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		}
		pc.dirs[name] = t.TempDir()
	}
	for _, from := range pc.names {
		if direct {
			break
		}
		pc.links[from] = map[string]*proxy{}
		for _, to := range pc.names {
			if from != to {
				pc.links[from][to] = newProxy(t, "")
			}
		}
	}
	for _, name := range pc.names {
		pc.startProc(t, name)
	}
	return pc
}

func (pc *procCluster) startProc(t testing.TB, name string) {
	t.Helper()
	args := append([]string{"--region", name, "--dir", pc.dirs[name], "--fsync", pc.fsync, "--peer-listen", pc.nats[name]}, pc.extra...)
	for _, other := range pc.names {
		if other == name {
			continue
		}
		if px := pc.links[name][other]; px != nil {
			args = append(args, "--peer", other+"=nats://"+px.addr())
		} else { // startDirectProcCluster
			args = append(args, "--peer", other+"=nats://"+pc.nats[other])
		}
	}
	p := startProc(t, args...)
	pc.procs[name] = p
	for from, m := range pc.links {
		if px := m[name]; px != nil && from != name {
			px.setTarget(p.peerAddr)
		}
	}
	if old := pc.clients[name]; old != nil {
		old.Close()
	}
	pc.clients[name] = redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { pc.clients[name].Close() })
}

// A region is killed with SIGKILL in the middle of writes and restarted on
// the same dir: everything it acknowledged reaches every region.
func TestReplicationKill9DuringWrites(t *testing.T) {
	pc := startProcCluster(t, 3, "everysec")
	h := newHistory()
	stop := make(chan struct{})
	wg := pc.workload(h, stop)
	time.Sleep(700 * time.Millisecond)
	pc.procs["B"].kill9()
	time.Sleep(300 * time.Millisecond)
	pc.startProc(t, "B")
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	pc.converged(t, 30*time.Second)
	for _, r := range pc.names {
		pc.check(t, h, r)
	}
}

// Every region restarts, in random order, while all links are cut; then the
// links heal and everything converges.
func TestReplicationRestartAllWhileCut(t *testing.T) {
	pc := startProcCluster(t, 3, "always")
	h := newHistory()
	stop := make(chan struct{})
	wg := pc.workload(h, stop)
	time.Sleep(400 * time.Millisecond)
	for _, r := range pc.names {
		pc.partition(r, (*proxy).cut)
	}
	time.Sleep(300 * time.Millisecond)
	order := append([]string(nil), pc.names...)
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, r := range order {
		pc.procs[r].kill9()
		pc.startProc(t, r) // starts and serves writes with every peer unreachable
		time.Sleep(200 * time.Millisecond)
	}
	pc.healAll()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	pc.converged(t, 30*time.Second)
	pc.check(t, h, "C")
}
