package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// mixTests are the commands of the mixed row (SPOP left out: its random
// pops would leave the two servers' sets apart, and a row of one server
// would measure other data than the other's).
var mixTests = []string{"set", "get", "incr", "sadd", "hset"}

// benchMix runs make bench's commands at once against one server: one
// redis-benchmark per command, 50/len(mixTests) clients and
// n/len(mixTests) requests each, started together — a server that clients
// of every kind use at the same time, its keys, counters, set and hash
// interleaved in each pass of its loop.
func benchMix(port, pipeline, n, random int) result {
	per := max(n/len(mixTests), 1)
	parts := make([]mixPart, len(mixTests))
	var wg sync.WaitGroup
	for i, test := range mixTests {
		wg.Go(func() {
			parts[i] = mixPart{n: per, r: benchClients(port, test, pipeline, per, random, 50/len(mixTests))}
		})
	}
	wg.Wait()
	return mixResult(parts)
}

// mixPart is one command's run within the mix.
type mixPart struct {
	n int
	r result
}

// mixResult folds the mix's runs: requests/s is all their requests over
// the longest run's time (each run's n/rps, as redis-benchmark timed it:
// the processes' start-up left out); p50 and p99 are the slowest
// command's (the mix's own percentiles would lie between the parts'; the
// highest is an upper bound).
func mixResult(parts []mixPart) result {
	var out result
	total, longest := 0, 0.0
	for _, p := range parts {
		total += p.n
		if p.r.rps > 0 {
			longest = max(longest, float64(p.n)/p.r.rps)
		}
		out.p50 = max(out.p50, p.r.p50)
		out.p99 = max(out.p99, p.r.p99)
	}
	if longest > 0 {
		out.rps = float64(total) / longest
	}
	return out
}

// allTests are make bench's rows, in order.
var allTests = append(slices.Clone(mixTests), "mix")

// benchTests reads BENCH_TESTS: the rows to run, comma-separated (all of
// them by default).
func benchTests(env string) ([]string, error) {
	if env == "" {
		return allTests, nil
	}
	var out []string
	for _, t := range strings.Split(env, ",") {
		t = strings.ToLower(strings.TrimSpace(t))
		if !slices.Contains(allTests, t) {
			return nil, fmt.Errorf("BENCH_TESTS: %q is not one of %s", t, strings.Join(allTests, ","))
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}
