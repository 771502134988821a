package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"concord/cmd/concord/server"

	"github.com/redis/go-redis/v9"
)

// BenchmarkReplicationLag drives SETs into region A of a three-region
// cluster (in this process, loopback) at fixed rates and reports the lag
// from the write in A to its merge in B and C (p50/p99), and whether the
// lag stayed bounded (the peers drained within 2 s of the load stopping).
// `make bench-repl` runs it; BENCH_REPL_RATES, BENCH_REPL_SECONDS and
// BENCH_REPL_ARGS (flags for the processes of the last table) tune it.
func BenchmarkReplicationLag(b *testing.B) {
	rates := []int{1000, 10000, 50000, 100000}
	if s := os.Getenv("BENCH_REPL_RATES"); s != "" {
		rates = nil
		for _, f := range strings.Split(s, ",") {
			if r, err := strconv.Atoi(f); err == nil {
				rates = append(rates, r)
			}
		}
	}
	secs := 5
	if s, err := strconv.Atoi(os.Getenv("BENCH_REPL_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	if k, err := strconv.Atoi(os.Getenv("BENCH_REPL_KEYS")); err == nil && k > 0 {
		driveKeys = k
	}
	// the production default, not the tests' 30 ms (packing between commands)
	c := startCluster(b, 3, func(cfg *server.Config) { cfg.ColdAfter, cfg.GCHeadroom = coldAfter, gcHeadroom })
	a := c.regions["A"]
	throughputWithReplication(b, c)
	fmt.Printf("\nlag: SETs (short numeric values) over %d keys (BENCH_REPL_KEYS), pipelined from %d connections every %v\n", driveKeys, driveWorkers, driveTick)
	fmt.Printf("%-10s %-10s %-8s %-12s %-12s %-12s %-12s %s\n", "target/s", "achieved/s", "peer", "lag p50", "lag p99", "applied", "drain", "bounded")
	for _, rate := range rates {
		for _, r := range c.regions {
			if r.Node != nil {
				r.Node.ResetLag()
			}
		}
		done := drive(c, "A", rate, time.Duration(secs)*time.Second)
		drain, drained := drainTime(func() bool {
			for _, st := range a.Node.Status() {
				if st.Pending > 0 {
					return false
				}
			}
			return true
		})
		for _, peer := range []string{"B", "C"} {
			for _, st := range c.regions[peer].Node.Status() {
				if st.Name != "A" {
					continue
				}
				fmt.Printf("%-10d %-10d %-8s %-12v %-12v %-12d %-12v %v\n", rate, done/secs, peer, st.LagP50, st.LagP99, st.Applied, drain.Round(time.Millisecond), drained && drain < 2*time.Second)
			}
		}
	}
	if os.Getenv("BENCH_REPL_PROCS") != "0" {
		// the regions above stop first: their sweeps, checkpoints and the
		// collection of their heaps would share the cores with the processes
		for _, r := range c.regions {
			r.Close()
		}
		runtime.GC()
		debug.FreeOSMemory()
		lagAsProcesses(b, rates, secs)
		fmt.Println(`"proc": three concord processes, linked straight to each other's NATS servers;
"max": redis-benchmark SET -P 16 -c 50 at A (1M requests), as fast as A goes with replication on`)
	}
	b.ReportMetric(0, "ns/op") // the table is the result
}

// coldAfter and gcHeadroom are the production defaults of --cold-after
// and --gc-headroom.
var (
	coldAfter  = 10 * time.Second
	gcHeadroom = int64(128 << 20)
)

// throughputWithReplication runs redis-benchmark SET -P 16 against a single
// region and against region A of the cluster (replicating to B and C, all
// in this process on the same cores) and prints both rates, their ratio,
// and B's and C's lag behind A during the run.
func throughputWithReplication(b *testing.B, c *cluster) {
	rb, err := exec.LookPath("redis-benchmark")
	if err != nil {
		b.Skip("redis-benchmark not installed")
	}
	n := "300000"
	if s := os.Getenv("BENCH_REPL_REQUESTS"); s != "" {
		n = s
	}
	run := func(addr string) float64 { return benchmarkSet(b, rb, addr, n) }
	single, err := server.Start(server.Config{Addr: "127.0.0.1:0", Dir: b.TempDir(), LogLevel: "error", ColdAfter: coldAfter, GCHeadroom: gcHeadroom})
	if err != nil {
		b.Fatal(err)
	}
	cpu0 := processCPU()
	one := run(single.Addr())
	cpuOne := processCPU() - cpu0
	single.Close()
	for _, r := range c.regions {
		if r.Node != nil {
			r.Node.ResetLag()
		}
	}
	// BENCH_REPL_PROFILE=file: a CPU profile of the replicated run only
	if f := os.Getenv("BENCH_REPL_PROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			b.Fatal(err)
		}
		pprof.StartCPUProfile(out)
		defer func() { pprof.StopCPUProfile(); out.Close() }()
	}
	cpu0 = processCPU()
	three := run(c.regions["A"].Addr())
	cpuThree := processCPU() - cpu0
	reqs, _ := strconv.ParseFloat(n, 64)
	fmt.Printf("\nredis-benchmark SET -P 16 -c 50 -r 100000 -n %s: single region %.0f rps, region A of 3 (replicating) %.0f rps, ratio %.2f\n", n, one, three, three/one)
	// the three regions and their NATS servers share this process's cores:
	// what each SET costs all of them together says how much of the ratio
	// is the cores, not region A
	fmt.Printf("  server CPU per SET (this process, all regions): single %.1f µs, three regions %.1f µs (%.2fx)\n",
		cpuOne.Seconds()*1e6/reqs, cpuThree.Seconds()*1e6/reqs, cpuThree.Seconds()/cpuOne.Seconds())
	if os.Getenv("BENCH_REPL_PROCS") != "0" {
		ownCPU(b, 30000)
	}
	for _, peer := range []string{"B", "C"} {
		for _, st := range c.regions[peer].Node.Status() {
			if st.Name == "A" {
				fmt.Printf("  lag of %s behind A during the run: p50 %v p99 %v over %d delta batches\n", peer, st.LagP50, st.LagP99, st.Applied)
			}
		}
	}
}

