// Package persistence owns Concord's durable copy of a region: the log (an
// append-only file log in segments, like Redis's AOF: the outbox of local
// deltas waiting to be shipped, the inbound log of deltas merged from
// elsewhere, and small metadata such as watermarks) and the key states (a
// Badger database written by checkpoints). Writes arrive in groups (group
// commit): every delta submitted while the previous group was being
// written goes into one log frame with one outbox entry, written with one
// write(2), so a burst of N writes costs one write and, under
// fsync=always, one fsync. Recovery loads the states and replays the log
// after the last checkpoint's position.
package persistence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"concord/crdt"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/rs/zerolog"
)

// Fsync policies, like Redis's appendfsync.
const (
	FsyncAlways   = "always"
	FsyncEverysec = "everysec"
	FsyncNo       = "no"
)

// Options configure a Store.
type Options struct {
	// Dir holds the key states (a Badger database); LogDir the log
	// (default: Dir + "-wal").
	Dir    string
	LogDir string
	Fsync  string
	Region string
	Log    zerolog.Logger
	// MaxEntryBytes bounds one outbox entry (one stream message); a group's
	// deltas are split across entries beyond it (0: 768 KiB, under NATS's
	// default 1 MiB max payload).
	MaxEntryBytes int
	// SegmentBytes is the size past which the log starts a new segment
	// file (0: 64 MiB); a segment is deleted once a checkpoint covers it and
	// peers have its outbox entries.
	SegmentBytes int64
	// MemtableBytes sizes each of the key states database's two memtables
	// (0: 8 MiB). A checkpoint's pages go through them: each one filled is
	// built into a table, and every five tables are compacted into the
	// level below — with pages spread over every key's bucket, a rewrite
	// of all of that level. With 1 MiB memtables a checkpoint of 100k keys
	// took ~2.4 µs of CPU per key, with 8 MiB ~1.4 (BenchmarkCheckpoint's
	// cpu-ns/key); each costs its size in memory while filled.
	MemtableBytes int64
	// CloseTimeout bounds how long Close waits for the key states database
	// to close (0: 30 s). Badger retries a failed memtable flush forever
	// (its files deleted, the disk gone), and its Close waits for it: past
	// the bound Close returns an error and the process can exit — every
	// acknowledged write is in the log (or nowhere, the disk being gone).
	CloseTimeout time.Duration
}

// approxDeltaSize estimates a delta's encoded size, to cut outbox entries.
func approxDeltaSize(kd crdt.KeyDelta) int {
	n := 32 + len(kd.Key) + 16*len(kd.Delta.Ctx.VV)
	if r := kd.Delta.Str; r != nil {
		for _, b := range r.Base {
			n += 48 + len(b.Val)
		}
		if kd.Ext != nil && len(r.Base) == 1 { // only the part written is encoded
			n += kd.Ext.N - len(r.Base[0].Val)
		}
		n += 24 * len(r.Counts)
	}
	kd.Delta.EachMember(func(m string, _ []crdt.Dot) { n += 24 + len(m) })
	kd.Delta.EachField(func(f string, r *crdt.Reg) {
		n += 24 + len(f)
		for _, b := range r.Base {
			n += 48 + len(b.Val)
		}
	})
	return n
}

// Write is one stored change: a bucket's header page (Page), one element
// page of a key (Fan > 0; ReplaceAll empties the key's stored element pages
// first, or, without Fan, only that), or a metadata value (Meta). See
// pages.go.
type Write struct {
	DB         int
	Key        string
	Header     []byte
	ReplaceAll bool
	Elems      []Elem
	// Meta writes Header under the metadata key Key (e.g. a watermark).
	Meta bool
	// Page stores the page of bucket Bucket of db DB (see pages.go): the
	// headers of Keys, Header cut at Ends; no keys deletes the page.
	Page   bool
	Bucket int
	Keys   []string
	Ends   []int
	// Fan > 0 stores Elems as element page Bucket of Key's Fan pages (see
	// pages.go; elements with nil Data are left out); none deletes the page.
	Fan int
}

// Elem is one element record; nil Data deletes it.
type Elem struct {
	Kind byte
	Name string
	Data []byte
}

// Store is the durable store: the file log and the key states in Badger.
type Store struct {
	opts Options
	// waitMu orders a group's end with a waiter making its wake channel
	waitMu sync.Mutex
	// release hands a group's deltas back once the group is encoded
	// (crdt.Release; crdt.Poison under CONCORD_POISON_ARGS=1): a caller of
	// Submit does not read its deltas after it
	release func(*crdt.State)
	// spare, spareIn: a committed group's emptied delta and inbound
	// slices, for a group to come (under mu)
	spare, spareIn, spareMerged []crdt.KeyDelta
	log                         *wal       // outbox, inbound log, metadata (LogDir)
	sdb                         *badger.DB // key states, written by checkpoints (Dir)
	fr                          frame      // the frame being built (under commitMu)
	// commitMu orders commits: the commit loop's and CommitNow's
	commitMu sync.Mutex
	held     atomic.Int32   // passes running (see Hold)
	loops    sync.WaitGroup // syncLoop, gcLoop

	mu       sync.Mutex
	open     *Group
	signal   chan struct{}
	notify   chan struct{}
	closed   bool
	done     chan struct{}
	outSeq   uint64 // last outbox sequence durable
	assigned uint64 // last outbox sequence written to the log (commit loop only)
	inSeq    uint64 // last inbound sequence written to the log (commit loop only)
	trimmed  uint64 // outbox entries <= trimmed are gone
	// published: outbox entries <= published are shipped (or need not be);
	// they are trimmed once a checkpoint covers them too
	published uint64
	ckptOut   uint64 // the last checkpoint covers outbox entries <= ckptOut
	ckptIn    uint64 // and inbound entries <= ckptIn
	inTrimmed uint64 // inbound entries <= inTrimmed are gone
	sinceCkpt int64  // log bytes written since the last checkpoint began

	legacy      bool     // the states are per-key records of an earlier version (see NeedsPages)
	bufs        pageBufs // the memory of the pages WriteStates stores
	stats       Stats
	residentErr atomic.Bool // dropResident failed once (not logged again)
}

