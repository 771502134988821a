package persistence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// Pages. A checkpoint stores the headers of a bucket's keys (a key's state
// without its set members or hash fields, which have records of their own)
// as one Badger record, the bucket's page, rewritten whole when any of its
// keys changed. One record per changed bucket instead of one per changed
// key: Badger's cost is per record (its memtable is a skiplist that every
// record is inserted into, a cache miss per level on a big memtable; ~4.5 µs
// of a record-per-key checkpoint's ~8.7 µs per key), so a checkpoint of 100k
// changed keys writes 4096 pages instead of 100k records. The price: a
// bucket's unchanged keys are encoded again with its changed ones (with 1M
// keys, a page holds ~250).
//
// A page is a format byte and then, per key: uvarint len, key, CRC-32C of
// the key, uvarint len, header, CRC-32C of the header. A header whose
// checksum fails is reported as that key's damage (Loader.Corrupt); a key
// name whose checksum fails, or a length that runs past the page, leaves
// the rest of the page unreadable and Load fails with an error. A key
// without a header is one known damaged (quarantined until a peer repairs
// it): its checksum is stored failing, so that a later start knows too.
//
// A key's set members and hash fields are stored likewise: in a power of
// two of element pages (Write.Fan; the keyspace picks about 64 elements per
// page and which page holds an element by a hash of its name), each a
// format byte, the number of pages and a CRC-32C of both, and per element:
// its kind, uvarint
// len, name, uvarint len, record, CRC-32C of the kind, name and record. A
// damaged element page is its key's damage (Loader.Corrupt).
//
// Data dirs of earlier versions hold a record per key (prefixKey) and per
// element (prefixElem): Load
// reads those and NeedsPages asks the caller to rewrite every key as pages
// in one checkpoint and then call PagesWritten, which records the format
// and deletes the per-key and per-element records. Until then a dir's pages (of a migration
// cut short) are ignored.

const (
	prefixPage     = byte('p')
	prefixElemPage = byte('f')
	pageFormat1    = byte(1)
)

var metaFormat = []byte("m:format")

const formatPages = "pages"

// PageKey is the Badger key of db's page of bucket.
func PageKey(db, bucket int) []byte {
	return []byte{prefixPage, byte(db), byte(bucket >> 8), byte(bucket)}
}

// encodePage builds the page of keys, whose headers are headers cut at
// ends, in memory from get (nil: new memory).
func encodePage(get func(n int) []byte, keys []string, ends []int, headers []byte) []byte {
	n := 1
	for i, k := range keys {
		n += len(k) + 2*binary.MaxVarintLen32 + 8
		if i == 0 {
			n += ends[0]
		} else {
			n += ends[i] - ends[i-1]
		}
	}
	page := append(grown(get, n), pageFormat1)
	start := 0
	for i, k := range keys {
		h := headers[start:ends[i]]
		start = ends[i]
		page = binary.AppendUvarint(page, uint64(len(k)))
		page = append(page, k...)
		// (the checksum of the copy: []byte(k) would allocate)
		page = binary.LittleEndian.AppendUint32(page, crc32.Checksum(page[len(page)-len(k):], castagnoli))
		page = binary.AppendUvarint(page, uint64(len(h)))
		page = append(page, h...)
		sum := crc32.Checksum(h, castagnoli)
		if len(h) == 0 {
			sum = ^sum // a key known damaged (no header): it stays so
		}
		page = binary.LittleEndian.AppendUint32(page, sum)
	}
	return page
}

// errPage: a page damaged where its structure is (a length, a key name).
var errPage = errors.New("damaged page")

// parsePage calls fn for every key of page with its header (hdrAt: where
// the header starts in page) and whether the header's checksum holds.
func parsePage(page []byte, fn func(key string, header []byte, hdrAt int, ok bool) error) error {
	if len(page) == 0 || page[0] != pageFormat1 {
		return fmt.Errorf("%w: unknown format", errPage)
	}
	at := 1
	field := func() ([]byte, error) {
		n, w := binary.Uvarint(page[at:])
		if rest := len(page) - at - w - 4; w <= 0 || rest < 0 || n > uint64(rest) {
			return nil, fmt.Errorf("%w: bad length at byte %d", errPage, at)
		}
		at += w
		b := page[at : at+int(n)]
		at += int(n) + 4
		return b, nil
	}
	for at < len(page) {
		k, err := field()
		if err != nil {
			return err
		}
		if crc32.Checksum(k, castagnoli) != binary.LittleEndian.Uint32(page[at-4:]) {
			return fmt.Errorf("%w: key name at byte %d fails its checksum", errPage, at-4-len(k))
		}
		h, err := field()
		if err != nil {
			return err
		}
		ok := len(h) > 0 && crc32.Checksum(h, castagnoli) == binary.LittleEndian.Uint32(page[at-4:]) // empty: known damaged
		if err := fn(string(k), h, at-4-len(h), ok); err != nil {
			return err
		}
	}
	return nil
}