// ownCPU measures what replication costs region A itself: SETs at a fixed
// rate (below what the shared cores can carry, so that neither run is
// starved) into a single concord process and into region A of three
// processes, with each one's CPU per SET from its INFO cpu. B and C share
// the cores, so A's figure includes what that sharing costs it (cache,
// scheduling): an upper bound on what replication costs A.
func ownCPU(b *testing.B, rate int) {
	const secs = 3
	measure := func(c *cluster, name string) float64 {
		before := infoCPU(b, c.clients[name])
		n := drive(c, name, rate, secs*time.Second)
		return (infoCPU(b, c.clients[name]) - before) * 1e6 / float64(max(n, 1))
	}
	single := startProc(b, "--region", "S", "--dir", b.TempDir())
	sc := &cluster{clients: map[string]*redis.Client{"S": redis.NewClient(&redis.Options{Addr: single.addr})}}
	one := measure(sc, "S")
	sc.clients["S"].Close()
	single.kill9()
	pc := startProcCluster(b, 3, "everysec")
	three := measure(pc.cluster, "A")
	for _, p := range pc.procs { // the lag table that follows must not share the cores with them
		p.kill9()
	}
	fmt.Printf("  as processes, %d SET/s (pipelines of %d): %.1f µs CPU per SET in a single region, %.1f in region A of 3 (%.2fx, at most what replication costs A)\n",
		rate, max(1, rate/8/100), one, three, three/one)
}

// processCPU returns the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// driveKeys is how many distinct keys drive writes: by default 100,000,
// redis-benchmark's -r in make bench (each worker cycles through its
// share in order).
var driveKeys = 100000

const (
	driveWorkers = 8
	driveTick    = 10 * time.Millisecond
)

