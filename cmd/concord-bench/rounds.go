package main

import (
	"fmt"
	"slices"
	"strconv"
)

// benchRounds reads BENCH_ROUNDS: how many times each row runs, Concord's
// half and Redis's half alternating each time (1 to 20; default 1). The
// table then shows each row's medians and the range of its ratios: on a
// noisy 2-core machine one pair of halves moves by a fifth from run to run.
func benchRounds(env string) (int, error) {
	if env == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(env)
	if err != nil || n < 1 || n > 20 {
		return 0, fmt.Errorf("BENCH_ROUNDS must be 1 to 20, not %q", env)
	}
	return n, nil
}

// rowSummary is one row over its rounds: the median of each server's
// figures, the median of the rounds' ratios (each round's Concord half
// over the Redis half that followed it) and their range.
type rowSummary struct {
	c, r                   result
	ratio, lowest, highest float64
}

// summarize folds a row's rounds (c[i] and r[i] ran one after the other).
func summarize(c, r []result) rowSummary {
	if len(c) == 0 || len(c) != len(r) {
		panic("summarize: rounds missing")
	}
	ratios := make([]float64, len(c))
	for i := range c {
		ratios[i] = c[i].rps / r[i].rps
	}
	return rowSummary{
		c:       medianResult(c),
		r:       medianResult(r),
		ratio:   median(ratios),
		lowest:  slices.Min(ratios),
		highest: slices.Max(ratios),
	}
}

func medianResult(rs []result) result {
	pick := func(f func(result) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return median(xs)
	}
	return result{
		rps: pick(func(r result) float64 { return r.rps }),
		p50: pick(func(r result) float64 { return r.p50 }),
		p99: pick(func(r result) float64 { return r.p99 }),
	}
}

// median of xs (the mean of the middle two when len(xs) is even).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	m := len(s) / 2
	if len(s)%2 == 0 {
		return (s[m-1] + s[m]) / 2
	}
	return s[m]
}
