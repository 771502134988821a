package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"concord/keyspace"
	"concord/persistence"

	"github.com/rs/zerolog"
)

// checkpointBatch is how many key states one checkpoint transaction holds.
const checkpointBatch = 4096

// checkpointLoop stores changed key states in the background: every
// CheckpointInterval, or sooner once CheckpointLogBytes of log were written
// since the last checkpoint (that bounds what recovery replays). Each
// checkpoint comes after a random 75–100% of both (jitter), so that regions
// taking the same writes do not all checkpoint at the same moment.
func (in *Instance) checkpointLoop(ctx context.Context) {
	defer close(in.ckptDone)
	poll := min(in.cfg.CheckpointInterval, 100*time.Millisecond)
	slow := max(poll, min(in.cfg.CheckpointInterval, idlePoll)) // (an idle server's log does not grow)
	t := time.NewTimer(poll)
	defer t.Stop()
	last := time.Now()
	every, logBytes := jitter(in.cfg.CheckpointInterval), jitter(in.cfg.CheckpointLogBytes)
	seen := in.activity()
	var pace idlePace
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		in.ckptWakes.Add(1)
		a := in.activity()
		busy := a != seen && !in.cfg.CheckpointEager
		seen = a
		t.Reset(pace.poll(a, time.Now(), poll, slow))
		if !checkpointDue(time.Since(last), in.store.LogBytes(false), every, logBytes, busy) {
			continue
		}
		last = time.Now()
		every, logBytes = jitter(in.cfg.CheckpointInterval), jitter(in.cfg.CheckpointLogBytes)
		if err := in.checkpointPaced(in.cfg.CheckpointCPU); err != nil {
			in.Log.Error().Err(err).Msg("checkpoint failed; the log is kept and the keys stay dirty")
		}
	}
}

// checkpointDue tells whether a background checkpoint starts, since the
// last one and with log bytes written since, against its interval every
// and its log bytes limit: once either is reached, unless the server is
// busy (commands served or deltas applied since the last poll) and
// neither is reached twice over. A checkpoint in a burst takes CPU its
// commands need (a make bench row with one in it: 0.7–0.8× Redis, without
// 0.9–1.1×); in the lull after it, nothing waits for that CPU. Under
// steady load it starts at twice the limits: a restart replays up to
// about four times the log bytes (twice before it, and up to twice more
// written while it runs paced: see mayPause).
func checkpointDue(since time.Duration, log int64, every time.Duration, logBytes int64, busy bool) bool {
	if since < every && log < logBytes {
		return false
	}
	return !busy || since >= 2*every || log >= 2*logBytes
}

// jitter returns a random value between 75% and 100% of v: background
// work at an interval of its own in every region (checkpoints,
// anti-entropy rounds) then does not run in all of them at once, whatever
// their start times — a burst of it in every region together takes the
// CPU of regions sharing a machine, and floods each other's links.
func jitter[T time.Duration | int64](v T) T {
	return v - T(rand.Int64N(int64(v)/4+1))
}

// checkpoint stores the state of every key changed since the last one and
// then lets the log before it go. The log position P is taken first (the
// group being formed: every earlier group's changes are in memory); each
// batch of captured states is stored only once the log holding the changes
// it captured is durable (a barrier), so a crash never leaves a stored
// state ahead of the log; once every batch is stored, P is recorded and the
// log up to P trimmed. Recovery = stored states + the log after P.
func (in *Instance) checkpoint() error { return in.checkpointPaced(1) }

