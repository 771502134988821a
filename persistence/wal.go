package persistence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/rs/zerolog"
)

// The log is a directory of append-only segment files, like Redis's AOF:
// each group commit is one frame written with one write(2) call to the
// current segment (and, under fsync=always, one fsync). A frame is
//
//	[u32 body length][u32 CRC-32C of the body][body]
//
// and its body a sequence of items: an outbox entry ('o', u64 sequence,
// u32 length, entry), an inbound entry ('i', same) or a metadata value
// ('m', uvarint key length, key, uvarint value length, value). A frame is
// applied whole or not at all: a torn frame at the end of the last segment
// (a crash in the middle of a write) is cut off at open; a damaged frame
// anywhere else refuses the open. Every segment starts with a frame holding
// every metadata value, so deleting old segments (once a checkpoint covers
// their entries and peers have the outbox ones) never loses metadata.
// Entries are read back by sequence through an in-memory index (outbox) or
// by scanning (recovery): the files are read with pread, never mapped, so
// their pages count in the kernel's page cache and not in the process's RSS.

const (
	walMagic    = "CONCLOG1"
	frameHeader = 8
	itemOut     = 'o'
	itemIn      = 'i'
	itemMeta    = 'm'
	segSuffix   = ".log"
)

type segment struct {
	n       uint64
	f       *os.File
	size    int64
	entries int    // outbox and inbound entries in it
	maxOut  uint64 // largest outbox sequence in it
	maxIn   uint64
}

// loc is where an outbox entry is stored.
type loc struct {
	seq uint64
	seg *segment
	off int64
	n   int
}

type wal struct {
	dir      string
	segBytes int64
	syncs    bool // fsync segments at rotation (fsync != no)
	log      zerolog.Logger

	mu     sync.Mutex
	segs   []*segment // oldest first; the last is written
	outIdx []loc      // outbox entries not yet dropped, by sequence
	metas  map[string][]byte
	broken error // a failed write that could not be undone
	// the largest outbox and inbound sequences ever written (each new
	// segment records them, with the rest of the metadata)
	lastOut, lastIn uint64
	syncFile        func(*os.File) error // (*os.File).Sync; tests fail it
	buf             []byte
}

// frame builds one frame's body; the wal writes it.
type frame struct {
	b    []byte
	outs []loc // offsets relative to the body
	ins  []uint64
	meta map[string][]byte
}

func (fr *frame) reset() {
	fr.b = append(fr.b[:0], make([]byte, frameHeader)...)
	fr.outs, fr.ins = fr.outs[:0], fr.ins[:0]
	clear(fr.meta)
}

// entry appends an entry item whose bytes enc appends, returning nothing:
// the item's length is filled in after.
func (fr *frame) entry(kind byte, seq uint64, enc func([]byte) []byte) {
	fr.b = append(fr.b, kind)
	fr.b = binary.BigEndian.AppendUint64(fr.b, seq)
	at := len(fr.b)
	fr.b = append(fr.b, 0, 0, 0, 0)
	fr.b = enc(fr.b)
	n := len(fr.b) - at - 4
	binary.BigEndian.PutUint32(fr.b[at:], uint32(n))
	if kind == itemOut {
		fr.outs = append(fr.outs, loc{seq: seq, off: int64(at + 4), n: n})
	} else {
		fr.ins = append(fr.ins, seq)
	}
}

func (fr *frame) setMeta(key string, val []byte) {
	fr.b = append(fr.b, itemMeta)
	fr.b = binary.AppendUvarint(fr.b, uint64(len(key)))
	fr.b = append(fr.b, key...)
	fr.b = binary.AppendUvarint(fr.b, uint64(len(val)))
	fr.b = append(fr.b, val...)
	if fr.meta == nil {
		fr.meta = make(map[string][]byte)
	}
	fr.meta[key] = val
}

func (fr *frame) empty() bool { return len(fr.b) == frameHeader }

// seal fills in the frame header.
func (fr *frame) seal() []byte {
	body := fr.b[frameHeader:]
	binary.LittleEndian.PutUint32(fr.b, uint32(len(body)))
	binary.LittleEndian.PutUint32(fr.b[4:], crc32.Checksum(body, castagnoli))
	return fr.b
}

// item is one decoded item of a frame.
type item struct {
	kind byte
	seq  uint64
	key  string // meta
	val  []byte // entry or meta value (aliases the frame)
	off  int    // offset of val in the body
}

