package crdt

import (
	"math/rand/v2"
	"testing"
)

// HSetAdded counts the fields absent before (a field named twice once),
// whatever the hash held: live fields, deleted ones, repeats.
func TestHSetAddedCountsNewFields(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	c := NewClock("A")
	for round := 0; round < 500; round++ {
		s := &State{}
		for i := 0; i < r.IntN(6); i++ {
			f := []byte{'f', byte('0' + r.IntN(6))}
			s.Merge(HSet(s, Op{HLC: c.Now(int64(round))}, [][]byte{f, []byte("v")}))
			if r.IntN(3) == 0 {
				s.Merge(HDel(s, [][]byte{f}))
			}
		}
		var pairs [][]byte
		want, seen := 0, map[string]bool{}
		for i := 0; i < 1+r.IntN(5); i++ {
			f := string([]byte{'f', byte('0' + r.IntN(6))})
			pairs = append(pairs, []byte(f), []byte("w"))
			if !s.HasField(f) && !seen[f] {
				want++
			}
			seen[f] = true
		}
		if _, got := HSetAdded(s, Op{HLC: c.Now(int64(round))}, pairs); got != want {
			t.Fatalf("round %d: %d added, want %d (pairs %q)", round, got, want, pairs)
		}
	}
}

// A copy of a pooled delta by value is never itself released as one (it is
// not the first field of a pooled struct): Header and Assign clear the mark.
func TestCopiesOfPooledDeltasAreNotPooled(t *testing.T) {
	op := Op{HLC: HLC{Phys: 1, Region: "A"}}
	for _, d := range []*State{
		SetString(&State{}, op, []byte("v"), false),
		IncrBy(&State{}, op, 1),
		HSet(&State{}, op, [][]byte{[]byte("f"), []byte("v")}),
		SAdd(&State{}, op, [][]byte{[]byte("m")}),
	} {
		if d.pool == 0 {
			t.Fatalf("%s: not pooled", dump(d))
		}
		var a State
		a.Assign(d)
		if h := d.Header(); h.pool != 0 || a.pool != 0 || d.Clone().pool != 0 {
			t.Fatalf("a copy of %s is marked pooled", dump(d))
		}
		Release(d)
	}
}

// A StringRoom keeps a short value in itself (no allocation of its own),
// and a value read before a write stays intact through that write (SET ...
// GET and GETSET reply with it after the merge): a merge writes a new value
// into the buffer the register's old values do not use. Longer values, a
// second concurrent base, a delete and a re-created value all read back.
func TestRoomValues(t *testing.T) {
	room := new(StringRoom)
	st := room.State()
	a, b := NewClock("A"), NewClock("B")
	vals := []string{"v0", "12345678", "long value of 24 bytes..", "x", "", "y", "abcdefgh", "z"}
	prev, ok := "", false
	for i := 0; i < 40; i++ {
		v := vals[i%len(vals)]
		old, had, _ := st.Str.Get()
		var d *State
		switch i % 10 {
		case 7: // deleted, then set again: the room's register comes back
			d = Delete(st)
			v, had = "", ok
		default:
			d = SetString(st, Op{HLC: a.Now(int64(i))}, []byte(v), false)
		}
		st.Merge(d)
		Release(d)
		if had != ok || string(old) != prev {
			t.Fatalf("write %d: the value read before it became %q (had %v), want %q (%v)", i, old, had, prev, ok)
		}
		got, exists, _ := st.Str.Get()
		if i%10 == 7 {
			if exists || st.Str != nil {
				t.Fatalf("write %d: deleted key reads %q", i, got)
			}
			prev, ok = "", false
			continue
		}
		if !exists || string(got) != v {
			t.Fatalf("write %d: read %q (%v), want %q", i, got, exists, v)
		}
		if st.Str != &room.reg.r {
			t.Fatalf("write %d: the register left the room", i)
		}
		if inRoom := roomUse(st.Str.Base, &room.val) != 0; inRoom != (len(v) > 0 && len(v) <= roomVal) {
			t.Fatalf("write %d: value %q in the room: %v", i, v, inRoom)
		}
		prev, ok = v, true
	}
	// a concurrent write from B keeps both bases; both values read back
	// after a further merge of A's (three bases, the room's two buffers)
	plain := st.Clone()
	db := SetString(plain, Op{HLC: b.Now(1 << 40)}, []byte("fromB"), false)
	da := SetString(plain, Op{HLC: a.Now(1 << 40)}, []byte("fromA"), false)
	dc := SetString(&State{}, Op{HLC: NewClock("C").Now(1 << 41)}, []byte("fromC"), false)
	for _, d := range []*State{db, da, dc} {
		st.Merge(d)
		plain.Merge(d)
	}
	var c State
	if c.Assign(st); c.room || st.Header().room {
		t.Fatal("a copy of a room's state is marked as a room")
	}
	if len(st.Str.Base) != 3 || !Equal(st, plain) {
		t.Fatalf("room %s\nplain %s", dump(st), dump(plain))
	}
	seen := map[string]bool{}
	for _, x := range st.Str.Base {
		seen[string(x.Val)] = true
	}
	if !seen["fromA"] || !seen["fromB"] || !seen["fromC"] {
		t.Fatalf("bases %+v", st.Str.Base)
	}
}

