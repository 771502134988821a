// Package crdt owns Concord's replicated data types and their merge: hybrid
// logical clocks, dots and causal contexts, the string register with its
// counter (LWW base plus per-region increments), the add-wins OR-Set, the
// OR-Map of hash fields, the expiry register and the key envelope that
// resolves type conflicts.
//
// The package is pure, in the style of etcd-io/raft's raft.go: no IO, no
// time.Now, no logging, no goroutines. The physical clock and the region ID
// come in as arguments; every local operation returns a delta (itself a
// State) that the caller merges locally, persists and ships. Merging the same
// deltas in any order, any number of times, yields the same State.
package crdt
