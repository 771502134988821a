package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"

	"concord/keyspace"
	"concord/persistence"

	"github.com/dgraph-io/badger/v4"
	"github.com/redis/go-redis/v9"
)

// startIn starts a region on dir (checkpoints only when asked, and at
// stops) and a client of it.
func startIn(t *testing.T, dir string) (Config, *Instance, *redis.Client) {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", Dir: dir, LogLevel: "error", Region: "A", CheckpointInterval: time.Hour, CheckpointLogBytes: 1 << 40}
	in, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, in, redis.NewClient(&redis.Options{Addr: in.Addr()})
}

// toLegacy rewrites a stopped region's key states as an earlier version
// stored them: a record per key and per element (each with a CRC-32C), no
// pages, no format mark.
func toLegacy(t *testing.T, dir string, keys []string) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir + "/badger").WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(txn *badger.Txn) error {
		for _, k := range keys {
			item, err := txn.Get(persistence.PageKey(0, keyspace.BucketOf(k)))
			if err != nil {
				return fmt.Errorf("page of %q: %w", k, err)
			}
			page, _ := item.ValueCopy(nil)
			start, end := persistence.LocateHeader(page, k)
			if start < 0 {
				return fmt.Errorf("%q not in its page", k)
			}
			h := append([]byte(nil), page[start:end]...)
			h = binary.LittleEndian.AppendUint32(h, crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli)))
			if err := txn.Set(persistence.StateKey(0, k), h); err != nil {
				return err
			}
			// its element pages: a record per element
			prefix := persistence.ElemPageKey(0, k, 0)
			prefix = prefix[:len(prefix)-4]
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			var pages [][]byte
			for it.Rewind(); it.Valid(); it.Next() {
				pages = append(pages, it.Item().KeyCopy(nil))
				v, _ := it.Item().ValueCopy(nil)
				_, err := persistence.ReadElemPage(v, func(kind byte, name string, data []byte) error {
					data = binary.LittleEndian.AppendUint32(append([]byte(nil), data...), crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
					return txn.Set(persistence.ElemKey(0, k, kind, name), data)
				})
				if err != nil {
					it.Close()
					return err
				}
			}
			it.Close()
			for _, p := range pages {
				if err := txn.Delete(p); err != nil {
					return err
				}
			}
		}
		for b := 0; b < keyspace.NumBuckets; b++ {
			if err := txn.Delete(persistence.PageKey(0, b)); err != nil {
				return err
			}
		}
		return txn.Delete([]byte("m:format"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A data dir of the version before pages (a record per key) starts with
// every key, is rewritten as pages before the region serves, and keeps
// every key across the restarts after (a crash included).
func TestLegacyDirMigratesToPages(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	cfg, in, c := startIn(t, dir)
	var keys []string
	for i := 0; i < 300; i++ {
		keys = append(keys, fmt.Sprint("s", i), fmt.Sprint("h", i%7))
		c.Set(ctx, fmt.Sprint("s", i), i, 0)
		c.HSet(ctx, fmt.Sprint("h", i%7), fmt.Sprint("f", i), i)
	}
	for i := 0; i < 1000; i++ { // in 16 element pages
		c.SAdd(ctx, "big", fmt.Sprint("m", i))
	}
	keys = append(keys, "big")
	want := dumpAll(t, c)
	c.Close()
	in.Close()
	toLegacy(t, dir, keys)
	for life := 0; life < 3; life++ {
		in, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(&redis.Options{Addr: in.Addr()})
		if got := dumpAll(t, c); got != want {
			t.Fatalf("life %d: %d bytes of keys, want %d", life, len(got), len(want))
		}
		if in.store.NeedsPages() {
			t.Fatalf("life %d: not migrated", life)
		}
		c.Close()
		in.crash = life == 1
		in.Close()
	}
}

// dumpAll returns every string and hash of db 0, in key order.
func dumpAll(t *testing.T, c *redis.Client) string {
	t.Helper()
	ctx := context.Background()
	out := ""
	for i := 0; i < 300; i++ {
		out += fmt.Sprint(c.Get(ctx, fmt.Sprint("s", i)).Val(), ";")
	}
	for i := 0; i < 7; i++ {
		out += fmt.Sprint(c.HGetAll(ctx, fmt.Sprint("h", i)).Val(), ";")
	}
	ms := c.SMembers(ctx, "big").Val()
	slices.Sort(ms)
	out += fmt.Sprint(ms)
	if n := c.DBSize(ctx).Val(); n != 308 {
		t.Fatalf("%d keys", n)
	}
	return out
}

// elemPages returns the element pages stored for key: page number → the
// number of pages of its layout (0: an emptied page).
func elemPages(t *testing.T, dir, key string) map[int]int {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir + "/badger").WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[int]int{}
	prefix := persistence.ElemPageKey(0, key, 0)
	prefix = prefix[:len(prefix)-4]
	db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			v, _ := it.Item().ValueCopy(nil)
			fan, err := persistence.ReadElemPage(v, func(byte, string, []byte) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			out[int(binary.BigEndian.Uint32(k[len(k)-4:]))] = fan
		}
		return nil
	})
	return out
}

