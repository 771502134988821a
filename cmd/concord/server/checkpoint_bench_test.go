package server

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// BenchmarkCheckpoint measures one checkpoint of 100k changed string keys,
// or of 100k new members of one set (as make bench's P=16 rows leave them);
// ns/key is per key or member. few-members is a checkpoint of 8 new members
// of a set of 500k (a few of its element pages rewritten). strings-SAVE is the first through the SAVE
// command (run by the event loop's goroutine, locked to its thread).
func BenchmarkCheckpoint(b *testing.B) {
	set := func(p redis.Pipeliner, i, round int) {
		p.Set(context.Background(), "key:"+strconv.Itoa(i), strconv.Itoa(round), 0)
	}
	b.Run("strings", func(b *testing.B) { benchCheckpoint(b, set, false) })
	b.Run("strings-SAVE", func(b *testing.B) { benchCheckpoint(b, set, true) })
	b.Run("few-members", benchFewMembers)
	b.Run("members", func(b *testing.B) {
		benchCheckpoint(b, func(p redis.Pipeliner, i, round int) {
			p.SAdd(context.Background(), "set"+strconv.Itoa(round), "element:"+strconv.Itoa(i))
		}, false)
	})
}

// startBench starts a region that checkpoints only when told, and a
// client of it (both closed when b ends).
func startBench(b *testing.B) (*Instance, *redis.Client) {
	return startWith(b, Config{Region: "A", CheckpointInterval: time.Hour, CheckpointLogBytes: 1 << 40})
}

func benchCheckpoint(b *testing.B, write func(p redis.Pipeliner, i, round int), save bool) {
	const keys = 100000
	in, c := startBench(b)
	ctx := context.Background()
	dirty := func(round int) {
		p := c.Pipeline()
		for i := 0; i < keys; i++ {
			write(p, i, round)
			if i%1000 == 999 {
				if _, err := p.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var cpu time.Duration
	for n := 0; n < b.N; n++ {
		b.StopTimer()
		dirty(n)
		time.Sleep(settle)
		idle0 := processCPU()
		time.Sleep(settle)
		idle := processCPU() - idle0
		b.StartTimer()
		before := processCPU()
		if save {
			if err := c.Save(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		} else if err := in.Checkpoint(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		time.Sleep(settle) // Badger's memtable flushes and compactions
		cpu += processCPU() - before - idle
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*keys), "ns/key")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*keys), "cpu-ns/key")
}

// settle is how long a checkpoint's background work (Badger's memtable
// flushes and compactions) is given to end before its CPU is counted.
const settle = time.Second

// processCPU is the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchFewMembers(b *testing.B) {
	const members = 500000
	in, c := startBench(b)
	ctx := context.Background()
	p := c.Pipeline()
	for i := 0; i < members; i++ {
		p.SAdd(ctx, "big", "element:"+strconv.Itoa(i))
		if i%1000 == 999 {
			if _, err := p.Exec(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := in.Checkpoint(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		b.StopTimer()
		for i := 0; i < 8; i++ {
			p.SAdd(ctx, "big", "new:"+strconv.Itoa(n)+":"+strconv.Itoa(i))
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := in.Checkpoint(); err != nil {
			b.Fatal(err)
		}
	}
}