// A set's and a hash's creation stamps are shared by copies of a state
// (Header, Assign) and by a state and the deltas made from it, so a change
// replaces them and never writes them in place: a copy keeps the stamps it
// was made with, and a state that merged a pooled SADD or HSET delta keeps
// its stamps after the delta's memory is reused.
func TestCreationStampsAreNotSharedMutably(t *testing.T) {
	c := NewClock("A")
	s := &State{}
	d := SAdd(s, Op{HLC: c.Now(1)}, [][]byte{[]byte("m")})
	s.Merge(d)
	setT := s.SetT()
	Poison(d) // a pooled delta's stamps are its own memory, reused after Release
	if setT.IsZero() || s.SetT() != setT || !s.HashT().IsZero() {
		t.Fatalf("after SADD: set stamp %v (%v before the delta's release), hash stamp %v", s.SetT(), setT, s.HashT())
	}
	h := s.Header()
	var a State
	a.Assign(s)
	// the key becomes a hash: a new hash stamp replaces the pair
	s.Merge(ReplaceHash(s, Op{HLC: c.Now(2)}, [][]byte{[]byte("f"), []byte("v")}))
	hashT := s.HashT()
	if hashT.IsZero() || s.Type() != TypeHash {
		t.Fatalf("after the hash write: %s", dump(s))
	}
	for name, cp := range map[string]*State{"Header": h, "Assign": &a} {
		if cp.SetT() != setT || !cp.HashT().IsZero() {
			t.Fatalf("%s's copy changed with the state: set %v hash %v", name, cp.SetT(), cp.HashT())
		}
	}
	d = HSet(s, Op{HLC: c.Now(3)}, [][]byte{[]byte("g"), []byte("w")})
	s.Merge(d)
	Poison(d)
	if s.HashT() != hashT || s.SetT() != setT {
		t.Fatalf("a released HSET delta changed the state's stamps: set %v hash %v", s.SetT(), s.HashT())
	}
	d = SAdd(s, Op{HLC: c.Now(4)}, [][]byte{[]byte("m2")})
	s.Merge(d)
	got := s.SetT()
	Poison(d)
	if s.SetT() != got {
		t.Fatalf("a released SADD delta changed the state's set stamp: %v, was %v", s.SetT(), got)
	}
}

