// Package keyspace owns the in-memory map of key -> CRDT state for every
// database, per-key locking, expiry (lazy and active), and the two paths that
// change state: local writes (commands) and remote applies (peering). It is
// where commands, persistence and peering meet; it reaches persistence and
// peering only through the Store interface it defines.
package keyspace

import (
	"cmp"
	"errors"
	bits64 "math/bits"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"concord/crdt"
)

const shardCount = 256

// Write is one change to persist: a bucket's page of key headers (Page;
// a header is a state without members and fields, crdt.AppendHeader), one
// element page of a key (Fan > 0: crdt.AppendMember, crdt.AppendField;
// ReplaceAll drops the key's stored elements first, or, without Fan, only
// that), or a metadata value (Meta).
type Write struct {
	DB         int
	Key        string
	Header     []byte
	ReplaceAll bool
	Elems      []Elem
	// Meta stores Header under the metadata name Key (a watermark).
	Meta bool
	// Page stores the page of bucket Bucket (BucketOf) of db DB: the
	// headers of every key in it, Keys', cut from Header at Ends (no keys:
	// the bucket is empty). A checkpoint rewrites a changed key's bucket
	// whole; set members and hash fields have records of their own (Elems).
	Page   bool
	Bucket int
	Keys   []string
	Ends   []int
	// Fan > 0 stores Elems as element page Bucket of Key's Fan pages
	// (elemPageOf); elements without Data are left out, and a page without
	// any is deleted.
	Fan int
}

// Elem is one set member's or hash field's record; nil Data deletes it.
type Elem struct {
	Kind byte
	Name string
	Data []byte
}

// Ticket is a pending durable commit.
type Ticket interface{ Wait() error }

// Store logs each tx in group commits: its local deltas (the outbox), the
// deltas it merged from elsewhere (inbound: peers, repairs) and metadata
// writes. Key states are stored separately, by checkpoints (Checkpoint).
//
// Submit copies what it keeps: the slices are the tx's, reused after it.
type Store interface {
	Submit(meta []Write, deltas, inbound []crdt.KeyDelta, received Received) Ticket
}

// Received is what a tx merged from peers' messages that are logged as
// they came (Tx.MergeReceived, Tx.LogReceived): the messages, each one
// inbound entry (crdt.DecodeMessage reads it), and the deltas merged from
// them (in this tx or an earlier one), handed back (crdt.Release) once
// the tx is logged, never encoded.
type Received struct {
	Messages [][]byte
	Merged   []crdt.KeyDelta
}

// ElemPages is a Store that can read back the elements stored in an
// element page of a key (Write.Fan): fn gets each one's kind and name (a
// copy), and fan is the page's Write.Fan (0: no such page stored). A
// checkpoint that rewrites a few pages of a big key reads them instead of
// walking every element of the key to find those of its pages.
type ElemPages interface {
	ElemPageNames(db int, key string, n int, fn func(kind byte, name string)) (fan int, err error)
}

// Config configures a Keyspace.
type Config struct {
	Region string
	DBs    int
	// Stable reports whether every delta made so far has reached every
	// region (true with no peers): tombstones may then be forgotten at once.
	Stable func() bool
	// Now returns the wall clock (tests inject a fake).
	Now func() time.Time
	// ConflictLog bounds the ring of recent conflicts.
	ConflictLog int
	// Digests maintains per-key and per-bucket state digests for
	// anti-entropy (on when the region has peers).
	Digests bool
}

// Buckets per database in the anti-entropy hash tree; each belongs to one
// shard, so it is updated under that shard's lock.
const (
	subBuckets = 16
	NumBuckets = shardCount * subBuckets
	// BucketsPerShard: the buckets of shard i are i*BucketsPerShard and the
	// BucketsPerShard after it (see DigestsInShard)
	BucketsPerShard = subBuckets
)

// Keyspace holds every database.
type Keyspace struct {
	cfg   Config
	store Store
	world sync.RWMutex // exclusive for EXEC, FLUSHALL, SWAPDB
	dbs   []*db

	clockMu sync.Mutex
	clock   *crdt.Clock
	wall    *wallClock // NowMs's clock when cfg.Now is not injected

	Stats Stats

	conflictMu sync.Mutex
	conflicts  []Conflict
	conflictN  uint64

	gcEpoch atomic.Uint32 // current tombstone GC epoch (starts at 1)

	regions regionTable // region names of packed (cold) entries

	quarMu  sync.Mutex
	quar    map[Key]bool // keys whose stored state failed its checksum, until repaired
	quarAny atomic.Bool
}

// Quarantine keeps k from being read or written until Release (its stored
// state was damaged and is being repaired from a peer).
func (ks *Keyspace) Quarantine(k Key) {
	ks.quarMu.Lock()
	if ks.quar == nil {
		ks.quar = map[Key]bool{}
	}
	ks.quar[k] = true
	ks.quarAny.Store(true)
	ks.quarMu.Unlock()
}

// Release ends k's quarantine.
func (ks *Keyspace) Release(k Key) {
	ks.quarMu.Lock()
	delete(ks.quar, k)
	ks.quarAny.Store(len(ks.quar) > 0)
	ks.quarMu.Unlock()
}

// Quarantined reports whether any of keys is quarantined.
func (ks *Keyspace) Quarantined(keys []Key) bool {
	if !ks.quarAny.Load() {
		return false
	}
	ks.quarMu.Lock()
	defer ks.quarMu.Unlock()
	for _, k := range keys {
		if ks.quar[k] {
			return true
		}
	}
	return false
}

// QuarantinedKeys lists the keys in quarantine.
func (ks *Keyspace) QuarantinedKeys() []Key {
	ks.quarMu.Lock()
	defer ks.quarMu.Unlock()
	out := make([]Key, 0, len(ks.quar))
	for k := range ks.quar {
		out = append(out, k)
	}
	return out
}

