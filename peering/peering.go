// Package peering owns the links between regions: the embedded or external
// NATS JetStream server, publishing this region's outbox, consuming the
// other regions' deltas, region health and watermarks. Until replication is
// configured (no peers), it only discards the outbox once entries are
// durable, so the outbox does not grow without bound.
package peering

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// Outbox is the part of persistence peering drains.
type Outbox interface {
	// OutboxSeq returns the last outbox sequence written and the last one
	// marked published (by TrimOutbox).
	OutboxSeq() (last, published uint64)
	// TrimOutbox marks entries up to seq published: they may go (the store
	// keeps them until a checkpoint covers them too).
	TrimOutbox(seq uint64) error
}

// DiscardOutbox trims every outbox entry each interval until ctx ends: what
// a region with no peers does with deltas nobody will ask for.
func DiscardOutbox(ctx context.Context, o Outbox, every time.Duration, log zerolog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			last, published := o.OutboxSeq()
			if last > published {
				if err := o.TrimOutbox(last); err != nil {
					log.Warn().Err(err).Msg("outbox trim failed")
				}
			}
		}
	}
}
