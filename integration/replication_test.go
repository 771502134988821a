package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"concord/cmd/concord/server"

	"github.com/redis/go-redis/v9"
)

// cluster is N regions in this process, each reaching every other through
// its own proxy (links[from][to]).
type cluster struct {
	names   []string
	regions map[string]*server.Instance
	links   map[string]map[string]*proxy
	dirs    map[string]string
	clients map[string]*redis.Client
	nats    map[string]string
	mod     func(*server.Config) // applied to every region's config
}

// startCluster starts n regions with embedded NATS on free ports.
func startCluster(t testing.TB, n int, mod ...func(*server.Config)) *cluster {
	t.Helper()
	c := &cluster{regions: map[string]*server.Instance{}, links: map[string]map[string]*proxy{}, dirs: map[string]string{}, clients: map[string]*redis.Client{}}
	// proxies first (regions need their addresses as peer URLs); each is
	// pointed at its region's NATS once that has started on a free port
	natsAddr := map[string]string{}
	for i := 0; i < n; i++ {
		name := string(rune('A' + i))
		c.names = append(c.names, name)
		natsAddr[name] = "127.0.0.1:0"
		c.dirs[name] = t.TempDir()
	}
	for _, from := range c.names {
		c.links[from] = map[string]*proxy{}
		for _, to := range c.names {
			if from != to {
				c.links[from][to] = newProxy(t, "")
			}
		}
	}
	c.nats = natsAddr
	if len(mod) > 0 {
		c.mod = mod[0]
	}
	for _, name := range c.names {
		c.start(t, name, natsAddr[name])
	}
	return c
}

func (c *cluster) start(t testing.TB, name, natsAddr string) {
	t.Helper()
	peers := map[string]string{}
	for _, other := range c.names {
		if other != name {
			peers[other] = "nats://" + c.links[name][other].addr()
		}
	}
	cfg := server.Config{Addr: "127.0.0.1:0", Region: name, Dir: c.dirs[name], LogLevel: "warn",
		PeerListen: natsAddr, Peers: peers, MetricsAddr: "127.0.0.1:0", PeerDownAfter: 300 * time.Millisecond,
		ColdAfter: 30 * time.Millisecond}
	if c.mod != nil {
		c.mod(&cfg)
	}
	in, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	c.regions[name] = in
	for from, m := range c.links {
		if p := m[name]; p != nil && from != name {
			p.setTarget(in.PeerAddr())
		}
	}
	c.clients[name] = redis.NewClient(&redis.Options{Addr: in.Addr(), MaxRetries: -1})
	t.Cleanup(func() { c.clients[name].Close() })
}

// partition cuts every link to and from region r.
func (c *cluster) partition(r string, how func(*proxy)) {
	for _, from := range c.names {
		for _, to := range c.names {
			if from != to && (from == r || to == r) {
				how(c.links[from][to])
			}
		}
	}
}

func (c *cluster) healAll() {
	for _, m := range c.links {
		for _, p := range m {
			p.heal()
		}
	}
}

// dump renders a region's whole keyspace (db 0) as text.
func dump(cl *redis.Client) string {
	keys, _ := cl.Keys(ctx, "*").Result()
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		typ, _ := cl.Type(ctx, k).Result()
		switch typ {
		case "string":
			v, _ := cl.Get(ctx, k).Result()
			fmt.Fprintf(&b, "%s=%q\n", k, v)
		case "set":
			ms, _ := cl.SMembers(ctx, k).Result()
			sort.Strings(ms)
			fmt.Fprintf(&b, "%s=%v\n", k, ms)
		case "hash":
			m, _ := cl.HGetAll(ctx, k).Result()
			fmt.Fprintf(&b, "%s=%v\n", k, m)
		}
	}
	return b.String()
}

func (c *cluster) converged(t testing.TB, within time.Duration) string {
	t.Helper()
	var first string
	checkFor(t, within, 50*time.Millisecond, func() error {
		first = dump(c.clients[c.names[0]])
		for _, n := range c.names[1:] {
			if d := dump(c.clients[n]); d != first {
				return fmt.Errorf("%s and %s differ:\n%s\n---\n%s", c.names[0], n, first, d)
			}
		}
		return nil
	})
	return first
}

// history records what clients attempted and what was acknowledged.
type history struct {
	mu            sync.Mutex
	ackedIncr     map[string]int64
	attemptedIncr map[string]int64
	ackedAdds     map[string]map[string]bool // set -> members added and acked, never removed
}

