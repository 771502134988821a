// Command concord-bench runs redis-benchmark against Concord and a real
// redis-server in the same run, alternating, and prints requests/s and
// latencies side by side with the Concord/Redis ratio (make bench),
// compares their memory per key and per set member (make bench-mem), or
// runs commands that should cost little against big keys (make
// bench-cmds).
// BENCH_QUICK=1 keeps a run under a minute.
package main

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

type server struct {
	name string
	port int
	cmd  *exec.Cmd
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "concord-bench:", err)
	os.Exit(1)
}

func waitPort(port int) {
	for i := 0; i < 300; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	fail(fmt.Errorf("nothing listens on %d", port))
}

// pinning splits the cores between the servers and redis-benchmark with
// taskset when there are more than 2 (and taskset exists): server cores
// first, client cores second. On 2 cores everything shares them.
func pinning() (server, client []string) {
	n := runtime.NumCPU()
	if n <= 2 || os.Getenv("BENCH_NO_PIN") != "" {
		return nil, nil
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return nil, nil
	}
	half := n / 2
	return []string{ts, "-c", fmt.Sprintf("0-%d", half-1)}, []string{ts, "-c", fmt.Sprintf("%d-%d", half, n-1)}
}

// command builds bin args, prefixed by a taskset pin when given.
func command(pin []string, bin string, args ...string) *exec.Cmd {
	if len(pin) > 0 {
		return exec.Command(pin[0], append(append(append([]string{}, pin[1:]...), bin), args...)...)
	}
	return exec.Command(bin, args...)
}

func start(name string, bin string, args ...string) *server {
	port := freePort()
	var full []string
	for _, a := range args {
		full = append(full, strings.ReplaceAll(a, "PORT", strconv.Itoa(port)))
	}
	pin, _ := pinning()
	cmd := command(pin, bin, full...)
	if err := cmd.Start(); err != nil {
		fail(err)
	}
	waitPort(port)
	return &server{name: name, port: port, cmd: cmd}
}

func (s *server) stop() { s.cmd.Process.Kill(); s.cmd.Wait() }

func (s *server) rss() int64 { return s.status("VmRSS:") }

