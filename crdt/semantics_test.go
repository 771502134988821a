package crdt

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// Two regions, A and B, start from a shared history, then act concurrently;
// after exchanging deltas both must read want.
func TestConcurrentSemantics(t *testing.T) {
	type step struct {
		region string // "A", "B" or "sync"
		op     func(s *State, o Op) *State
	}
	set := func(v string) func(*State, Op) *State {
		return func(s *State, o Op) *State { return SetString(s, o, []byte(v), false) }
	}
	incr := func(n int64) func(*State, Op) *State {
		return func(s *State, o Op) *State { return IncrBy(s, o, n) }
	}
	sadd := func(m string) func(*State, Op) *State {
		return func(s *State, o Op) *State { return SAdd(s, o, [][]byte{[]byte(m)}) }
	}
	del := func(s *State, o Op) *State { return Delete(s) }
	expire := func(at int64) func(*State, Op) *State {
		return func(s *State, o Op) *State { return Expire(s, o, at) }
	}
	cases := []struct {
		name      string
		steps     []step
		want      string
		conflicts int
	}{
		{"incr counts from every region", []step{{"A", incr(2)}, {"B", incr(3)}, {"A", incr(-1)}}, `string "4" exp=0`, 0},
		{"set absorbs only observed increments", []step{{"A", set("10")}, {"sync", nil}, {"A", incr(2)}, {"B", set("100")}}, `string "102" exp=0`, 0},
		{"later set wins over observed", []step{{"A", incr(5)}, {"sync", nil}, {"B", set("7")}}, `string "7" exp=0`, 0},
		{"non-integer base drops unobserved increments", []step{{"A", set("1")}, {"sync", nil}, {"A", incr(2)}, {"B", set("abc")}}, `string "abc" exp=0`, ConflictNonNumeric},
		{"concurrent SETs: latest HLC wins", []step{{"A", set("a")}, {"B", set("b")}}, `string "b" exp=0`, ConflictLWW},
		{"DEL keeps unobserved increments", []step{{"A", incr(5)}, {"sync", nil}, {"A", incr(2)}, {"B", del}}, `string "2" exp=0`, 0},
		{"DEL keeps unobserved SADD", []step{{"A", sadd("x")}, {"sync", nil}, {"A", sadd("y")}, {"B", del}}, `set [y] exp=0`, 0},
		{"DEL removes observed", []step{{"A", sadd("x")}, {"sync", nil}, {"B", del}}, `none`, 0},
		{"type conflict: later creation wins", []step{{"A", set("v")}, {"B", sadd("m")}}, `set [m] exp=0`, ConflictType},
		{"type conflict other way", []step{{"B", sadd("m")}, {"A", set("v")}}, `string "v" exp=0`, ConflictType},
		{"longest TTL wins", []step{{"A", set("v")}, {"sync", nil}, {"A", expire(5000)}, {"B", expire(9000)}}, `string "v" exp=9000`, 0},
		{"PERSIST wins over TTL", []step{{"A", set("v")}, {"sync", nil}, {"A", expire(0)}, {"B", expire(9000)}}, `string "v" exp=0`, 0},
		{"sequential shorter TTL applies", []step{{"A", set("v")}, {"A", expire(9000)}, {"sync", nil}, {"B", expire(100)}}, `string "v" exp=100`, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, order := range []bool{false, true} {
				regions := map[string]*State{"A": {}, "B": {}}
				clocks := map[string]*Clock{"A": NewClock("A"), "B": NewClock("B")}
				pending := map[string][]*State{}
				now := int64(100)
				for _, s := range tc.steps {
					now++
					if s.region == "sync" {
						for r, ds := range pending {
							other := map[string]string{"A": "B", "B": "A"}[r]
							for _, d := range ds {
								regions[other].Merge(d)
							}
						}
						pending = map[string][]*State{}
						continue
					}
					d := s.op(regions[s.region], Op{HLC: clocks[s.region].Now(now)})
					regions[s.region].Merge(d)
					pending[s.region] = append(pending[s.region], d)
				}
				conflicts := 0
				deliver := []string{"A", "B"}
				if order {
					deliver = []string{"B", "A"}
				}
				for _, r := range deliver {
					other := map[string]string{"A": "B", "B": "A"}[r]
					for _, d := range pending[r] {
						conflicts |= regions[other].Merge(d)
					}
				}
				for r, st := range regions {
					if got := view(st); got != tc.want {
						t.Fatalf("region %s reads %s, want %s", r, got, tc.want)
					}
				}
				if !Equal(regions["A"], regions["B"]) {
					t.Fatalf("states differ")
				}
				if conflicts&tc.conflicts != tc.conflicts {
					t.Fatalf("conflicts %b, want %b", conflicts, tc.conflicts)
				}
			}
		})
	}
}

