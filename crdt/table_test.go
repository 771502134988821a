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
	if t == nil {
		return
	}
	total := 0
	for p := range t.parts() {
		total += len(p.ents)
		if len(p.ents) > 3<<(partBits-2)+1 {
			tb.Fatalf("a part of %d entries (a write would move them all)", len(p.ents))
		}
		for i, e := range p.ents {
			h := tableHashString(e.key)
			if t.part(h) != p {
				tb.Fatalf("%q is in a part its hash does not lead to", e.key)
			}
			if p.bits != 0 && p.slotOf(fpOf(h), i) < 0 { // (slotOf loops forever if absent: the Lookup above found it)
				tb.Fatal("unreachable")
			}
		}
		if p.bits == 0 {
			if len(p.ents) > tableSmall || t.dir != nil {
				tb.Fatalf("%d entries without slots (dir %v)", len(p.ents), t.dir != nil)
			}
			continue
		}
		filed := 0
		for _, s := range p.slots {
			if s != 0 {
				filed++
			}
		}
		if filed != len(p.ents) || len(p.slots) != 1<<p.bits || filed*4 > len(p.slots)*3 {
			tb.Fatalf("%d slots filed for %d entries in %d slots", filed, len(p.ents), len(p.slots))
		}
	}
	if total != t.Len() {
		tb.Fatalf("parts hold %d entries, Len %d", total, t.Len())
	}
	if d := t.dir; d != nil {
		if len(d.parts) != 1<<d.depth {
			tb.Fatalf("directory of %d parts at depth %d", len(d.parts), d.depth)
		}
		for i, p := range d.parts {
			span := 1 << (d.depth - p.depth)
			if i%span == 0 {
				for j := range span {
					if d.parts[i+j] != p {
						tb.Fatalf("part of depth %d at index %d not at its %d indices", p.depth, i, span)
					}
				}
			}
		}
	}
}

// TestTableModel runs random puts, deletes and clears (names drawn from
// small and large pools, so that tables cross the small/slotted line both
// ways) against a Go map.
func TestTableModel(t *testing.T) {
	deepest := uint8(0)
	for seed := int64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewSource(seed))
		pool := 4 + rng.Intn([]int{20, 300, 20000}[seed%3])
		var tbl *Table[int]
		model := map[string]int{}
		for op := 0; op < 30000; op++ {
			k := fmt.Sprintf("m%d", rng.Intn(pool))
			switch r := rng.Intn(10000); {
			case r < 6000:
				if tbl == nil {
					tbl = NewTable[int](rng.Intn(20))
				}
				tbl.Put(k, op)
				model[k] = op
			case r < 9998:
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
			if op%997 == 0 || op > 29990 {
				checkTable(t, tbl, model)
			}
		}
		checkTable(t, tbl, model)
		checkTable(t, tbl.Clone(func(v int) int { return v }), model)
		if tbl.dir != nil {
			deepest = max(deepest, tbl.dir.depth)
		}
	}
	if deepest < 2 {
		t.Fatalf("no table split more than once (directory depth %d)", deepest)
	}
}

// TestTableDeleteWhileIterating deletes, during All, the entry yielded
// (as Merge and Compact do): every entry is yielded once, and what is
// left is what was not deleted.
func TestTableDeleteWhileIterating(t *testing.T) {
	for _, n := range []int{1, 5, 8, 9, 100, 1000, 5000} {
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
	}
}

// TestTablePeek: the prefetch stages find an entry by its hash alone.
func TestTablePeek(t *testing.T) {
	tbl := NewTable[int](0)
	for i := range 10000 {
		tbl.Put(fmt.Sprint("f", i), i)
	}
	for i := range 10000 {
		name := []byte(fmt.Sprint("f", i))
		h, _ := tbl.TouchSlot(name)
		if h != TableHash(name) {
			t.Fatalf("TouchSlot(%s) gave hash %x", name, h)
		}
		v, _, ok := tbl.Peek(h)
		if !ok || v != i {
			t.Fatalf("Peek(%s) = %d, %v", name, v, ok)
		}
	}
	if _, _, ok := tbl.Peek(TableHash([]byte("absent"))); ok {
		// only a 52-bit fingerprint collision would match
		t.Log("Peek matched an absent name's fingerprint")
	}
	small := NewTable[int](0) // (no slots: no hash computed, nothing peeked)
	small.Put("f1", 1)
	if h, _ := small.TouchSlot([]byte("f1")); h != 0 {
		t.Fatal("a small table hashed a name")
	}
	var none *Table[int]
	if h, _ := none.TouchSlot([]byte("f1")); h != 0 {
		t.Fatal("a nil table hashed a name")
	}
	if _, _, ok := none.Peek(1); ok {
		t.Fatal("a nil table peeked something")
	}
}