func newHistory() *history {
	return &history{ackedIncr: map[string]int64{}, attemptedIncr: map[string]int64{}, ackedAdds: map[string]map[string]bool{}}
}

// workload runs Jepsen-style clients against every region until stop is
// closed, recording what was attempted and acknowledged.
func (c *cluster) workload(h *history, stop chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, name := range c.names {
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			cl := c.clients[name]
			rng := rand.New(rand.NewSource(int64(name[0])))
			var mine []string // members this client added to set<k>, still present
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				switch rng.Intn(11) {
				case 0, 1:
					key := fmt.Sprint("cnt", rng.Intn(3))
					n := int64(rng.Intn(10) + 1)
					h.mu.Lock()
					h.attemptedIncr[key] += n
					h.mu.Unlock()
					if cl.IncrBy(ctx, key, n).Err() == nil {
						h.mu.Lock()
						h.ackedIncr[key] += n
						h.mu.Unlock()
					}
				case 2, 3:
					key := fmt.Sprint("set", rng.Intn(3))
					m := fmt.Sprintf("%s-%d", name, i)
					if cl.SAdd(ctx, key, m).Err() == nil {
						h.mu.Lock()
						if h.ackedAdds[key] == nil {
							h.ackedAdds[key] = map[string]bool{}
						}
						h.ackedAdds[key][m] = true
						h.mu.Unlock()
						mine = append(mine, key+"|"+m)
					}
				case 4:
					// remove one of our own members (nobody else adds it again)
					if len(mine) > 0 {
						j := rng.Intn(len(mine))
						key, m, _ := strings.Cut(mine[j], "|")
						h.mu.Lock()
						delete(h.ackedAdds[key], m) // its fate is now "removed or not"
						h.mu.Unlock()
						cl.SRem(ctx, key, m)
						mine = append(mine[:j], mine[j+1:]...)
					}
				case 5:
					cl.HSet(ctx, fmt.Sprint("hash", rng.Intn(2)), fmt.Sprint("f", rng.Intn(5)), fmt.Sprint(name, i))
				case 6:
					cl.HIncrBy(ctx, "hcnt", fmt.Sprint("f", rng.Intn(3)), 1)
				case 7: // SET, or SET ... EX (one delta with its deadline)
					ttl := time.Duration(0)
					if rng.Intn(2) == 0 {
						ttl = time.Duration(1000+rng.Intn(1000)) * time.Second
					}
					cl.Set(ctx, fmt.Sprint("str", rng.Intn(4)), fmt.Sprint(name, i), ttl)
				case 8:
					cl.Del(ctx, fmt.Sprint("str", rng.Intn(4)))
				case 9:
					cl.Expire(ctx, fmt.Sprint("hash", rng.Intn(2)), time.Duration(1000+rng.Intn(1000))*time.Second)
				case 10: // its delta carries only the suffix (crdt.Extend), once 1 KiB long
					cl.Append(ctx, fmt.Sprint("log", rng.Intn(2)), fmt.Sprint(name, i, ",", strings.Repeat(".", rng.Intn(100))))
				}
				time.Sleep(time.Millisecond)
			}
		}(name)
	}
	return &wg
}

