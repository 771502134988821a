package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"concord/cmd/concord/server"

	"github.com/redis/go-redis/v9"
)

// Connection and server commands that the comparison harness cannot cover
// (their replies depend on the server instance).
func TestServerCommands(t *testing.T) {
	in := startConcord(t, nil)
	c := redis.NewClient(&redis.Options{Addr: in.Addr(), Protocol: 2})
	defer c.Close()
	do := func(args ...any) *redis.Cmd { return c.Do(ctx, args...) }

	if err := do("CLIENT", "SETNAME", "worker-1").Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := do("CLIENT", "GETNAME").Text(); n != "worker-1" {
		t.Fatalf("GETNAME %q", n)
	}
	if err := do("CLIENT", "SETNAME", "bad name").Err(); err == nil {
		t.Fatal("name with a space accepted")
	}
	id, _ := do("CLIENT", "ID").Int64()
	list, _ := do("CLIENT", "LIST").Text()
	if !strings.Contains(list, "name=worker-1") || !strings.Contains(list, "id=") {
		t.Fatalf("CLIENT LIST: %s", list)
	}
	info, _ := do("CLIENT", "INFO").Text()
	if !strings.Contains(info, "name=worker-1") {
		t.Fatalf("CLIENT INFO: %s", info)
	}
	// another client kills this one by id
	k := redis.NewClient(&redis.Options{Addr: in.Addr()})
	defer k.Close()
	if n, err := k.Do(ctx, "CLIENT", "KILL", "ID", id).Int(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL: %d %v", n, err)
	}
	// DEBUG SLEEP shows up in SLOWLOG
	k.ConfigSet(ctx, "slowlog-log-slower-than", "1000")
	if err := k.Do(ctx, "DEBUG", "SLEEP", "0.01").Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := k.Do(ctx, "SLOWLOG", "LEN").Int(); n != 1 {
		t.Fatalf("SLOWLOG LEN %d", n)
	}
	entries, _ := k.SlowLogGet(ctx, 10).Result()
	if len(entries) != 1 || entries[0].Args[0] != "DEBUG" || entries[0].Duration < 10*time.Millisecond {
		t.Fatalf("SLOWLOG GET %+v", entries)
	}
	k.Do(ctx, "SLOWLOG", "RESET")
	if n, _ := k.Do(ctx, "SLOWLOG", "LEN").Int(); n != 0 {
		t.Fatalf("SLOWLOG after RESET %d", n)
	}
	// TIME, MEMORY USAGE, OBJECT, INFO sections
	tm, _ := k.Time(ctx).Result()
	if d := time.Since(tm); d > time.Minute || d < -time.Minute {
		t.Fatalf("TIME %v", tm)
	}
	k.SAdd(ctx, "s", "a", "b")
	if n, _ := k.MemoryUsage(ctx, "s").Result(); n < 10 {
		t.Fatalf("MEMORY USAGE %d", n)
	}
	full, _ := k.Info(ctx, "everything").Result()
	for _, want := range []string{"# Server", "# Clients", "# Memory", "# Persistence", "# Stats", "# Replication", "# Commandstats", "# Keyspace",
		"used_memory:", "connected_clients:", "blocked_clients:0", "expired_keys:", "cmdstat_sadd:calls=1", "region:A", "group_commits:"} {
		if !strings.Contains(full, want) {
			t.Fatalf("INFO everything lacks %q:\n%s", want, full)
		}
	}
	// MEMORY USAGE measures SAMPLES members of a big set (5 by default, 0:
	// all of them), as Redis
	big := make([]any, 20000)
	for i := range big {
		big[i] = fmt.Sprint("member:", i)
	}
	k.SAdd(ctx, "bigs", big...)
	all, _ := k.MemoryUsage(ctx, "bigs", 0).Result()
	est, _ := k.MemoryUsage(ctx, "bigs").Result()
	if all < 20000*10 || est < all*9/10 || est > all*11/10 {
		t.Fatalf("MEMORY USAGE of 20k members: %d sampled, %d all", est, all)
	}
	if err := k.Do(ctx, "MEMORY", "USAGE", "bigs", "SAMPLES", "-1").Err(); err == nil || err.Error() != "ERR syntax error" {
		t.Fatalf("SAMPLES -1: %v", err)
	}
	if err := k.Do(ctx, "MEMORY", "USAGE", "bigs", "SAMPLES", "x").Err(); err == nil || err.Error() != "ERR value is not an integer or out of range" {
		t.Fatalf("SAMPLES x: %v", err)
	}
	// CLIENT REPLY OFF / ON and RESET over a raw connection
	rc := dialRaw(t, in.Addr())
	rc.c.Write([]byte("CLIENT REPLY OFF\r\nSET quiet 1\r\nCLIENT REPLY ON\r\nGET quiet\r\n"))
	line, _ := rc.read(false)
	if line != "+OK" {
		t.Fatalf("after REPLY OFF/ON first reply %q", line)
	}
	if v, _ := rc.read(false); v != `"1"` {
		t.Fatalf("GET after REPLY ON %q", v)
	}
	if v, _ := rc.do([]string{"SELECT", "5"}); v != "+OK" {
		t.Fatal(v)
	}
	if v, _ := rc.do([]string{"RESET"}); v != "+RESET" {
		t.Fatalf("RESET %q", v)
	}
	if v, _ := rc.do([]string{"GET", "quiet"}); v != `"1"` {
		t.Fatalf("RESET did not go back to db 0: %q", v)
	}
	if v, _ := rc.do([]string{"HELLO", "3"}); !strings.Contains(v, `"proto" :3`) {
		t.Fatalf("HELLO 3: %s", v)
	}
	if v, _ := rc.do([]string{"HGETALL", "nokey"}); v != "[]" {
		t.Fatalf("RESP3 empty map %q", v)
	}
	if v, _ := rc.do([]string{"GET", "nokey"}); v != "nil" {
		t.Fatalf("RESP3 null %q", v)
	}
	if v, _ := rc.do([]string{"HELLO", "4"}); !strings.HasPrefix(v, "-NOPROTO") {
		t.Fatalf("HELLO 4: %s", v)
	}
	if v, _ := rc.do([]string{"QUIT"}); v != "+OK" {
		t.Fatalf("QUIT %q", v)
	}
}