// Hist is a fixed-bucket histogram (cumulative counts at each bound).
type Hist struct {
	Bounds []float64
	Counts []uint64 // Counts[i]: observations <= Bounds[i]; the last is +Inf
	Sum    float64
	N      uint64
}

func newHist(bounds ...float64) Hist {
	return Hist{Bounds: bounds, Counts: make([]uint64, len(bounds)+1)}
}

func (h *Hist) observe(v float64) {
	h.N++
	h.Sum += v
	for i, b := range h.Bounds {
		if v <= b {
			h.Counts[i]++
			return
		}
	}
	h.Counts[len(h.Bounds)]++
}

func (h Hist) clone() Hist {
	h.Counts = append([]uint64(nil), h.Counts...)
	return h
}

// Stats are counters about commits, read with Stats().
type Stats struct {
	// GroupSize is the number of writes (deltas, metadata) per group commit; CommitSeconds
	// the time from a group being encoded to its being written (and fsynced).
	GroupSize     Hist
	CommitSeconds Hist
	Groups        uint64
	Writes        uint64
	Syncs         uint64
	LastSyncUnix  int64
	Errors        uint64
	// Checkpoints written, the keys they wrote, the last one's duration
	Checkpoints     uint64
	CheckpointKeys  uint64
	LastCheckpointS float64
	LastCheckpoint  int64 // unix seconds
	LogBytes        int64 // log written since the last checkpoint began
}

// Group is one group commit; Wait blocks until it is durable.
type Group struct {
	writes  []Write
	deltas  []crdt.KeyDelta
	inbound []crdt.KeyDelta
	// received are peers' messages logged as they came, merged the deltas
	// decoded from them (released, not encoded: see SubmitReceived)
	received [][]byte
	merged   []crdt.KeyDelta
	barrier  bool // commit even when empty
	// done is set (err first) when the group is committed or failed; wake
	// is made by a waiter that must block, and closed then (both under the
	// store's waitMu). Most groups are waited for after their commit (an
	// event loop commits its pass itself): a channel each, with the group,
	// was a quarter of the bytes a SET P=1 row allocates.
	done atomic.Bool
	wake chan struct{}
	err  error
	s    *Store // the store whose open group this was (see Wait)
	seq  uint64 // outbox sequence of the group's deltas (0: none)
	// the last outbox and inbound sequences assigned before this group
	outBase, inBase uint64
	start           int64 // when encoded (monoNow; 0: not yet)
}

// Seq returns the outbox sequence holding the group's deltas (after Wait).
func (g *Group) Seq() uint64 { return g.seq }

// Bases returns the last outbox and inbound sequences of the groups before
// this one (after Wait): the log position this group starts at.
func (g *Group) Bases() (out, in uint64) { return g.outBase, g.inBase }

// Wait blocks until the group is committed and returns its error.
func (g *Group) Wait() error {
	if g.done.Load() {
		return g.err
	}
	if g.s != nil && g.s.held.Load() > 0 {
		// Submit did not wake the commit loop (an event loop's pass holds
		// the store): a waiter must not depend on that pass ending, it
		// may be the pass itself (a command that submits and waits)
		g.s.mu.Lock()
		if !g.s.closed {
			g.s.wake()
		}
		g.s.mu.Unlock()
	}
	g.s.waitMu.Lock()
	if g.done.Load() {
		g.s.waitMu.Unlock()
		return g.err
	}
	if g.wake == nil {
		g.wake = make(chan struct{})
	}
	wake := g.wake
	g.s.waitMu.Unlock()
	<-wake
	return g.err
}

// end releases the group's waiters, with err as its outcome. A group
// without a store (ended as it is made) has none.
func (g *Group) end(err error) {
	if g.s == nil {
		g.err = err
		g.done.Store(true)
		return
	}
	g.s.waitMu.Lock()
	g.err = err
	g.done.Store(true)
	if g.wake != nil {
		close(g.wake)
	}
	g.s.waitMu.Unlock()
}

func (g *Group) empty() bool {
	return len(g.writes) == 0 && len(g.deltas) == 0 && len(g.inbound) == 0 && len(g.merged) == 0 && len(g.received) == 0 && !g.barrier
}