func decodeFrame(body []byte, fn func(item) error) error {
	for p := 0; p < len(body); {
		it := item{kind: body[p]}
		p++
		switch it.kind {
		case itemOut, itemIn:
			if len(body)-p < 12 {
				return errors.New("short entry")
			}
			it.seq = binary.BigEndian.Uint64(body[p:])
			n := int(binary.BigEndian.Uint32(body[p+8:]))
			p += 12
			if n > len(body)-p {
				return errors.New("entry past the frame")
			}
			it.val, it.off = body[p:p+n], p
			p += n
		case itemMeta:
			k, w := binary.Uvarint(body[p:])
			if w <= 0 || k > uint64(len(body)-p-w) {
				return errors.New("bad metadata key")
			}
			p += w
			it.key = string(body[p : p+int(k)])
			p += int(k)
			v, w := binary.Uvarint(body[p:])
			if w <= 0 || v > uint64(len(body)-p-w) {
				return errors.New("bad metadata value")
			}
			p += w
			it.val = body[p : p+int(v)]
			p += int(v)
		default:
			return fmt.Errorf("unknown item %q", it.kind)
		}
		if err := fn(it); err != nil {
			return err
		}
	}
	return nil
}

// scanSegment calls fn for every item of every whole frame of a segment
// file (off: the item's value offset in the file) and returns where the
// last whole frame ends and why the scan stopped early (nil at a clean end).
// An error of fn stops the scan and is returned as err, never as torn: a
// frame the caller could not use is not a torn write to cut off (replay
// skipped the rest of a segment after an entry it failed to apply).
func scanSegment(path string, fn func(it item, fileOff int64) error) (end int64, torn error, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	if len(b) < len(walMagic) || string(b[:len(walMagic)]) != walMagic {
		return 0, errors.New("no segment header"), nil
	}
	p := len(walMagic)
	for p < len(b) {
		if len(b)-p < frameHeader {
			return int64(p), errors.New("short frame header"), nil
		}
		n := int(binary.LittleEndian.Uint32(b[p:]))
		if n > len(b)-p-frameHeader {
			return int64(p), fmt.Errorf("frame of %d bytes past the end of the file", n), nil
		}
		body := b[p+frameHeader : p+frameHeader+n]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[p+4:]) {
			return int64(p), errors.New("frame checksum mismatch"), nil
		}
		start := int64(p + frameHeader)
		var fnErr error
		if err := decodeFrame(body, func(it item) error {
			fnErr = fn(it, start+int64(it.off))
			return fnErr
		}); err != nil {
			if fnErr != nil {
				return int64(p), nil, fnErr
			}
			return int64(p), fmt.Errorf("frame: %w", err), nil
		}
		p += frameHeader + n
	}
	return int64(p), nil, nil
}

// frameAfter looks for a whole frame (not empty: a run of zeros reads as
// empty frames) anywhere after offset from of a segment file: a crash tears
// only the last write, so one there means the damage at from is not a torn
// tail. The search checksums at most frameSearchBytes in all.
func frameAfter(path string, from int64) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	budget := frameSearchBytes
	for p := int(from) + 1; p+frameHeader < len(b) && budget > 0; p++ {
		n := int(binary.LittleEndian.Uint32(b[p:]))
		if n == 0 || n > len(b)-p-frameHeader {
			continue
		}
		body := b[p+frameHeader : p+frameHeader+n]
		budget -= n
		if crc32.Checksum(body, castagnoli) == binary.LittleEndian.Uint32(b[p+4:]) && decodeFrame(body, func(item) error { return nil }) == nil {
			return int64(p), true
		}
	}
	return 0, false
}

// frameSearchBytes bounds frameAfter's checksumming (~30 ms).
const frameSearchBytes = 256 << 20

func segPath(dir string, n uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x%s", n, segSuffix))
}