func TestLatencyAndOutputLimit(t *testing.T) {
	in := startConcord(t, nil)
	c := redis.NewClient(&redis.Options{Addr: in.Addr(), Protocol: 2})
	defer c.Close()
	c.ConfigSet(ctx, "latency-monitor-threshold", "5")
	c.Do(ctx, "DEBUG", "SLEEP", "0.02")
	latest, err := c.Do(ctx, "LATENCY", "LATEST").Slice()
	if err != nil || len(latest) != 1 {
		t.Fatalf("LATENCY LATEST: %v %v", latest, err)
	}
	ev := latest[0].([]any)
	if ev[0] != "command" || ev[2].(int64) < 20 {
		t.Fatalf("latency event %v", ev)
	}
	if hist, _ := c.Do(ctx, "LATENCY", "HISTORY", "command").Slice(); len(hist) != 1 {
		t.Fatalf("LATENCY HISTORY %v", hist)
	}
	if n, _ := c.Do(ctx, "LATENCY", "RESET").Int(); n != 1 {
		t.Fatalf("LATENCY RESET %d", n)
	}
	// a reply bigger than the normal class's hard limit closes the client
	c.Set(ctx, "big", strings.Repeat("x", 200000), 0)
	if err := c.ConfigSet(ctx, "client-output-buffer-limit", "normal 100kb 0 0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "client-output-buffer-limit", "normal 1 2").Err(); err == nil {
		t.Fatal("malformed limit accepted")
	}
	raw := dialRaw(t, in.Addr())
	if _, err := raw.do([]string{"GET", "big"}); err == nil {
		t.Fatal("a 200 KB reply went out over a 100 KB hard limit")
	}
	if v, err := raw2(t, in.Addr(), "STRLEN", "big"); err != nil || v != ":200000" {
		t.Fatalf("small replies still flow: %q %v", v, err)
	}
}