// TestTableScan: a scan by cursor gives every entry exactly once when
// nothing changes, and every entry present throughout at least once when
// entries come and go between calls (parts splitting under it), with at
// least count entries per call until the end.
func TestTableScan(t *testing.T) {
	for seed := int64(1); seed <= 12; seed++ {
		rng := rand.New(rand.NewSource(seed))
		size := []int{0, 1, 8, 9, 200, 5000, 30000}[seed%7]
		tbl := NewTable[int](0)
		for i := range size {
			tbl.Put(fmt.Sprint("s", i), i)
		}
		churn := seed%2 == 0
		seen := map[string]int{}
		cursor, calls, added := uint64(0), 0, 0
		for {
			count := 1 + rng.Intn(50)
			n := 0
			cursor = tbl.Scan(cursor, count, func(k string, v int) {
				seen[k]++
				n++
			})
			calls++
			if cursor == 0 {
				break
			}
			if n < count {
				t.Fatalf("seed %d: a call gave %d of count %d before the end", seed, n, count)
			}
			if calls > 2*size+10 {
				t.Fatalf("seed %d: %d calls for %d entries", seed, calls, size)
			}
			if churn { // new entries (some parts split) and deleted ones, not of the s* that stay
				for range 1 + rng.Intn(100) {
					tbl.Put(fmt.Sprint("n", added), -1)
					added++
				}
				for range rng.Intn(50) {
					tbl.Delete(fmt.Sprint("n", rng.Intn(added)))
				}
			}
		}
		for i := range size {
			k := fmt.Sprint("s", i)
			if c := seen[k]; c == 0 || (!churn && c != 1) {
				t.Fatalf("seed %d (churn %v): %s given %d times", seed, churn, k, c)
			}
		}
		if !churn && len(seen) != size {
			t.Fatalf("seed %d: %d names given, %d entries", seed, len(seen), size)
		}
	}
}

// TestTableSmallKeepsOrder: a small table (a small hash or set) lists its
// entries in the order they were put in, deletions included (as Redis
// lists a small hash: HGETALL's order), and All may delete the entry it
// yields in any table without skipping one.
func TestTableSmallKeepsOrder(t *testing.T) {
	tbl := NewTable[int](0)
	for i, k := range []string{"x", "a", "m", "b", "q", "c"} {
		tbl.Put(k, i)
	}
	tbl.Delete("m")
	tbl.Put("z", 9)
	tbl.Put("a", 7) // (an update keeps its place)
	var got []string
	for k := range tbl.All() {
		got = append(got, k)
	}
	if fmt.Sprint(got) != "[x a b q c z]" {
		t.Fatalf("order %v", got)
	}
	for k := range tbl.All() { // deleting each as it comes: none skipped
		tbl.Delete(k)
	}
	if tbl.Len() != 0 {
		t.Fatalf("%d left after deleting each entry yielded", tbl.Len())
	}
}

// TestTableFilledInAnotherTablesOrder: a table filled in the order of
// another's All (Merge copying a big delta's members into a small set, a
// decoder) gets its names sorted by their hashes' top bits, so a part's
// entries may all fall on one side of a split; the table must split again
// rather than let a part outgrow what a slot's index holds.
func TestTableFilledInAnotherTablesOrder(t *testing.T) {
	src := NewTable[int](0)
	model := map[string]int{}
	for i := range 50000 {
		k := fmt.Sprint("m", i)
		src.Put(k, i)
		model[k] = i
	}
	dst := NewTable[int](0)
	dst.Put("m1", 1)
	for k, v := range src.All() {
		dst.Put(k, v)
	}
	checkTable(t, dst, model)
	checkTable(t, src.Clone(func(v int) int { return v }), model)
}

