package server

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live     uint64
		headroom int64
		base     int
		want     int
	}{
		{100 << 20, 128 << 20, 100, 128}, // goal 228 MB instead of 200
		{400 << 20, 128 << 20, 100, 100}, // Go's own goal is further already
		{10 << 20, 128 << 20, 100, 1280},
		{0, 128 << 20, 100, 12800}, // an empty heap counts as 1 MiB
		{10 << 20, 128 << 20, 2000, 2000},
		{10 << 20, 128 << 20, -1, -1}, // collection off stays off
	} {
		if got := gcPercentFor(tc.live, tc.headroom, tc.base); got != tc.want {
			t.Errorf("live %d, headroom %d, GOGC %d: %d, want %d", tc.live, tc.headroom, tc.base, got, tc.want)
		}
	}
}

// gogc reads the collector's GOGC now.
func gogc() uint64 { return runtimeMetric("/gc/gogc:percent") }

// A headroom sets GOGC after every collection, the largest of the
// instances' applies, and Go's own comes back when the last one ends.
func TestGCHeadroomTunesGOGC(t *testing.T) {
	if gogc() != 100 {
		t.Skip("GOGC is not Go's default here")
	}
	defer debug.SetGCPercent(100)
	waitGOGC := func(cond func(uint64) bool, what string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(gogc()); {
			if time.Now().After(deadline) {
				t.Fatalf("GOGC %d: want %s", gogc(), what)
			}
			runtime.GC()
			time.Sleep(time.Millisecond)
		}
	}
	stop1 := gcHeadroom(1 << 30)
	stop2 := gcHeadroom(64 << 30)
	want := func(headroom int64) uint64 {
		return uint64(gcPercentFor(runtimeMetric("/gc/heap/live:bytes"), headroom, 100))
	}
	waitGOGC(func(g uint64) bool { return g > 100 && g == want(64<<30) }, "the larger headroom's")
	stop2()
	stop2() // twice: no harm
	waitGOGC(func(g uint64) bool { return g > 100 && g == want(1<<30) && g != want(64<<30) }, "the remaining headroom's")
	// every cycle sets it for the live heap it found
	before := gogc()
	ballast := make([]byte, 256<<20)
	waitGOGC(func(g uint64) bool { return g < before && g == want(1<<30) }, "lower, with 256 MB more live")
	runtime.KeepAlive(ballast)
	stop1()
	waitGOGC(func(g uint64) bool { return g == 100 }, "Go's own, 100")
	runtime.GC()
	runtime.GC()
	if g := gogc(); g != 100 {
		t.Fatalf("GOGC %d after the tuner stopped, want 100", g)
	}
}

// An idle collection comes after a quarter of the runway to the goal,
// whatever the heap's size.
func TestIdleCollect(t *testing.T) {
	for _, tc := range []struct {
		allocated, live, goal uint64
		want                  bool
	}{
		{32 << 20, 50 << 20, 178 << 20, true}, // a quarter of --gc-headroom's 128 MiB
		{20 << 20, 50 << 20, 178 << 20, false},
		{32 << 20, 10 << 30, 20 << 30, false}, // a 10 GB heap is not marked for 32 MB
		{3 << 30, 10 << 30, 20 << 30, true},
		{1 << 20, 100 << 20, 100 << 20, false}, // no runway (a goal not yet known)
	} {
		if got := idleCollect(tc.allocated, tc.live, tc.goal); got != tc.want {
			t.Errorf("allocated %d, live %d, goal %d: %v", tc.allocated, tc.live, tc.goal, got)
		}
	}
}

// gcSink keeps a test's garbage from being optimized away.
var gcSink []byte

// An idle server collects once a quarter of its runway to the next
// collection was allocated since the last one; a busy one leaves it to Go.
func TestIdleServerCollects(t *testing.T) {
	in, cl := startWith(t, Config{CheckpointInterval: time.Hour, GCHeadroom: 64 << 20})
	garbage := func() {
		for range 24 { // 24 MiB: over a quarter of the headroom, under Go's goal
			gcSink = make([]byte, 1<<20)
		}
	}
	runtime.GC()
	garbage()
	for busy := time.Now().Add(time.Second); time.Now().Before(busy); {
		if err := cl.Exists(context.Background(), "k").Err(); err != nil { // (a command on the data: PINGs leave it idle)
			t.Fatal(err)
		}
	}
	if n := in.idleGCs.Load(); n != 0 {
		t.Fatalf("a busy server collected %d times on its own", n)
	}
	for deadline := time.Now().Add(3 * time.Second); in.idleGCs.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("an idle server left %d MB since the last collection", heapGarbage()>>20)
		}
	}
}
