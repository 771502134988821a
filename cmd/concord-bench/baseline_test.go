package main

import (
	"bufio"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	concord "concord/cmd/concord/server"
)

// The ceiling table is only meaningful if the baselines really serve SET
// and GET: each must store and return values, answer pipelined commands in
// order, and put a command back together when it arrives in pieces.
func TestBaselinesServeSetAndGet(t *testing.T) {
	servers := map[string]func(net.Listener) error{"goroutine": serveBare}
	if runtime.GOOS == "linux" {
		servers["loop"] = serveLoop
	}
	for name, serve := range servers {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go serve(ln)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			rd := bufio.NewReader(c)
			line := func() string {
				s, err := rd.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimRight(s, "\r\n")
			}
			// pipelined: a SET, two GETs, an unknown key
			c.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabc\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$3\r\nget\r\n$1\r\nk\r\n*2\r\n$3\r\nGET\r\n$1\r\nx\r\n"))
			want := []string{"+OK", "$3", "abc", "$3", "abc", "$-1"}
			for _, w := range want {
				if got := line(); got != w {
					t.Fatalf("got %q, want %q", got, w)
				}
			}
			// one command in three pieces
			for _, part := range []string{"*3\r\n$3\r\nSE", "T\r\n$1\r\nk\r\n$2\r", "\nxy\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"} {
				c.Write([]byte(part))
				time.Sleep(20 * time.Millisecond)
			}
			for _, w := range []string{"+OK", "$2", "xy"} {
				if got := line(); got != w {
					t.Fatalf("split command: got %q, want %q", got, w)
				}
			}
		})
	}
}

func TestFsyncPolicy(t *testing.T) {
	for env, want := range map[string]string{"": "everysec", "everysec": "everysec", "always": "always", "no": "", "ALWAYS": ""} {
		got, err := fsyncPolicy(env)
		if got != want || (err != nil) != (want == "") {
			t.Errorf("BENCH_FSYNC=%q: %q, %v; want %q", env, got, err, want)
		}
	}
}

func TestDataSize(t *testing.T) {
	for env, want := range map[string]int{"": 3, "3": 3, "100": 100, "1048576": 1 << 20, "0": 0, "-5": 0, "1048577": 0, "1k": 0} {
		got, err := dataSize(env)
		if got != want || (err != nil) != (want == 0) {
			t.Errorf("BENCH_DATA=%q: %d, %v; want %d", env, got, err, want)
		}
	}
}

func TestBenchRounds(t *testing.T) {
	for env, want := range map[string]int{"": 1, "1": 1, "5": 5, "20": 20} {
		if got, err := benchRounds(env); err != nil || got != want {
			t.Errorf("benchRounds(%q) = %d, %v; want %d", env, got, err, want)
		}
	}
	for _, env := range []string{"0", "-1", "21", "x", "2.5"} {
		if _, err := benchRounds(env); err == nil {
			t.Errorf("benchRounds(%q) accepted", env)
		}
	}
}

// A row's figures are medians, and its ratio is the median of the rounds'
// own ratios (each Concord half over the Redis half next to it), not the
// ratio of the medians.
func TestSummarize(t *testing.T) {
	c := []result{{rps: 100, p50: 1, p99: 9}, {rps: 300, p50: 3, p99: 2}, {rps: 200, p50: 2, p99: 5}}
	r := []result{{rps: 300, p50: 5, p99: 5}, {rps: 100, p50: 1, p99: 1}, {rps: 400, p50: 3, p99: 3}}
	got := summarize(c, r) // ratios 1/3, 3, 1/2; the medians' ratio would be 2/3
	want := rowSummary{c: result{200, 2, 5}, r: result{300, 3, 3}, ratio: 0.5, lowest: 100.0 / 300, highest: 3}
	if got != want {
		t.Fatalf("summarize = %+v, want %+v", got, want)
	}
	if got := summarize(c[1:2], r[1:2]); got.ratio != 3 || got.lowest != 3 || got.highest != 3 || got.c != c[1] || got.r != r[1] {
		t.Fatalf("one round: %+v", got)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Fatalf("median of an even count = %v, want 2.5", m)
	}
}

// The mix's requests/s is all its requests over its longest part's time
// (not the sum of the parts' rates, which counts the short parts as if
// they ran as long as the longest); its latencies are the slowest part's.
func TestMixResult(t *testing.T) {
	parts := []mixPart{
		{n: 100, r: result{rps: 100, p50: 1, p99: 4}}, // 1 s
		{n: 100, r: result{rps: 50, p50: 3, p99: 5}},  // 2 s: the longest
		{n: 100, r: result{rps: 200, p50: 2, p99: 9}}, // 0.5 s
	}
	if got, want := mixResult(parts), (result{rps: 150, p50: 3, p99: 9}); got != want {
		t.Fatalf("mixResult = %+v, want %+v", got, want)
	}
}

func TestBenchTests(t *testing.T) {
	for env, want := range map[string]string{
		"":               "set,get,incr,sadd,hset,mix",
		"mix":            "mix",
		"HSET, mix":      "hset,mix",
		"set,get,set":    "set,get",
		"incr,sadd,hset": "incr,sadd,hset",
	} {
		got, err := benchTests(env)
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("benchTests(%q) = %v, %v; want %s", env, got, err, want)
		}
	}
	for _, env := range []string{"spop", "set,", "mixed"} {
		if _, err := benchTests(env); err == nil {
			t.Errorf("benchTests(%q) accepted", env)
		}
	}
}

// The mix row really runs all five commands against the server, at once:
// each one's calls are counted by the server, and while the mix runs the
// server has clients of every part connected together.
func TestBenchMixRunsEveryCommand(t *testing.T) {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		t.Skip("redis-benchmark not installed")
	}
	in, err := concord.Start(concord.Config{Addr: "127.0.0.1:0", Dir: t.TempDir(), LogLevel: "error"})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	_, p, _ := net.SplitHostPort(in.Addr())
	port, _ := strconv.Atoi(p)
	peak := make(chan int64)
	stop := make(chan struct{})
	go func() { // the most clients connected at once while the mix ran
		var most int64
		for {
			select {
			case <-stop:
				peak <- most
				return
			default:
			}
			most = max(most, info(port, "clients", "connected_clients"))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	r := benchMix(port, 1, 25000, 1000)
	close(stop)
	most := <-peak
	t.Logf("%d clients at most", most)
	if most <= int64(2*50/len(mixTests)+1) { // one part (and a poll): at most 11; two parts at once are 20
		t.Errorf("at most %d clients at once: the parts ran one after another", most)
	}
	if r.rps <= 0 || r.p50 <= 0 || r.p99 < r.p50 {
		t.Errorf("mix result %+v", r)
	}
	for _, cmd := range mixTests {
		if calls := statCalls(cli(port, "INFO", "commandstats"), cmd); calls < 25000/len(mixTests) {
			t.Errorf("%s: %d calls, want %d", cmd, calls, 25000/len(mixTests))
		}
	}
}

// statCalls reads cmdstat_<cmd>'s calls from INFO commandstats.
func statCalls(stats, cmd string) int {
	for _, line := range strings.Split(stats, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
			return n
		}
	}
	return 0
}