// Element pages of two layouts found at start (a checkpoint cut short while
// it changed a key's layout) are all read, and the next checkpoint that
// stores the key rewrites it whole in one layout, dropping the others.
func TestTwoElemLayoutsRewrittenWhole(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	cfg, in, c := startIn(t, dir)
	for i := 0; i < 200; i++ {
		c.SAdd(ctx, "s", fmt.Sprint("m", i))
	}
	c.Close()
	in.Close()
	pages := elemPages(t, dir, "s")
	if len(pages) != 4 || pages[0] != 4 {
		t.Fatalf("200 members in pages %v, want 4 of 4", pages)
	}
	// a page of another layout, as a cut-short checkpoint leaves it
	db, err := badger.Open(badger.DefaultOptions(dir + "/badger").WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(persistence.ElemPageKey(0, "s", 0))
		if err != nil {
			return err
		}
		v, _ := item.ValueCopy(nil)
		v[1] = 8 // its page count: 8, and the count's checksum to match
		binary.LittleEndian.PutUint32(v[2:], crc32.Checksum(v[:2], crc32.MakeTable(crc32.Castagnoli)))
		return txn.Set(persistence.ElemPageKey(0, "s", 5), v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	in, err = Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c = redis.NewClient(&redis.Options{Addr: in.Addr()})
	if n := c.SCard(ctx, "s").Val(); n != 200 {
		t.Fatalf("%d members loaded", n)
	}
	c.SAdd(ctx, "s", "one-more") // one changed member: a whole rewrite all the same
	c.Close()
	in.Close()
	pages = elemPages(t, dir, "s")
	stale, kept := pages[5]
	delete(pages, 5) // emptied: pages are overwritten, never deleted
	if kept && stale != 0 || len(pages) != 4 || pages[0] != 4 || pages[3] != 4 {
		t.Fatalf("pages after the rewrite: %v", pages)
	}
}

// A key whose record in an earlier version's data dir is damaged, with a
// peer to repair it from, stays quarantined (TRYAGAIN, never served as
// missing) after the migration to pages and across restarts, until the
// peer repairs it.
func TestLegacyDamagedKeyStaysQuarantined(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	start := func() *Instance { return startForTest(t, dir, true) } // peer X never runs
	in := start()
	c := redis.NewClient(&redis.Options{Addr: in.Addr()})
	c.Set(ctx, "s1", "precious", 0)
	c.Set(ctx, "s2", "fine", 0)
	c.Close()
	in.Close()
	toLegacy(t, dir, []string{"s1", "s2"})
	db, err := badger.Open(badger.DefaultOptions(dir + "/badger").WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(persistence.StateKey(0, "s1"))
		if err != nil {
			return err
		}
		v, _ := item.ValueCopy(nil)
		v[len(v)/2] ^= 0x40
		return txn.Set(persistence.StateKey(0, "s1"), v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	for life := 0; life < 2; life++ {
		in := start()
		c := redis.NewClient(&redis.Options{Addr: in.Addr(), MaxRetries: -1})
		if v, err := c.Get(ctx, "s1").Result(); err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN") {
			t.Fatalf("life %d: the damaged key is served: %q %v", life, v, err)
		}
		if v := c.Get(ctx, "s2").Val(); v != "fine" {
			t.Fatalf("life %d: s2 = %q", life, v)
		}
		if in.store.NeedsPages() {
			t.Fatalf("life %d: not migrated", life)
		}
		c.Close()
		in.Close()
	}
}
