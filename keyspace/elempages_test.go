package keyspace

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"concord/crdt"
)

// pageStore keeps the element pages checkpoints store, as the persistence
// store does, and reads them back (ElemPages).
type pageStore struct {
	memStore
	pagesMu sync.Mutex                    // (memStore's mu guards what Submit gets)
	pages   map[string]map[int]storedPage // by key, by page
	reads   int
}

type storedPage struct {
	fan   int
	names map[elemRef]bool
}

func (p *pageStore) flush(ws []Write) error {
	p.pagesMu.Lock()
	defer p.pagesMu.Unlock()
	for _, w := range ws {
		if w.Page || w.Meta {
			continue
		}
		if w.ReplaceAll {
			delete(p.pages, w.Key)
		}
		if w.Fan == 0 {
			continue
		}
		pg := storedPage{fan: w.Fan, names: map[elemRef]bool{}}
		for _, e := range w.Elems {
			if e.Data != nil {
				pg.names[elemRef{e.Kind, e.Name}] = true
			}
		}
		if p.pages[w.Key] == nil {
			p.pages[w.Key] = map[int]storedPage{}
		}
		p.pages[w.Key][w.Bucket] = pg
	}
	return nil
}

func (p *pageStore) ElemPageNames(db int, key string, n int, fn func(kind byte, name string)) (int, error) {
	p.pagesMu.Lock()
	defer p.pagesMu.Unlock()
	p.reads++
	pg, ok := p.pages[key][n]
	if !ok {
		return 0, nil
	}
	for r := range pg.names {
		fn(r.kind, r.name)
	}
	return pg.fan, nil
}

// members returns the members stored in key's pages.
func (p *pageStore) members(key string) []string {
	p.pagesMu.Lock()
	defer p.pagesMu.Unlock()
	var out []string
	for _, pg := range p.pages[key] {
		for r := range pg.names {
			out = append(out, r.name)
		}
	}
	slices.Sort(out)
	return out
}

// A checkpoint that changes a few of a big set's element pages reads their
// other members back from the store and stores exactly the set; a page
// the store holds in another layout has the set rewritten whole (its
// stored pages dropped), never a page of members lost.
func TestCheckpointElemPagesFromStore(t *testing.T) {
	st := &pageStore{pages: map[string]map[int]storedPage{}}
	ks := New(Config{Region: "A", Now: (&fakeClock{}).Now, Stable: func() bool { return true }}, st)
	k := Key{Key: "big"}
	sadd := func(names ...string) {
		var b [][]byte
		for _, n := range names {
			b = append(b, []byte(n))
		}
		ks.Run([]Key{k}, func(tx *Tx) error { tx.Apply(k, crdt.SAdd(tx.State(k), tx.Op(), b)); return nil })
	}
	srem := func(name string) {
		ks.Run([]Key{k}, func(tx *Tx) error {
			tx.Apply(k, crdt.SRem(tx.State(k), [][]byte{[]byte(name)}))
			return nil
		})
	}
	checkpoint := func() {
		t.Helper()
		if _, err := ks.Checkpoint(7, nil, st.flush); err != nil {
			t.Fatal(err)
		}
	}
	want := func() []string {
		var out []string
		ks.Run([]Key{k}, func(tx *Tx) error {
			out = slices.Sorted(tx.Get(k).Set.Keys())
			return nil
		})
		return out
	}
	check := func(when string) {
		t.Helper()
		if got, w := st.members("big"), want(); !slices.Equal(got, w) {
			t.Fatalf("%s: %d members stored, want %d", when, len(got), len(w))
		}
	}
	var names []string
	for i := 0; i < 2000; i++ {
		names = append(names, fmt.Sprint("m", i))
	}
	sadd(names...)
	checkpoint()
	check("first checkpoint")
	if st.reads != 0 || len(st.pages["big"]) != 32 {
		t.Fatalf("first checkpoint: %d page reads, %d pages, want 0 and 32", st.reads, len(st.pages["big"]))
	}

	sadd("new1", "new2")
	srem("m5")
	checkpoint()
	check("a few pages changed")
	if st.reads == 0 || st.reads > 3 || ks.Stats.ElemPagesRead.Load() != uint64(st.reads) {
		t.Fatalf("%d pages read back (stats %d), want the changed ones (1..3)", st.reads, ks.Stats.ElemPagesRead.Load())
	}

	// the page of the next change stored in another layout: whole rewrite
	pg := elemPageOf("new3", 5)
	st.pages["big"][pg] = storedPage{fan: 64, names: st.pages["big"][pg].names}
	st.pages["big"][40] = storedPage{fan: 64, names: map[elemRef]bool{{crdt.ElemMember, "stale"}: true}}
	sadd("new3")
	checkpoint()
	check("a page of another layout")
	if _, ok := st.pages["big"][40]; ok {
		t.Fatal("the page of the other layout was not dropped")
	}
}
