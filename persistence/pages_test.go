package persistence

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// loadHeaders loads s's headers and the keys reported damaged.
func loadHeaders(t *testing.T, s *Store) (map[string]string, []string, error) {
	t.Helper()
	got := map[string]string{}
	var damaged []string
	err := s.Load(Loader{
		Header: func(db int, key string, h []byte) error { got[fmt.Sprint(db, "/", key)] = string(h); return nil },
		Elem: func(db int, key string, _ byte, name string, data []byte) error {
			got[fmt.Sprint(db, "/", key, "/", name)] = string(data)
			return nil
		},
		Corrupt: func(db int, key string) error { damaged = append(damaged, fmt.Sprint(db, "/", key)); return nil },
		Replay:  func(uint64, []byte) error { return nil },
	})
	sort.Strings(damaged)
	return got, damaged, err
}

// poke rewrites the stored value of key k through Badger.
func poke(t *testing.T, s *Store, k []byte, fn func(v []byte) []byte) {
	t.Helper()
	err := s.sdb.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		return txn.Set(k, fn(v))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A damaged header is reported as that key's damage and the page's other
// keys load; a key stored without a header (known damaged) is reported on
// every load; a damaged key name or length makes Load fail, never guess.
func TestPageDamage(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, FsyncNo)
	defer func() { s.Close() }()
	w := page(2, 300, "a", "header-a", "b", "header-b", "c", "header-c")
	w.Keys, w.Ends = append(w.Keys, "q"), append(w.Ends, len(w.Header)) // no header: damaged
	if err := s.WriteStates([]Write{w, page(2, 301, "x", "header-x")}); err != nil {
		t.Fatal(err)
	}
	got, damaged, err := loadHeaders(t, s)
	if err != nil || fmt.Sprint(got) != "map[2/a:header-a 2/b:header-b 2/c:header-c 2/x:header-x]" || fmt.Sprint(damaged) != "[2/q]" {
		t.Fatalf("intact: %v %v %v", got, damaged, err)
	}
	poke(t, s, PageKey(2, 300), func(v []byte) []byte {
		at, end := LocateHeader(v, "b")
		if string(v[at:end]) != "header-b" {
			t.Fatalf("LocateHeader: %q", v[at:end])
		}
		v[at+3] ^= 0x40
		return v
	})
	got, damaged, err = loadHeaders(t, s)
	if err != nil || fmt.Sprint(got) != "map[2/a:header-a 2/c:header-c 2/x:header-x]" || fmt.Sprint(damaged) != "[2/b 2/q]" {
		t.Fatalf("a damaged header: %v %v %v", got, damaged, err)
	}
	for _, at := range []int{1, 2, 3} { // the first key's length, its name, its checksum
		s.WriteStates([]Write{w})
		poke(t, s, PageKey(2, 300), func(v []byte) []byte { v[at] ^= 0x40; return v })
		if _, _, err = loadHeaders(t, s); !errors.Is(err, errPage) || !strings.Contains(err.Error(), "page 300 of db 2") {
			t.Fatalf("damage at byte %d of the page: %v", at, err)
		}
	}
	poke(t, s, PageKey(2, 300), func(v []byte) []byte { return v[:len(v)-2] })
	if _, _, err = loadHeaders(t, s); !errors.Is(err, errPage) {
		t.Fatalf("a page cut short: %v", err)
	}
	poke(t, s, PageKey(2, 300), func(v []byte) []byte { v[0] = 9; return v })
	if _, _, err = loadHeaders(t, s); !errors.Is(err, errPage) {
		t.Fatalf("a page of an unknown format: %v", err)
	}
}

