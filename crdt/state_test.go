package crdt

import "testing"

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
	stale := s.liveField // names a or b: drop that one
	other := map[string]string{"a": "b", "b": "a"}[stale]
	s.Merge(HDel(s, [][]byte{[]byte(stale)}))
	if s.liveField != stale || len(s.Hash) != 1 {
		t.Fatalf("setup: live field %q, %d fields", s.liveField, len(s.Hash))
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
