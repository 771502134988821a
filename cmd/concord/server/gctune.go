package server

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"sync"
)

// The Go collector starts a cycle once the heap has grown by GOGC% (100)
// of what the last one found live. With little live heap (a server whose
// keys went cold: packed, pointer-free tables) that is a few tens of MB of
// allocation: the warming of the keys a pipelined benchmark row touches,
// or a checkpoint's garbage (Badger's 3 MB table builders), set off a
// cycle in nearly every such row, and its marking takes one of the two
// cores from the event loop and redis-benchmark while it runs (a row with
// a collection in it was 0.5–0.8× Redis, without one 0.95–1.2×, in the
// seventeenth round of docs/performance.md). So the goal is kept at least
// --gc-headroom bytes above the live heap: after each cycle GOGC is set to
// what makes it so (never below 100). It costs at most that much more RSS
// while busy; an idle server still returns its free memory (memLoop). A
// GOGC set in the environment is left alone.
var gcTune struct {
	mu        sync.Mutex
	headrooms []int64 // of the running instances that asked for one
	armed     bool    // a sentinel awaits the next cycle
	base      int     // GOGC before tuning
}

// gcHeadroom keeps the collector's goal headroom bytes above the live heap
// until the returned function is called (instances in one process: the
// largest headroom asked for applies).
func gcHeadroom(headroom int64) (stop func()) {
	if headroom <= 0 || os.Getenv("GOGC") != "" {
		return func() {}
	}
	gcTune.mu.Lock()
	if len(gcTune.headrooms) == 0 {
		gcTune.base = debug.SetGCPercent(100)
		debug.SetGCPercent(gcTune.base)
	}
	gcTune.headrooms = append(gcTune.headrooms, headroom)
	retuneLocked()
	if !gcTune.armed {
		gcTune.armed = true
		armGCSentinel()
	}
	gcTune.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			gcTune.mu.Lock()
			defer gcTune.mu.Unlock()
			i := slices.Index(gcTune.headrooms, headroom)
			gcTune.headrooms = slices.Delete(gcTune.headrooms, i, i+1)
			if len(gcTune.headrooms) == 0 {
				debug.SetGCPercent(gcTune.base)
			} else {
				retuneLocked()
			}
		})
	}
}

// armGCSentinel makes the end of the next collection call onGC: a
// finalizer runs once the object it is set on was found unreachable.
func armGCSentinel() {
	runtime.SetFinalizer(new([64]byte), func(*[64]byte) { onGC() })
}

func onGC() {
	gcTune.mu.Lock()
	defer gcTune.mu.Unlock()
	if len(gcTune.headrooms) == 0 {
		gcTune.armed = false
		return
	}
	retuneLocked()
	armGCSentinel()
}

// retuneLocked sets GOGC for the live heap the last cycle found.
func retuneLocked() {
	debug.SetGCPercent(gcPercentFor(runtimeMetric("/gc/heap/live:bytes"), slices.Max(gcTune.headrooms), gcTune.base))
}

// runtimeMetric reads one of the runtime's uint64 metrics (0 if unknown).
func runtimeMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// gcPercentFor is the GOGC that puts the heap goal headroom bytes above
// live, at least base (Go's own).
func gcPercentFor(live uint64, headroom int64, base int) int {
	if base < 0 { // collection off: left so
		return base
	}
	live = max(live, 1<<20)
	return max(base, int(min(uint64(headroom)*100/live, 1<<20)))
}