var (
	prefixKey     = byte('k')
	prefixElem    = byte('e')
	metaOutSeq    = []byte("m:outseq")
	metaInSeq     = []byte("m:inseq")
	metaTrimmed   = []byte("m:trimmed")
	metaPublished = []byte("m:published")
	metaCkpt      = []byte("m:ckpt")
	metaRegion    = []byte("m:region")
)

// ErrClosed is returned for writes submitted after Close.
var ErrClosed = errors.New("persistence: store closed")

// Open opens (or creates) the store in opts.Dir and opts.LogDir.
func Open(opts Options) (*Store, error) {
	if opts.MaxEntryBytes <= 0 {
		opts.MaxEntryBytes = 768 << 10
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
	}
	if opts.MemtableBytes <= 0 {
		opts.MemtableBytes = 8 << 20
	}
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = 30 * time.Second
	}
	if opts.LogDir == "" {
		opts.LogDir = opts.Dir + "-wal"
	}
	sdb, err := badger.Open(badger.DefaultOptions(opts.Dir).
		WithCompression(options.Snappy).
		WithSyncWrites(opts.Fsync == FsyncAlways).
		WithLogger(badgerLogger{opts.Log}). // not WithLoggingLevel: it replaces the logger
		WithNumVersionsToKeep(1).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(8 << 20).
		// pages live in the tree, whose compactions reclaim rewritten ones
		// (in the value log they were reclaimed only by its collection,
		// which can bring back an old version of a deleted key:
		// dgraph-io/badger#2286, #2143; see emptyPage); small tables keep
		// the compaction buffers Badger pools small (RSS per key 1.76×
		// Redis with 512 KiB tables, 2.35× with the default 2 MiB)
		WithMemTableSize(opts.MemtableBytes).
		WithNumMemtables(2).
		WithBaseTableSize(512 << 10).
		WithValueThreshold(128 << 10).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		// Badger's minimum: each compactor ticks every 50 ms even when
		// idle (four were 80 wake-ups a second of an idle server's
		// ~145); a checkpoint costs the same with two
		// (BenchmarkCheckpoint, twenty-first round)
		WithNumCompactors(2))
	if err != nil {
		return nil, fmt.Errorf("open badger in %s: %w", opts.Dir, err)
	}
	s := &Store{opts: opts, sdb: sdb}
	if err := s.checkFormat(); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("badger in %s: %w", opts.Dir, err)
	}
	log, err := openLog(opts)
	if err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open the log in %s: %w", opts.LogDir, err)
	}
	s.log, s.signal, s.notify, s.done = log, make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{})
	s.release = crdt.Release
	if os.Getenv("CONCORD_POISON_ARGS") == "1" {
		// make test: a delta kept past its commit reads garbage
		s.release = crdt.Poison
	}
	fail := func(err error) (*Store, error) {
		log.close()
		sdb.Close()
		return nil, err
	}
	s.open = s.newOpenGroup()
	s.stats.GroupSize = newHist(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
	s.stats.CommitSeconds = newHist(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
	region := log.meta(string(metaRegion))
	if region != nil && opts.Region != "" && string(region) != opts.Region {
		return fail(fmt.Errorf("data dir %s belongs to region %q, not %q", opts.Dir, region, opts.Region))
	}
	s.outSeq = max(readUint(log.meta(string(metaOutSeq))), log.lastOut)
	s.assigned = s.outSeq
	s.trimmed = readUint(log.meta(string(metaTrimmed)))
	s.published = max(readUint(log.meta(string(metaPublished))), s.trimmed)
	s.inSeq = max(readUint(log.meta(string(metaInSeq))), log.lastIn)
	if v := log.meta(string(metaCkpt)); len(v) == 16 {
		s.ckptOut = binary.BigEndian.Uint64(v)
		s.ckptIn = binary.BigEndian.Uint64(v[8:])
	}
	s.inTrimmed = s.ckptIn
	if err := log.drop(s.trimmed, s.inTrimmed, s.published, false); err != nil {
		return fail(err)
	}
	if region == nil && opts.Region != "" {
		if err := log.setMetas(opts.Fsync != FsyncNo, metaRegion, []byte(opts.Region)); err != nil {
			return fail(err)
		}
	}
	go s.commitLoop()
	if opts.Fsync == FsyncEverysec {
		s.loops.Add(1)
		go s.syncLoop()
	}
	s.loops.Add(1)
	go s.gcLoop()
	return s, nil
}

func readUint(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func newGroup() *Group { return &Group{} }

// monoBase anchors monoNow.
var monoBase = time.Now()

// monoNow is a monotonic clock in nanoseconds, never 0: a group's commit
// time is measured by it, not the wall clock a step would skew (an int64,
// not a time.Time: half the bytes in every group).
func monoNow() int64 { return int64(time.Since(monoBase)) + 1 }

// newOpenGroup is the next group Submit fills; its waiters can wake the
// commit loop (see Wait).
func (s *Store) newOpenGroup() *Group {
	g := newGroup()
	g.s = s
	return g
}

// StateKey is the Badger key of a key's state record in the format before
// pages (read when migrating such a data dir; tests that make one).
func StateKey(db int, key string) []byte {
	b := make([]byte, 0, 2+len(key))
	b = append(b, prefixKey, byte(db))
	return append(b, key...)
}

// Submit adds writes and deltas to the group being formed and returns it:
// deltas are local (the outbox, shipped to peers), inbound are what the
// caller merged from elsewhere (peers' deltas, repairs); both are the log
// that recovery replays over the last checkpoint. The caller submits while
// holding the locks of the keys written, so two writes of one key reach the
// store in the order they were made. The deltas belong to the store from
// here: once encoded, pooled ones are handed back (crdt.Release).
func (s *Store) Submit(writes []Write, deltas, inbound []crdt.KeyDelta) *Group {
	return s.SubmitReceived(writes, deltas, inbound, nil, nil)
}

// SubmitReceived is Submit with peers' messages logged as they came: each
// of received (a batch or an envelope of batches, crdt.DecodeMessage) is
// written as one inbound entry, and merged, the deltas decoded from them
// (from these or from messages another group logs), are handed back
// (crdt.Release) once the group is written, without being encoded.
func (s *Store) SubmitReceived(writes []Write, deltas, inbound []crdt.KeyDelta, received [][]byte, merged []crdt.KeyDelta) *Group {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		g := newGroup()
		g.end(ErrClosed)
		return g
	}
	g := s.open
	g.writes = append(g.writes, writes...)
	g.deltas = append(g.deltas, deltas...)
	g.inbound = append(g.inbound, inbound...)
	g.received = append(g.received, received...)
	g.merged = append(g.merged, merged...)
	if s.held.Load() == 0 {
		s.wake()
	}
	s.mu.Unlock()
	return g
}

// Hold, while on for any caller, keeps Submit from waking the commit loop:
// an event loop holds the store while it runs a pass and commits the
// pass's writes itself (CommitNow); other goroutines' writes submitted
// meanwhile go into that group, or the commit loop is woken for them when
// the hold ends (or when one of them waits, see Group.Wait).
func (s *Store) Hold(on bool) {
	if on {
		s.held.Add(1)
		return
	}
	s.held.Add(-1)
	s.mu.Lock()
	if !s.open.empty() && !s.closed {
		s.wake()
	}
	s.mu.Unlock()
}

func (s *Store) commitLoop() {
	defer close(s.done)
	for {
		_, more := <-s.signal
		for {
			// let the connections that are runnable now add their writes
			// first: one frame for all of them, as Redis writes its AOF
			// once per event-loop pass (at pipeline 1 groups were 1.1
			// writes, now ~5; SET P=1 +10-20%)
			runtime.Gosched()
			s.commitMu.Lock()
			g := s.takeOpen()
			if g == nil {
				s.commitMu.Unlock()
				break
			}
			s.commit(g)
			s.commitMu.Unlock()
		}
		if !more {
			return
		}
	}
}

// CommitNow commits the writes submitted so far in the caller's goroutine
// (after any group being committed): an event loop commits its pass's
// writes itself instead of handing them to the commit loop and waiting.
func (s *Store) CommitNow() {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	s.mu.Lock()
	closed := s.closed // the commit loop commits what is left, then the log closes
	s.mu.Unlock()
	if closed {
		return
	}
	if g := s.takeOpen(); g != nil {
		s.commit(g)
	}
}

// takeOpen takes the group being formed for commit (nil when empty) and
// opens the next, sized like it so that Submit's appends rarely grow it.
func (s *Store) takeOpen() *Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.open
	if g.empty() {
		return nil
	}
	s.open = s.newOpenGroup()
	s.open.deltas = sized(&s.spare, len(g.deltas))
	s.open.inbound = sized(&s.spareIn, len(g.inbound))
	s.open.merged = sized(&s.spareMerged, len(g.merged))
	return g
}