// Snapshot returns a copy of k's whole state (tombstone included), or nil.
func (ks *Keyspace) Snapshot(k Key) *crdt.State {
	if k.DB < 0 || k.DB >= len(ks.dbs) {
		return nil
	}
	s := ks.dbs[k.DB].shardOf(k.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.stateOf(k.Key); st != nil {
		return st.Clone()
	}
	return nil
}

// Stats are counters shown by INFO.
type Stats struct {
	ExpiredKeys   atomic.Uint64
	KeyspaceHits  atomic.Uint64
	KeyspaceMiss  atomic.Uint64
	ConflictsLWW  atomic.Uint64
	ConflictsType atomic.Uint64
	ConflictsNum  atomic.Uint64
	RemoteApplied atomic.Uint64
	Tombstones    atomic.Int64
	// CorruptRecords counts stored records that failed their checksum;
	// KeysRepaired keys restored from a peer after that.
	CorruptRecords atomic.Uint64
	KeysRepaired   atomic.Uint64
	// TombstonesGCd counts tombstones dropped once causally stable;
	// FieldsGCd live keys whose removed fields' metadata was dropped.
	TombstonesGCd atomic.Uint64
	FieldsGCd     atomic.Uint64
	// ColdKeys counts keys kept packed (see PackCold), ColdBytes their
	// packed bytes; WarmKeys the keys (tombstones included) in the maps.
	ColdKeys  atomic.Int64
	ColdBytes atomic.Int64
	WarmKeys  atomic.Int64
	// Prefetched counts keys Prefetch found and brought into the cache;
	// PrefetchedCold the cold keys whose packed record it brought in.
	Prefetched     atomic.Uint64
	PrefetchedCold atomic.Uint64
	// ElemPagesRead counts element pages whose stored elements' names a
	// checkpoint read back (ElemPages) instead of walking their key.
	ElemPagesRead atomic.Uint64
}

// Conflict is one resolution that discarded data.
type Conflict struct {
	DB     int
	Key    string
	Kind   string
	HLC    crdt.HLC
	From   string
	Winner string
	Loser  string
}

type db struct {
	shards [shardCount]shard
	epoch  atomic.Uint64 // bumped by FLUSHDB/SWAPDB: invalidates WATCH
	// withExp counts the db's keys with a deadline (its shards' exp maps):
	// ExpireCycle skips a db without any instead of locking its shards
	withExp atomic.Int64
	// keys is the sum of its shards' live: DBSIZE and INFO keyspace read
	// it instead of locking 256 shards per db
	keys atomic.Int64
}

type shard struct {
	mu   sync.Mutex
	ks   *Keyspace
	vers uint64 // the last entry version handed out (nextVer)
	// gone: versions of keys lately removed from m, so WATCH sees a key
	// made and removed again (at most goneMax; then emptied, and goneBase,
	// an absent key's version otherwise, renewed: a watcher of any absent
	// key of the shard then sees a change, which only retries its EXEC)
	gone     map[string]uint64
	goneBase uint64
	// holder: the tx holding mu when it locks many shards (markHolder)
	holder *Tx
	m      index            // warm keys
	peak   int              // len(m)'s high-water mark (see notePeak)
	cold   coldTable        // keys not accessed for a while (see PackCold)
	sink   uint64           // what PackCold's read-ahead read (kept: not optimized away)
	exp    map[string]int64 // keys with a deadline (set with setExp, delExp)
	// withExp is the db's count of keys with a deadline
	withExp *atomic.Int64
	dbKeys  *atomic.Int64 // the db's keys (see addLive)
	// dirty: keys changed since the last checkpoint captured this shard
	// that need more than their header stored, or were removed (see
	// dirtyKey); flagged: entries and cold records with their dirty flag
	dirty   map[string]*dirtyKey
	flagged int
	// fans: the layout of the stored element pages of keys stored in more
	// than one (lg: 2^lg pages; see elemsPerPage), or lgUnknown
	fans map[string]uint8
	pend []pending // keys whose digest is stale (see settle)
	live int
	bkt  [subBuckets]uint64 // XOR of the key digests of each bucket
}

// touch records what a tx changed in one key, for persistence.
type touch struct {
	k        Key
	h        uint64 // k's hashKey
	borrowed bool   // k.Key may point into memory the keyspace must not keep (see merge)
	forget   bool   // drop the key's state (tombstone GC)
	e        *entry
	all      bool
	elems    bool // the key held members or fields at some point in the tx
	// the members and fields the tx changed (repeats allowed: the dirty
	// map's sets drop them)
	members []string
	fields  []string
}

// touchHash is a key's hash in a tx's index of its touches (a map keyed
// by Key hashes the struct and its string generically: its two map
// operations per key of a peer's batch were 6% of a replicating region's
// CPU; a Go map by this hash still 4%: the index is a table of its own).
func touchHash(k Key) uint64 { return hashKey(k.Key) ^ touchDB(k.DB) }

func touchDB(db int) uint64 { return uint64(db) * 0x9e3779b97f4a7c15 }

// entryWithState allocates an entry and its state together: one
// allocation, and a read reaches the state without another cache miss.
type entryWithState struct {
	e  entry
	st crdt.State
}

func newEntry() *entry {
	x := &entryWithState{}
	x.e.st = &x.st
	return &x.e
}

// entryWithString is a string key's entry: its state, version vector and
// register in the same allocation (crdt.StringRoom), and its name when
// short (the map's key then points into it: a lookup compares the name and
// reads the entry from the same few cache lines).
type entryWithString struct {
	name [32]byte // first: the entry's flags share its cache line
	e    entry
	room crdt.StringRoom // 32 + 48 + 368 bytes: the 448-byte size class
}

// stringEntrySize is entryWithString's size, one of Go's size classes:
// a bigger entry costs every warm string key the next class (and above
// 512 bytes, Go's collector no longer scans it span-wise).
const stringEntrySize = 448

// touchEntry reads one word of each cache line of a string key's entry
// (entryWithString, 448 bytes) at once, so that their cache misses overlap
// instead of following one another as a command reads the entry's parts
// (state, register, base, value) one after the other. The caller keeps
// the result (tx.touchSink), so that the loads are not optimized away.
func touchEntry(e *entry) uint64 {
	if !e.inRoom {
		return 0
	}
	p := unsafe.Add(unsafe.Pointer(e), -int(unsafe.Offsetof(entryWithString{}.e)))
	return *(*uint64)(unsafe.Add(p, 64)) ^ *(*uint64)(unsafe.Add(p, 128)) ^ *(*uint64)(unsafe.Add(p, 192)) ^
		*(*uint64)(unsafe.Add(p, 256)) ^ *(*uint64)(unsafe.Add(p, 320)) ^ *(*uint64)(unsafe.Add(p, 384))
}

// newEntryFor returns a new entry for key, whose first delta is d, and the
// string the shard's map should hold the entry under.
func newEntryFor(key string, d *crdt.State) (*entry, string) {
	if d.Str == nil {
		return newEntry(), key
	}
	x, key := newStringEntry(key)
	x.e.st = x.room.State()
	return &x.e, key
}

// newStringEntry returns a string key's entry (its state not set) and the
// map's name for it: in the entry when short enough.
func newStringEntry(key string) (*entryWithString, string) {
	x := &entryWithString{}
	x.e.inRoom = true
	if len(key) > 0 && len(key) <= len(x.name) {
		n := copy(x.name[:], key)
		key = unsafe.String(&x.name[0], n) // never written again
	}
	return x, key
}

// An entry is a warm key (cold keys live in the shard's cold table).
type entry struct {
	st   *crdt.State
	live bool
	// hot: accessed since the last PackCold
	hot bool
	// hasExp: the key is in its shard's exp map; dirty: changed since the
	// last checkpoint captured its shard; digStale: dig awaits settle
	hasExp, dirty, digStale bool
	// inRoom: the entry is an entryWithString's (its state in the room)
	inRoom bool
	// ownsVal: the last merge added a string value Splice or Resolve built
	// (crdt.Splice's inPlace: the next APPEND may write into its spare
	// capacity); any other merge clears it
	ownsVal bool
	ver     uint64
	// digests (when Config.Digests): XOR of the elements', and the key's
	elems, dig uint64
	// deadEpoch is the GC epoch in which this tombstone last changed (0: live)
	deadEpoch uint32
	// metaEpoch is the GC epoch in which a live key last got dead metadata
	// (a removed hash field's counter floor); 0: none
	metaEpoch uint32
}

func subBucket(key string) int { return int((hashKey(key) >> 8) % subBuckets) }

// BucketOf returns the anti-entropy bucket of key (0..NumBuckets-1).
func BucketOf(key string) int {
	return int(hashKey(key)%shardCount)*subBuckets + subBucket(key)
}

// redigest notes that e's key digest is stale after a merge: it is
// recomputed (and its bucket updated) by settle, when anti-entropy reads
// the digests, so a key written many times between two comparisons is
// hashed once.
func (s *shard) redigest(key string, e *entry) {
	if !e.digStale {
		e.digStale = true
		s.pend = append(s.pend, pending{key, e})
	}
}

// pending is a key whose digest awaits settle, and its entry.
type pending struct {
	key string
	e   *entry
}

// settle brings the stale key digests of the shard and its buckets up to
// date (under the shard's lock). A bucket always holds the XOR of its keys'
// e.dig, stale or not, so removing a key stays consistent before settling.
// An entry that left the map is no longer stale (forget), so the pending
// entries are used without looking their keys up (which waited for memory
// twice a key: 0.6 of a settle's 1.4 s under steady writes to 400k keys).
func (s *shard) settle() {
	var sink uint64
	for i := 0; i < len(s.pend); i += MaxPrefetch {
		// each chunk's entries read at once first (their cache misses
		// overlap; see touchEntry), then digested
		chunk := s.pend[i:min(i+MaxPrefetch, len(s.pend))]
		for _, p := range chunk {
			sink ^= touchEntry(p.e)
		}
		for _, p := range chunk {
			if e := p.e; e.digStale {
				old := e.dig
				e.dig = crdt.KeyDigest(p.key, crdt.HeaderDigest(e.st), e.elems)
				s.bkt[subBucket(p.key)] ^= old ^ e.dig
				e.digStale = false
			}
		}
	}
	if sink == 1 {
		prefetchSink.Store(sink)
	}
	if cap(s.pend) > 4096 {
		s.pend = nil
	} else {
		clear(s.pend) // (the entries may have left the map)
		s.pend = s.pend[:0]
	}
}

// forget takes e's digest out of key's bucket as e leaves the map: a
// pending settle of it is dropped.
func (s *shard) forget(key string, e *entry) {
	s.bkt[subBucket(key)] ^= e.dig
	e.digStale = false
}

// goneMax bounds a shard's record of removed keys' versions.
const goneMax = 64

// removed records that key's entry left m (for absentVer).
func (s *shard) removed(key string) {
	if len(s.gone) >= goneMax {
		clear(s.gone)
		s.goneBase = s.nextVer()
	}
	if s.gone == nil {
		s.gone = make(map[string]uint64)
	}
	s.gone[strings.Clone(key)] = s.nextVer() // (key may point into the removed entry)
}

// absentVer is the version of a key with no entry.
func (s *shard) absentVer(key string) uint64 {
	if v, ok := s.gone[key]; ok {
		return v
	}
	return s.goneBase
}

// nextVer returns a version for an entry of s that changed: higher than
// any s handed out before, so WATCH (Tx.Version) tells a key that changed,
// or was removed and made again, from one that did not (the shard's lock
// held).
func (s *shard) nextVer() uint64 {
	s.vers++
	return s.vers
}

// New returns an empty keyspace.
func New(cfg Config, store Store) *Keyspace {
	if cfg.DBs <= 0 {
		cfg.DBs = 16
	}
	var wall *wallClock
	if cfg.Now == nil {
		cfg.Now = time.Now
		wall = &wallClock{period: wallClockPeriod}
	}
	if cfg.Stable == nil {
		cfg.Stable = func() bool { return true }
	}
	if cfg.ConflictLog <= 0 {
		cfg.ConflictLog = 1000
	}
	ks := &Keyspace{cfg: cfg, store: store, clock: crdt.NewClock(cfg.Region), wall: wall}
	for i := 0; i < cfg.DBs; i++ {
		d := &db{}
		for j := range d.shards {
			d.shards[j].ks = ks
			d.shards[j].m = newIndex(0)
			d.shards[j].exp = make(map[string]int64)
			d.shards[j].withExp = &d.withExp
			d.shards[j].dbKeys = &d.keys
		}
		ks.dbs = append(ks.dbs, d)
	}
	return ks
}

// Region returns this keyspace's region.
func (ks *Keyspace) Region() string { return ks.cfg.Region }

// DBs returns the number of databases.
func (ks *Keyspace) DBs() int { return len(ks.dbs) }

// NowMs returns the wall clock in unix milliseconds.
func (ks *Keyspace) NowMs() int64 {
	if ks.wall != nil {
		return ks.wall.nowMs()
	}
	return ks.cfg.Now().UnixMilli()
}

// NowMsAt is NowMs at a monotonic reading the caller took (Monotonic)
// instead of another clock read; with Config.Now set, it is NowMs.
func (ks *Keyspace) NowMsAt(m time.Duration) int64 {
	if ks.wall != nil {
		return ks.wall.nowMsAt(m)
	}
	return ks.cfg.Now().UnixMilli()
}

// hashKey (FNV-1a) places keys in shards and anti-entropy buckets, and so
// in the pages checkpoints store (a page holds every key of its bucket) and
// their members in element pages (elemPageOf): it is part of the stored
// format and of what regions compare. Changing it needs a new format (and a
// migration); TestHashesAreStable pins it.
func hashKey[K string | []byte](k K) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(k); i++ {
		h ^= uint64(k[i])
		h *= 1099511628211
	}
	return h
}