// checkpointPaced is checkpoint running cpu of the time (see pacer).
func (in *Instance) checkpointPaced(cpu float64) error {
	in.ckptMu.Lock()
	defer in.ckptMu.Unlock()
	in.checkpointing.Store(true)
	defer in.checkpointing.Store(false)
	start := time.Now()
	in.store.LogBytes(true)
	in.savedWrites.Store(in.store.Stats().Writes)
	var pace func()
	if cpu < 1 {
		p := newPacer(cpu, time.Now, func(d time.Duration) {
			if in.mayPause() {
				time.Sleep(d)
			}
		})
		p.activity, p.seen = in.activity, in.activity()
		pace = p.pace
	}
	keys, records, err := storeChanged(in.store, in.KS, start, pace)
	// (its garbage grows with the keys encoded: a page holds many, and a
	// count of pages kept 300k keys checkpointed under memLoop's mark)
	in.freed.Add(int64(keys + records))
	if err == nil && keys > 0 {
		in.Log.Debug().Int("keys", keys).Dur("took", time.Since(start)).Msg("checkpoint")
	}
	return err
}

// mayPause tells whether a paced checkpoint may sleep: not while a SAVE or
// a shutdown waits for it, nor once more than twice CheckpointLogBytes of
// log were written since it began (on a machine too busy for it, that
// bounds what recovery would replay).
func (in *Instance) mayPause() bool {
	return in.hurry.Load() == 0 && in.store.LogBytes(false) < 2*in.cfg.CheckpointLogBytes
}

// activity counts what the server did for others: commands served on the
// data (not PING, INFO and the like: a monitor polling an idle server
// kept it from ever returning its free memory) and peers' deltas applied.
func (in *Instance) activity() uint64 {
	return in.Engine.DataCalls() + uint64(in.KS.Stats.RemoteApplied.Load())
}

// idlePace spaces a background loop's polls: every fast while the server
// works (its activity changes), every slow once it did nothing for
// idleAfter. An idle server's loops then wake once a second, not ten
// times (each wake-up costs the Go runtime a thread's wake and sleep: an
// idle server with 100k keys used ~2.5% of a core, Redis 0.15%).
type idlePace struct {
	seen    uint64
	changed time.Time
}

// idleAfter is how long the server must do nothing before its loops poll
// slowly; idlePoll is their slow poll.
const (
	idleAfter = time.Second
	idlePoll  = time.Second
)

// poll returns the wait before the next poll, given the activity now.
func (p *idlePace) poll(activity uint64, now time.Time, fast, slow time.Duration) time.Duration {
	if activity != p.seen || p.changed.IsZero() {
		p.seen, p.changed = activity, now
	}
	if now.Sub(p.changed) >= idleAfter {
		return slow
	}
	return fast
}

// pacer keeps a background checkpoint to a share of the time: called
// between shards, it sleeps for what the work since its last call earns —
// unless activity (when set) did not change since its last call: with no
// command served and no delta applied meanwhile there is nobody to yield
// to, and a checkpoint that finishes in a lull does not run into the next
// burst.
// A checkpoint of 400k changed keys takes ~0.5 s of a core and its
// allocations set off a collection of the heap; at full speed, in regions
// sharing a machine, its burst held every apply path behind it (lag p99
// 100–250 ms for a second). The work is measured in wall time, so a
// checkpoint slowed by a busy machine sleeps longer.
type pacer struct {
	cpu      float64
	now      func() time.Time
	sleep    func(time.Duration)
	activity func() uint64 // nil: always busy
	seen     uint64        // activity at the last call
	last     time.Time
	owed     time.Duration
}

func newPacer(cpu float64, now func() time.Time, sleep func(time.Duration)) *pacer {
	return &pacer{cpu: cpu, now: now, sleep: sleep, last: now()}
}

func (p *pacer) pace() {
	if p.activity != nil {
		a := p.activity()
		idle := a == p.seen
		p.seen = a
		if idle { // since the last call
			p.owed, p.last = 0, p.now()
			return
		}
	}
	p.owed += time.Duration(float64(p.now().Sub(p.last)) * (1 - p.cpu) / p.cpu)
	if p.owed >= time.Millisecond { // (shorter sleeps add up first)
		p.sleep(p.owed)
		p.owed = 0
	}
	p.last = p.now()
}