// LocateHeader returns where key's header lies in page (tests that damage
// a stored header), or -1.
func LocateHeader(page []byte, key string) (start, end int) {
	start, end = -1, -1
	parsePage(page, func(k string, h []byte, at int, _ bool) error {
		if k == key {
			start, end = at, at+len(h)
		}
		return nil
	})
	return start, end
}

// NeedsPages tells whether the states were read from an earlier version's
// per-key records: the caller then stores every key as pages (a checkpoint
// of every key) and calls PagesWritten.
func (s *Store) NeedsPages() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.legacy
}

// PagesWritten records that every key's header is in pages (after a
// checkpoint of every key, which Checkpointed made durable) and deletes the
// per-key records of earlier versions.
func (s *Store) PagesWritten() error {
	if err := s.setFormat(); err != nil {
		return err
	}
	if err := s.dropLegacy(); err != nil {
		return err
	}
	s.mu.Lock()
	s.legacy = false
	s.mu.Unlock()
	return nil
}

func (s *Store) setFormat() error {
	if err := s.sdb.Update(func(txn *badger.Txn) error { return txn.Set(metaFormat, []byte(formatPages)) }); err != nil {
		return err
	}
	return s.sdb.Sync()
}

// checkFormat reads the states' format at Open: pages, or per-key records
// of an earlier version (legacy), or an empty database (which gets pages).
// Per-key records left over from a migration cut short are deleted.
func (s *Store) checkFormat() error {
	var format []byte
	var perKey bool
	err := s.sdb.View(func(txn *badger.Txn) error {
		if item, err := txn.Get(metaFormat); err == nil {
			format, err = item.ValueCopy(nil)
			if err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixKey}})
		defer it.Close()
		it.Rewind()
		perKey = it.Valid()
		return nil
	})
	switch {
	case err != nil:
		return err
	case string(format) == formatPages && perKey:
		return s.dropLegacy()
	case string(format) == formatPages:
		return nil
	case format != nil:
		return fmt.Errorf("key states in unknown format %q (a newer version's?)", format)
	case perKey:
		s.legacy = true
		return nil
	}
	return s.setFormat()
}

// dropLegacy deletes every per-key and per-element record of an earlier
// version.
func (s *Store) dropLegacy() error {
	wb := s.sdb.NewWriteBatch()
	defer wb.Cancel()
	for _, prefix := range []byte{prefixKey, prefixElem} {
		if err := s.eachStored(wb.Delete, []byte{prefix}); err != nil {
			return err
		}
	}
	return wb.Flush()
}

func elemPagePrefix(db int, key string) []byte {
	b := make([]byte, 0, 16+len(key))
	b = append(b, prefixElemPage, byte(db))
	b = binary.AppendUvarint(b, uint64(len(key)))
	return append(b, key...)
}

// ElemPageKey is the Badger key of element page n of key.
func ElemPageKey(db int, key string, n int) []byte {
	return binary.BigEndian.AppendUint32(elemPagePrefix(db, key), uint32(n))
}

func parseElemPageKey(k []byte) (db int, key string, ok bool) {
	if len(k) < 3 {
		return 0, "", false
	}
	n, w := binary.Uvarint(k[2:])
	if w <= 0 || n+4 != uint64(len(k)-2-w) {
		return 0, "", false
	}
	return int(k[1]), string(k[2+w : 2+w+int(n)]), true
}

// encodeElemPage builds an element page (nil: no element has data), in
// memory from get (nil: new memory).
func encodeElemPage(get func(n int) []byte, fan int, elems []Elem) []byte {
	n := 1 + binary.MaxVarintLen32
	live := 0
	for _, e := range elems {
		if e.Data != nil {
			n += 1 + len(e.Name) + len(e.Data) + 2*binary.MaxVarintLen32 + 4
			live++
		}
	}
	if live == 0 {
		return nil
	}
	page := append(grown(get, n+4), pageFormat1)
	page = binary.AppendUvarint(page, uint64(fan))
	page = binary.LittleEndian.AppendUint32(page, crc32.Checksum(page, castagnoli))
	for _, e := range elems {
		if e.Data == nil {
			continue
		}
		at := len(page)
		page = append(page, e.Kind)
		page = binary.AppendUvarint(page, uint64(len(e.Name)))
		page = append(page, e.Name...)
		page = binary.AppendUvarint(page, uint64(len(e.Data)))
		page = append(page, e.Data...)
		page = binary.LittleEndian.AppendUint32(page, crc32.Checksum(page[at:], castagnoli))
	}
	return page
}