func (d *db) shardOf(k string) *shard { return &d.shards[hashKey(k)%shardCount] }

// Key names a key in a database.
type Key struct {
	DB  int
	Key string
}

// ErrBadDB is returned for a database index out of range.
var ErrBadDB = errors.New("ERR DB index is out of range")

// Tx is a critical section over a set of keys: every key it touches must be
// named when it starts (or the whole keyspace is held). Deltas applied in a
// Tx are persisted in one submission when it ends.
type Tx struct {
	ks  *Keyspace
	all bool
	// prefetched: run prefetched all the keys the tx names (Prefetch
	// does nothing more)
	prefetched bool
	// built: the delta whose value Splice or Resolve just built (merge
	// marks its key's entry ownsVal)
	built   *crdt.State
	locked  []*shard // sorted by address; a tx names few keys
	now     int64
	touched []*touch // in first-write order; looked up linearly (few keys),
	index   []*touch // or through index once there are many: open addressing by touchHash, a power of two long
	tbuf    [1]touch
	ebuf    [2]string // tbuf's first member and field
	tslab   []touch   // the touches of a tx naming many keys, in one allocation
	nkeys   int       // how many keys the tx named
	tptrs   [1]*touch
	sbuf    [2]*shard
	sbig    []*shard // the locked shards of a tx naming many keys (reused like tslab)
	// a tx naming many keys (a peer's batch): its keys and each one's
	// hashKey, hashed once as the tx locks their shards; Prefetch and
	// keyHash take a key's from here (keyHash through bcur, the next key
	// in order: the applier merges them in the order it named them)
	bkeys []Key
	bhash []uint64
	bcur  int
	// touchSink keeps what touchEntry read
	touchSink uint64
	deltas    []crdt.KeyDelta
	dbuf      [1]crdt.KeyDelta // deltas of a one-delta tx, without allocating
	// the last key looked up and its entry (a command reads and writes
	// the same key several times: one map lookup instead of four)
	ck    Key
	ce    *entry
	cok   bool
	ch    uint64 // ck's hashKey
	cname string // the index's name for ck (when ce is not nil)
	// borrow: the key being merged points into memory the keyspace must
	// not keep (MergeReceived): find copies it before the index keeps it
	borrow bool
	// the key of a one-key tx, its shard and its hashKey (hashing the key
	// once)
	sk      Key
	ss      *shard
	sh      uint64
	inbound []crdt.KeyDelta
	ibuf    []crdt.KeyDelta // a peer's batch's inbound (or merged), kept by the last Run
	// merged are the deltas MergeReceived merged, logged by received (the
	// messages LogReceived logs) in this tx or a later one
	merged   []crdt.KeyDelta
	received [][]byte
	meta     []Write
	expired  int
	// seen is the newest timestamp of the deltas merged from elsewhere
	// (ApplyRemote, Repair, Restore, See) not yet observed by the clock: a
	// peer's batch takes the clock's lock once, not once per key
	seen crdt.HLC
}

// see notes h, a timestamp a merged delta carries, for the clock (see
// seen).
func (tx *Tx) see(h crdt.HLC) {
	if h.Compare(tx.seen) > 0 {
		tx.seen = h
	}
}

// observeSeen advances the clock past what the tx merged: before the tx
// issues a timestamp of its own and before its locks are let go.
func (tx *Tx) observeSeen() {
	if !tx.seen.IsZero() {
		tx.ks.ObserveHLC(tx.seen)
		tx.seen = crdt.HLC{}
	}
}

// SetMeta persists a metadata value in the same batch as the tx's writes.
func (tx *Tx) SetMeta(name string, val []byte) {
	tx.meta = append(tx.meta, Write{Key: name, Header: val, Meta: true})
}

func (ks *Keyspace) lockShards(shards []*shard, keys []Key, hashes []uint64) []*shard {
	if len(keys) > lockSortMax {
		return ks.lockShardsMany(shards, keys, hashes)
	}
	for _, k := range keys {
		if k.DB < 0 || k.DB >= len(ks.dbs) {
			continue
		}
		shards = append(shards, ks.dbs[k.DB].shardOf(k.Key))
	}
	if len(shards) > 1 {
		slices.SortFunc(shards, func(a, b *shard) int { return cmp.Compare(uintptrOf(a), uintptrOf(b)) })
	}
	out := shards[:0]
	for i, s := range shards {
		if i > 0 && s == shards[i-1] {
			continue
		}
		s.mu.Lock()
		out = append(out, s)
	}
	return out
}

// lockSortMax is the most keys whose shards lockShards sorts; more (a
// peer's batch, a big MSET) are ordered through a bitmap of shards per
// database (sorting a batch's 256 shard pointers was 4% of a replicating
// region's CPU).
const lockSortMax = 16

// multiPrefetch is the most keys a transaction looks up together before
// it runs (Tx.Prefetch); a peer's batch prefetches as it goes.
const multiPrefetch = 64