// sized returns an empty slice for up to n deltas (at most 4096): *spare
// (an earlier group's, emptied by its commit) when it is big enough.
func sized(spare *[]crdt.KeyDelta, n int) []crdt.KeyDelta {
	if n = min(n, maxSpare); n == 0 {
		return nil
	}
	if cap(*spare) >= n {
		s := *spare
		*spare = nil
		return s
	}
	return make([]crdt.KeyDelta, 0, n)
}

// maxSpare is the most deltas a slice kept for a later group holds.
const maxSpare = 4096

// keep empties a committed group's slice and keeps it for a later one
// (under mu; a bigger one than maxSpare is dropped).
func keep(spare *[]crdt.KeyDelta, used []crdt.KeyDelta) {
	if cap(used) <= maxSpare && cap(used) > cap(*spare) {
		clear(used)
		*spare = used[:0]
	}
}

// keepFrameBytes: a frame buffer grown past it (a huge group) is dropped
// after its commit instead of kept for the next one.
const keepFrameBytes = 32 << 20

func (s *Store) wake() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// commit writes a group as one log frame (its deltas cut into outbox
// entries, its inbound deltas into inbound entries, its metadata) with one
// write(2) and, under fsync=always, one fsync; the next group forms
// meanwhile. Key states in a group (tests, startup repairs) are stored
// first.
func (s *Store) commit(g *Group) {
	g.outBase, g.inBase = s.assigned, s.inSeq
	if states := stateWrites(g.writes); len(states) > 0 {
		if err := s.WriteStates(states); err != nil {
			s.finish(g, 0, 0, err)
			return
		}
		g.writes = metaWrites(g.writes)
	}
	g.start = monoNow()
	fr := &s.fr
	fr.reset()
	logBytes := s.cut(fr, itemOut, g.deltas, &s.assigned)
	logBytes += s.cut(fr, itemIn, g.inbound, &s.inSeq)
	for _, msg := range g.received {
		s.inSeq++
		start := len(fr.b)
		fr.entry(itemIn, s.inSeq, func(b []byte) []byte { return append(b, msg...) })
		logBytes += len(fr.b) - start
	}
	// encoded (or logged as they came): nothing reads them any more (local
	// writes' deltas, and peers' deltas decoded by
	// crdt.DecodeMessageReleasable)
	for _, ds := range [][]crdt.KeyDelta{g.deltas, g.inbound, g.merged} {
		for _, kd := range ds {
			s.release(kd.Delta)
		}
	}
	n := len(g.writes) + len(g.deltas) + len(g.inbound) + len(g.merged)
	for _, w := range g.writes {
		fr.setMeta("m:"+w.Key, w.Header)
	}
	seq := uint64(0)
	if len(g.deltas) > 0 {
		seq = s.assigned
	}
	s.mu.Lock()
	s.sinceCkpt += int64(logBytes)
	keep(&s.spare, g.deltas) // takeOpen gives them to a later group
	keep(&s.spareIn, g.inbound)
	keep(&s.spareMerged, g.merged)
	g.deltas, g.inbound, g.merged, g.received = nil, nil, nil, nil
	s.mu.Unlock()
	s.log.mu.Lock()
	err := s.log.write(fr, s.opts.Fsync == FsyncAlways)
	s.log.mu.Unlock()
	if cap(fr.b) > keepFrameBytes {
		fr.b = nil // a huge group's buffer is not kept
	}
	s.finish(g, seq, n, err)
}