func TestFormatRatLikeRedis(t *testing.T) {
	for in, want := range map[string]string{"10.5": "10.5", "3.0e3": "3000", "0.1": "0.1", "-0": "0", "5.0e-3": "0.005", "1/3": "0.33333333333333333"} {
		r, ok := ParseFloat([]byte(in))
		if in == "1/3" {
			r, ok = new(ratParser).parse(in)
		}
		if !ok {
			t.Fatalf("parse %s", in)
		}
		if got := FormatRat(r); got != want {
			t.Errorf("FormatRat(%s) = %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"", " 1", "1 ", "abc", "1/2", "0x10", "nan", "inf", "1e99999"} {
		if _, ok := ParseFloat([]byte(bad)); ok {
			t.Errorf("ParseFloat(%q) accepted", bad)
		}
	}
	for in, ok := range map[string]bool{"0": true, "-1": true, "01": false, "+1": false, "-0": false, "9223372036854775807": true, "9223372036854775808": false, "": false} {
		if _, got := ParseInt([]byte(in)); got != ok {
			t.Errorf("ParseInt(%q) ok=%v", in, got)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	s := newSim(t, 42, 3)
	s.run(300)
	for _, r := range s.reps {
		for k, st := range r.keys {
			b := AppendState(nil, st)
			got, err := DecodeState(b)
			if err != nil || !Equal(got, st) {
				t.Fatalf("%s/%s: round trip failed: %v", r.name, k, err)
			}
			// a header appended in place encodes as the Header copy does,
			// also after other bytes in a buffer (a checkpoint's page)
			if h, pre := AppendState(nil, st.Header()), []byte("page"); !bytes.Equal(AppendHeader(pre, st)[len(pre):], h) {
				t.Fatalf("%s/%s: AppendHeader differs from AppendState(Header())", r.name, k)
			}
			batch := AppendBatch(nil, []KeyDelta{{DB: 3, Key: k, Delta: st}, {DB: 0, Key: "x", Delta: &State{}}})
			kds, err := DecodeBatch(batch)
			if err != nil || len(kds) != 2 || kds[0].DB != 3 || kds[0].Key != k || !Equal(kds[0].Delta, st) {
				t.Fatalf("batch round trip failed: %v", err)
			}
			for cut := 0; cut < len(b); cut++ {
				if _, err := DecodeState(b[:cut]); err == nil {
					t.Fatalf("truncated encoding (%d of %d bytes) decoded", cut, len(b))
				}
			}
		}
	}
}

func FuzzDecodeState(f *testing.F) {
	s := newSim(&testing.T{}, 5, 2)
	s.run(60)
	for _, m := range s.log[:min(10, len(s.log))] {
		f.Add(m.delta)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := DecodeState(b)
		if err != nil {
			return
		}
		// whatever decodes must encode, decode to the same, and be usable
		again, err := DecodeState(AppendState(nil, st))
		if err != nil || !Equal(again, st) {
			t.Fatalf("re-encoding differs: %v", err)
		}
		_ = view(st)
		st.Clone().Merge(st)
	})
}

// appendBatchV1 writes a batch in the absolute form (codecVersion) that
// batches had before codecVersionRel: logs and peers may still hold them.
func appendBatchV1(dst []byte, batch []KeyDelta) []byte { return appendBatch(dst, batch, false) }

// Batches of every delta of random histories, in groups of random sizes,
// decode to the deltas they were made of, in both forms, and the relative
// form is the smaller.
func TestBatchRoundTrip(t *testing.T) {
	var rel, abs int
	for seed := int64(1); seed <= 60; seed++ {
		s := newSim(t, seed, 3)
		s.run(150)
		var all []KeyDelta
		for i, m := range s.log {
			d, err := DecodeState(m.delta)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, KeyDelta{DB: i % 3, Key: m.key, Delta: d})
		}
		for len(all) > 0 {
			n := 1 + s.rng.Intn(min(len(all), 40))
			group := all[:n]
			all = all[n:]
			for _, form := range []func([]byte, []KeyDelta) []byte{AppendBatch, appendBatchV1} {
				b := form(nil, group)
				got, err := DecodeBatch(b)
				if err != nil || len(got) != len(group) {
					t.Fatalf("seed %d: %d of %d deltas, %v", seed, len(got), len(group), err)
				}
				for i := range got {
					if got[i].DB != group[i].DB || got[i].Key != group[i].Key || !Equal(got[i].Delta, group[i].Delta) {
						t.Fatalf("seed %d: delta %d differs:\n%s\n%s", seed, i, dump(got[i].Delta), dump(group[i].Delta))
					}
				}
			}
			rel += len(AppendBatch(nil, group))
			abs += len(appendBatchV1(nil, group))
		}
	}
	if rel >= abs {
		t.Fatalf("relative form %d bytes, absolute %d", rel, abs)
	}
	t.Logf("relative form %d bytes, absolute %d (%.2f)", rel, abs, float64(rel)/float64(abs))
}

// States of random histories (as checkpoint pages and anti-entropy carry
// them) decode the same from both forms: pages an earlier build wrote in
// the absolute form still load.
func TestStateBothForms(t *testing.T) {
	var rel, abs int
	for seed := int64(1); seed <= 60; seed++ {
		s := newSim(t, seed, 3)
		s.run(150)
		for _, r := range s.reps {
			for _, k := range simKeys {
				st := r.state(k)
				e := getEncoder() // the absolute form, as AppendState wrote it before
				e.state(st)
				old := e.finish(nil)
				putEncoder(e)
				now := AppendState(nil, st)
				rel, abs = rel+len(now), abs+len(old)
				for _, b := range [][]byte{old, now} {
					got, err := DecodeState(b)
					if err != nil || !Equal(got, st) {
						t.Fatalf("seed %d: form %d: %v\n%s\n%s", seed, b[0], err, dump(got), dump(st))
					}
				}
				if h, err := DecodeState(AppendHeader(nil, st)); err != nil || !Equal(h, st.Header()) {
					t.Fatalf("seed %d: header: %v", seed, err)
				}
			}
		}
	}
	if rel >= abs {
		t.Fatalf("relative form %d bytes, absolute %d", rel, abs)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(AppendBatch(nil, []KeyDelta{{DB: 1, Key: "k", Delta: SAdd(&State{}, Op{HLC: HLC{Phys: 1, Region: "A"}}, [][]byte{[]byte("m")})}}))
	f.Add(appendBatchV1(nil, []KeyDelta{{DB: 1, Key: "k", Delta: SAdd(&State{}, Op{HLC: HLC{Phys: 1, Region: "A"}}, [][]byte{[]byte("m")})}}))
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{3, 0, 0})
	{ // an APPEND's delta with its Extend
		c := NewClock("A")
		s := &State{}
		s.Merge(SetString(s, Op{HLC: c.Now(1)}, []byte("0123456789"), false))
		old, _ := s.StrValue()
		d, x := splice(s, Op{HLC: c.Now(2)}, old, 12, []byte("ab"), true, false, 1)
		f.Add(AppendBatch(nil, []KeyDelta{{DB: 2, Key: "k", Delta: d, Ext: x}}))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		kds, err := DecodeBatch(b)
		if err != nil {
			return
		}
		for _, kd := range kds {
			_ = fmt.Sprint(view(kd.Delta))
			if kd.Ext == nil {
				continue
			}
			// resolved against a state without the assignment, and one
			// with it: no panic, and what resolves encodes again
			ResolveExtend(&State{}, &kd, false)
			base := &State{Str: &Reg{Base: []Base{{Dot: kd.Ext.Of, Val: []byte("0123456789")}}}}
			if ok, _ := ResolveExtend(base, &kd, false); ok {
				if _, err := DecodeBatch(AppendBatch(nil, []KeyDelta{kd})); err != nil {
					t.Fatalf("a resolved delta does not decode again: %v", err)
				}
			}
		}
	})
}

// An envelope decodes to its batches' deltas in order, a plain batch is a
// message too, and any byte of damage is refused.
func TestEnvelopeRoundTrip(t *testing.T) {
	op := func(n int64) Op { return Op{HLC: HLC{Phys: n, Region: "A"}} }
	b1 := AppendBatch(nil, []KeyDelta{{DB: 0, Key: "a", Delta: SetString(&State{}, op(1), []byte("x"), false)}})
	b2 := AppendBatch(nil, []KeyDelta{{DB: 3, Key: "b", Delta: SAdd(&State{}, op(2), [][]byte{[]byte("m")})}, {DB: 0, Key: "c", Delta: Delete(&State{})}})
	env := AppendEnvelope(nil, [][]byte{b1, b2})
	got, err := DecodeMessage(env)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kd := range got {
		keys = append(keys, fmt.Sprint(kd.DB, kd.Key))
	}
	if strings.Join(keys, ",") != "0a,3b,0c" {
		t.Fatalf("keys %v", keys)
	}
	if v, _ := got[0].Delta.StrValue(); string(v) != "x" {
		t.Fatalf("value %q", v)
	}
	if one, err := DecodeMessage(b2); err != nil || len(one) != 2 {
		t.Fatalf("plain batch: %v %v", one, err)
	}
	for cut := 0; cut < len(env); cut++ {
		if _, err := DecodeMessage(env[:cut]); err == nil {
			t.Fatalf("envelope cut at %d decoded", cut)
		}
	}
	if _, err := DecodeMessage(append(env, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	// the apply path's decoding gives the same deltas, its string ones
	// reusable: released and decoded again, still the same; appended to
	// the caller's slice (reused from round to round, a delta already in
	// it kept)
	kept := KeyDelta{Key: "kept", Delta: SAdd(&State{}, Op{HLC: HLC{Phys: 1, Region: "A"}}, [][]byte{[]byte("m")})}
	scratch := []KeyDelta{kept}
	for round := 0; round < 3; round++ {
		re, err := DecodeMessageReleasable(scratch, env)
		if err != nil || len(re) != len(got)+1 || re[0] != kept {
			t.Fatalf("releasable decode: %v %v", re, err)
		}
		if round > 0 && &re[0] != &scratch[0] {
			t.Fatal("the caller's slice was not reused")
		}
		scratch, re = re[:1], re[1:]
		for i := range re {
			if !Equal(re[i].Delta, got[i].Delta) || re[i].Key != got[i].Key {
				t.Fatalf("releasable decode differs at %d: %s vs %s", i, dump(re[i].Delta), dump(got[i].Delta))
			}
		}
		if re[0].Delta.pool != poolSet {
			t.Fatal("a decoded string delta is not reusable")
		}
		for _, kd := range re {
			Release(kd.Delta)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	b := AppendBatch(nil, []KeyDelta{{DB: 1, Key: "k", Delta: SAdd(&State{}, Op{HLC: HLC{Phys: 1, Region: "A"}}, [][]byte{[]byte("m")})}})
	f.Add(AppendEnvelope(nil, [][]byte{b, b}))
	f.Add([]byte{2, 1, 3, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		kds, err := DecodeMessage(b)
		if err != nil {
			return
		}
		for _, kd := range kds {
			_ = fmt.Sprint(view(kd.Delta))
		}
	})
}

// A conflict is reported once, when the concurrent assignment arrives, not
// again by later merges that leave the hidden loser in place.
func TestConflictReportedOnce(t *testing.T) {
	a, b := &State{}, &State{}
	ca, cb := NewClock("A"), NewClock("B")
	da := SetString(a, Op{HLC: ca.Now(10)}, []byte("a"), false)
	a.Merge(da)
	db := SetString(b, Op{HLC: cb.Now(11)}, []byte("b"), false)
	b.Merge(db)
	if c := a.Merge(db); c&ConflictLWW == 0 {
		t.Fatal("concurrent SET not reported")
	}
	// B sets a TTL (it has not seen A's write): merging it must not report again
	de := Expire(b, Op{HLC: cb.Now(12)}, 99999)
	b.Merge(de)
	if c := a.Merge(de); c != 0 {
		t.Fatalf("re-reported: %b", c)
	}
	if c := a.Merge(db); c != 0 {
		t.Fatalf("duplicate delivery re-reported: %b", c)
	}
}

// After tombstone GC a region forgets a key's context and may create it
// again; a region that still holds the old tombstone must accept the new
// life of the key, not take its dots for ones it has already seen.
func TestRecreateAfterGC(t *testing.T) {
	ca := NewClock("A")
	a, b := &State{}, &State{}
	for i := int64(1); i <= 3; i++ {
		d := SAdd(a, Op{HLC: ca.Now(i)}, [][]byte{[]byte("m")})
		a.Merge(d)
		b.Merge(d)
	}
	del := Delete(a)
	a.Merge(del)
	b.Merge(del)
	if b.Type() != TypeNone || b.Ctx.IsEmpty() {
		t.Fatal("B should hold a tombstone")
	}
	a = &State{} // A garbage-collected the tombstone
	d := SAdd(a, Op{HLC: ca.Now(10)}, [][]byte{[]byte("fresh")})
	a.Merge(d)
	b.Merge(d)
	if !b.HasMember("fresh") {
		t.Fatal("the region holding the old tombstone dropped the new write")
	}
	// and B's context stays compact: no cloud of gaps
	if len(b.Ctx.Cloud) != 0 {
		t.Fatalf("context cloud %v", b.Ctx.Cloud)
	}
	d2 := SAdd(a, Op{HLC: ca.Now(11)}, [][]byte{[]byte("more")})
	a.Merge(d2)
	b.Merge(d2)
	if !Equal(a, b) || len(b.Ctx.Cloud) != 0 {
		t.Fatalf("diverged or fragmented: %+v vs %+v", a.Ctx, b.Ctx)
	}
}