// lockShardsMany is lockShards for many keys, in the same order (by
// address): a database's shards are one array, so its shards in index
// order are in address order, and databases are taken by address. hashes,
// when not nil, are the keys' hashKeys.
func (ks *Keyspace) lockShardsMany(shards []*shard, keys []Key, hashes []uint64) []*shard {
	type dbShards struct {
		d    *db
		bits [shardCount / 64]uint64
	}
	var buf [2]dbShards
	dbs := buf[:0]
	last := -1 // the index in dbs of the last key's database
	lastDB := -1
	for ki, k := range keys {
		if k.DB < 0 || k.DB >= len(ks.dbs) {
			continue
		}
		if k.DB != lastDB {
			d := ks.dbs[k.DB]
			last = slices.IndexFunc(dbs, func(x dbShards) bool { return x.d == d })
			if last < 0 {
				dbs = append(dbs, dbShards{d: d})
				last = len(dbs) - 1
			}
			lastDB = k.DB
		}
		var h uint64
		if hashes != nil {
			h = hashes[ki]
		} else {
			h = hashKey(k.Key)
		}
		i := h % shardCount
		dbs[last].bits[i/64] |= 1 << (i % 64)
	}
	if len(dbs) > 1 {
		slices.SortFunc(dbs, func(a, b dbShards) int {
			return cmp.Compare(uintptr(unsafe.Pointer(a.d)), uintptr(unsafe.Pointer(b.d)))
		})
	}
	for i := range dbs {
		for w, bits := range dbs[i].bits {
			for ; bits != 0; bits &= bits - 1 {
				s := &dbs[i].d.shards[w*64+bits64.TrailingZeros64(bits)]
				s.mu.Lock()
				shards = append(shards, s)
			}
		}
	}
	return shards
}

// Run executes fn with the shards of keys locked and returns the ticket of
// the persistence of whatever fn wrote (nil when it wrote nothing).
func (ks *Keyspace) Run(keys []Key, fn func(tx *Tx) error) (Ticket, error) {
	return ks.run(ks.NowMs(), keys, fn)
}

// RunAt is Run for a command that read the monotonic clock as it started
// (Monotonic): the transaction's time is that reading's, as Redis takes a
// command's time once, not a clock read of its own.
func (ks *Keyspace) RunAt(start time.Duration, keys []Key, fn func(tx *Tx) error) (Ticket, error) {
	return ks.run(ks.NowMsAt(start), keys, fn)
}

func (ks *Keyspace) run(now int64, keys []Key, fn func(tx *Tx) error) (Ticket, error) {
	ks.world.RLock()
	tx := txPool.Get().(*Tx)
	// a pooled tx is zero but for the buffers the last Run kept (below):
	// not zeroed again here (it is hundreds of bytes, twice per command)
	slab, ptrs, index, sbig, ibuf, bhash := tx.tslab, tx.touched, tx.index, tx.sbig, tx.ibuf, tx.bhash
	tx.ks, tx.now, tx.nkeys = ks, now, len(keys)
	tx.tslab, tx.touched, tx.index, tx.sbig, tx.bhash = nil, nil, nil, nil, nil
	sbuf := tx.sbuf[:0]
	if len(keys) > lockSortMax { // a peer's batch: sized once, not grown per key
		if cap(slab) < len(keys)-1 {
			slab, ptrs, index = make([]touch, 0, len(keys)-1), make([]*touch, 0, len(keys)), nil
		}
		if cap(sbig) < len(keys) {
			sbig = make([]*shard, 0, len(keys))
		}
		if cap(bhash) < len(keys) {
			bhash = make([]uint64, 0, len(keys))
		}
		bhash = bhash[:len(keys)]
		for i, k := range keys {
			bhash[i] = hashKey(k.Key)
		}
		tx.tslab, tx.touched, tx.index, tx.sbig = slab, ptrs, index, sbig
		tx.bkeys, tx.bhash = keys, bhash
		sbuf = sbig[:0]
	}
	var shards []*shard
	if k := keys; len(k) == 1 && k[0].DB >= 0 && k[0].DB < len(ks.dbs) {
		h := hashKey(k[0].Key)
		s := &ks.dbs[k[0].DB].shards[h%shardCount]
		s.mu.Lock()
		shards = append(sbuf, s)
		tx.sk, tx.ss, tx.sh = k[0], s, h
	} else {
		shards = ks.lockShards(sbuf, keys, tx.bhash)
	}
	tx.locked = shards
	marked := len(shards) > markHolder
	if marked {
		for _, s := range shards {
			s.holder = tx
		}
	}
	if n := len(keys); n > 1 && n <= multiPrefetch {
		// a command's keys (MGET, MSET, EXISTS of 20 keys: each lookup's
		// cache misses came one after the other, a quarter of the
		// profile): looked up together first, as a pipeline's are
		for i := 0; i < n; i += MaxPrefetch {
			tx.Prefetch(keys[i:])
		}
		tx.prefetched = true
	}
	err := fn(tx)
	tx.observeSeen()
	t := tx.commit()
	for _, s := range shards {
		if marked {
			s.holder = nil
		}
		s.mu.Unlock()
	}
	ks.world.RUnlock()
	slab, ptrs, index, sbig, bhash = tx.tslab, tx.touched, tx.index, tx.sbig, tx.bhash
	clear(tx.inbound) // (the store copied them)
	clear(tx.merged)
	for _, b := range [][]crdt.KeyDelta{tx.inbound, tx.merged} {
		if cap(b) > cap(ibuf) {
			ibuf = b
		}
	}
	*tx = Tx{} // drop references before reuse
	// but keep a batch's buffers, emptied, for the next
	if cap(slab) > 0 && cap(slab) <= 4096 {
		clear(slab)
		clear(ptrs)
		clear(index)
		clear(sbig[:cap(sbig)])
		tx.tslab, tx.touched, tx.index, tx.sbig, tx.bhash = slab[:0], ptrs[:0], index, sbig[:0], bhash[:0]
	}
	if cap(ibuf) > 1 && cap(ibuf) <= 4096 {
		tx.ibuf = ibuf[:0]
	}
	txPool.Put(tx)
	return t, err
}

// txPool recycles Tx values: a command's tx never outlives its Run.
var txPool = sync.Pool{New: func() any { return new(Tx) }}

// RunAll executes fn holding the whole keyspace (MULTI/EXEC, FLUSHALL):
// the world lock keeps other transactions out, and every shard's lock the
// readers that take only a shard's lock (SCAN, DBSIZE, checkpoints' and
// anti-entropy's reads). Readers called by fn pass its tx instead.
func (ks *Keyspace) RunAll(fn func(tx *Tx) error) (Ticket, error) {
	ks.world.Lock()
	ks.eachShard(func(s *shard) { s.mu.Lock() })
	tx := &Tx{ks: ks, all: true, now: ks.NowMs()}
	err := fn(tx)
	tx.observeSeen()
	t := tx.commit()
	ks.eachShard(func(s *shard) { s.mu.Unlock() })
	ks.world.Unlock()
	return t, err
}

func (ks *Keyspace) eachShard(fn func(s *shard)) {
	for _, d := range ks.dbs {
		for i := range d.shards {
			fn(&d.shards[i])
		}
	}
}

// lockFor locks s for a reader, unless the reader runs inside a RunAll tx
// (in), which holds every shard already.
func (s *shard) lockFor(in *Tx) {
	if in == nil || !in.all {
		s.mu.Lock()
	}
}

func (s *shard) unlockFor(in *Tx) {
	if in == nil || !in.all {
		s.mu.Unlock()
	}
}

// InAll reports whether the tx holds the whole keyspace.
func (tx *Tx) InAll() bool { return tx.all }

// NowMs is the tx's wall clock in unix ms (fixed for the whole tx).
func (tx *Tx) NowMs() int64 { return tx.now }

// Op returns a fresh timestamp for a local operation.
func (tx *Tx) Op() crdt.Op {
	tx.observeSeen()
	tx.ks.clockMu.Lock()
	h := tx.ks.clock.Now(tx.now)
	tx.ks.clockMu.Unlock()
	return crdt.Op{HLC: h}
}

func (tx *Tx) shard(k Key) *shard {
	s := tx.shardOf(k)
	if !tx.all && !tx.holds(s) {
		panic("keyspace: key " + k.Key + " used outside its tx")
	}
	return s
}

// shardH is shard for a key whose hashKey is h.
func (tx *Tx) shardH(k Key, h uint64) *shard {
	s := &tx.ks.dbs[k.DB].shards[h%shardCount]
	if !tx.all && !tx.holds(s) {
		panic("keyspace: key " + k.Key + " used outside its tx")
	}
	return s
}