// drive writes SETs into region r at about rate per second for d and
// returns how many were acknowledged.
func drive(c *cluster, r string, rate int, d time.Duration) int {
	const workers, tick = driveWorkers, driveTick
	share := max(1, driveKeys/workers)
	per := max(1, rate/workers/int(time.Second/tick))
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	end := time.Now().Add(d)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cl := c.clients[r]
			t := time.NewTicker(tick)
			defer t.Stop()
			n := 0
			for now := range t.C {
				if now.After(end) {
					break
				}
				p := cl.Pipeline()
				for i := 0; i < per; i++ {
					p.Set(ctx, fmt.Sprintf("lag:%d:%d", w, n%share), n, 0)
					n++
				}
				cmds, _ := p.Exec(ctx)
				ok := 0
				for _, cmd := range cmds {
					if cmd.Err() == nil {
						ok++
					}
				}
				mu.Lock()
				total += ok
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	return total
}

// lagAsProcesses prints the lag table again with each region in its own
// concord process (as regions are deployed: each with its own heap and
// collector; the in-process table's three regions share one, so every
// collection of all three heaps pauses all three apply paths), driven from
// this process, with the lag read from B's and C's INFO replication after
// CONFIG RESETSTAT cleared it.
func lagAsProcesses(b *testing.B, rates []int, secs int) {
	// BENCH_REPL_ARGS: more flags for the three processes (what a background
	// task costs the lag: "--checkpoint-interval 1h", ...)
	pc := startDirectProcCluster(b, 3, "everysec", strings.Fields(os.Getenv("BENCH_REPL_ARGS"))...)
	defer func() {
		for _, p := range pc.procs {
			p.kill9()
		}
	}()
	// the first rate's lag must not include the peers' connecting
	if err := pc.clients["A"].Set(ctx, "lag:ready", 1, 0).Err(); err != nil {
		b.Fatal(err)
	}
	checkFor(b, 30*time.Second, 10*time.Millisecond, func() error {
		for _, peer := range []string{"B", "C"} {
			if err := pc.clients[peer].Get(ctx, "lag:ready").Err(); err != nil {
				return fmt.Errorf("%s: %v", peer, err)
			}
		}
		return nil
	})
	// the last row: as fast as A goes (redis-benchmark SET -P 16 at A, as
	// the throughput row above), target "max"
	rb, _ := exec.LookPath("redis-benchmark")
	for i, rate := range append(rates, 0) {
		if rate == 0 && (rb == "" || i == 0) {
			break
		}
		seq0 := map[string]int{}
		for _, peer := range []string{"B", "C"} {
			if err := pc.clients[peer].ConfigResetStat(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			seq0[peer], _ = strconv.Atoi(peerStat(b, pc.clients[peer], "A")["applied_from_peer"])
		}
		target, achieved := strconv.Itoa(rate), 0
		if rate > 0 {
			achieved = drive(pc.cluster, "A", rate, time.Duration(secs)*time.Second) / secs
		} else {
			target, achieved = "max", int(benchmarkSet(b, rb, pc.procs["A"].addr, "1000000"))
		}
		drain, drained := drainTime(func() bool {
			return peerStat(b, pc.clients["A"], "B")["lag_ops"] == "0" && peerStat(b, pc.clients["A"], "C")["lag_ops"] == "0"
		})
		for _, peer := range []string{"B", "C"} {
			st := peerStat(b, pc.clients[peer], "A")
			seq, _ := strconv.Atoi(st["applied_from_peer"])
			fmt.Printf("%-10s %-10d %-8s %-12s %-12s %-12d %-12v %v\n", target, achieved, peer+" proc", st["apply_lag_p50_ms"]+"ms", st["apply_lag_p99_ms"]+"ms", seq-seq0[peer], drain.Round(time.Millisecond), drained && drain < 2*time.Second)
		}
	}
}

// benchmarkSet runs redis-benchmark SET -P 16 -c 50 -r 100000 with n
// requests against addr and returns its requests per second.
func benchmarkSet(b *testing.B, rb, addr, n string) float64 {
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(rb, "-h", host, "-p", port, "-c", "50", "-n", n, "-r", "100000", "-P", "16", "-t", "set", "--csv").CombinedOutput()
	if err != nil {
		b.Fatalf("redis-benchmark: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	f := strings.Split(lines[len(lines)-1], ",")
	rps, _ := strconv.ParseFloat(strings.Trim(f[1], `"`), 64)
	return rps
}

// drainTime waits up to 10 s for the peers to have applied everything
// (done reports it) and returns how long that took and whether they did.
func drainTime(done func() bool) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		if done() {
			return time.Since(start), true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start), false
}

// peerStat returns the fields of the INFO replication line of peer name.
func peerStat(t testing.TB, c *redis.Client, name string) map[string]string {
	t.Helper()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if !strings.HasPrefix(line, "peer") || !strings.Contains(line, ":name="+name+",") {
			continue
		}
		_, rest, _ := strings.Cut(line, ":")
		m := map[string]string{}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		return m
	}
	t.Fatalf("INFO replication has no peer %s:\n%s", name, info)
	return nil
}