// status reads a size field of the server's /proc status, in bytes.
func (s *server) status(field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

type result struct{ rps, p50, p99 float64 }

// bench runs redis-benchmark for one test (or the mix, see benchMix) with
// 50 clients and returns its figures.
func bench(port int, test string, pipeline, n, random int) result {
	if test == "mix" {
		return benchMix(port, pipeline, n, random)
	}
	return benchClients(port, test, pipeline, n, random, 50)
}

// benchClients runs redis-benchmark for one test with that many clients
// and returns its CSV figures.
func benchClients(port int, test string, pipeline, n, random, clients int) result {
	_, pin := pinning()
	out, err := command(pin, "redis-benchmark", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-c", strconv.Itoa(clients),
		"-n", strconv.Itoa(n), "-r", strconv.Itoa(random), "-P", strconv.Itoa(pipeline), "-d", strconv.Itoa(valueSize), "-t", test, "--csv").Output()
	if err != nil {
		fail(fmt.Errorf("redis-benchmark %s: %v", test, err))
	}
	return parseCSV(test, out)
}

// parseCSV reads the figures of redis-benchmark --csv's result line.
func parseCSV(test string, out []byte) result {
	recs, _ := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	for _, r := range recs {
		if len(r) >= 7 && r[0] != "test" {
			rps, _ := strconv.ParseFloat(r[1], 64)
			p50, _ := strconv.ParseFloat(r[4], 64)
			p99, _ := strconv.ParseFloat(r[6], 64)
			return result{rps, p50, p99}
		}
	}
	fail(fmt.Errorf("no result for %s: %s", test, out))
	return result{}
}

// valueSize is redis-benchmark's -d: the bytes of each SET's and HSET's
// value (BENCH_DATA; redis-benchmark's default 3).
var valueSize = 3

// dataSize reads BENCH_DATA: a value size of 1 byte to 1 MiB.
func dataSize(env string) (int, error) {
	if env == "" {
		return 3, nil
	}
	n, err := strconv.Atoi(env)
	if err != nil || n < 1 || n > 1<<20 {
		return 0, fmt.Errorf("BENCH_DATA must be a value size in bytes, 1 to 1048576, not %q", env)
	}
	return n, nil
}

func main() {
	mode := flag.String("mode", "throughput", "throughput, memory or commands")
	concordBin := flag.String("concord", "./concord", "concord binary")
	bareAddr := flag.String("serve-bare", "", "internal: serve the bare goroutine-per-connection baseline on this address")
	loopAddr := flag.String("serve-loop", "", "internal: serve the bare event-loop baseline on this address")
	flag.Parse()
	if *bareAddr != "" || *loopAddr != "" {
		serve := serveBare
		addr := *bareAddr
		if *loopAddr != "" {
			runtime.GOMAXPROCS(1)
			serve, addr = serveLoop, *loopAddr
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fail(err)
		}
		fail(serve(ln))
	}
	quick := os.Getenv("BENCH_QUICK") != ""
	fsync, err := fsyncPolicy(os.Getenv("BENCH_FSYNC"))
	if err != nil {
		fail(err)
	}
	if valueSize, err = dataSize(os.Getenv("BENCH_DATA")); err != nil {
		fail(err)
	}
	rounds, err := benchRounds(os.Getenv("BENCH_ROUNDS"))
	if err != nil {
		fail(err)
	}
	tests, err := benchTests(os.Getenv("BENCH_TESTS"))
	if err != nil {
		fail(err)
	}
	dir, _ := os.MkdirTemp("", "concord-bench")
	defer os.RemoveAll(dir)
	newConcord := func() *server {
		d, _ := os.MkdirTemp(dir, "concord")
		// BENCH_CONCORD_ARGS: more flags for Concord (what a setting
		// costs or buys: "--checkpoint-cpu 1", ...)
		args := append([]string{"--addr", "127.0.0.1:PORT", "--dir", d, "--fsync", fsync, "--log-level", "warn"}, strings.Fields(os.Getenv("BENCH_CONCORD_ARGS"))...)
		return start("concord", *concordBin, args...)
	}
	newRedis := func() *server {
		d, _ := os.MkdirTemp(dir, "redis")
		return start("redis", "redis-server", "--port", "PORT", "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
			"--appendfsync", fsync, "--dir", d)
	}
	if srv, cli := pinning(); srv != nil {
		fmt.Printf("cores: %d (servers pinned to %s, redis-benchmark to %s)\n", runtime.NumCPU(), srv[2], cli[2])
	} else {
		fmt.Printf("cores: %d (redis-benchmark shares them with the server)\n", runtime.NumCPU())
	}
	switch *mode {
	case "memory":
		memory(newConcord, newRedis, quick)
		return
	case "commands":
		commands(newConcord, newRedis, quick)
		return
	}
	c, r := newConcord(), newRedis()
	defer c.stop()
	defer r.stop()
	n := 200000
	if quick {
		n = 20000
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_N")); err == nil && v > 0 {
		n = v // longer rows average out a checkpoint landing in one
	}
	fmt.Printf("redis-benchmark -c 50 -r 100000 -n %d -d %d, Concord --fsync %s vs redis-server --appendonly yes --appendfsync %s", n, valueSize, fsync, fsync)
	if rounds > 1 {
		fmt.Printf("; %d rounds per row, medians", rounds)
	}
	fmt.Printf("\n\n%-6s %-3s | %12s %8s %8s | %12s %8s %8s | %6s %-9s | %7s %3s | %9s\n", "test", "P", "concord rps", "p50 ms", "p99 ms", "redis rps", "p50 ms", "p99 ms", "ratio", "range", "bg c/r", "gc", "aside c/r")
	for _, p := range []int{1, 16} {
		for _, test := range tests {
			var cs, rs []result
			var cd, rd bgDuring
			var cAside, rAside float64
			for range rounds {
				quiet(c.port, r.port)
				cb, rc0 := background(c.port, "checkpoints"), cpuSeconds(r.port)
				cs = append(cs, bench(c.port, test, p, n, 100000))
				cd = cd.add(background(c.port, "checkpoints").since(cb))
				rAside += cpuSeconds(r.port) - rc0
				quiet(c.port, r.port)
				rb, cc0 := background(r.port, "aof_rewrites"), cpuSeconds(c.port)
				rs = append(rs, bench(r.port, test, p, n, 100000))
				rd = rd.add(background(r.port, "aof_rewrites").since(rb))
				cAside += cpuSeconds(c.port) - cc0
			}
			sum := summarize(cs, rs)
			fmt.Printf("%-6s %-3d | %12.0f %8.3f %8.3f | %12.0f %8.3f %8.3f | %6.2f %-9s | %3d/%-3d %3d | %4.0f/%-4.0f\n", strings.ToUpper(test), p, sum.c.rps, sum.c.p50, sum.c.p99, sum.r.rps, sum.r.p50, sum.r.p99, sum.ratio,
				fmt.Sprintf("%.2f-%.2f", sum.lowest, sum.highest), cd.overlapped, rd.overlapped, cd.gc, cAside*1000, rAside*1000)
		}
	}
	fmt.Println("\nMIX: SET, GET, INCR, SADD and HSET at once, 10 clients each (five redis-benchmark processes, n/5 requests\neach): rps is all of them over the longest one's time, p50 and p99 the slowest command's.")
	fmt.Println("ratio: Concord's rps over Redis's (the median of the rounds' ratios with BENCH_ROUNDS); range: the lowest and\nhighest round;\nbg c/r: Concord's checkpoints and Redis's AOF rewrites that ran during the row (either competes for the cores);\ngc: Concord's garbage collections during the row;\naside c/r: CPU ms each server used while the other one's half of the row ran (its background work then: Concord's\ncheckpoints run at full speed and it collects when idle; it takes the cores from the other server and its client).\nbg, gc and aside add up the rounds. Each half starts once both servers used under 5% of a core for 300 ms (at most\n5 s): background work after a burst runs in the lull, as on a machine of its own, unless it outlasts the wait")
	ceiling(r, n)
}

// fsyncPolicy is the fsync policy both servers run with, from BENCH_FSYNC:
// everysec (the default) or always (Concord --fsync always, Redis
// --appendfsync always: every write fsynced before its reply).
func fsyncPolicy(env string) (string, error) {
	p := cmp.Or(env, "everysec")
	if p != "everysec" && p != "always" {
		return "", fmt.Errorf("BENCH_FSYNC must be everysec or always, not %q", env)
	}
	return p, nil
}

// ceiling runs SET and GET against two bare baselines, a locked map and
// nothing else, and Redis: redcon's own server (one goroutine per
// connection, Concord's shape) and one epoll loop on one thread (Redis's
// shape). What a Go server of each shape reaches on this machine.
func ceiling(r *server, n int) {
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	g := start("bare", self, "-serve-bare", "127.0.0.1:PORT")
	defer g.stop()
	l := start("loop", self, "-serve-loop", "127.0.0.1:PORT")
	defer l.stop()
	fmt.Printf("\nceiling: bare Go servers (a map, no persistence): goroutine per connection (redcon) and one epoll loop, vs Redis\n")
	fmt.Printf("%-6s %-3s | %12s %8s | %12s %8s | %12s %8s | %6s %6s\n", "test", "P", "goroutine", "p50 ms", "loop rps", "p50 ms", "redis rps", "p50 ms", "g/r", "loop/r")
	for _, p := range []int{1, 16} {
		for _, test := range []string{"set", "get"} {
			gr := bench(g.port, test, p, n, 100000)
			lr := bench(l.port, test, p, n, 100000)
			rr := bench(r.port, test, p, n, 100000)
			fmt.Printf("%-6s %-3d | %12.0f %8.3f | %12.0f %8.3f | %12.0f %8.3f | %6.2f %6.2f\n", strings.ToUpper(test), p,
				gr.rps, gr.p50, lr.rps, lr.p50, rr.rps, rr.p50, gr.rps/rr.rps, lr.rps/rr.rps)
		}
	}
}

// memory loads the same data into fresh servers and compares RSS growth:
// right after the load, and once settled (Concord's keys went cold, see
// --cold-after, Concord ran a checkpoint (SAVE), then 25 s idle). The anonymous part of
// RSS is shown too: Concord's also counts Badger's memory-mapped files.
func memory(newConcord, newRedis func() *server, quick bool) {
	keys, members := 1000000, 1000000
	if quick {
		keys, members = 100000, 100000
	}
	type rssAt struct{ loaded, settled, anon float64 }
	measure := func(s *server, test string, n int) rssAt {
		before, beforeAnon := s.rss(), s.status("RssAnon:")
		bench(s.port, test, 16, n*3, n) // -r n random keys/members, enough requests to fill most of them
		time.Sleep(500 * time.Millisecond)
		items := float64(max(count(s.port, test), 1))
		var r rssAt
		r.loaded = float64(s.rss()-before) / items
		if s.name == "concord" && test == "set" {
			// wait for the keys to go cold (the default --cold-after is
			// 10 s: packed 10-20 s after their last write)
			deadline := time.Now().Add(45 * time.Second)
			for time.Now().Before(deadline) && float64(info(s.port, "memory", "cold_keys")) < 0.99*items {
				time.Sleep(time.Second)
			}
		}
		if s.name == "concord" {
			// the steady state has had a checkpoint: store the loaded
			// keys now (SAVE), not in the middle of the measurement
			cli(s.port, "SAVE")
		}
		// settled: 25 s later, idle, without MEMORY PURGE: background work
		// done (Badger's flush of what SAVE wrote, Concord's reclaim of
		// mapped file pages every 5 s, its return of free memory once idle
		// for 10 s; jemalloc's decay in Redis)
		time.Sleep(25 * time.Second)
		r.settled = float64(s.rss()-before) / items
		r.anon = float64(s.status("RssAnon:")-beforeAnon) / items
		return r
	}
	fmt.Printf("%-30s | %-28s | %-28s | %-28s\n", "bytes of RSS", "after the load", "settled", "settled, anonymous only")
	fmt.Printf("%-30s | %8s %8s %8s  | %8s %8s %8s  | %8s %8s %8s\n", "", "concord", "redis", "ratio", "concord", "redis", "ratio", "concord", "redis", "ratio")
	for _, t := range []struct {
		name, test string
		n          int
	}{{"per string key (3-byte value)", "set", keys}, {"per set member", "sadd", members}} {
		c, r := newConcord(), newRedis()
		cb, rb := measure(c, t.test, t.n), measure(r, t.test, t.n)
		c.stop()
		r.stop()
		fmt.Printf("%-30s | %8.0f %8.0f %7.2fx  | %8.0f %8.0f %7.2fx  | %8.0f %8.0f %7.2fx\n", t.name,
			cb.loaded, rb.loaded, cb.loaded/rb.loaded, cb.settled, rb.settled, cb.settled/rb.settled, cb.anon, rb.anon, cb.anon/rb.anon)
	}
}

// bgState is a server's background work at a moment: the checkpoints
// (Concord) or AOF rewrites (Redis) done, whether one is running, and
// Concord's GC cycles.
type bgState struct {
	done    int64
	running bool
	gc      int64
}

func background(port int, counter string) bgState {
	return bgState{info(port, "persistence", counter), info(port, "persistence", "aof_rewrite_in_progress") > 0, info(port, "memory", "gc_cycles")}
}

// bgDuring is what ran while a row ran: the checkpoints or rewrites that
// overlapped it (finished during it, or still running at its end) and the
// collections.
type bgDuring struct{ overlapped, gc int64 }

func (d bgDuring) add(e bgDuring) bgDuring {
	return bgDuring{d.overlapped + e.overlapped, d.gc + e.gc}
}

func (after bgState) since(before bgState) bgDuring {
	d := bgDuring{overlapped: after.done - before.done, gc: after.gc - before.gc}
	if after.running {
		d.overlapped++
	}
	return d
}

// quiet waits until none of the servers on ports used more than 5% of a
// core for 300 ms (at most 5 s): one server's background work after its
// row (a checkpoint, a collection) then does not run in the other's. 300
// ms: Concord starts a checkpoint that fell due during a burst once it saw
// a quiet 100 ms poll (--checkpoint-eager), up to ~200 ms into the lull.
func quiet(ports ...int) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		before := make([]float64, len(ports))
		for i, p := range ports {
			before[i] = cpuSeconds(p)
		}
		time.Sleep(300 * time.Millisecond)
		busy := false
		for i, p := range ports {
			busy = busy || cpuSeconds(p)-before[i] > 0.015
		}
		if !busy {
			return
		}
	}
}

// cpuSeconds is a server's CPU time so far (INFO cpu's used_cpu_sys +
// used_cpu_user).
func cpuSeconds(port int) float64 { return infoFields(port, "cpu", "used_cpu_sys", "used_cpu_user") }

// cli runs redis-cli against port and returns its output.
func cli(port int, args ...string) string {
	out, _ := exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(port)}, args...)...).Output()
	return string(out)
}

// info returns a numeric field of an INFO section (0 if absent).
func info(port int, section, field string) int64 {
	return int64(infoFields(port, section, field))
}

// infoFields returns the sum of numeric fields of an INFO section (absent
// ones count 0).
func infoFields(port int, section string, fields ...string) float64 {
	total := 0.0
	for _, line := range strings.Split(cli(port, "INFO", section), "\n") {
		for _, f := range fields {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), f+":"); ok {
				x, _ := strconv.ParseFloat(v, 64)
				total += x
			}
		}
	}
	return total
}

func count(port int, test string) int64 {
	args := []string{"-p", strconv.Itoa(port), "DBSIZE"}
	if test == "sadd" {
		args = []string{"-p", strconv.Itoa(port), "SCARD", "myset"}
	}
	out, err := exec.Command("redis-cli", args...).Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	return n
}