// shardOf returns k's shard (locked or not).
func (tx *Tx) shardOf(k Key) *shard {
	if tx.ss != nil && k == tx.sk {
		return tx.ss
	}
	return tx.ks.dbs[k.DB].shardOf(k.Key)
}

// markHolder: a tx locking more shards than this marks them as its own
// (shard.holder), so that holds is one comparison instead of a scan of
// every locked shard per key (a peer's batch of 256 keys locks ~200).
const markHolder = 8

func (tx *Tx) holds(s *shard) bool {
	if len(tx.locked) > markHolder {
		return s.holder == tx
	}
	for _, x := range tx.locked {
		if x == s {
			return true
		}
	}
	return false
}

// touchOf returns the record of what the tx changed in k, creating it.
func (tx *Tx) touchOf(k Key) *touch {
	var kh uint64
	p := 0 // k's slot in the index (the free one it ends at)
	if tx.index != nil {
		kh = tx.keyHash(k)
		mask := len(tx.index) - 1
		for p = touchHome(tx.index, kh^touchDB(k.DB)); tx.index[p] != nil; p = (p + 1) & mask {
			if t := tx.index[p]; t.h == kh && t.k == k {
				return t
			}
		}
	} else {
		for _, t := range tx.touched {
			if t.k == k {
				return t
			}
		}
	}
	var t *touch
	switch {
	case len(tx.touched) < len(tx.tbuf):
		t = &tx.tbuf[len(tx.touched)]
		t.k = k
		t.members, t.fields = tx.ebuf[0:0:1], tx.ebuf[1:1:2] // a command's one member or field
	case len(tx.tslab) < cap(tx.tslab):
		tx.tslab = append(tx.tslab, touch{k: k})
		t = &tx.tslab[len(tx.tslab)-1]
	default:
		t = &touch{k: k}
	}
	if tx.index != nil {
		t.h = kh
	} else {
		t.h = tx.keyHash(k)
	}
	if tx.touched == nil {
		tx.touched = tx.tptrs[:0]
	}
	tx.touched = append(tx.touched, t)
	switch {
	case tx.index == nil && len(tx.touched) > 16:
		tx.indexTouches(max(32, tx.nkeys))
	case tx.index != nil && 4*len(tx.touched) > 3*len(tx.index): // (at most 3/4 full)
		tx.indexTouches(len(tx.touched))
	case tx.index != nil:
		tx.index[p] = t
	}
	return t
}

// indexTouches puts the tx's touches in an index with room for twice n.
func (tx *Tx) indexTouches(n int) {
	size := 8
	for size < 2*n {
		size *= 2
	}
	if cap(tx.index) >= size {
		tx.index = tx.index[:size]
		clear(tx.index)
	} else {
		tx.index = make([]*touch, size)
	}
	mask := size - 1
	for _, x := range tx.touched {
		p := touchHome(tx.index, x.h^touchDB(x.k.DB)) // touchHash(x.k)
		for tx.index[p] != nil {
			p = (p + 1) & mask
		}
		tx.index[p] = x
	}
}

// touchHome is where the probe for touchHash h starts in index (Fibonacci
// hashing: the top bits of the product).
func touchHome(index []*touch, h uint64) int {
	return int((h * 0x9e3779b97f4a7c15) >> (64 - bits64.TrailingZeros(uint(len(index)))))
}

// lookup returns the entry of k, expiring it lazily if its deadline passed.
func (tx *Tx) lookup(k Key) *entry {
	e := tx.find(k)
	if e == nil || !e.live {
		return e
	}
	if at := e.st.ExpireAt(); at > 0 && at <= tx.now {
		tx.ks.Stats.ExpiredKeys.Add(1)
		tx.Apply(k, crdt.Delete(e.st))
	}
	return e
}

// find returns k's entry (nil if none) through the tx's one-key cache;
// entries are created only by merge and removed only by commit, which keep
// it right.
func (tx *Tx) find(k Key) *entry {
	if tx.cok && tx.ck == k {
		return tx.ce
	}
	var s *shard
	var h uint64
	if tx.ss != nil && k == tx.sk {
		s, h = tx.ss, tx.sh
	} else {
		h = tx.batchHash(k)
		s = tx.shardH(k, h)
	}
	e, name := s.m.getName(h, k.Key)
	if e == nil && s.cold.n > 0 {
		e, name = s.warm(k.Key, h, tx.borrow)
	}
	if e != nil {
		tx.touchSink ^= touchEntry(e)
	}
	if e != nil && !e.hot {
		e.hot = true
	}
	tx.ck, tx.ce, tx.cok, tx.ch, tx.cname = k, e, true, h, name
	return e
}

// batchHash returns k's hashKey: from the tx's keys' (bhash) when k is
// the next of them in order (or the one after: a key named twice in a row
// was found the second time in find's cache), else hashed.
func (tx *Tx) batchHash(k Key) uint64 {
	for i := tx.bcur; i < len(tx.bkeys) && i <= tx.bcur+1; i++ {
		if tx.bkeys[i] == k {
			tx.bcur = i + 1
			return tx.bhash[i]
		}
	}
	return hashKey(k.Key)
}

// keyHash returns k's hashKey, from the tx's caches when they know it.
func (tx *Tx) keyHash(k Key) uint64 {
	switch {
	case tx.cok && tx.ck == k:
		return tx.ch
	case tx.ss != nil && tx.sk == k:
		return tx.sh
	}
	return tx.batchHash(k)
}

// own returns name, or a copy of it when borrowed and name is key's
// memory (a name the keyspace keeps must not point into memory it only
// borrowed, see merge).
func own(name, key string, borrowed bool) string {
	if borrowed && len(name) > 0 && unsafe.StringData(name) == unsafe.StringData(key) {
		return strings.Clone(name)
	}
	return name
}

// Get returns the live state of k, or nil. The state must not be modified.
func (tx *Tx) Get(k Key) *crdt.State {
	e := tx.lookup(k)
	if e == nil || !e.live {
		return nil
	}
	return e.st
}

// State returns the state of k including tombstones (never nil); for
// building deltas only.
func (tx *Tx) State(k Key) *crdt.State {
	e := tx.lookup(k)
	if e == nil {
		return &crdt.State{}
	}
	return e.st
}

// Type returns the type k shows.
func (tx *Tx) Type(k Key) crdt.Type {
	if st := tx.Get(k); st != nil {
		return st.Type()
	}
	return crdt.TypeNone
}

// Version returns a number that changes whenever k changes (for WATCH).
func (tx *Tx) Version(k Key) uint64 {
	tx.lookup(k)
	v := tx.ks.dbs[k.DB].epoch.Load() << 40
	s := tx.shard(k)
	if e := s.entry(k.Key); e != nil {
		v ^= e.ver
	} else {
		v ^= s.absentVer(k.Key)
	}
	return v
}

// Apply merges a local delta into k and queues it for persistence and
// shipping.
func (tx *Tx) Apply(k Key, d *crdt.State) {
	tx.merge(k, d, false, false, "")
	if tx.deltas == nil {
		tx.deltas = tx.dbuf[:0]
		if tx.nkeys > 4 { // (MSET and the like)
			tx.deltas = make([]crdt.KeyDelta, 0, tx.nkeys)
		}
	}
	tx.deltas = append(tx.deltas, crdt.KeyDelta{DB: k.DB, Key: k.Key, Delta: d})
}

// Reserve sizes the transaction for n more keys it is about to write
// (FLUSHALL's): their touches and deltas are allocated once instead of
// grown key by key (a quarter of a 632k-key FLUSHALL's allocations).
func (tx *Tx) Reserve(n int) {
	tx.nkeys += n
	// a new slab: touches already taken point into the old one
	tx.tslab = make([]touch, 0, n)
	tx.touched = slices.Grow(tx.touched, n)
	if tx.deltas == nil {
		tx.deltas = tx.dbuf[:0]
	}
	tx.deltas = slices.Grow(tx.deltas, n)
}