// finish records a group's outcome (n writes) and releases its waiters.
func (s *Store) finish(g *Group, seq uint64, n int, err error) {
	if err != nil {
		s.mu.Lock()
		s.stats.Errors++
		s.mu.Unlock()
		s.opts.Log.Error().Err(err).Msg("group commit failed")
		g.end(err)
		return
	}
	s.mu.Lock()
	if seq > s.outSeq {
		s.outSeq = seq
	}
	s.stats.Groups++
	s.stats.Writes += uint64(n)
	s.stats.GroupSize.observe(float64(n))
	if g.start != 0 {
		s.stats.CommitSeconds.observe(float64(monoNow()-g.start) / 1e9)
	}
	if s.opts.Fsync == FsyncAlways {
		s.stats.Syncs++
		s.stats.LastSyncUnix = time.Now().Unix()
	}
	s.mu.Unlock()
	if seq > 0 {
		g.seq = seq
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	g.end(nil)
}

func stateWrites(ws []Write) []Write {
	var out []Write
	for _, w := range ws {
		if !w.Meta {
			out = append(out, w)
		}
	}
	return out
}

func metaWrites(ws []Write) []Write {
	var out []Write
	for _, w := range ws {
		if w.Meta {
			out = append(out, w)
		}
	}
	return out
}

// cut appends deltas to the frame as log entries of at most
// MaxEntryBytes each, under consecutive sequences after *last (which it
// advances), and returns the bytes appended.
func (s *Store) cut(fr *frame, kind byte, deltas []crdt.KeyDelta, last *uint64) int {
	start := len(fr.b)
	for rest := deltas; len(rest) > 0; {
		n, size := 0, 0
		for n < len(rest) && (n == 0 || size < s.opts.MaxEntryBytes) {
			size += approxDeltaSize(rest[n])
			n++
		}
		*last++
		batch := rest[:n]
		fr.entry(kind, *last, func(b []byte) []byte { return crdt.AppendBatch(b, batch) })
		rest = rest[n:]
	}
	return len(fr.b) - start
}

// applyWrites applies writes in order (the pages it encodes are added to
// used). ReplaceAll empties the key's stored element pages (read from a
// snapshot, not by iterating the transaction's pending writes, which Badger
// sorts on every iterator) and those written earlier in the same
// transaction. Nothing is deleted (see emptyPage).
func (s *Store) applyWrites(set func(k, v []byte) error, writes []Write, used *[][]byte) error {
	var pending map[string][][]byte
	for _, w := range writes {
		if w.Page { // no keys: an empty page (never a delete: see emptyPage)
			page := encodePage(s.bufs.get, w.Keys, w.Ends, w.Header)
			*used = append(*used, page)
			if err := set(PageKey(w.DB, w.Bucket), page); err != nil {
				return err
			}
			continue
		}
		if w.Meta {
			if err := set(append([]byte("m:"), w.Key...), w.Header); err != nil {
				return err
			}
			continue
		}
		if w.ReplaceAll { // every stored element page emptied (see emptyPage)
			prefix := elemPagePrefix(w.DB, w.Key)
			empty := func(k []byte) error { return set(k, emptyPage) }
			if err := s.eachStored(empty, prefix); err != nil {
				return err
			}
			for _, k := range pending[string(prefix)] {
				if err := empty(k); err != nil {
					return err
				}
			}
			delete(pending, string(prefix))
		}
		if w.Header != nil {
			return fmt.Errorf("key %q: headers are stored in pages (Write.Page)", w.Key)
		}
		if w.Fan <= 0 {
			if len(w.Elems) > 0 {
				return fmt.Errorf("key %q: elements are stored in pages (Write.Fan)", w.Key)
			}
			continue
		}
		k := ElemPageKey(w.DB, w.Key, w.Bucket)
		page := encodeElemPage(s.bufs.get, w.Fan, w.Elems)
		*used = append(*used, page)
		if page == nil {
			page = emptyPage
		} else {
			if pending == nil {
				pending = make(map[string][][]byte)
			}
			p := string(elemPagePrefix(w.DB, w.Key))
			pending[p] = append(pending[p], k)
		}
		if err := set(k, page); err != nil {
			return err
		}
	}
	return nil
}

// eachStored calls fn with every stored key under prefix (read from a
// snapshot first: fn may write).
func (s *Store) eachStored(fn func([]byte) error, prefix []byte) error {
	var keys [][]byte
	err := s.sdb.View(func(rt *badger.Txn) error {
		it := rt.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

// ElemKey is the Badger key of one element record of a key in the format
// before pages (see StateKey).
func ElemKey(db int, key string, kind byte, name string) []byte {
	b := elemPrefix(db, key)
	b = append(b, kind)
	return append(b, name...)
}

func elemPrefix(db int, key string) []byte {
	b := make([]byte, 0, 12+len(key))
	b = append(b, prefixElem, byte(db))
	b = binary.AppendUvarint(b, uint64(len(key)))
	return append(b, key...)
}

func (s *Store) syncLoop() {
	defer s.loops.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			if err := s.log.sync(); err != nil {
				s.opts.Log.Warn().Err(err).Msg("fsync failed")
				continue
			}
			if err := s.sdb.Sync(); err != nil {
				s.opts.Log.Warn().Err(err).Msg("fsync failed")
				continue
			}
			s.mu.Lock()
			s.stats.Syncs++
			s.stats.LastSyncUnix = time.Now().Unix()
			s.mu.Unlock()
		}
	}
}

// gcLoop runs Badger's value log GC every minute and reclaims the
// resident pages of the key states' files every 5 s.
func (s *Store) gcLoop() {
	defer s.loops.Done()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-s.done:
			return
		case <-t.C:
			if i%12 == 0 {
				for s.sdb.RunValueLogGC(0.5) == nil {
				}
			}
			s.dropResident()
		}
	}
}