// SetStringExpire's one delta is SetString's followed by Expire's: the same
// state wherever it is merged (the writer's and every other replica's of a
// random history), whatever deadlines, concurrent ones included, the key
// had.
func TestSetStringExpireIsSetThenExpire(t *testing.T) {
	for seed := int64(1); seed <= 60; seed++ {
		s := newSim(t, seed, 3)
		s.run(120)
		for _, k := range simKeys {
			w := s.reps[0].state(k)
			op := Op{HLC: s.reps[0].clock.Now(s.now + 1)}
			at := s.now + 5000
			one := SetStringExpire(w, op, []byte("v"), at)
			enc := AppendState(nil, one) // (one is pooled: encoded before it is merged anywhere)
			w1 := w.Clone()
			d1 := SetString(w1, op, []byte("v"), false)
			w1.Merge(d1)
			d2 := Expire(w1, op, at)
			w1.Merge(d2)
			w2 := w.Clone()
			w2.Merge(one)
			if !Equal(w1, w2) {
				t.Fatalf("seed %d %s: at the writer\n%s\n%s", seed, k, dump(w1), dump(w2))
			}
			for _, r := range s.reps[1:] {
				x, y := r.state(k).Clone(), r.state(k).Clone()
				x.Merge(d1)
				x.Merge(d2)
				dd, err := DecodeState(enc)
				if err != nil {
					t.Fatal(err)
				}
				y.Merge(dd)
				if !Equal(x, y) {
					t.Fatalf("seed %d %s: at %s\n%s\n%s", seed, k, r.name, dump(x), dump(y))
				}
			}
		}
	}
}

// A run of APPENDs (and SETRANGEs past the end) to a value of the key's
// own writes its values in place once one has room, and everything that
// held an earlier value keeps reading it: the values read, and the deltas
// encoded only after the whole run (as a group commit encodes them after
// later commands ran), which a peer resolving them in order turns into
// the same values. A SETRANGE within the value copies it.
func TestSpliceInPlaceKeepsWhatWasRead(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 9))
	c := NewClock("A")
	s, peer := &State{}, &State{}
	d0 := SetString(s, Op{HLC: c.Now(1)}, []byte("0123456789abcdefghij"), false)
	p0, err := DecodeState(AppendState(nil, d0))
	if err != nil {
		t.Fatal(err)
	}
	s.Merge(d0)
	peer.Merge(p0)
	var reads, wants []string // the values read before each write, copies
	var held [][]byte         // and the values themselves, as a reply would hold them
	var kds []KeyDelta
	inPlace, owns := 0, false
	for i := 0; i < 2000; i++ {
		old, _ := s.StrValue()
		reads, held = append(reads, string(old)), append(held, old)
		at, v := len(old), []byte{byte('a' + r.IntN(26)), byte('a' + r.IntN(26))}
		switch r.IntN(10) {
		case 0: // SETRANGE within the value
			at = r.IntN(len(old))
		case 1: // SETRANGE past the end
			at = len(old) + r.IntN(3)
		}
		d, x := splice(s, Op{HLC: c.Now(int64(2 + i))}, old, at, v, true, owns, 1)
		if x == nil {
			t.Fatalf("write %d: no Extend for the key's own value", i)
		}
		if &d.Str.Base[0].Val[0] == &old[0] {
			inPlace++
		}
		s.Merge(d)
		owns = true
		kds = append(kds, KeyDelta{Key: "k", Delta: d, Ext: x})
		want := []byte(reads[i])
		for len(want) < at+len(v) {
			want = append(want, 0)
		}
		copy(want[at:], v)
		wants = append(wants, string(want))
	}
	for i, h := range held {
		if string(h) != reads[i] {
			t.Fatalf("the value read before write %d changed", i)
		}
	}
	if inPlace < 1000 {
		t.Fatalf("%d of 2000 writes in place", inPlace)
	}
	// a peer that holds the first value resolves the deltas, encoded now,
	// in order, in place too
	owns = false
	for i := range kds {
		got, err := DecodeBatch(AppendBatch(nil, kds[i:i+1]))
		if err != nil {
			t.Fatal(err)
		}
		ok, built := ResolveExtend(peer, &got[0], owns)
		if !ok || !built {
			t.Fatalf("delta %d did not resolve at the peer (%v %v)", i, ok, built)
		}
		if v := got[0].Delta.Str.Base[0].Val; string(v) != wants[i] {
			t.Fatalf("delta %d, encoded after the run, resolves to %d bytes, want %d", i, len(v), len(wants[i]))
		}
		peer.Merge(got[0].Delta)
		owns = true
	}
	if a, b := view(s), view(peer); a != b {
		t.Fatalf("writer and peer differ: %s vs %s", a, b)
	}
}