// TestBigSetRoundTrips: a set of many parts encoded (in its table's
// order: by the hashes' top bits) and decoded, and merged whole into a
// small set, keeps every member (the decoder and the merge fill a table in
// another's order; see TestTableFilledInAnotherTablesOrder).
func TestBigSetRoundTrips(t *testing.T) {
	c := NewClock("A")
	big := &State{}
	var ms [][]byte
	for i := range 20000 {
		ms = append(ms, []byte(fmt.Sprint("m", i)))
	}
	big.Merge(ReplaceSet(big, Op{HLC: c.Now(1)}, ms))
	got, err := DecodeState(AppendState(nil, big))
	if err != nil {
		t.Fatal(err)
	}
	small := &State{} // (another region's: its dots are its own)
	small.Merge(SAdd(small, Op{HLC: NewClock("B").Now(2)}, [][]byte{[]byte("m1"), []byte("x")}))
	small.Merge(big)
	for _, st := range []*State{got, small} {
		for _, m := range ms {
			if !st.HasMember(string(m)) {
				t.Fatalf("%s lost", m)
			}
		}
		for p := range st.Set.parts() {
			if len(p.ents) > partMax+1 {
				t.Fatalf("a part of %d entries", len(p.ents))
			}
		}
	}
	if !Equal(got, big) {
		t.Fatal("decoded set differs")
	}
}

// TestBigSetsConverge: three regions add, remove and replace members of
// sets of thousands (tables of many parts, split in whatever order the
// merges fill them), deltas encoded and delivered in random order with
// duplicates: the merge laws hold on the states met along the way, and
// all end equal.
func TestBigSetsConverge(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewSource(seed))
		var reps [3]*State
		var clocks [3]*Clock
		for i := range reps {
			reps[i], clocks[i] = &State{}, NewClock(string(rune('A'+i)))
		}
		pick := func(n int) [][]byte {
			ms := make([][]byte, n)
			for i := range ms {
				ms[i] = []byte(fmt.Sprint("m", rng.Intn(100000)))
			}
			return ms
		}
		var log [][]byte
		deliver := func(r int, enc []byte) {
			d, err := DecodeState(enc)
			if err != nil {
				t.Fatal(err)
			}
			reps[r].Merge(d)
		}
		now := int64(1000)
		for step := 0; step < 40; step++ {
			r := rng.Intn(3)
			st, op := reps[r], Op{HLC: clocks[r].Now(now)}
			now++
			var d *State
			switch x := rng.Intn(10); {
			case step == 3: // a big replacement reaching regions whose sets are small
				d = ReplaceSet(st, op, pick(25000))
			case x < 6:
				d = SAdd(st, op, pick(1+rng.Intn(800)))
			case x < 9:
				d = SRem(st, pick(1+rng.Intn(400)))
			default:
				d = ReplaceSet(st, op, pick(2000+rng.Intn(2000)))
			}
			enc := AppendState(nil, d)
			st.Merge(d)
			log = append(log, enc)
			for range rng.Intn(4) { // some deltas reach others early (and again later)
				deliver(rng.Intn(3), log[rng.Intn(len(log))])
			}
		}
		a, b, c := reps[0].Clone(), reps[1].Clone(), reps[2].Clone()
		join := func(x, y *State) *State { z := x.Clone(); z.Merge(y); return z }
		if !Equal(join(a, b), join(b, a)) || !Equal(join(join(a, b), c), join(a, join(b, c))) || !Equal(join(a, a), a) {
			t.Fatalf("seed %d: merge laws fail on big sets", seed)
		}
		for r := range reps {
			for _, i := range rng.Perm(len(log)) {
				deliver(r, log[i])
			}
		}
		for r := 1; r < 3; r++ {
			if !Equal(reps[0], reps[r]) {
				t.Fatalf("seed %d: %c and A differ (%d vs %d members)", seed, 'A'+r, reps[r].Set.Len(), reps[0].Set.Len())
			}
		}
		for _, m := range reps[0].Members() {
			if !reps[1].HasMember(m) {
				t.Fatalf("seed %d: %s missing", seed, m)
			}
		}
		for p := range reps[0].Set.parts() {
			if len(p.ents) > partMax+1 {
				t.Fatalf("seed %d: a part of %d entries", seed, len(p.ents))
			}
		}
		if reps[0].Set.Len() < 1000 {
			t.Fatalf("seed %d: only %d members: not a big set", seed, reps[0].Set.Len())
		}
	}
}