// dropResident reclaims the resident pages of the key states' memory-mapped
// files (see dropResident in resident_linux.go): read at startup and
// written by checkpoints, they are not what the process works with.
func (s *Store) dropResident() {
	dir, err := filepath.Abs(s.opts.Dir) // as /proc/self/maps names it
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err == nil {
		_, err = dropResident(dir)
	}
	if err != nil && s.residentErr.CompareAndSwap(false, true) {
		s.opts.Log.Debug().Err(err).Msg("cannot reclaim the pages of mapped files")
	}
}

// Loader receives what Load reads.
type Loader struct {
	Header func(db int, key string, header []byte) error
	Elem   func(db int, key string, kind byte, name string, data []byte) error
	Replay func(seq uint64, batch []byte) error
	// Covered, when set, gets the log entries still stored that the last
	// checkpoint covers (outbox entries not yet published): they can
	// rebuild a key whose stored record is damaged.
	Covered func(seq uint64, batch []byte) error
	// Corrupt is told of a key whose stored record failed its checksum
	// (the record is not passed on).
	Corrupt func(db int, key string) error
	// ElemPages, when set, is told the number of element pages of each
	// stored element page of a key (its layout: see Write.Fan).
	ElemPages func(db int, key string, fan int)
}

func (l *Loader) corrupt(db int, key string) error {
	if l.Corrupt == nil {
		return fmt.Errorf("stored record of key %q (db %d) failed its checksum", key, db)
	}
	return l.Corrupt(db, key)
}

// Stored key records end with a CRC-32C of their bytes, checked at load:
// corruption Badger's own block checksums miss (a bug, bad memory, an
// operator's tool) is caught before a damaged state is served.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func sealed(b []byte) []byte {
	out := make([]byte, len(b), len(b)+4)
	copy(out, b)
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(b, castagnoli))
}

func unseal(v []byte) ([]byte, bool) {
	if len(v) < 4 {
		return nil, false
	}
	body := v[:len(v)-4]
	return body, crc32.Checksum(body, castagnoli) == binary.LittleEndian.Uint32(v[len(v)-4:])
}

