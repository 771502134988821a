package main

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// cheapCommands are commands a Redis user expects to cost about the same
// whatever the size of the keyspace or of the key they read (O(1) or
// O(COUNT) in Redis): each was once O(keys of a shard) or O(elements) in
// Concord (SCAN, RANDOMKEY, SSCAN/HSCAN, MEMORY USAGE, INFO keyspace,
// DBSIZE, SPOP and SRANDMEMBER: docs/performance.md, the twenty-fourth and
// twenty-fifth rounds). Run against big keys, a regression shows as a
// ratio far below the others'.
var cheapCommands = [][]string{
	{"SCAN", "0", "COUNT", "10"},
	{"SCAN", "0", "MATCH", "nomatch:*", "COUNT", "100"},
	{"RANDOMKEY"},
	{"DBSIZE"},
	{"INFO", "keyspace"},
	{"EXISTS", "key:__rand_int__"},
	{"TYPE", "bigset"},
	{"SCARD", "bigset"},
	{"SISMEMBER", "bigset", "__rand_int__"},
	{"SRANDMEMBER", "bigset"},
	{"SRANDMEMBER", "bigset", "5"},
	{"SSCAN", "bigset", "0", "COUNT", "10"},
	{"MEMORY", "USAGE", "bigset"},
	{"EXPIRE", "bigset", "100000"},
	{"TTL", "bigset"},
	{"HGET", "bighash", "__rand_int__"},
	{"HLEN", "bighash"},
	{"HRANDFIELD", "bighash"},
	{"HSCAN", "bighash", "0", "COUNT", "10"},
	{"MEMORY", "USAGE", "bighash"},
	{"SPOP", "bigset"},
}

// commands loads Concord and Redis alike (string keys, a big set, a big
// hash), lets Concord's keys go cold, and runs each of cheapCommands
// against both, alternating: requests/s at -c 50 -P 1 and the ratio.
func commands(newConcord, newRedis func() *server, quick bool) {
	keys, elems, n := 1000000, 100000, 20000
	if quick {
		keys, elems, n = 100000, 20000, 5000
	}
	c, r := newConcord(), newRedis()
	defer c.stop()
	defer r.stop()
	for _, s := range []*server{c, r} {
		load(s.port, keys*3, keys, "SET", "key:__rand_int__", "xxx")
		load(s.port, elems*3, elems, "SADD", "bigset", "__rand_int__")
		load(s.port, elems*3, elems, "HSET", "bighash", "__rand_int__", "xxx")
	}
	// Concord's keys cold (packed: --cold-after, 10 s by default), as a
	// server's idle keys are
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) && float64(info(c.port, "memory", "cold_keys")) < 0.95*float64(count(c.port, "set")-2) {
		time.Sleep(time.Second)
	}
	fmt.Printf("keys: %d string keys, a %d-member set, a %d-field hash (Concord's string keys cold: %d)\n", count(c.port, "set"),
		card(c.port, "SCARD", "bigset"), card(c.port, "HLEN", "bighash"), info(c.port, "memory", "cold_keys"))
	fmt.Printf("redis-benchmark -c 50 -P 1 -r %d -n %d\n\n%-40s | %12s %8s | %12s %8s | %6s\n", elems, n, "command", "concord rps", "p50 ms", "redis rps", "p50 ms", "ratio")
	for _, args := range cheapCommands {
		quiet(c.port, r.port)
		cr := benchArgs(c.port, n, elems, args)
		quiet(c.port, r.port)
		rr := benchArgs(r.port, n, elems, args)
		fmt.Printf("%-40s | %12.0f %8.3f | %12.0f %8.3f | %6.2f\n", strings.Join(args, " "), cr.rps, cr.p50, rr.rps, rr.p50, cr.rps/rr.rps)
	}
}

// load runs a pipelined redis-benchmark of a command (n requests, -r
// random) to fill a server.
func load(port, n, random int, args ...string) {
	_, pin := pinning()
	cmd := command(pin, "redis-benchmark", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-c", "50", "-P", "16",
		"-n", strconv.Itoa(n), "-r", strconv.Itoa(random), "-q"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		fail(fmt.Errorf("loading with %s: %v: %s", strings.Join(args, " "), err, out))
	}
}

// benchArgs runs redis-benchmark for one command line with 50 clients.
func benchArgs(port, n, random int, args []string) result {
	_, pin := pinning()
	out, err := command(pin, "redis-benchmark", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-c", "50",
		"-n", strconv.Itoa(n), "-r", strconv.Itoa(random), "--csv"}, args...)...).Output()
	if err != nil {
		fail(fmt.Errorf("redis-benchmark %s: %v", strings.Join(args, " "), err))
	}
	return parseCSV(strings.Join(args, " "), out)
}

// card returns an integer reply (SCARD, HLEN) of a key.
func card(port int, args ...string) int64 {
	out, err := exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(port)}, args...)...).Output()
	if err != nil {
		return 0
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	return v
}
