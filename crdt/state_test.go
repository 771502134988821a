package crdt

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
)

// EachField visits every field once: an HSET delta's one field without an
// iteration, and a one-field state whose live-field hint names a field
// gone by the map.
func TestEachField(t *testing.T) {
	visit := func(s *State) map[string]string {
		got := map[string]string{}
		s.EachField(func(f string, r *Reg) {
			if _, dup := got[f]; dup {
				t.Fatalf("field %q visited twice", f)
			}
			v, _, _ := r.Get()
			got[f] = string(v)
		})
		return got
	}
	op := Op{HLC: HLC{Phys: 1, Region: "A"}}
	d, _ := HSetAdded(&State{}, op, [][]byte{[]byte("f"), []byte("v")})
	if got := visit(d); len(got) != 1 || got["f"] != "v" {
		t.Fatalf("one-field delta: %v", got)
	}
	s := &State{}
	s.Merge(HSet(s, op, [][]byte{[]byte("a"), []byte("1"), []byte("b"), []byte("2")}))
	if !s.hashExists() {
		t.Fatal("no live field")
	}
	stale, _ := s.liveReg() // names a or b: drop that one
	other := map[string]string{"a": "b", "b": "a"}[stale]
	s.Merge(HDel(s, [][]byte{[]byte(stale)}))
	if s.live.field != stale || s.Hash.Len() != 1 {
		t.Fatalf("setup: live field %q, %d fields", s.live.field, s.Hash.Len())
	}
	if got := visit(s); len(got) != 1 || got[other] == "" {
		t.Fatalf("one field left (%s), hint %q: visited %v", other, stale, got)
	}
	big := &State{}
	big.Merge(HSet(big, op, [][]byte{[]byte("x"), []byte("1"), []byte("y"), []byte("2"), []byte("z"), []byte("3")}))
	if got := visit(big); len(got) != 3 {
		t.Fatalf("three fields: visited %v", got)
	}
}

// The live-field hint never makes a hash read as live when it is not, nor
// an HSET delta read an older value: a field named twice in one command,
// the hinted field removed, a header copy filled with fields of its own.
func TestLiveHint(t *testing.T) {
	op := func(n int64) Op { return Op{HLC: HLC{Phys: n, Region: "A"}} }
	args := func(s ...string) [][]byte {
		var out [][]byte
		for _, x := range s {
			out = append(out, []byte(x))
		}
		return out
	}
	d, added := HSetAdded(&State{}, op(1), args("f", "1", "f", "2"))
	var seen []string
	d.EachField(func(f string, r *Reg) { v, _, _ := r.Get(); seen = append(seen, f+"="+string(v)) })
	if len(seen) != 1 || seen[0] != "f=2" || added != 1 {
		t.Fatalf("HSET f 1 f 2: delta holds %v, added %d", seen, added)
	}

	s := &State{}
	s.Merge(HSet(s, op(2), args("a", "1", "b", "2")))
	if s.Type() != TypeHash {
		t.Fatal("not a hash")
	}
	first, _ := s.liveReg()
	s.Merge(HDel(s, args(first)))
	if s.Type() != TypeHash {
		t.Fatalf("one field left after HDEL %s: type %v", first, s.Type())
	}
	rest, _ := s.liveReg()
	if rest == first || rest == "" {
		t.Fatalf("hint still names %q (removed)", rest)
	}
	s.Merge(HDel(s, args(rest)))
	if s.Type() != TypeNone {
		t.Fatalf("no field left: type %v", s.Type())
	}

	s = &State{}
	s.Merge(HSet(s, op(3), args("a", "1")))
	if s.Type() != TypeHash {
		t.Fatal("not a hash")
	}
	h := s.Header() // its fields are loaded apart: here one removed field
	if err := h.AddElement(ElemField, "z", AppendField(nil, &Reg{Floor: []Count{{Region: "A", N: 1}}})); err != nil {
		t.Fatal(err)
	}
	if h.Type() != TypeNone {
		t.Fatalf("a header holding one removed field reads as %v", h.Type())
	}
}

// A state merging a SET or HSET delta shares the delta's long value
// instead of copying it (a 100 MB SET was copied twice), and keeps it
// intact after the delta is released and its memory reused, or the
// message it was decoded from; a short value, inline in the pooled
// delta, is copied.
func TestMergeSharesLongValues(t *testing.T) {
	op := func(n int64) Op { return Op{HLC: HLC{Phys: n, Region: "A"}} }
	long := bytes.Repeat([]byte("v"), 1000)
	for _, tc := range []struct {
		name  string
		val   []byte
		share bool
	}{{"long", long, true}, {"short", []byte("12345678"), false}} {
		s := &State{}
		d := SetString(s, op(1), tc.val, false)
		s.Merge(d)
		h := &State{}
		hd := HSet(h, op(1), [][]byte{[]byte("f"), tc.val})
		h.Merge(hd)
		got, _, _ := s.Str.Get()
		dv, _, _ := d.Str.Get()
		fv, _ := h.Field("f")
		hv, _, _ := hd.Hash.Get("f").Get()
		if shared := &got[0] == &dv[0]; shared != tc.share {
			t.Errorf("%s SET: value shared with the delta %v, want %v", tc.name, shared, tc.share)
		}
		if shared := &fv[0] == &hv[0]; shared != tc.share {
			t.Errorf("%s HSET: value shared with the delta %v, want %v", tc.name, shared, tc.share)
		}
		Release(d)
		Release(hd)
		for i := 0; i < 4; i++ { // the pools hand the released deltas out again
			Release(SetString(&State{}, op(2), []byte("xxxxxxxx"), false))
			Release(HSet(&State{}, op(2), [][]byte{[]byte("f"), []byte("yyyyyyyy")}))
		}
		if got, _, _ := s.Str.Get(); !bytes.Equal(got, tc.val) {
			t.Errorf("%s SET: value after the delta's reuse %q", tc.name, got)
		}
		if fv, _ := h.Field("f"); !bytes.Equal(fv, tc.val) {
			t.Errorf("%s HSET: value after the delta's reuse %q", tc.name, fv)
		}
	}
	// a decoded delta's value is a copy, not the message's bytes: shared
	// too, and intact when the message's buffer is reused
	for _, tc := range []struct {
		name string
		d    *State
	}{
		{"SET", SetString(&State{}, op(1), long, false)},
		{"HSET", HSet(&State{}, op(1), [][]byte{[]byte("f"), long})},
	} {
		msg := AppendState(nil, tc.d)
		dec, err := DecodeState(msg)
		if err != nil {
			t.Fatal(err)
		}
		s := &State{}
		s.Merge(dec)
		for i := range msg {
			msg[i] = '!'
		}
		got, _ := s.Field("f")
		if tc.name == "SET" {
			got, _, _ = s.Str.Get()
		}
		if !bytes.Equal(got, long) {
			t.Errorf("%s: the value merged from a decoded delta reads %.20q… once the message is overwritten", tc.name, got)
		}
	}
}