func raw2(t *testing.T, addr string, args ...string) (string, error) {
	return dialRaw(t, addr).do(args)
}

// SAVE, BGSAVE and BGREWRITEAOF run a checkpoint (key states stored, the log
// they cover dropped), with Redis's replies; LASTSAVE and INFO persistence
// tell when the last one ended; the log they cover is dropped.
func TestSaveCommands(t *testing.T) {
	in := startConcord(t, func(c *server.Config) { c.CheckpointInterval = time.Hour })
	c := client(t, in.Addr())
	info := func(field string) int64 { return int64(infoNumber(t, c, "persistence", field)) }
	start, _ := c.LastSave(ctx).Result()
	if now := time.Now().Unix(); start > now || start < now-60 {
		t.Fatalf("LASTSAVE before any save %d (now %d)", start, now)
	}
	before := info("checkpoints")
	for i := 0; i < 100; i++ {
		c.Set(ctx, fmt.Sprint("saved:", i), i, 0)
	}
	if info("log_bytes_since_checkpoint") == 0 || info("rdb_changes_since_last_save") < 100 {
		t.Fatalf("100 writes: %d log bytes, %d changes since the last save", info("log_bytes_since_checkpoint"), info("rdb_changes_since_last_save"))
	}
	if r, err := c.Save(ctx).Result(); err != nil || r != "OK" {
		t.Fatalf("SAVE: %q %v", r, err)
	}
	if info("checkpoints") != before+1 || info("log_bytes_since_checkpoint") != 0 || info("checkpoint_keys") < 100 || info("rdb_changes_since_last_save") != 0 {
		t.Fatalf("SAVE ran no checkpoint of the 100 keys")
	}
	if last, _ := c.LastSave(ctx).Result(); last < start || last != info("rdb_last_save_time") {
		t.Fatalf("LASTSAVE %d after SAVE (start %d, INFO %d)", last, start, info("rdb_last_save_time"))
	}
	c.Set(ctx, "saved:bg", "x", 0)
	for _, cmd := range []struct{ args []any }{{[]any{"BGSAVE"}}, {[]any{"BGREWRITEAOF"}}} {
		r, err := c.Do(ctx, cmd.args...).Text()
		if err != nil && !strings.Contains(err.Error(), "already in progress") || err == nil && !strings.HasPrefix(r, "Background ") {
			t.Fatalf("%v: %q %v", cmd.args, r, err)
		}
		checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
			if info("rdb_bgsave_in_progress") != 0 {
				return fmt.Errorf("still saving")
			}
			return nil
		})
	}
	if err := c.Do(ctx, "BGSAVE", "NOW").Err(); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("BGSAVE NOW: %v", err)
	}
	if info("checkpoints") < before+2 || info("log_bytes_since_checkpoint") != 0 {
		t.Fatalf("BGSAVE ran no checkpoint")
	}
	// the log the checkpoints cover goes once the outbox is published
	// (no peers: at once): one segment left, the one being written
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		if n := info("log_segments"); n != 1 {
			return fmt.Errorf("%d log segments after SAVE", n)
		}
		return nil
	})
}

