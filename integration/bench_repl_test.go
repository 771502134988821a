package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"concord/cmd/concord/server"
)

// BenchmarkReplicationLag drives SETs into region A of a three-region
// cluster (in this process, loopback) at fixed rates and reports the lag
// from the write in A to its merge in B and C (p50/p99), and whether the
// lag stayed bounded (the peers drained within 2 s of the load stopping).
// `make bench-repl` runs it; BENCH_REPL_RATES and BENCH_REPL_SECONDS tune it.
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
	// the production default, not the tests' 30 ms (packing between commands)
	c := startCluster(b, 3, func(cfg *server.Config) { cfg.ColdAfter = coldAfter })
	a := c.regions["A"]
	throughputWithReplication(b, c)
	fmt.Printf("\n%-10s %-10s %-8s %-12s %-12s %-12s %-12s %s\n", "target/s", "achieved/s", "peer", "lag p50", "lag p99", "applied", "drain", "bounded")
	for _, rate := range rates {
		for _, r := range c.regions {
			if r.Node != nil {
				r.Node.ResetLag()
			}
		}
		done := drive(c, "A", rate, time.Duration(secs)*time.Second)
		start := time.Now()
		drained := false
		for time.Since(start) < 10*time.Second {
			pending := uint64(0)
			for _, st := range a.Node.Status() {
				pending += st.Pending
			}
			if pending == 0 {
				drained = true
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		drain := time.Since(start)
		for _, peer := range []string{"B", "C"} {
			for _, st := range c.regions[peer].Node.Status() {
				if st.Name != "A" {
					continue
				}
				fmt.Printf("%-10d %-10d %-8s %-12v %-12v %-12d %-12v %v\n", rate, done/secs, peer, st.LagP50, st.LagP99, st.Applied, drain.Round(time.Millisecond), drained && drain < 2*time.Second)
			}
		}
	}
	b.ReportMetric(0, "ns/op") // the table is the result
}

// coldAfter is the production default of --cold-after.
var coldAfter = 10 * time.Second

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
	run := func(addr string) float64 {
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
	single, err := server.Start(server.Config{Addr: "127.0.0.1:0", Dir: b.TempDir(), LogLevel: "error", ColdAfter: coldAfter})
	if err != nil {
		b.Fatal(err)
	}
	one := run(single.Addr())
	single.Close()
	for _, r := range c.regions {
		if r.Node != nil {
			r.Node.ResetLag()
		}
	}
	three := run(c.regions["A"].Addr())
	fmt.Printf("\nredis-benchmark SET -P 16 -c 50 -r 100000 -n %s: single region %.0f rps, region A of 3 (replicating) %.0f rps, ratio %.2f\n", n, one, three, three/one)
	for _, peer := range []string{"B", "C"} {
		for _, st := range c.regions[peer].Node.Status() {
			if st.Name == "A" {
				fmt.Printf("  lag of %s behind A during the run: p50 %v p99 %v over %d delta batches\n", peer, st.LagP50, st.LagP99, st.Applied)
			}
		}
	}
}

// drive writes SETs into region r at about rate per second for d and
// returns how many were acknowledged.
func drive(c *cluster, r string, rate int, d time.Duration) int {
	const workers = 8
	const tick = 10 * time.Millisecond
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
					p.Set(ctx, fmt.Sprintf("lag:%d:%d", w, n%50000), n, 0)
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