// Load calls l.Header for every stored key (from its bucket's page, or an
// earlier version's record of the key), l.Elem for every element record
// (the last checkpoint), then l.Replay for every log entry after it: the
// outbox entries (local deltas) and the inbound entries (merged deltas)
// written since. Merging is idempotent, so an entry the checkpoint already
// covers in part is harmless.
func (s *Store) Load(l Loader) error {
	defer s.dropResident() // the pages Load read are not read again
	return s.sdb.View(func(stxn *badger.Txn) error {
		scan := func(prefix byte, fn func(k, v []byte) error) error {
			it := stxn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256, Prefix: []byte{prefix}})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				if err := fn(it.Item().Key(), v); err != nil {
					return err
				}
			}
			return nil
		}
		s.mu.Lock()
		legacy := s.legacy
		s.mu.Unlock()
		if !legacy {
			if err := scan(prefixPage, func(k, v []byte) error {
				if len(k) != 4 {
					return nil
				}
				db := int(k[1])
				err := parsePage(v, func(key string, h []byte, _ int, ok bool) error {
					if !ok {
						return l.corrupt(db, key)
					}
					return l.Header(db, key, h)
				})
				if err != nil {
					return fmt.Errorf("page %d of db %d: %w", int(k[2])<<8|int(k[3]), db, err)
				}
				return nil
			}); err != nil {
				return err
			}
		} else if err := scan(prefixKey, func(k, v []byte) error {
			if len(k) < 2 {
				return nil
			}
			body, ok := unseal(v)
			if !ok {
				return l.corrupt(int(k[1]), string(k[2:]))
			}
			return l.Header(int(k[1]), string(k[2:]), body)
		}); err != nil {
			return err
		}
		if !legacy {
			if err := scan(prefixElemPage, func(k, v []byte) error {
				db, key, ok := parseElemPageKey(k)
				if !ok {
					return fmt.Errorf("corrupt element page key %q", k)
				}
				fan, err := parseElemPage(v, func(kind byte, name string, data []byte) error {
					return l.Elem(db, key, kind, name, data)
				})
				if errors.Is(err, errPage) {
					return l.corrupt(db, key)
				}
				if err == nil && fan > 0 && l.ElemPages != nil {
					l.ElemPages(db, key, fan)
				}
				return err
			}); err != nil {
				return err
			}
		} else if err := scan(prefixElem, func(k, v []byte) error {
			if len(k) < 3 {
				return nil
			}
			db := int(k[1])
			n, w := binary.Uvarint(k[2:])
			rest := k[2+max(w, 0):]
			if w <= 0 || n >= uint64(len(rest)) {
				return fmt.Errorf("corrupt element key %q", k)
			}
			body, ok := unseal(v)
			if !ok {
				return l.corrupt(db, string(rest[:n]))
			}
			return l.Elem(db, string(rest[:n]), rest[n], string(rest[n+1:]), body)
		}); err != nil {
			return err
		}
		s.mu.Lock()
		ckptOut, ckptIn, trimmed := s.ckptOut, s.ckptIn, s.trimmed
		s.mu.Unlock()
		// the log after the checkpoint is replayed; what it covers only
		// helps rebuild damaged keys
		return s.log.replay(func(kind byte, seq uint64, entry []byte) error {
			entry = append([]byte(nil), entry...)
			switch {
			case kind == itemIn && seq > ckptIn, kind == itemOut && seq > ckptOut:
				return l.Replay(seq, entry)
			case kind == itemOut && seq > trimmed && l.Covered != nil:
				return l.Covered(seq, entry)
			}
			return nil
		})
	})
}

// OutboxSeq returns the last outbox sequence written and the last one
// published (TrimOutbox's mark).
func (s *Store) OutboxSeq() (last, published uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outSeq, s.published
}

// InboundSeq returns the last inbound log sequence assigned.
func (s *Store) InboundSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inSeq
}

// Trimmed returns the outbox trim point: entries <= it are gone.
func (s *Store) Trimmed() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trimmed
}

// ReadOutbox returns up to max entries after seq, in order.
func (s *Store) ReadOutbox(after uint64, max int) (seqs []uint64, entries [][]byte, err error) {
	return s.log.readOut(after, max)
}

// TrimOutbox records that outbox entries up to and including seq are
// safely elsewhere (acknowledged by the stream, or with no peers to ship
// to); they are deleted once a checkpoint covers them too (until then they
// are also the log recovery replays).
func (s *Store) TrimOutbox(seq uint64) error {
	s.mu.Lock()
	if seq > s.outSeq {
		seq = s.outSeq
	}
	if seq <= s.published {
		s.mu.Unlock()
		return nil
	}
	s.published = seq
	s.mu.Unlock()
	return s.trim(false)
}

// trim drops the outbox entries both published and checkpointed and the
// inbound entries checkpointed (the log segments holding only those) and
// records the marks; rotate starts a new segment first, so that the one
// being written can go too.
func (s *Store) trim(rotate bool) error {
	s.mu.Lock()
	outTo := max(s.trimmed, min(s.published, s.ckptOut))
	inTo := max(s.inTrimmed, s.ckptIn)
	var ckpt [16]byte
	binary.BigEndian.PutUint64(ckpt[:], s.ckptOut)
	binary.BigEndian.PutUint64(ckpt[8:], s.ckptIn)
	published := s.published
	s.mu.Unlock()
	if err := s.log.setMetas(false, metaTrimmed, u64(outTo), metaPublished, u64(published), metaCkpt, ckpt[:]); err != nil {
		return err
	}
	if err := s.log.drop(outTo, inTo, published, rotate); err != nil {
		return err
	}
	s.mu.Lock()
	s.trimmed = max(s.trimmed, outTo)
	s.inTrimmed = max(s.inTrimmed, inTo)
	s.mu.Unlock()
	return nil
}

