package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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
	c := startCluster(b, 3)
	a := c.regions["A"]
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