// storeChanged is a checkpoint's work (see checkpoint); records counts the
// pages and element records stored; pace (nil: none) runs between shards.
func storeChanged(store *persistence.Store, ks *keyspace.Keyspace, start time.Time, pace func()) (keys, records int, err error) {
	mark := store.Barrier()
	keys, err = ks.Checkpoint(checkpointBatch, pace, func(ws []keyspace.Write) error {
		if err := store.Barrier().Wait(); err != nil {
			return err
		}
		for _, w := range ws {
			records += 1 + len(w.Elems)
		}
		return store.WriteStates(toStore(ws))
	})
	if err != nil {
		return keys, records, err
	}
	if err := mark.Wait(); err != nil {
		return keys, records, err
	}
	out, inb := mark.Bases()
	return keys, records, store.Checkpointed(out, inb, keys, time.Since(start))
}

// migratePages stores every key of a data dir of an earlier version (one
// record per key) as pages, before the region serves: from then on its
// checkpoints write pages only, which the next start reads.
func migratePages(store *persistence.Store, ks *keyspace.Keyspace, log zerolog.Logger) error {
	if !store.NeedsPages() {
		return nil
	}
	start := time.Now()
	ks.DirtyAll()
	keys, _, err := storeChanged(store, ks, start, nil)
	if err != nil {
		return fmt.Errorf("rewrite the key states as pages: %w", err)
	}
	if err := store.PagesWritten(); err != nil {
		return fmt.Errorf("rewrite the key states as pages: %w", err)
	}
	log.Info().Int("keys", keys).Dur("took", time.Since(start)).Msg("key states rewritten as pages, this version's format")
	return nil
}

// Checkpoint runs a checkpoint now (tests, and before a planned stop).
func (in *Instance) Checkpoint() error { return in.checkpoint() }

// Save is SAVE: a checkpoint now (after the one running, if any).
func (in *Instance) Save() error {
	// on a goroutine of its own: SAVE's caller may be the event loop, whose
	// goroutine is locked to its thread, and the checkpoint yields between
	// holds of a shard's lock — a locked goroutine's every yield hands its P
	// to another thread and back (two wake-ups): 100k keys took 1.1 s of
	// CPU that way, 0.2 s on a goroutine of its own
	in.hurry.Add(1) // (a background checkpoint running finishes at full speed)
	defer in.hurry.Add(-1)
	done := make(chan error, 1)
	go func() { done <- in.checkpoint() }()
	err := <-done
	if err != nil {
		in.Log.Error().Err(err).Msg("checkpoint (SAVE) failed; the log is kept and the keys stay dirty")
	}
	return err
}

// BackgroundSave is BGSAVE: a checkpoint in the background, unless one is
// running.
func (in *Instance) BackgroundSave() bool {
	if !in.ckptMu.TryLock() {
		return false
	}
	in.ckptMu.Unlock()
	if !in.bgsave.CompareAndSwap(false, true) {
		return false
	}
	go func() {
		defer in.bgsave.Store(false)
		in.Save()
	}()
	return true
}

// ChangesSinceSave is INFO's rdb_changes_since_last_save: the writes
// logged since the last checkpoint began.
func (in *Instance) ChangesSinceSave() uint64 {
	return in.store.Stats().Writes - in.savedWrites.Load()
}

// Saving tells whether a checkpoint is running: a BGSAVE's, a SAVE's or a
// background one (INFO's rdb_bgsave_in_progress and
// aof_rewrite_in_progress, as Redis reports its automatic rewrites).
func (in *Instance) Saving() bool { return in.bgsave.Load() || in.checkpointing.Load() }

// LastSave is LASTSAVE: when the last checkpoint ended (the start time
// before any).
func (in *Instance) LastSave() int64 {
	if t := in.store.Stats().LastCheckpoint; t > 0 {
		return t
	}
	return in.started.Unix()
}