// SHUTDOWN stops the process (exit status 0, no reply on the connection,
// as in Redis); with a last checkpoint or, under NOSAVE, without one: the
// next start has every acknowledged write either way.
func TestShutdownCommand(t *testing.T) {
	dir := t.TempDir()
	for i, args := range [][]string{{"SHUTDOWN"}, {"SHUTDOWN", "NOSAVE", "NOW"}} {
		p := startProc(t, "--dir", dir, "--log-level", "info")
		c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1})
		if err := c.Set(ctx, fmt.Sprint("before-shutdown-", i), "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.Do(ctx, "SHUTDOWN", "ABORT").Err(); err == nil || !strings.Contains(err.Error(), "No shutdown in progress") {
			t.Fatalf("SHUTDOWN ABORT: %v", err)
		}
		if err := c.Do(ctx, "SHUTDOWN", "SAVE", "NOSAVE").Err(); err == nil || !strings.Contains(err.Error(), "syntax") {
			t.Fatalf("SHUTDOWN SAVE NOSAVE: %v", err)
		}
		anys := make([]any, len(args))
		for j, a := range args {
			anys[j] = a
		}
		if err := c.Do(ctx, anys...).Err(); err == nil {
			t.Fatalf("%v replied", args)
		}
		c.Close()
		exited := make(chan error, 1)
		go func() { exited <- p.cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("%v: exit %v\n%s", args, err, p.log.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%v: still running\n%s", args, p.log.String())
		}
	}
	p := startProc(t, "--dir", dir)
	c := client(t, p.addr)
	if n, _ := c.Exists(ctx, "before-shutdown-0", "before-shutdown-1").Result(); n != 2 {
		t.Fatalf("%d of 2 keys after SHUTDOWN and SHUTDOWN NOSAVE", n)
	}
}

// Over maxmemory, commands that may add data are refused with Redis's OOM
// error (noeviction; every policy acts so: Concord does not evict), also
// when queued in MULTI (EXEC then aborts); reads and deletes go on.
func TestMaxmemoryRefusesWrites(t *testing.T) {
	in := startConcord(t, nil)
	c := client(t, in.Addr())
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "1kb").Err(); err != nil {
		t.Fatal(err)
	}
	const oom = "OOM command not allowed when used memory > 'maxmemory'."
	checkFor(t, 3*time.Second, 20*time.Millisecond, func() error {
		if err := c.Set(ctx, "k2", "v", 0).Err(); err == nil || err.Error() != oom {
			return fmt.Errorf("SET over maxmemory: %v", err)
		}
		return nil
	})
	if err := c.SAdd(ctx, "s", "m").Err(); err == nil || err.Error() != oom {
		t.Fatalf("SADD over maxmemory: %v", err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET over maxmemory: %q %v", v, err)
	}
	if n, err := c.Del(ctx, "k").Result(); err != nil || n != 1 {
		t.Fatalf("DEL over maxmemory: %d %v", n, err)
	}
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "k3", "v", 0)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "EXECABORT") {
		t.Fatalf("MULTI SET EXEC over maxmemory: %v", err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "k2", "v", 0).Err(); err != nil {
		t.Fatalf("SET without a limit: %v", err)
	}
}

// infoCPU reads INFO cpu's used_cpu_sys + used_cpu_user in seconds.
func infoCPU(t testing.TB, c *redis.Client) float64 {
	return infoNumber(t, c, "cpu", "used_cpu_sys") + infoNumber(t, c, "cpu", "used_cpu_user")
}

// infoNumber reads a numeric field of an INFO section (the test fails
// without it).
func infoNumber(t testing.TB, c *redis.Client, section, field string) float64 {
	t.Helper()
	info, err := c.Info(ctx, section).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			return x
		}
	}
	t.Fatalf("INFO %s without %s:\n%s", section, field, info)
	return 0
}