// check verifies the history against region r's final state: no
// acknowledged add lost, counters within [acked, attempted].
func (c *cluster) check(t *testing.T, h *history, r string) {
	t.Helper()
	cl := c.clients[r]
	h.mu.Lock()
	defer h.mu.Unlock()
	for key, acked := range h.ackedIncr {
		var got int64
		var err error
		for try := 0; try < 5; try++ { // a loaded machine may time a read out
			if got, err = cl.Get(ctx, key).Int64(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil || got < acked || got > h.attemptedIncr[key] {
			t.Errorf("%s = %d (%v), acked %d, attempted %d", key, got, err, acked, h.attemptedIncr[key])
		}
	}
	lost := 0
	for key, members := range h.ackedAdds {
		all, err := cl.SMembers(ctx, key).Result()
		for try := 0; err != nil && try < 5; try++ {
			time.Sleep(100 * time.Millisecond)
			all, err = cl.SMembers(ctx, key).Result()
		}
		if err != nil {
			t.Errorf("SMEMBERS %s: %v", key, err)
			continue
		}
		have := map[string]bool{}
		for _, m := range all {
			have[m] = true
		}
		for m := range members {
			if ok := have[m]; !ok {
				lost++
				if lost < 5 {
					t.Errorf("acknowledged SADD %s %s lost", key, m)
				}
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d acknowledged adds lost", lost)
	}
}

// Three regions write concurrently; one is partitioned (links reset, then
// blackholed) while writes continue on both sides, then healed: identical
// state everywhere, nothing acknowledged lost, counters exact.
func TestReplicationPartitionHeal(t *testing.T) {
	c := startCluster(t, 3)
	h := newHistory()
	stop := make(chan struct{})
	wg := c.workload(h, stop)
	time.Sleep(500 * time.Millisecond)
	c.partition("C", (*proxy).cut)
	time.Sleep(time.Second)
	c.partition("C", (*proxy).blackhole)
	time.Sleep(500 * time.Millisecond)
	c.healAll()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	state := c.converged(t, 30*time.Second)
	c.check(t, h, "A")
	if len(state) < 20 {
		t.Fatalf("suspiciously little state:\n%s", state)
	}
	info, _ := c.clients["A"].Info(ctx, "replication").Result()
	if !strings.Contains(info, "peers:2") || !strings.Contains(info, "name=B,link=up") {
		t.Fatalf("INFO replication:\n%s", info)
	}
}

// Five regions, 80 ms each way on every link.
func TestReplicationFiveRegionsDelayed(t *testing.T) {
	c := startCluster(t, 5)
	for _, m := range c.links {
		for _, p := range m {
			p.slow(80 * time.Millisecond)
		}
	}
	h := newHistory()
	stop := make(chan struct{})
	wg := c.workload(h, stop)
	time.Sleep(1500 * time.Millisecond)
	c.partition("E", (*proxy).cut)
	time.Sleep(500 * time.Millisecond)
	for _, m := range c.links {
		for _, p := range m {
			p.slow(80 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	c.converged(t, 60*time.Second)
	c.check(t, h, "B")
}

// Concurrent SET vs INCR and a type conflict resolve identically everywhere
// and show up in the conflict log.
func TestReplicationConflicts(t *testing.T) {
	c := startCluster(t, 2)
	a, b := c.clients["A"], c.clients["B"]
	a.Set(ctx, "n", "10", 0)
	c.converged(t, 10*time.Second)
	c.partition("B", (*proxy).cut)
	a.IncrBy(ctx, "n", 5)
	a.Set(ctx, "t", "string", 0)
	time.Sleep(5 * time.Millisecond)
	b.Set(ctx, "n", "100", 0) // later HLC: absorbs only the increments it saw (none of A's +5)
	b.SAdd(ctx, "t", "member")
	c.healAll()
	state := c.converged(t, 20*time.Second)
	if !strings.Contains(state, `n="105"`) || !strings.Contains(state, "t=[member]") {
		t.Fatalf("state:\n%s", state)
	}
	for _, name := range c.names {
		res, err := c.clients[name].Do(ctx, "CONCORD", "CONFLICTS", "COUNT", "10").Slice()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range res {
			if strings.Contains(fmt.Sprint(r), "type") {
				found = true
			}
		}
		if name == "A" && !found {
			t.Fatalf("region %s conflict log lacks the type conflict: %v", name, res)
		}
	}
}

// WAIT counts the regions that applied this connection's writes; a cut-off
// peer is not counted and the call returns at the timeout.
func TestReplicationWait(t *testing.T) {
	c := startCluster(t, 3)
	a := c.clients["A"]
	if err := a.Set(ctx, "w", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	conn := a.Conn()
	defer conn.Close()
	conn.Set(ctx, "w2", "x", 0)
	if n, err := conn.Do(ctx, "WAIT", 2, 5000).Int(); err != nil || n != 2 {
		t.Fatalf("WAIT 2 = %d, %v", n, err)
	}
	c.partition("C", (*proxy).cut)
	conn.Set(ctx, "w3", "y", 0)
	start := time.Now()
	n, err := conn.Do(ctx, "WAIT", 2, 500).Int()
	if err != nil || n != 1 {
		t.Fatalf("WAIT with C cut = %d, %v", n, err)
	}
	if d := time.Since(start); d < 450*time.Millisecond || d > 5*time.Second {
		t.Fatalf("WAIT returned after %v", d)
	}
	// the metrics say the same as WAIT: C is down, B up
	body := scrape(t, c.regions["A"].MetricsAddr())
	checkDocumentedMetrics(t, body)
	for _, want := range []string{`concord_peer_up{peer="B"} 1`, `concord_replication_lag_ops{peer="C"}`, `concord_keys{db="0"} 3`, `concord_commands_total{cmd="wait"} 2`} {
		if !strings.Contains(body, want) {
			t.Fatalf("metrics lack %q:\n%s", want, body)
		}
	}
	if !regexp.MustCompile(`concord_replication_lag_ops\{peer="C"\} [1-9]`).MatchString(body) {
		t.Fatalf("no lag towards the cut peer C:\n%s", body)
	}
	// /readyz: degraded once C has been unreachable for --peer-down-after
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if r := httpGet(t, c.regions["A"].MetricsAddr(), "/readyz"); !strings.Contains(r, `"status":"degraded"`) || !strings.Contains(r, `"name":"C","link":"down"`) {
			return fmt.Errorf("readyz: %s", r)
		}
		return nil
	})
	c.healAll()
	if n, _ := conn.Do(ctx, "WAIT", 2, 10000).Int(); n != 2 {
		t.Fatalf("WAIT after heal = %d", n)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if r := httpGet(t, c.regions["A"].MetricsAddr(), "/readyz"); !strings.Contains(r, `"status":"ready"`) {
			return fmt.Errorf("readyz after heal: %s", r)
		}
		return nil
	})
}

func httpGet(t *testing.T, addr, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// checkDocumentedMetrics fails if the alert rules, the dashboard or the
// metrics table of docs/observability.md name a series /metrics lacks.
func checkDocumentedMetrics(t *testing.T, body string) {
	t.Helper()
	var docs string
	for _, f := range []string{"../docs/observability.md", "../docs/grafana-dashboard.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs += string(b)
	}
	if err := json.Unmarshal(mustRead(t, "../docs/grafana-dashboard.json"), new(map[string]any)); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`concord_[a-z_]+`).FindAllString(docs, -1) {
		name := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
		if seen[name] {
			continue
		}
		seen[name] = true
		if !strings.Contains(body, "\n"+name) && !strings.Contains(body, " "+name+" ") {
			t.Errorf("docs name %s, /metrics does not have it", name)
		}
	}
}

func mustRead(t *testing.T, f string) []byte {
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A WAIT that cannot be satisfied (a peer cut, no timeout) holds up only
// its own client, shows in INFO's blocked_clients, and ends when the client
// is killed; inside MULTI/EXEC, WAIT answers at once with the count as it
// stands (EXEC holds its keys' locks).
func TestWaitParksOnlyItsClient(t *testing.T) {
	c := startCluster(t, 3)
	a := c.clients["A"]
	c.partition("C", (*proxy).cut)
	waiter := a.Conn()
	defer waiter.Close()
	id, err := waiter.ClientID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	waiter.Set(ctx, "pw", "1", 0)
	done := make(chan error, 1)
	go func() { done <- waiter.Do(ctx, "WAIT", 2, 0).Err() }()
	blocked := func(n int) {
		t.Helper()
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			info, _ := a.Info(ctx, "clients").Result()
			if !strings.Contains(info, fmt.Sprintf("blocked_clients:%d\r\n", n)) {
				return fmt.Errorf("want blocked_clients:%d in INFO clients: %s", n, info)
			}
			return nil
		})
	}
	blocked(1)
	start := time.Now()
	for i := 0; i < 20; i++ {
		if err := a.Set(ctx, fmt.Sprint("other", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("other clients waited for the blocked WAIT: 20 SETs took %v", d)
	}
	select {
	case err := <-done:
		t.Fatalf("WAIT 2 0 returned with a peer cut: %v", err)
	default:
	}
	if err := a.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a killed client's WAIT replied")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("killing the client did not end its WAIT")
	}
	blocked(0)
	tx := a.Conn()
	defer tx.Close()
	start = time.Now()
	res, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "pw2", "2", 0)
		p.Do(ctx, "WAIT", 2, 2000)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res[1].(*redis.Cmd).Int(); n > 1 || time.Since(start) > time.Second {
		t.Fatalf("WAIT in EXEC = %d after %v", n, time.Since(start))
	}
}

// CONFIG RESETSTAT clears the replication lag INFO reports, as it clears
// Redis's statistics: a lag measured afterwards covers only what followed.
func TestResetStatClearsReplicationLag(t *testing.T) {
	c := startCluster(t, 2)
	if err := c.clients["A"].Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p99 := peerStat(t, c.clients["B"], "A")["apply_lag_p99_ms"]; p99 == "0.000" {
			return fmt.Errorf("B reports no lag from A yet (p99 %s)", p99)
		}
		return nil
	})
	if err := c.clients["B"].ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	st := peerStat(t, c.clients["B"], "A")
	if st["apply_lag_p50_ms"] != "0.000" || st["apply_lag_p99_ms"] != "0.000" {
		t.Fatalf("after CONFIG RESETSTAT B still reports lag from A: %v", st)
	}
}