// Splice writes v over k's string value old from byte at (SETRANGE;
// APPEND at its end) and applies it (crdt.Splice): the log and peers get
// only the part written when it extends the key's own last assignment,
// and an APPEND to a value the key's last Splice or Resolve built writes
// into that value's spare capacity instead of copying it. The caller read
// old from k and checked the type and the size.
func (tx *Tx) Splice(k Key, old []byte, at int, v []byte, keepTTL bool) {
	st, own := tx.stateOwned(k)
	d, x := crdt.Splice(st, tx.Op(), old, at, v, keepTTL, own)
	tx.built = d
	tx.Apply(k, d)
	if x != nil {
		tx.deltas[len(tx.deltas)-1].Ext = x
	}
}

// stateOwned is State, and whether k's entry owns its value (ownsVal),
// with one lookup.
func (tx *Tx) stateOwned(k Key) (*crdt.State, bool) {
	if e := tx.lookup(k); e != nil {
		return e.st, e.ownsVal
	}
	return &crdt.State{}, false
}

// Resolve makes kd, a delta decoded from the log or a peer's message,
// mergeable into k (crdt.ResolveExtend); the caller merges it next. False
// when kd extends an assignment k does not hold: kd must not be merged
// then, and k's state must come from its writer.
func (tx *Tx) Resolve(k Key, kd *crdt.KeyDelta) bool {
	tx.built = nil
	if kd.Ext == nil {
		return true
	}
	st, own := tx.stateOwned(k)
	ok, built := crdt.ResolveExtend(st, kd, own)
	if built {
		tx.built = kd.Delta
	}
	return ok
}

// ApplyRemote merges a delta from region from (peering's apply path) and
// records any conflict its merge resolved. The keyspace may keep k.Key
// (MergeReceived takes keys that point into a message).
func (tx *Tx) ApplyRemote(k Key, d *crdt.State, from string) {
	tx.see(d.MaxHLC())
	tx.merge(k, d, true, false, from)
	tx.inbound = append(tx.batchSlice(tx.inbound), crdt.KeyDelta{DB: k.DB, Key: k.Key, Delta: d})
	tx.ks.Stats.RemoteApplied.Add(1)
}

// MergeReceived is ApplyRemote for a delta of a peer's message that is
// logged as it came (LogReceived, in this transaction or a later one of
// the same message), not encoded again: the store only hands d back
// (crdt.Release) once this transaction is logged. The caller tells the
// clock the newest timestamp of the message's deltas (See) in the
// transaction. k.Key may point into the message (see
// crdt.DecodeMessageReleasable): the keyspace keeps a copy of what it keeps.
func (tx *Tx) MergeReceived(k Key, d *crdt.State, from string) {
	tx.merge(k, d, true, true, from)
	tx.merged = append(tx.batchSlice(tx.merged), crdt.KeyDelta{DB: k.DB, Key: k.Key, Delta: d})
	tx.ks.Stats.RemoteApplied.Add(1)
}

// LogReceived logs msg, a peer's message as it came (a batch or an
// envelope of batches: crdt.DecodeMessage), as one inbound entry with this
// transaction's writes. Recovery replays it whole: its deltas merged by
// MergeReceived in earlier transactions too, so the last of a message's
// transactions logs it (one that crashes before is not acknowledged, and
// the message comes again).
func (tx *Tx) LogReceived(msg []byte) {
	tx.received = append(tx.received, msg)
}

// See tells the clock a timestamp of a delta the transaction merges (see
// MergeReceived): it observes the newest before the transaction issues a
// timestamp of its own and before its locks are let go.
func (tx *Tx) See(h crdt.HLC) { tx.see(h) }

// batchSlice returns s, or for a peer's batch (a tx of many keys) an
// empty slice sized once for all of them rather than grown per key.
func (tx *Tx) batchSlice(s []crdt.KeyDelta) []crdt.KeyDelta {
	if s != nil || tx.nkeys <= 1 {
		return s
	}
	if cap(tx.ibuf) >= tx.nkeys {
		s, tx.ibuf = tx.ibuf[:0], nil
		return s
	}
	return make([]crdt.KeyDelta, 0, tx.nkeys)
}

// borrowed says k.Key points into memory the keyspace must not keep (a
// peer's message): what keeps the key's name (the index, the pending
// digests, deadlines, the dirty set, conflicts) keeps the index's own name
// or a copy.
func (tx *Tx) merge(k Key, d *crdt.State, remote, borrowed bool, from string) {
	tx.borrow = borrowed
	e := tx.find(k)
	tx.borrow = false
	s := tx.shardH(k, tx.ch) // (find just hashed k)
	name := tx.cname
	if e == nil {
		e, name = newEntryFor(k.Key, d)
		name = own(name, k.Key, borrowed)
		e.hot = true
		s.m.put(tx.ch, name, e) // (find just looked k up)
		if len(s.gone) > 0 {
			delete(s.gone, k.Key)
		}
		s.notePeak()
		tx.ks.Stats.WarmKeys.Add(1)
		tx.ce, tx.cname = e, name
	}
	wasTomb := !e.live && !e.st.IsEmpty()
	hadElems := e.st.Set.Len() > 0 || e.st.Hash.Len() > 0
	digests := tx.ks.cfg.Digests
	if digests && d.Scoped {
		e.elems ^= crdt.ListedDigest(e.st, d)
	}
	c := e.st.Merge(d)
	if digests {
		if d.Scoped {
			e.elems ^= crdt.ListedDigest(e.st, d)
		} else {
			e.elems = crdt.ElementsDigest(e.st)
		}
		s.redigest(name, e) // (pending keeps e too: its name may point into it)
	}
	if remote && c != 0 {
		tx.observeSeen() // (a conflict is recorded at the clock's time, past the delta's)
		tx.ks.recordConflicts(Key{DB: k.DB, Key: own(name, k.Key, borrowed)}, c, e.st, from)
	}
	e.ver = s.nextVer()
	live := e.st.Type() != crdt.TypeNone
	if live != e.live {
		if live {
			s.addLive(1)
		} else {
			s.addLive(-1)
		}
		e.live = live
	}
	if at := e.st.ExpireAt(); live && at > 0 {
		// filed under the index's name for the key: the map then finds
		// its key by the string's pointer (a compare of the bytes waited
		// for memory: 17% of SET EX's profile was this map); the name
		// may be in the entry, so packOne files a copy when the entry goes
		s.setExp(name, at)
		e.hasExp = true
	} else if e.hasExp {
		s.delExp(k.Key)
		e.hasExp = false
	}
	if wasTomb {
		tx.ks.Stats.Tombstones.Add(-1)
	}
	if !live && !e.live {
		if tx.ks.cfg.Stable() {
			e.st.Compact()
		} else if !e.st.IsEmpty() {
			tx.ks.Stats.Tombstones.Add(1)
			e.deadEpoch = max(tx.ks.gcEpoch.Load(), 1)
		}
	} else {
		e.deadEpoch = 0
		if !tx.ks.cfg.Stable() && hasDeadFields(e.st, d) {
			e.metaEpoch = max(tx.ks.gcEpoch.Load(), 1)
		}
	}
	e.ownsVal = d == tx.built
	tx.built = nil
	t := tx.touchOf(k)
	t.e = e
	t.borrowed = t.borrowed || borrowed
	t.elems = t.elems || hadElems || e.st.Set.Len() > 0 || e.st.Hash.Len() > 0 || d.Set.Len() > 0 || d.Hash.Len() > 0
	var all bool
	all, t.members, t.fields = d.Touched(t.members, t.fields)
	t.all = t.all || all
}

func (ks *Keyspace) recordConflicts(k Key, c int, st *crdt.State, from string) {
	type kc struct {
		name string
		flag int
	}
	var kinds []kc
	if c&crdt.ConflictLWW != 0 {
		ks.Stats.ConflictsLWW.Add(1)
		kinds = append(kinds, kc{"lww", crdt.ConflictLWW})
	}
	if c&crdt.ConflictType != 0 {
		ks.Stats.ConflictsType.Add(1)
		kinds = append(kinds, kc{"type", crdt.ConflictType})
	}
	if c&crdt.ConflictNonNumeric != 0 {
		ks.Stats.ConflictsNum.Add(1)
		kinds = append(kinds, kc{"non-numeric-base", crdt.ConflictNonNumeric})
	}
	ks.clockMu.Lock()
	h := ks.clock.Last()
	ks.clockMu.Unlock()
	ks.conflictMu.Lock()
	defer ks.conflictMu.Unlock()
	for _, kind := range kinds {
		ks.conflictN++
		ev := Conflict{DB: k.DB, Key: k.Key, Kind: kind.name, HLC: h, From: from}
		if st != nil {
			ev.Winner, ev.Loser = crdt.Describe(st, kind.flag)
		}
		if len(ks.conflicts) < ks.cfg.ConflictLog {
			ks.conflicts = append(ks.conflicts, ev)
		} else {
			ks.conflicts[ks.conflictN%uint64(ks.cfg.ConflictLog)] = ev
		}
	}
}

