package peering

import (
	"context"
	"errors"
	"time"
)

// Transport is how a region's deltas reach its peers: its own ordered,
// de-duplicating stream, and durable per-peer cursors on the peers' streams.
// NATS JetStream implements it for real deployments and tests; an in-memory
// bus (NewBus) lets tests run regions in one process without it.
type Transport interface {
	// PublishBatch appends entries to this region's stream, with IDs derived
	// from their outbox seqs so a retried publish is de-duplicated, and
	// returns the stream sequence of each entry acknowledged, in order; it
	// stops at the first failure.
	PublishBatch(ctx context.Context, seqs []uint64, entries [][]byte) ([]uint64, error)
	// Consume delivers the peer's stream to apply, resuming after what this
	// region acknowledged before, retrying forever, until ctx ends. An apply
	// error gets the entry delivered again; ErrPoison drops it.
	Consume(ctx context.Context, peer string, apply func(streamSeq uint64, data []byte) error)
	// Progress reports how far peer has consumed this region's stream.
	Progress(ctx context.Context, peer string) (Progress, error)
	// Connected reports whether the link to peer is up.
	Connected(peer string) bool
	// ListenAddr is where peers reach this region ("" if not listening).
	ListenAddr() string
	// ServeFetch answers peers' fetch requests (full key states) with fn.
	ServeFetch(fn func(req []byte) []byte) error
	// Fetch sends a request to peer's fetch handler and returns its answer.
	Fetch(ctx context.Context, peer string, req []byte) ([]byte, error)
	// MaxPayload is the largest message (a stream entry or an answer) this
	// region's server carries.
	MaxPayload() int
	Close()
}

// Progress is a peer's position in this region's stream.
type Progress struct {
	AckFloor uint64    // every entry up to here was applied by the peer
	Pending  uint64    // entries the peer has not applied yet
	LastAck  time.Time // when the ack floor last moved (zero if unknown)
}

// ErrPoison marks an entry that can never be applied (undecodable).
var ErrPoison = errors.New("peering: entry can never be applied")