// TestHashLenKept: HashLen's count kept beside a big hash's table
// (Table.Aux) stays the count of fields holding a value through random
// HSETs, HDELs and HINCRBYs (a deleted counter leaves its floor: a field
// holding no value), another region's concurrent deltas merged in random
// order, and Compact — checked against a fresh count after every step,
// and the kept count used most of the time.
func TestHashLenKept(t *testing.T) {
	for seed := int64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewSource(seed))
		a, b := &State{}, &State{}
		ca, cb := NewClock("A"), NewClock("B")
		field := func() []byte { return []byte(fmt.Sprint("f", rng.Intn(5000))) }
		var toA []*State // B's deltas not yet merged into A
		now := int64(1000)
		kept := 0
		for step := 0; step < 3000; step++ {
			now++
			st, clk := a, ca
			if rng.Intn(4) == 0 {
				st, clk = b, cb
			}
			op := Op{HLC: clk.Now(now)}
			var d *State
			switch x := rng.Intn(10); {
			case x < 5:
				d = HSet(st, op, [][]byte{field(), []byte("v"), field(), []byte("w")})
			case x < 7:
				d = HDel(st, [][]byte{field(), field()})
			default:
				d = HIncrBy(st, op, field(), 1)
			}
			d, _ = DecodeState(AppendState(nil, d)) // (a copy: the pooled delta goes back)
			st.Merge(d)
			if st == b {
				toA = append(toA, d)
			}
			if len(toA) > 0 && rng.Intn(3) == 0 { // B's deltas reach A late, out of order
				i := rng.Intn(len(toA))
				a.Merge(toA[i])
				toA = append(toA[:i], toA[i+1:]...)
			}
			if rng.Intn(500) == 0 {
				a.Compact()
			}
			if _, ok := a.Hash.Aux(); ok {
				kept++
			}
			want := 0
			for _, r := range a.Hash.All() {
				if r.Exists() {
					want++
				}
			}
			if got := a.HashLen(); got != want {
				t.Fatalf("seed %d step %d: HashLen %d, %d fields hold a value", seed, step, got, want)
			}
		}
		if a.Hash.Len() < 2000 || kept < 1000 {
			t.Fatalf("seed %d: %d fields, the kept count used %d times of 3000", seed, a.Hash.Len(), kept)
		}
	}
}

// A part's scanFrom, against every slot it holds: what it gives is from
// from on and below the bound, every entry from from to the bound is
// given, and at least need are (unless it gives all). Hashes are chosen
// so that many entries' homes are the last slots and their probes come
// round the end; deletions shift slots back.
func TestPartScanFrom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := range 3000 {
		depth := uint8(rng.Intn(3))
		var base uint64
		if depth > 0 {
			base = uint64(rng.Intn(1<<depth)) << (64 - depth)
		}
		n := 9 + rng.Intn(60)
		p := &tablePart[int]{depth: depth}
		bits := uint8(4)
		for 3<<bits < 4*n {
			bits++
		}
		p.slots, p.bits = make([]uint64, 1<<bits), bits
		fps := map[uint64]int{} // live entries' bits -> index
		bitsOf := func() uint64 {
			var low uint64
			switch rng.Intn(3) {
			case 0: // home in the last slots
				low = ^uint64(0) - rng.Uint64()>>5
			case 1: // in the first
				low = rng.Uint64() >> 5
			default:
				low = rng.Uint64()
			}
			return fpOf(base | low>>depth)
		}
		for i := range n {
			fp := bitsOf()
			if _, dup := fps[fp]; dup {
				continue
			}
			p.ents = append(p.ents, tableEnt[int]{key: fmt.Sprint(i), val: i})
			p.place(fp, len(p.ents)-1)
			fps[fp] = len(p.ents) - 1
		}
		for fp, i := range fps { // delete a third (map order: random)
			if rng.Intn(3) == 0 {
				p.unslot(fp, i)
				delete(fps, fp)
			}
		}
		from := base
		if rng.Intn(4) != 0 {
			from = bitsOf()
		}
		need := 1 + rng.Intn(8)
		got, bound := p.scanFrom(nil, from, need)
		given := map[uint64]bool{}
		for _, s := range got {
			fp := fpOf(s)
			if fp < from || (bound != 0 && fp >= bound) {
				t.Fatalf("round %d: %x given, from %x bound %x", round, fp, from, bound)
			}
			given[fp] = true
		}
		for fp := range fps {
			if fp >= from && (bound == 0 || fp < bound) && !given[fp] {
				t.Fatalf("round %d: %x not given, from %x bound %x", round, fp, from, bound)
			}
		}
		if bound != 0 && len(got) < need {
			t.Fatalf("round %d: %d given for need %d, bound %x", round, len(got), need, bound)
		}
	}
}
