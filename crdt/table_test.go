package crdt

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"
)

// checkTable requires t to hold exactly model, through every way of
// reading it, and its slots to be consistent (each entry in exactly one
// slot, reachable from its home without crossing an empty slot).
func checkTable(tb testing.TB, t *Table[int], model map[string]int) {
	tb.Helper()
	if t.Len() != len(model) {
		tb.Fatalf("Len %d, want %d", t.Len(), len(model))
	}
	seen := map[string]bool{}
	for k, v := range t.All() {
		if seen[k] {
			tb.Fatalf("All yields %q twice", k)
		}
		seen[k] = true
		if w, ok := model[k]; !ok || w != v {
			tb.Fatalf("All yields %q=%d, model has %d (%v)", k, v, w, ok)
		}
	}
	for k, v := range model {
		if got, ok := t.Lookup(k); !ok || got != v {
			tb.Fatalf("Lookup(%q) = %d, %v; want %d", k, got, ok, v)
		}
		if got := t.GetBytes([]byte(k)); got != v {
			tb.Fatalf("GetBytes(%q) = %d, want %d", k, got, v)
		}
	}
	if t == nil || t.slots == nil {
		if t != nil && len(t.ents) > tableSmall {
			tb.Fatalf("%d entries without slots", len(t.ents))
		}
		return
	}
	filed := 0
	for _, s := range t.slots {
		if s != 0 {
			filed++
		}
	}
	if filed != len(t.ents) || filed*4 > len(t.slots)*3 {
		tb.Fatalf("%d slots filed for %d entries in %d slots", filed, len(t.ents), len(t.slots))
	}
	for i, e := range t.ents {
		h := tableHashString(e.key)
		if t.slotOf(h, i) < 0 { // (slotOf loops forever if absent: the Lookup above found it)
			tb.Fatal("unreachable")
		}
	}
}

// TestTableModel runs random puts, deletes and clears (names drawn from
// small and large pools, so that tables cross the small/slotted line both
// ways) against a Go map.
func TestTableModel(t *testing.T) {
	for seed := int64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewSource(seed))
		pool := 4 + rng.Intn(300)
		var tbl *Table[int]
		model := map[string]int{}
		for op := 0; op < 3000; op++ {
			k := fmt.Sprintf("m%d", rng.Intn(pool))
			switch r := rng.Intn(100); {
			case r < 55:
				if tbl == nil {
					tbl = NewTable[int](rng.Intn(20))
				}
				tbl.Put(k, op)
				model[k] = op
			case r < 99:
				if tbl != nil {
					tbl.Delete(k)
				}
				delete(model, k)
			default:
				if tbl != nil {
					tbl.Clear()
				}
				clear(model)
			}
			if op%97 == 0 || op > 2990 {
				checkTable(t, tbl, model)
			}
		}
		checkTable(t, tbl, model)
		checkTable(t, tbl.Clone(func(v int) int { return v }), model)
	}
}

// TestTableDeleteWhileIterating deletes, during All, the entry yielded
// (as Merge and Compact do): every entry is yielded once, and what is
// left is what was not deleted. Inserting during All yields no new entry.
func TestTableDeleteWhileIterating(t *testing.T) {
	for _, n := range []int{1, 5, 8, 9, 100, 1000} {
		tbl := NewTable[int](0)
		for i := range n {
			tbl.Put(fmt.Sprint(i), i)
		}
		var yielded []int
		left := map[string]int{}
		for k, v := range tbl.All() {
			yielded = append(yielded, v)
			if v%3 != 0 {
				tbl.Delete(k)
			} else {
				left[k] = v
			}
		}
		slices.Sort(yielded)
		if len(yielded) != n {
			t.Fatalf("n=%d: yielded %d entries", n, len(yielded))
		}
		for i, v := range yielded {
			if v != i {
				t.Fatalf("n=%d: yielded %v..., not each entry once", n, yielded[:i+1])
			}
		}
		checkTable(t, tbl, left)
		count := 0
		for k, v := range tbl.All() {
			count++
			tbl.Put(k+"new", v)
		}
		if count != len(left) || tbl.Len() != 2*len(left) {
			t.Fatalf("n=%d: insert during All yielded %d of %d, len %d", n, count, len(left), tbl.Len())
		}
	}
}

// TestTablePeek: the prefetch stages find an entry by its hash alone.
func TestTablePeek(t *testing.T) {
	tbl := NewTable[int](0)
	for i := range 1000 {
		tbl.Put(fmt.Sprint("f", i), i)
	}
	for i := range 1000 {
		name := []byte(fmt.Sprint("f", i))
		h := TableHash(name)
		tbl.TouchSlot(h)
		v, _, ok := tbl.Peek(h)
		if !ok || v != i {
			t.Fatalf("Peek(%s) = %d, %v", name, v, ok)
		}
	}
	if _, _, ok := tbl.Peek(TableHash([]byte("absent"))); ok {
		// only a 32-bit fingerprint collision would match
		t.Log("Peek matched an absent name's fingerprint")
	}
	var small *Table[int]
	if _, _, ok := small.Peek(1); ok || small.TouchSlot(1) != 0 {
		t.Fatal("a nil table peeked something")
	}
}
