package crdt

import (
	"encoding/binary"
	"math"
	"testing"
)

// testRegions is a Regions table for tests.
type testRegions struct{ names []string }

func (t *testRegions) Index(name string) uint64 {
	for i, n := range t.names {
		if n == name {
			return uint64(i)
		}
	}
	t.names = append(t.names, name)
	return uint64(len(t.names) - 1)
}

func (t *testRegions) Name(i uint64) (string, bool) {
	if i >= uint64(len(t.names)) {
		return "", false
	}
	return t.names[i], true
}

// checkPacked packs st, unpacks it into a used state, and requires the same
// state back (flags included), and that every truncation fails.
func checkPacked(t *testing.T, tbl *testRegions, what string, st *State) []byte {
	t.Helper()
	b := AppendPacked(nil, st, tbl)
	stale := NewTable[[]Dot](1)
	stale.Put("stale", nil)
	got := &State{Scoped: true, Set: stale, live: &liveHint{field: "x", r: &Reg{Base: []Base{{Val: []byte("stale")}}}}}
	if err := UnpackInto(got, b, tbl); err != nil {
		t.Fatalf("%s: unpack: %v", what, err)
	}
	if !Equal(got, st) || got.Scoped != st.Scoped || got.ExpTouched != st.ExpTouched || (st.Str == nil) != (got.Str == nil) {
		t.Fatalf("%s: round trip differs:\n got %s\nwant %s", what, dump(got), dump(st))
	}
	if view(got) != view(st) {
		t.Fatalf("%s: reads differ: %s vs %s", what, view(got), view(st))
	}
	if PackedIsString(b) != (st.Str != nil) {
		t.Fatalf("%s: PackedIsString %v for a state with register %v", what, PackedIsString(b), st.Str)
	}
	if st.Str != nil {
		// a string key unpacks into a StringRoom (keyspace's warm path)
		room := new(StringRoom)
		got, err := room.Unpack(b, tbl)
		if err != nil {
			t.Fatalf("%s: unpack into a room: %v", what, err)
		}
		if !Equal(got, st) || got.Scoped != st.Scoped || got.Str == nil || view(got) != view(st) {
			t.Fatalf("%s: room round trip differs:\n got %s\nwant %s", what, dump(got), dump(st))
		}
		// its short values are kept in the room, one buffer each
		want := uint8(0)
		for i, x := range st.Str.Base {
			if i < len(room.val) && len(x.Val) > 0 && len(x.Val) <= roomVal {
				want |= 1 << i
			}
		}
		if got := roomUse(got.Str.Base, &room.val); got != want {
			t.Fatalf("%s: values in the room's buffers %b, want %b", what, got, want)
		}
	}
	for cut := 0; cut < len(b); cut++ {
		if err := UnpackInto(&State{}, b[:cut], tbl); err == nil {
			t.Fatalf("%s: truncated packed form (%d of %d bytes) unpacked", what, cut, len(b))
		}
	}
	return b
}

// Every state and delta the simulation makes (several regions, concurrent
// writes of every type, counters, expiry, gaps in contexts) packs and
// unpacks to itself; merging into an unpacked state gives what merging into
// the original gives.
func TestPackedRoundTrip(t *testing.T) {
	for seed := int64(1); seed <= 6; seed++ {
		s := newSim(t, seed, 3)
		s.run(400)
		tbl := &testRegions{}
		for _, r := range s.reps {
			for k, st := range r.keys {
				checkPacked(t, tbl, r.name+"/"+k, st)
			}
		}
		for i, m := range s.log {
			d, err := DecodeState(m.delta)
			if err != nil {
				t.Fatal(err)
			}
			checkPacked(t, tbl, "delta", d)
			if i%7 == 0 {
				st := s.reps[0].state(m.key)
				var un State
				packed := AppendPacked(nil, st, tbl)
				if err := UnpackInto(&un, packed, tbl); err != nil {
					t.Fatal(err)
				}
				a, b := st.Clone(), &un
				a.Merge(d)
				b.Merge(d)
				if !Equal(a, b) {
					t.Fatalf("merge into an unpacked state differs")
				}
				if PackedIsString(packed) {
					c, err := new(StringRoom).Unpack(packed, tbl)
					if err != nil {
						t.Fatal(err)
					}
					if c.Merge(d); !Equal(a, c) {
						t.Fatalf("merge into a state unpacked in a room differs")
					}
				}
			}
		}
	}
}

// A small string key packs small: the point of the form.
func TestPackedSize(t *testing.T) {
	tbl := &testRegions{}
	op := Op{HLC: HLC{Phys: 1795000000000, Region: "eu-west"}}
	st := &State{}
	st.Merge(SetString(st, op, []byte("abc"), false))
	b := checkPacked(t, tbl, "SET", st)
	if len(b) > 24 {
		t.Fatalf("a 3-byte string key packs into %d bytes, want <= 24", len(b))
	}
	// a second write by another region, a counter and a deadline still round-trip
	op2 := Op{HLC: HLC{Phys: 1795000000005, Log: 3, Region: "us-east"}}
	st.Merge(IncrBy(st, op2, 5))
	st.Merge(Expire(st, op2, 1795000060000))
	checkPacked(t, tbl, "INCR+EXPIRE", st)
	if bad := UnpackInto(&State{}, b, &testRegions{}); bad == nil {
		t.Fatalf("a region index missing from the table unpacked")
	}
}

// The decoder's one-byte fast paths read what encoding/binary writes, and
// hand longer varints to it.
func TestDecoderVarints(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 63, -64, 64, -65, 127, 128, 300, -300, math.MaxInt64, math.MinInt64} {
		d := decoder{b: binary.AppendVarint(binary.AppendUvarint(nil, uint64(v)), v)}
		if got := d.uv(); got != uint64(v) || d.err != nil {
			t.Fatalf("uv of %d: %d, %v", uint64(v), got, d.err)
		}
		if got := d.iv(); got != v || d.err != nil || len(d.b) != 0 {
			t.Fatalf("iv of %d: %d, %v, %d bytes left", v, got, d.err, len(d.b))
		}
	}
	for _, b := range [][]byte{nil, {0x80}, {0xff, 0xff}} { // truncated
		if d := (decoder{b: b}); d.uv() != 0 || d.err == nil {
			t.Fatalf("uv of %x: no error", b)
		}
		if d := (decoder{b: b}); d.iv() != 0 || d.err == nil {
			t.Fatalf("iv of %x: no error", b)
		}
	}
}