// writeLegacy turns s's database into an earlier version's: a record per
// key and per element (sealed), no format mark.
func writeLegacy(t *testing.T, s *Store, kv ...string) {
	t.Helper()
	err := s.sdb.Update(func(txn *badger.Txn) error {
		for i := 0; i < len(kv); i += 2 {
			if err := txn.Set(StateKey(0, kv[i]), sealed([]byte(kv[i+1]))); err != nil {
				return err
			}
			if err := txn.Set(ElemKey(0, kv[i], 's', "m"), sealed([]byte("m-"+kv[i+1]))); err != nil {
				return err
			}
		}
		return txn.Delete(metaFormat)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A data dir of an earlier version (a record per key) loads from those
// records, ignoring pages, until PagesWritten; then from pages only, the
// records gone. A migration cut short (pages written, no PagesWritten)
// starts over from the records.
func TestLegacyRecordsMigrate(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, FsyncNo)
	if s.NeedsPages() {
		t.Fatal("a new dir needs no migration")
	}
	writeLegacy(t, s, "a", "old-a", "b", "old-b")
	s.Close()
	for life := 0; life < 2; life++ {
		s = open(t, dir, FsyncNo)
		if !s.NeedsPages() {
			t.Fatalf("life %d: the per-key records are not noticed", life)
		}
		got, _, err := loadHeaders(t, s)
		if err != nil || fmt.Sprint(got) != "map[0/a:old-a 0/a/m:m-old-a 0/b:old-b 0/b/m:m-old-b]" {
			t.Fatalf("life %d: %v %v", life, got, err)
		}
		// a migration's pages (b deleted since, a changed), then a crash;
		// a's rewrite drops its element pages, never the old records
		drop := Write{Key: "a", ReplaceAll: true}
		if err := s.WriteStates([]Write{drop, epage("a", 1, 0, "s", "n", "n-new"), page(0, 1, "a", "new-a")}); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	s = open(t, dir, FsyncNo)
	s.WriteStates([]Write{epage("a", 1, 0, "s", "n", "n-new"), page(0, 1, "a", "new-a")})
	if err := s.PagesWritten(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, FsyncNo)
	defer s.Close()
	got, _, err := loadHeaders(t, s)
	if s.NeedsPages() || err != nil || fmt.Sprint(got) != "map[0/a:new-a 0/a/n:n-new]" {
		t.Fatalf("after the migration: %v %v", got, err)
	}
	s.sdb.View(func(txn *badger.Txn) error {
		for _, prefix := range []byte{prefixKey, prefixElem} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefix}})
			if it.Rewind(); it.Valid() {
				t.Fatalf("a per-key or per-element record is left: %q", it.Item().Key())
			}
			it.Close()
		}
		return nil
	})
}

// A database marked with a format this version does not know is refused.
func TestUnknownFormatRefused(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, FsyncNo)
	s.sdb.Update(func(txn *badger.Txn) error { return txn.Set(metaFormat, []byte("pages-v9")) })
	s.Close()
	if s, err := Open(Options{Dir: dir, Fsync: FsyncNo, Region: "A", Log: s.opts.Log}); err == nil || !strings.Contains(err.Error(), "unknown format") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("opened: %v", err)
	}
}

// A damaged element page is its key's damage: reported once, the other
// keys' pages load.
func TestElemPageDamage(t *testing.T) {
	s := open(t, t.TempDir(), FsyncNo)
	defer s.Close()
	s.WriteStates([]Write{page(0, 1, "a", "ha", "b", "hb"), epage("a", 2, 0, "s", "x", "dx", "s", "y", "dy"), epage("a", 2, 1, "s", "z", "dz"), epage("b", 1, 0, "h", "f", "df")})
	got, damaged, err := loadHeaders(t, s)
	if err != nil || fmt.Sprint(got) != "map[0/a:ha 0/a/x:dx 0/a/y:dy 0/a/z:dz 0/b:hb 0/b/f:df]" || len(damaged) != 0 {
		t.Fatalf("intact: %v %v %v", got, damaged, err)
	}
	for _, at := range []int{0, 1, 3, 7, 9, 12, -1} { // format, count, its checksum, a name's length, a record's length, a checksum, the last byte
		s.WriteStates([]Write{epage("a", 2, 0, "s", "x", "dx", "s", "y", "dy")})
		poke(t, s, ElemPageKey(0, "a", 0), func(v []byte) []byte {
			if at < 0 {
				at = len(v) - 1
			}
			v[at] ^= 0x40
			return v
		})
		_, damaged, err = loadHeaders(t, s)
		if err != nil || fmt.Sprint(damaged) != "[0/a]" {
			t.Fatalf("damage at byte %d: %v %v", at, damaged, err)
		}
	}
}