// Barrier returns the group being formed, which commits even if nothing
// else joins it: once it is durable, so is everything submitted before
// Barrier was called, and its Bases are the log position it starts at.
func (s *Store) Barrier() *Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		g := newGroup()
		g.end(ErrClosed)
		return g
	}
	s.open.barrier = true
	s.wake()
	return s.open
}

// WriteStates stores key states (a checkpoint's part) through a Badger
// write batch, which splits itself into transactions of the size Badger
// allows: a key with a million changed members is stored like any other.
// Only checkpoints (and startup repairs, before them) write key states, one
// at a time, and a checkpoint names each key once, so a ReplaceAll sees every
// earlier write of the key in the snapshot it reads the stored elements from.
// A crash halfway is harmless: the checkpoint position is recorded only
// after, and the log after the previous one is replayed over whatever
// records were stored.
func (s *Store) WriteStates(writes []Write) error {
	wb := s.sdb.NewWriteBatch()
	var used [][]byte                       // the pages' memory: Badger's until it wrote them
	defer func() { s.bufs.release(used) }() // after Cancel, which waits for Badger's writes
	defer wb.Cancel()
	if err := s.applyWrites(wb.Set, writes, &used); err != nil {
		return err
	}
	return wb.Flush()
}

// Checkpointed records that the key states written so far cover every
// outbox entry <= out and inbound entry <= in: recovery replays only what
// follows, and the log up to there is trimmed (the outbox once published).
func (s *Store) Checkpointed(out, in uint64, keys int, took time.Duration) error {
	s.mu.Lock()
	s.ckptOut, s.ckptIn = max(s.ckptOut, out), max(s.ckptIn, in)
	s.stats.Checkpoints++
	s.stats.CheckpointKeys += uint64(keys)
	s.stats.LastCheckpointS = took.Seconds()
	s.stats.LastCheckpoint = time.Now().Unix()
	s.mu.Unlock()
	// the states must be durable before the log they cover goes; and the
	// log first, so that no durable state holds a change whose log entry
	// (the outbox: what peers receive) a power loss could still take
	if s.opts.Fsync != FsyncNo {
		if err := s.log.sync(); err != nil {
			return err
		}
		if err := s.sdb.Sync(); err != nil {
			return err
		}
	}
	err := s.trim(true)
	s.dropResident()
	return err
}

// LogBytes returns how much log was written since the last checkpoint
// began (what recovery would replay) and resets the count when reset.
func (s *Store) LogBytes(reset bool) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.sinceCkpt
	if reset {
		s.sinceCkpt = 0
	}
	return n
}

// OutboxNotify is signalled after a group with deltas commits.
func (s *Store) OutboxNotify() <-chan struct{} { return s.notify }

// Meta reads a metadata value written with a Meta write.
func (s *Store) Meta(key string) []byte { return s.log.meta("m:" + key) }

// Stats returns commit counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.GroupSize, st.CommitSeconds = st.GroupSize.clone(), st.CommitSeconds.clone()
	st.LogBytes = s.sinceCkpt
	return st
}

// Size returns the key states' on-disk sizes (Badger's LSM tree and value
// log) and the log's (segment files and their bytes).
func (s *Store) Size() (lsm, vlog int64, segments int, logBytes int64) {
	lsm, vlog = s.sdb.Size()
	segments, logBytes = s.log.size()
	return
}

// MemtableBytes is the size of the key states database's memtables.
func (s *Store) MemtableBytes() int64 { return s.sdb.Opts().MemTableSize }

// Close commits what is pending, syncs and closes the store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.signal)
	s.mu.Unlock()
	<-s.done
	s.loops.Wait() // the fsync and GC tickers may be in a round: the log and states stay open until they end
	err := s.log.close()
	closed := make(chan error, 1)
	go func() {
		err := s.sdb.Sync()
		if e := s.sdb.Close(); err == nil {
			err = e
		}
		closed <- err
	}()
	select {
	case e := <-closed:
		if err == nil {
			err = e
		}
	case <-time.After(s.opts.CloseTimeout):
		err = fmt.Errorf("the key states database in %s did not close within %v (its last flush failing: see the log); the log holds the writes", s.opts.Dir, s.opts.CloseTimeout)
	}
	return err
}

type badgerLogger struct{ l zerolog.Logger }

func (b badgerLogger) Errorf(f string, a ...interface{}) { b.l.Error().Msgf(f, a...) }
func (b badgerLogger) Warningf(f string, a ...interface{}) {
	if strings.HasPrefix(f, "Block cache might be too small") || strings.HasPrefix(f, "Cache life expectancy") {
		// its cache-sizing advice at close: Concord reads its states
		// database at startup and for a checkpoint's element rewrites, not
		// per request
		b.l.Debug().Msgf(f, a...)
		return
	}
	b.l.Warn().Msgf(f, a...)
}
func (b badgerLogger) Infof(f string, a ...interface{})  { b.l.Debug().Msgf(f, a...) }
func (b badgerLogger) Debugf(f string, a ...interface{}) { b.l.Trace().Msgf(f, a...) }