// ReadElemPage reads an element page as Load does (tools, tests).
func ReadElemPage(page []byte, fn func(kind byte, name string, data []byte) error) (fan int, err error) {
	return parseElemPage(page, fn)
}

// ElemPageNames calls fn with the kind and name of every element stored in
// element page n of key, and returns the page's number of pages (0: the
// page is not stored, or emptied). A checkpoint that rewrites a few pages
// of a big key reads their elements' names here instead of walking all its
// elements. fn gets a copy of each name.
func (s *Store) ElemPageNames(db int, key string, n int, fn func(kind byte, name string)) (fan int, err error) {
	err = s.sdb.View(func(rt *badger.Txn) error {
		item, err := rt.Get(ElemPageKey(db, key, n))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(page []byte) error {
			fan, err = parseElemPage(page, func(kind byte, name string, _ []byte) error {
				fn(kind, name)
				return nil
			})
			return err
		})
	})
	return fan, err
}

// emptyPage is what a page that no longer holds anything is overwritten
// with (a header page of no keys, an element page of no elements), never a
// delete: a page above the value threshold (128 KiB) lives in Badger's value
// log, a value-log collection can write an old version of a key back after
// a compaction purged the key's delete marker (dgraph-io/badger#2286), and a
// compaction can drop a marker above its value (#2143) — an old page would
// come back. Overwritten, the key keeps a newer version than any copy that
// comes back. The price: a record of a few bytes per element
// page of a deleted key, and per emptied bucket, kept.
var emptyPage = []byte{pageFormat1}

// parseElemPage calls fn for every element of an element page and returns
// the page's number of pages (0: an emptied page); a page that fails a checksum or a length
// gives errPage (fn may have had some of its elements).
func parseElemPage(page []byte, fn func(kind byte, name string, data []byte) error) (fan int, err error) {
	if len(page) == 1 && page[0] == pageFormat1 {
		return 0, nil // emptied
	}
	if len(page) < 2 || page[0] != pageFormat1 {
		return 0, fmt.Errorf("%w: unknown format", errPage)
	}
	f, w := binary.Uvarint(page[1:])
	if w <= 0 || len(page) < 1+w+4 || crc32.Checksum(page[:1+w], castagnoli) != binary.LittleEndian.Uint32(page[1+w:]) || f == 0 || f > 1<<31 {
		return 0, fmt.Errorf("%w: bad page count", errPage)
	}
	at := 1 + w + 4
	field := func() ([]byte, bool) {
		n, w := binary.Uvarint(page[at:])
		if rest := len(page) - at - w; w <= 0 || rest < 0 || n > uint64(rest) {
			return nil, false
		}
		at += w + int(n)
		return page[at-int(n) : at], true
	}
	for at < len(page) {
		start := at
		kind := page[at]
		at++
		name, ok := field()
		if !ok {
			return 0, fmt.Errorf("%w: bad length at byte %d", errPage, at)
		}
		data, ok := field()
		if !ok || len(page)-at < 4 || crc32.Checksum(page[start:at], castagnoli) != binary.LittleEndian.Uint32(page[at:]) {
			return 0, fmt.Errorf("%w: element at byte %d fails its checksum", errPage, start)
		}
		at += 4
		if err := fn(kind, string(name), data); err != nil {
			return 0, err
		}
	}
	return int(f), nil
}

// grown returns an empty buffer that holds n bytes: get's, or new memory
// with a quarter more (so that it fits the pages of about that size it is
// reused for).
func grown(get func(n int) []byte, n int) []byte {
	if get != nil {
		if b := get(n); b != nil {
			return b
		}
	}
	return make([]byte, 0, n+n/4)
}

// pageBufs keeps the memory of the pages a WriteStates stored for the next
// one: a checkpoint encodes its pages into the same buffers instead of new
// allocations (~100 bytes per key) for the collector to clear. At most
// maxPageBufs bytes are kept; a page takes a buffer only when it fits.
type pageBufs struct {
	mu    sync.Mutex
	free  [][]byte
	bytes int
}

// get returns a free buffer that holds n bytes (nil: none), looking at
// the last few freed.
func (p *pageBufs) get(n int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.free) - 1; i >= max(0, len(p.free)-8); i-- {
		if b := p.free[i]; cap(b) >= n {
			last := len(p.free) - 1
			p.free[i] = p.free[last]
			p.free[last] = nil
			p.free = p.free[:last]
			p.bytes -= cap(b)
			return b[:0]
		}
	}
	return nil
}

// release takes back buffers Badger is done with.
func (p *pageBufs) release(used [][]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range used {
		if b != nil && p.bytes+cap(b) <= maxPageBufs {
			p.free = append(p.free, b)
			p.bytes += cap(b)
		}
	}
}

const maxPageBufs = 8 << 20
