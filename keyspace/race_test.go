//go:build race

package keyspace

// raceEnabled: the race detector is on (sync.Pool drops some of what it is
// given, so allocation counts differ).
const raceEnabled = true