// openWAL opens the log in dir, cutting off a torn frame at the end of the
// last segment, and indexes it.
func openWAL(dir string, segBytes int64, syncs bool, log zerolog.Logger) (*wal, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	w := &wal{dir: dir, segBytes: segBytes, syncs: syncs, log: log, metas: make(map[string][]byte), syncFile: syncNamed}
	var ns []uint64
	for _, e := range names {
		var n uint64
		if name := e.Name(); strings.HasSuffix(name, segSuffix) {
			if _, err := fmt.Sscanf(name, "%016x"+segSuffix, &n); err == nil {
				ns = append(ns, n)
			}
		}
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	for i, n := range ns {
		seg := &segment{n: n}
		path := segPath(dir, n)
		end, torn, err := scanSegment(path, func(it item, off int64) error {
			switch it.kind {
			case itemMeta:
				w.metas[it.key] = append([]byte(nil), it.val...)
			case itemOut:
				seg.entries++
				seg.maxOut = max(seg.maxOut, it.seq)
				w.lastOut = max(w.lastOut, it.seq)
				w.outIdx = append(w.outIdx, loc{seq: it.seq, seg: seg, off: off, n: len(it.val)})
			case itemIn:
				seg.entries++
				seg.maxIn = max(seg.maxIn, it.seq)
				w.lastIn = max(w.lastIn, it.seq)
			}
			return nil
		})
		if err != nil {
			w.close()
			return nil, err
		}
		if torn != nil {
			if i < len(ns)-1 {
				w.close()
				return nil, fmt.Errorf("log segment %s is damaged at offset %d (%v) and later segments follow it: move the damaged file away to start without it", path, end, torn)
			}
			if at, ok := frameAfter(path, end); ok {
				w.close()
				return nil, fmt.Errorf("log segment %s is damaged at offset %d (%v), and a whole frame follows it at offset %d: not a write torn by a crash but damage, with acknowledged writes after it. To start without them, cut the file at the damage (truncate -s %d %s) or move it away; peers and anti-entropy repair what they held", path, end, torn, at, end, path)
			}
			log.Warn().Str("segment", path).Int64("offset", end).Str("reason", torn.Error()).Msg("log: cutting off a torn write at the end of the log")
			if end < int64(len(walMagic)) {
				// not even a header: start the file over
				if err := os.WriteFile(path, []byte(walMagic), 0o644); err != nil {
					w.close()
					return nil, err
				}
				end = int64(len(walMagic))
			} else if err := os.Truncate(path, end); err != nil {
				w.close()
				return nil, err
			}
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0o644)
		if err != nil {
			w.close()
			return nil, err
		}
		if _, err := f.Seek(end, 0); err != nil {
			f.Close()
			w.close()
			return nil, err
		}
		seg.f, seg.size = f, end
		w.segs = append(w.segs, seg)
	}
	sort.Slice(w.outIdx, func(i, j int) bool { return w.outIdx[i].seq < w.outIdx[j].seq })
	if len(w.segs) == 0 {
		w.mu.Lock()
		err := w.rotate(0)
		w.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	return w, nil
}

func (w *wal) cur() *segment { return w.segs[len(w.segs)-1] }

// rotate starts segment n (the next one) with a frame of every metadata
// value; the previous segment is fsynced first when syncs is set.
func (w *wal) rotate(n uint64) error {
	if len(w.segs) > 0 {
		if w.syncs {
			if err := w.cur().f.Sync(); err != nil {
				return err
			}
		}
		n = w.cur().n + 1
	}
	if w.lastOut > readUint(w.metas[string(metaOutSeq)]) {
		w.metas[string(metaOutSeq)] = u64(w.lastOut)
	}
	if w.lastIn > readUint(w.metas[string(metaInSeq)]) {
		w.metas[string(metaInSeq)] = u64(w.lastIn)
	}
	var fr frame
	fr.reset()
	keys := make([]string, 0, len(w.metas))
	for k := range w.metas {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fr.setMeta(k, w.metas[k])
	}
	b := append([]byte(walMagic), fr.seal()...)
	path := segPath(w.dir, n)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err == nil && w.syncs {
		err = f.Sync()
		if err == nil {
			err = syncDir(w.dir)
		}
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	w.segs = append(w.segs, &segment{n: n, f: f, size: int64(len(b))})
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// write appends a built frame to the current segment (rotating first when
// it is full) and, when sync is set, fsyncs it. Called with w.mu held.
func (w *wal) write(fr *frame, sync bool) error {
	if w.broken != nil {
		return w.broken
	}
	if fr.empty() {
		return nil
	}
	if w.cur().size >= w.segBytes && w.cur().entries > 0 {
		if err := w.rotate(0); err != nil {
			return err
		}
	}
	seg := w.cur()
	b := fr.seal()
	if _, err := seg.f.Write(b); err != nil {
		// undo a partial write, so that later frames do not follow garbage
		if terr := seg.f.Truncate(seg.size); terr != nil {
			w.broken = fmt.Errorf("log write failed (%v) and could not be undone: %w", err, terr)
		} else if _, serr := seg.f.Seek(seg.size, 0); serr != nil {
			w.broken = fmt.Errorf("log write failed (%v) and could not be undone: %w", err, serr)
		}
		return err
	}
	for _, l := range fr.outs {
		l.seg, l.off = seg, seg.size+l.off
		w.outIdx = append(w.outIdx, l)
		seg.maxOut = max(seg.maxOut, l.seq)
		w.lastOut = max(w.lastOut, l.seq)
	}
	for _, q := range fr.ins {
		seg.maxIn = max(seg.maxIn, q)
		w.lastIn = max(w.lastIn, q)
	}
	seg.entries += len(fr.outs) + len(fr.ins)
	for k, v := range fr.meta {
		w.metas[k] = append([]byte(nil), v...)
	}
	seg.size += int64(len(b))
	if sync {
		return w.synced(w.syncFile(seg.f))
	}
	return nil
}

// syncNamed fsyncs a segment and fails when the file has no name any more
// (deleted with its directory while open): an fsync of it succeeds, but
// nothing written to it survives a restart, so the log is as broken as
// after a failed fsync.
func syncNamed(f *os.File) error {
	if err := f.Sync(); err != nil {
		return err
	}
	if unlinked(f) {
		return fmt.Errorf("the log segment %s was deleted while open (its directory removed?)", f.Name())
	}
	return nil
}

// synced reports how a Sync of a segment went, with w.mu held. A failure
// is sticky (every later write fails until a restart reads the log back):
// after a failed fsync the kernel may have dropped the dirty pages, so what
// the log holds is no longer known; Redis likewise stops accepting writes
// when its AOF cannot be synced.
func (w *wal) synced(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return nil // rotated meanwhile: rotation synced it
	}
	if err != nil && w.broken == nil {
		w.broken = fmt.Errorf("fsync of the log failed, writes refused until a restart: %w", err)
	}
	return err
}

// setMetas writes metadata values in one frame.
func (w *wal) setMetas(sync bool, kv ...[]byte) error {
	var fr frame
	fr.reset()
	for i := 0; i+1 < len(kv); i += 2 {
		fr.setMeta(string(kv[i]), kv[i+1])
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.write(&fr, sync)
}

func (w *wal) meta(key string) []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if v, ok := w.metas[key]; ok {
		return append([]byte(nil), v...)
	}
	return nil
}

// sync fsyncs the segment being written (outside w.mu: appends go on).
func (w *wal) sync() error {
	w.mu.Lock()
	if len(w.segs) == 0 { // closed
		w.mu.Unlock()
		return nil
	}
	f := w.cur().f
	w.mu.Unlock()
	err := w.syncFile(f)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.synced(err)
}

// drop deletes the segments (but the last) whose outbox entries are all
// <= out and inbound entries <= in, and forgets where the outbox entries
// <= pub are (published: never read again but by recovery, which scans);
// when rotate is set and the last segment holds entries, a new one is
// started first so that it can go too.
func (w *wal) drop(out, in, pub uint64, rotate bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if rotate && w.cur().entries > 0 && w.broken == nil {
		if err := w.rotate(0); err != nil {
			return err
		}
	}
	if i := sort.Search(len(w.outIdx), func(i int) bool { return w.outIdx[i].seq > pub }); i > 0 {
		w.outIdx = append(w.outIdx[:0], w.outIdx[i:]...)
	}
	var errs []error
	for len(w.segs) > 1 && w.segs[0].maxOut <= out && w.segs[0].maxIn <= in {
		seg := w.segs[0]
		seg.f.Close()
		if err := os.Remove(segPath(w.dir, seg.n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		w.segs = w.segs[1:]
	}
	return errors.Join(errs...)
}

// readOut returns up to max outbox entries after seq.
func (w *wal) readOut(after uint64, max int) (seqs []uint64, entries [][]byte, err error) {
	w.mu.Lock()
	i := sort.Search(len(w.outIdx), func(i int) bool { return w.outIdx[i].seq > after })
	locs := append([]loc(nil), w.outIdx[i:min(len(w.outIdx), i+max)]...)
	w.mu.Unlock()
	for _, l := range locs {
		b := make([]byte, l.n)
		if _, err := l.seg.f.ReadAt(b, l.off); err != nil {
			return seqs, entries, fmt.Errorf("read outbox entry %d: %w", l.seq, err)
		}
		seqs = append(seqs, l.seq)
		entries = append(entries, b)
	}
	return seqs, entries, nil
}

// replay calls fn for every entry of the log, in the order written.
func (w *wal) replay(fn func(kind byte, seq uint64, entry []byte) error) error {
	w.mu.Lock()
	ns := make([]uint64, len(w.segs))
	for i, s := range w.segs {
		ns[i] = s.n
	}
	w.mu.Unlock()
	for _, n := range ns {
		_, torn, err := scanSegment(segPath(w.dir, n), func(it item, _ int64) error {
			if it.kind == itemMeta {
				return nil
			}
			return fn(it.kind, it.seq, it.val)
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("log segment %s: %w (move the file away to start without it; peers and anti-entropy repair what it held)", segPath(w.dir, n), err)
		}
		if torn != nil { // (openWAL cut torn tails off: a segment damaged since)
			return fmt.Errorf("log segment %s is damaged (%v)", segPath(w.dir, n), torn)
		}
	}
	return nil
}

// size returns the log's segment count and bytes.
func (w *wal) size() (segs int, bytes int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.segs {
		bytes += s.size
	}
	return len(w.segs), bytes
}

func (w *wal) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for _, s := range w.segs {
		errs = append(errs, s.f.Sync(), s.f.Close())
	}
	w.segs = nil
	return errors.Join(errs...)
}