// Values of bigValue bytes and more are written by finish, not copied
// into the encoder's buffer first: every encoding of a state holding
// several of them, between small ones, decodes to the same state, and a
// batch of one 4 MB value allocates about its size once.
func TestBigValuesEncoded(t *testing.T) {
	op := func(n int64) Op { return Op{HLC: HLC{Phys: n, Region: "A"}} }
	big := func(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }
	s := &State{}
	s.Merge(HSet(s, op(1), [][]byte{[]byte("a"), big('a', bigValue), []byte("s"), []byte("small"), []byte("b"), big('b', 3*bigValue+5)}))
	str := &State{}
	str.Merge(SetString(str, op(2), big('s', 2*bigValue), false))
	for _, st := range []*State{s, str} {
		if got, err := DecodeState(AppendState([]byte("prefix"), st)[6:]); err != nil || !Equal(got, st) {
			t.Fatalf("AppendState: %v", err)
		}
		b := AppendBatch([]byte("x"), []KeyDelta{{Key: "k", Delta: st}, {Key: "k2", Delta: str}})
		kds, err := DecodeBatch(b[1:])
		if err != nil || len(kds) != 2 || !Equal(kds[0].Delta, st) || !Equal(kds[1].Delta, str) {
			t.Fatalf("AppendBatch: %d deltas, %v", len(kds), err)
		}
		tbl := &testRegions{}
		got := &State{}
		if err := UnpackInto(got, AppendPacked([]byte("p"), st, tbl)[1:], tbl); err != nil || !Equal(got, st) {
			t.Fatalf("AppendPacked: %v", err)
		}
	}
	one := []KeyDelta{{Key: "k", Delta: str}}
	var m0, m1 runtime.MemStats
	huge := &State{}
	huge.Merge(SetString(huge, op(3), big('h', 4<<20), false))
	one[0].Delta = huge
	runtime.ReadMemStats(&m0)
	b := AppendBatch(nil, one)
	runtime.ReadMemStats(&m1)
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > uint64(len(b))*5/4 {
		t.Fatalf("AppendBatch of a 4 MiB value allocated %d KiB", alloc>>10)
	}
}

// EachMember visits every member once with its dots, and nothing of an
// empty or absent set.
func TestEachMember(t *testing.T) {
	op := Op{HLC: HLC{Phys: 1, Region: "A"}}
	s := &State{}
	s.EachMember(func(string, []Dot) { t.Fatal("a member of no set") })
	s.Merge(SAdd(s, op, [][]byte{[]byte("a"), []byte("b")}))
	got := map[string]int{}
	s.EachMember(func(m string, ds []Dot) { got[m] += len(ds) })
	if len(got) != 2 || got["a"] != 1 || got["b"] != 1 {
		t.Fatalf("visited %v", got)
	}
}

// EncodedSize is AppendState's length exactly for samples 0 or a state with
// few elements, and close to it from 5 samples of a big set or hash (two
// regions' dots and registers, values of one length).
func TestEncodedSize(t *testing.T) {
	s := &State{}
	exact := func() int { return len(AppendState(nil, s)) }
	check := func(what string, samples int, tol float64) {
		t.Helper()
		got, want := EncodedSize(s, samples), exact()
		if d := float64(got-want) / float64(want); d > tol || d < -tol {
			t.Fatalf("%s, samples %d: %d, exact %d", what, samples, got, want)
		}
	}
	check("empty", 5, 0)
	for i, r := range []string{"A", "B", "A"} {
		s.Merge(SetString(s, Op{HLC: HLC{Phys: int64(10 + i), Region: r}}, []byte("value"), false))
	}
	check("a string", 5, 0)
	for i := range 3000 {
		r := []string{"A", "B"}[i%2]
		m := []byte(fmt.Sprintf("member:%06d", i))
		s.Merge(SAdd(s, Op{HLC: HLC{Phys: int64(100 + i), Region: r}}, [][]byte{m}))
	}
	check("3000 members", 0, 0)
	check("3000 members", 3000, 0)
	check("3000 members", 5, 0.1)
	h := &State{}
	for i := range 2000 {
		r := []string{"A", "B"}[i%2]
		f := []byte(fmt.Sprintf("field:%06d", i))
		h.Merge(HSet(h, Op{HLC: HLC{Phys: int64(100 + i), Region: r}}, [][]byte{f, []byte("some value")}))
	}
	s = h
	check("2000 fields", 0, 0)
	check("2000 fields", 5, 0.1)
	check("2000 fields", 100, 0.05)
}