// Stored pages are read back exactly; any bytes as a page (damage, a bug)
// give keys and elements or errPage, never a panic or a read past the page.
func FuzzPages(f *testing.F) {
	f.Add(encodePage(nil, []string{"a", "bb"}, []int{2, 5}, []byte("h1h22")), true)
	f.Add(encodeElemPage(nil, 4, []Elem{{Kind: 's', Name: "m", Data: []byte("d")}, {Kind: 'h', Name: "f", Data: []byte("")}}), false)
	f.Add([]byte{pageFormat1, 0x80}, true)
	f.Fuzz(func(t *testing.T, b []byte, headers bool) {
		var keys []string
		var ends []int
		var hdrs []byte
		var elems []Elem
		var err error
		if headers {
			err = parsePage(b, func(k string, h []byte, at int, ok bool) error {
				if at < 0 || at+len(h) > len(b) {
					t.Fatalf("header outside the page")
				}
				if ok {
					keys = append(keys, k)
					hdrs = append(hdrs, h...)
					ends = append(ends, len(hdrs))
				}
				return nil
			})
		} else {
			_, err = parseElemPage(b, func(kind byte, name string, data []byte) error {
				elems = append(elems, Elem{Kind: kind, Name: name, Data: append([]byte{}, data...)})
				return nil
			})
		}
		if err != nil {
			if !errors.Is(err, errPage) {
				t.Fatalf("error %v is not errPage", err)
			}
			return
		}
		// what parsed re-encodes to what parses the same
		if headers && len(keys) > 0 {
			again := encodePage(nil, keys, ends, hdrs)
			n := 0
			if err := parsePage(again, func(k string, h []byte, _ int, ok bool) error {
				if !ok || k != keys[n] {
					t.Fatalf("re-encoded key %d: %q", n, k)
				}
				n++
				return nil
			}); err != nil || n != len(keys) {
				t.Fatalf("re-encoded page: %v, %d of %d keys", err, n, len(keys))
			}
		}
		if !headers && len(elems) > 0 {
			again := encodeElemPage(nil, 1, elems)
			n := 0
			if _, err := parseElemPage(again, func(kind byte, name string, data []byte) error {
				if kind != elems[n].Kind || name != elems[n].Name || string(data) != string(elems[n].Data) {
					t.Fatalf("re-encoded element %d differs", n)
				}
				n++
				return nil
			}); err != nil || n != len(elems) {
				t.Fatalf("re-encoded element page: %v, %d of %d", err, n, len(elems))
			}
		}
	})
}

// diskBytes is what the files under dir take on disk.
func diskBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
				}
			}
		}
		return nil
	})
	return n
}

// Checkpoints that rewrite the same pages over and over keep the states'
// disk use bounded: pages live in Badger's tree, whose compactions drop the
// rewritten versions (once they caught up). 100 MB of pages written in 25
// checkpoints over 4 MB of live pages.
func TestRewrittenPagesReclaimed(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, FsyncNo)
	defer s.Close()
	h := strings.Repeat("h", 4000)
	for round := 0; round < 25; round++ {
		var ws []Write
		for b := 0; b < 1024; b++ {
			ws = append(ws, page(0, b, fmt.Sprint("k", b), fmt.Sprint(round, h)))
		}
		if err := s.WriteStates(ws); err != nil {
			t.Fatal(err)
		}
		if err := s.Checkpointed(0, 0, 1024, 0); err != nil {
			t.Fatal(err)
		}
	}
	// compactions run in the background: once they caught up, the next
	// checkpoint's collection reclaims the files
	deadline := time.Now().Add(15 * time.Second)
	for n := diskBytes(t, dir); n > 60<<20; n = diskBytes(t, dir) {
		if time.Now().After(deadline) {
			t.Fatalf("%d MB on disk for 4 MB of pages", n>>20)
		}
		time.Sleep(100 * time.Millisecond)
		if err := s.Checkpointed(0, 0, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := loadHeaders(t, s)
	if err != nil || len(got) != 1024 || got["0/k7"] != fmt.Sprint(24, h) {
		t.Fatalf("%d pages read back, %v", len(got), err)
	}
}

// A page's buffer comes from the pool only when it holds the page: a
// smaller one stays for a smaller page (WriteStates of a checkpoint's
// pages reused half of them when the last freed buffer was taken whatever
// its size and replaced when too small).
func TestPageBufsFit(t *testing.T) {
	var p pageBufs
	p.release([][]byte{make([]byte, 0, 100), make([]byte, 0, 5000), make([]byte, 0, 300)})
	if b := p.get(6000); b != nil {
		t.Fatalf("a %d-byte buffer for 6000 bytes", cap(b))
	}
	if b := p.get(1000); cap(b) != 5000 || len(b) != 0 {
		t.Fatalf("get(1000): cap %d len %d, want the 5000-byte buffer", cap(b), len(b))
	}
	if b := p.get(200); cap(b) != 300 {
		t.Fatalf("get(200): cap %d, want the 300-byte buffer", cap(b))
	}
	if b := p.get(50); cap(b) != 100 {
		t.Fatalf("get(50): cap %d, want the 100-byte buffer", cap(b))
	}
	if p.get(1) != nil || p.bytes != 0 {
		t.Fatalf("the pool still holds %d bytes", p.bytes)
	}
	if b := grown(p.get, 1000); cap(b) < 1000 {
		t.Fatalf("grown: cap %d for 1000 bytes", cap(b))
	}
}