// commit marks the keys the tx changed dirty (a checkpoint stores them)
// and logs its deltas; the ticket is the log's durability.
func (tx *Tx) commit() Ticket {
	for _, t := range tx.touched {
		k, h := t.k, t.h
		e := t.e
		s := &tx.ks.dbs[k.DB].shards[h%shardCount]
		gone := false
		if !e.live && (tx.ks.cfg.Stable() || t.forget) {
			if s.m.get(h, k.Key) == e {
				s.m.del(h, k.Key)
				s.removed(k.Key)
				tx.ks.Stats.WarmKeys.Add(-1)
				s.forget(k.Key, e)
			}
			gone = true
		}
		s.markDirty(k.Key, t.borrowed, e, t, gone, e.st.Set.Len() > 0 || e.st.Hash.Len() > 0)
	}
	if len(tx.deltas) == 0 && len(tx.inbound) == 0 && len(tx.meta) == 0 && len(tx.merged) == 0 && len(tx.received) == 0 || tx.ks.store == nil {
		return nil
	}
	return tx.ks.store.Submit(tx.meta, tx.deltas, tx.inbound, Received{Messages: tx.received, Merged: tx.merged})
}

// Load installs a state read from disk at startup.
func (ks *Keyspace) Load(k Key, st *crdt.State) {
	if k.DB < 0 || k.DB >= len(ks.dbs) {
		return
	}
	h := hashKey(k.Key)
	s := &ks.dbs[k.DB].shards[h%shardCount]
	s.mu.Lock()
	defer s.mu.Unlock()
	e := newEntry()
	e.st.Assign(st)
	e.live, e.ver = e.st.Type() != crdt.TypeNone, s.nextVer()
	if old := s.m.get(h, k.Key); old != nil {
		if old.live {
			s.addLive(-1)
		}
		if old.hasExp { // set again below if st has a deadline
			s.delExp(k.Key)
		}
		if old.dirty {
			s.flagged--
		}
		s.forget(k.Key, old)
		// assigning would keep the map's old key, which may point into
		// the old entry (newStringEntry) and keep it allocated
		s.m.del(h, k.Key)
	} else {
		ks.Stats.WarmKeys.Add(1)
		if slot, off := s.cold.lookup(k.Key); slot >= 0 {
			r, _, end := s.cold.parse(off)
			s.addLive(-1)
			if r.dirty {
				s.flagged--
			}
			if r.hasExp {
				s.delExp(k.Key)
			}
			s.bkt[subBucket(k.Key)] ^= r.dig
			ks.Stats.ColdKeys.Add(-1)
			ks.Stats.ColdBytes.Add(-int64(len(r.packed)))
			s.cold.remove(slot, off, end)
		}
	}
	if ks.cfg.Digests {
		e.elems = crdt.ElementsDigest(st)
		s.redigest(k.Key, e)
	}
	s.m.put(h, k.Key, e)
	s.notePeak()
	if e.live {
		s.addLive(1)
		if at := st.ExpireAt(); at > 0 {
			s.setExp(k.Key, at)
			e.hasExp = true
		}
	}
	ks.clockMu.Lock()
	for _, b := range hlcsOf(st) {
		ks.clock.Observe(b)
	}
	ks.clockMu.Unlock()
}

// ObserveHLC advances the clock past a timestamp seen elsewhere.
func (ks *Keyspace) ObserveHLC(h crdt.HLC) {
	ks.clockMu.Lock()
	ks.clock.Observe(h)
	ks.clockMu.Unlock()
}

func hlcsOf(st *crdt.State) []crdt.HLC {
	out := []crdt.HLC{st.StrT, st.SetT(), st.HashT()}
	if st.Str != nil {
		for _, b := range st.Str.Base {
			out = append(out, b.HLC)
		}
	}
	return out
}

// Size returns the number of live keys and keys with a deadline in db (a
// key past its deadline counts until deleted, as in Redis), from the db's
// counters: exact inside RunAll, else as of some moment of the call.
func (ks *Keyspace) Size(dbi int) (keys, expires int) {
	d := ks.dbs[dbi]
	return int(d.keys.Load()), int(d.withExp.Load())
}

// Keys returns every live key of db (in shard order) for FLUSHDB and SWAPDB;
// call it inside RunAll.
func (tx *Tx) Keys(dbi int) []string {
	d := tx.ks.dbs[dbi]
	var out []string
	for i := range d.shards {
		s := &d.shards[i]
		for k, e := range s.m.all() {
			if e.live {
				out = append(out, k)
			}
		}
		s.cold.each(func(_ int, k []byte, _ coldRec) bool {
			out = append(out, string(k))
			return true
		})
	}
	return out
}

// BumpEpoch invalidates WATCHes on every key of db.
func (tx *Tx) BumpEpoch(dbi int) { tx.ks.dbs[dbi].epoch.Add(1) }

// addLive counts n more live keys in the shard and its db (under s.mu).
func (s *shard) addLive(n int) {
	s.live += n
	s.dbKeys.Add(int64(n))
}

// setExp records key's deadline (under s.mu).
func (s *shard) setExp(key string, at int64) {
	n := len(s.exp)
	s.exp[key] = at
	if len(s.exp) > n {
		s.withExp.Add(1)
	}
}

// delExp forgets key's deadline (under s.mu).
func (s *shard) delExp(key string) {
	n := len(s.exp)
	delete(s.exp, key)
	if len(s.exp) < n {
		s.withExp.Add(-1)
	}
}

// expireSample is how many keys with a deadline a pass of ExpireCycle
// looks at in each shard (Redis's ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP).
const expireSample = 20

// ExpireCycle deletes keys whose deadline passed, as Redis's active expiry
// does: a pass looks at up to expireSample keys with a deadline in every
// shard of every db that has some (from a random place: a map's range) and
// deletes those past it; passes repeat while more than a tenth of the keys
// looked at had expired — so many keys expiring together are reclaimed at
// the rate the spend allows, not 20 per shard per cycle — until budget
// keys were deleted or spend is used up (0: one pass). It returns the last
// deletion's ticket and how many it deleted.
func (ks *Keyspace) ExpireCycle(budget int, spend time.Duration) (Ticket, int) {
	start := Monotonic()
	var last Ticket
	n := 0
	for {
		now := ks.NowMs()
		looked, expired := 0, 0
		for dbi, d := range ks.dbs {
			if d.withExp.Load() == 0 {
				continue // an idle server's cycle locks nothing
			}
			for i := range d.shards {
				s := &d.shards[i]
				s.mu.Lock()
				var due []string
				checked := 0
				for k, at := range s.exp {
					if checked++; checked > expireSample {
						break
					}
					if at <= now {
						due = append(due, k)
					}
				}
				s.mu.Unlock()
				looked += min(checked, expireSample)
				if len(due) == 0 {
					continue
				}
				expired += len(due)
				keys := make([]Key, len(due))
				for j, k := range due {
					keys[j] = Key{DB: dbi, Key: k}
				}
				t, _ := ks.Run(keys, func(tx *Tx) error {
					for _, k := range keys {
						tx.Get(k) // lazy expiry does the work
					}
					return nil
				})
				if t != nil {
					last = t
				}
				n += len(due)
				if n >= budget || (spend > 0 && i%16 == 15 && Monotonic()-start >= spend) {
					return last, n
				}
			}
		}
		if spend <= 0 || expired*10 <= looked || Monotonic()-start >= spend {
			return last, n
		}
	}
}

// Conflicts returns up to n of the most recent conflicts, newest first, and
// the total count.
func (ks *Keyspace) Conflicts(n int) ([]Conflict, uint64) {
	ks.conflictMu.Lock()
	defer ks.conflictMu.Unlock()
	total := len(ks.conflicts)
	var out []Conflict
	for i := 0; i < total && len(out) < n; i++ {
		idx := (int(ks.conflictN%uint64(ks.cfg.ConflictLog)) - i + total) % total
		if total < ks.cfg.ConflictLog {
			idx = total - 1 - i
		}
		out = append(out, ks.conflicts[idx])
	}
	return out, ks.conflictN
}