// INFO cpu reports the CPU the server has used, as Redis does (benchmarks
// read it to compare CPU per request).
func TestInfoCPUCounts(t *testing.T) {
	in := startConcord(t, nil)
	c := client(t, in.Addr())
	before := infoCPU(t, c)
	for i := 0; i < 20; i++ {
		p := c.Pipeline()
		for j := 0; j < 1000; j++ {
			p.Set(ctx, fmt.Sprint("k", j), "v", 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if after := infoCPU(t, c); after <= before || before <= 0 {
		t.Fatalf("used CPU %v then %v after 20000 SETs", before, after)
	}
}

// INFO memory counts the heap bytes allocated since start (with
// gc_cycles: what a workload costs the collector): 20000 new keys allocate
// their entries.
func TestInfoAllocatedBytes(t *testing.T) {
	in := startConcord(t, nil)
	c := client(t, in.Addr())
	before := infoNumber(t, c, "memory", "total_allocated_bytes")
	p := c.Pipeline()
	for j := 0; j < 20000; j++ {
		p.Set(ctx, fmt.Sprint("key:", j), "v", 0)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if after := infoNumber(t, c, "memory", "total_allocated_bytes"); before <= 0 || after-before < 20000*64 {
		t.Fatalf("allocated %.0f then %.0f bytes around 20000 new keys", before, after)
	}
}

// INFO server names the multiplexing in force: epoll for the event loop
// (--io loop, the default on Linux), goroutines otherwise.
func TestInfoMultiplexingAPI(t *testing.T) {
	for _, io := range []string{"loop", "goroutines"} {
		in := startConcord(t, func(c *server.Config) { c.IO = io })
		info, err := client(t, in.Addr()).Info(ctx, "server").Result()
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"loop": "epoll", "goroutines": "goroutines"}[io]
		if runtime.GOOS != "linux" {
			want = "goroutines"
		}
		if !strings.Contains(info, "multiplexing_api:"+want+"\r\n") {
			t.Fatalf("--io %s: INFO server without multiplexing_api:%s", io, want)
		}
	}
}

// A client that kills itself (CLIENT KILL ... SKIPME no, or its own address)
// gets the reply, then is closed, as in Redis.
func TestClientKillSelfRepliesFirst(t *testing.T) {
	in := startConcord(t, nil)
	for _, form := range []string{"id", "addr"} {
		nc, err := net.Dial("tcp", in.Addr())
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(nc)
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		nc.Write([]byte("CLIENT ID\r\n"))
		line, _ := r.ReadString('\n')
		id := strings.TrimSpace(strings.TrimPrefix(line, ":"))
		cmd, want := "CLIENT KILL ID "+id+" SKIPME no\r\n", ":1\r\n"
		if form == "addr" {
			cmd, want = "CLIENT KILL "+nc.LocalAddr().String()+"\r\n", "+OK\r\n"
		}
		nc.Write([]byte(cmd))
		if got, _ := r.ReadString('\n'); got != want {
			t.Fatalf("%s: reply %q, want %q", form, got, want)
		}
		if rest, err := io.ReadAll(r); err != nil || len(rest) > 0 {
			t.Fatalf("%s: after the reply %q, %v (want the connection closed)", form, rest, err)
		}
		nc.Close()
	}
}

// A command's time in the slow log (and INFO commandstats) is its own: a
// pipelined command's clock starts where the one before it ended, but never
// across the client's idle time between two round trips.
func TestCommandTimingExcludesIdle(t *testing.T) {
	in := startConcord(t, nil)
	c := redis.NewClient(&redis.Options{Addr: in.Addr(), Protocol: 2, PoolSize: 1})
	defer c.Close()
	if err := c.ConfigSet(ctx, "slowlog-log-slower-than", "15000").Err(); err != nil {
		t.Fatal(err)
	}
	c.Do(ctx, "SLOWLOG", "RESET")
	for i := 0; i < 3; i++ {
		time.Sleep(40 * time.Millisecond) // idle on the same connection
		if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Ping(ctx)
			p.Get(ctx, "k")
			return nil
		}); err != nil && err != redis.Nil {
			t.Fatal(err)
		}
	}
	if n, _ := c.Do(ctx, "SLOWLOG", "LEN").Int(); n != 0 {
		log, _ := c.Do(ctx, "SLOWLOG", "GET").Slice()
		t.Fatalf("idle time logged as slow commands: %v", log)
	}
	// the slow log does log a slow command, and the next one of its
	// pipeline starts after it
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Do(ctx, "DEBUG", "SLEEP", "0.02")
		p.Ping(ctx)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Do(ctx, "SLOWLOG", "LEN").Int(); n != 1 {
		log, _ := c.Do(ctx, "SLOWLOG", "GET").Slice()
		t.Fatalf("slow log after DEBUG SLEEP 0.02: %v", log)
	}
}