// Clock returns the latest HLC issued or observed.
func (ks *Keyspace) Clock() crdt.HLC {
	ks.clockMu.Lock()
	defer ks.clockMu.Unlock()
	return ks.clock.Last()
}

// Repair merges a state or delta pulled from a peer or rebuilt locally:
// logged (inbound), not shipped again.
func (tx *Tx) Repair(k Key, d *crdt.State) {
	tx.see(d.MaxHLC())
	tx.merge(k, d, false, false, "")
	tx.inbound = append(tx.inbound, crdt.KeyDelta{DB: k.DB, Key: k.Key, Delta: d})
}

// Restore merges a delta replayed from the log at startup: already logged,
// so neither logged nor shipped again (the next checkpoint stores the key).
func (tx *Tx) Restore(k Key, d *crdt.State) {
	tx.see(d.MaxHLC())
	tx.merge(k, d, false, false, "")
}

// elemRef names one element of a key.
type elemRef struct {
	kind byte
	name string
}

// encodeElems encodes the current records of the named elements (nil Data:
// the element is gone).
func encodeElems(st *crdt.State, refs []elemRef) []Elem {
	out := make([]Elem, len(refs))
	var buf []byte // the records, one after another (a slice of an outgrown array stays valid)
	for i, r := range refs {
		out[i] = Elem{Kind: r.kind, Name: r.name}
		if st == nil {
			continue
		}
		if buf == nil {
			buf = make([]byte, 0, 24*len(refs))
		}
		start := len(buf)
		if r.kind == crdt.ElemMember {
			if dots, ok := st.Set.Lookup(r.name); ok {
				buf = crdt.AppendMember(buf, dots)
				out[i].Data = buf[start:len(buf):len(buf)]
			}
		} else if reg, ok := st.Hash.Lookup(r.name); ok {
			buf = crdt.AppendField(buf, reg)
			out[i].Data = buf[start:len(buf):len(buf)]
		}
	}
	return out
}

// Roots returns each database's anti-entropy root: a hash of its buckets.
func (ks *Keyspace) Roots() []uint64 {
	out := make([]uint64, len(ks.dbs))
	for i := range ks.dbs {
		b := ks.Buckets(i)
		h := uint64(14695981039346656037)
		for _, x := range b {
			h ^= x
			h *= 1099511628211
		}
		out[i] = h
	}
	return out
}

// Buckets returns the bucket digests of database dbi.
func (ks *Keyspace) Buckets(dbi int) []uint64 {
	out := make([]uint64, NumBuckets)
	d := ks.dbs[dbi]
	// from the last shard down: a transaction locks its shards in
	// ascending order, so one that waits here for a shard's settle waits
	// once, where in the same order it followed the walk shard by shard (a
	// peer's batch of 256 keys waited for every shard's settle in turn:
	// 0.2–0.5 s once the digests of 400k keys were stale)
	for i := len(d.shards) - 1; i >= 0; i-- {
		s := &d.shards[i]
		s.mu.Lock()
		s.settle()
		copy(out[i*subBuckets:], s.bkt[:])
		s.mu.Unlock()
	}
	return out
}

// KeysIn returns every key (tombstones included) of the given buckets.
func (ks *Keyspace) KeysIn(dbi int, buckets []int) []string {
	var out []string
	for _, b := range buckets {
		ks.DigestsIn(dbi, b, func(k string, _ uint64) { out = append(out, k) })
	}
	return out
}

// DigestsIn calls fn with every key (tombstones included) of bucket b and
// its key digest (see Digest), under one hold of the bucket's shard lock:
// fn must not call the keyspace.
func (ks *Keyspace) DigestsIn(dbi, b int, fn func(key string, dig uint64)) {
	if b < 0 || b >= NumBuckets {
		return
	}
	ks.DigestsInShard(dbi, b/BucketsPerShard, 1<<(b%BucketsPerShard), fn)
}

// DigestsInShard is DigestsIn for the buckets of shard (0..NumBuckets /
// BucketsPerShard-1) whose bits are set in mask (bit i: bucket
// shard*BucketsPerShard+i), in one walk of the shard: anti-entropy under
// steady writes finds nearly every bucket differing, and a walk per bucket
// visited each key BucketsPerShard times.
func (ks *Keyspace) DigestsInShard(dbi, shard int, mask uint32, fn func(key string, dig uint64)) {
	if shard < 0 || shard >= shardCount || mask == 0 {
		return
	}
	all := mask&(1<<subBuckets-1) == 1<<subBuckets-1
	s := &ks.dbs[dbi].shards[shard]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle()
	for k, e := range s.m.all() {
		if all || mask&(1<<subBucket(k)) != 0 {
			fn(k, e.dig)
		}
	}
	s.cold.each(func(_ int, kb []byte, r coldRec) bool {
		// the name is copied only when fn gets it (kb points into the arena)
		if all || mask&(1<<subBucket(unsafe.String(unsafe.SliceData(kb), len(kb)))) != 0 {
			fn(string(kb), r.dig)
		}
		return true
	})
}

// Digest returns k's key digest (0 when absent).
func (ks *Keyspace) Digest(k Key) uint64 {
	s := ks.dbs[k.DB].shardOf(k.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle()
	if e := s.entry(k.Key); e != nil {
		return e.dig
	}
	if _, off := s.cold.lookup(k.Key); off >= 0 {
		r, _, _ := s.cold.parse(off)
		return r.dig
	}
	return 0
}

// NewGCEpoch closes the current tombstone GC epoch and returns its number:
// every tombstone that last changed in it or before is tagged with it or a
// lower number.
func (ks *Keyspace) NewGCEpoch() uint32 {
	ks.gcEpoch.CompareAndSwap(0, 1)
	return ks.gcEpoch.Add(1) - 1
}

// hasDeadFields reports whether merging d left removed hash fields whose
// metadata (counter floors) lingers in s.
func hasDeadFields(s *crdt.State, d *crdt.State) bool {
	if s.Hash.Len() == 0 {
		return false
	}
	if d.Scoped {
		dead := false
		d.EachField(func(f string, _ *crdt.Reg) {
			if r := s.Hash.Get(f); r != nil && !r.Exists() {
				dead = true
			}
		})
		return dead
	}
	for _, r := range s.Hash.All() {
		if !r.Exists() {
			return true
		}
	}
	return false
}

// StableTombstones lists tombstones (and live keys with dead field
// metadata) that last changed in epoch upTo or before.
func (ks *Keyspace) StableTombstones(upTo uint32) []Key {
	var out []Key
	for dbi, d := range ks.dbs {
		for i := range d.shards {
			s := &d.shards[i]
			s.mu.Lock()
			for k, e := range s.m.all() {
				if (!e.live && e.deadEpoch > 0 && e.deadEpoch <= upTo) || (e.live && e.metaEpoch > 0 && e.metaEpoch <= upTo) {
					out = append(out, Key{DB: dbi, Key: k})
				}
			}
			s.mu.Unlock()
		}
	}
	return out
}

// Forget drops k's tombstone if it is still one that last changed in epoch
// upTo or before (tombstone GC once every region has seen it).
func (tx *Tx) Forget(k Key, upTo uint32) bool {
	s := tx.shard(k)
	e := tx.find(k)
	if e != nil && e.live && e.metaEpoch > 0 && e.metaEpoch <= upTo {
		// a live key: drop only its removed fields' lingering metadata
		for f, r := range e.st.Hash.All() {
			if !r.Exists() {
				e.st.Hash.Delete(f)
			}
		}
		e.metaEpoch = 0
		e.ver = s.nextVer()
		if tx.ks.cfg.Digests {
			e.elems = crdt.ElementsDigest(e.st)
			s.redigest(k.Key, e)
		}
		t := tx.touchOf(k)
		t.e, t.all, t.elems = e, true, true
		tx.ks.Stats.FieldsGCd.Add(1)
		return true
	}
	if e == nil || e.live || e.deadEpoch == 0 || e.deadEpoch > upTo {
		return false
	}
	t := tx.touchOf(k)
	t.e, t.forget = e, true
	tx.ks.Stats.Tombstones.Add(-1)
	tx.ks.Stats.TombstonesGCd.Add(1)
	return true
}
