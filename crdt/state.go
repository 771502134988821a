package crdt

// Type is the Redis type a key shows.
type Type uint8

// The types a key can hold.
const (
	TypeNone Type = iota
	TypeString
	TypeSet
	TypeHash
)

func (t Type) String() string {
	switch t {
	case TypeString:
		return "string"
	case TypeSet:
		return "set"
	case TypeHash:
		return "hash"
	}
	return "none"
}

// Exp is one entry of the expiry register: an absolute deadline in unix
// milliseconds, or At == 0 for PERSIST.
type Exp struct {
	Dot Dot
	At  int64
}

// State is the replicated state of one key, and also the shape of a delta.
//
// Every dotted element (register Bases, set member dots, expiry entries) is
// kept or dropped by the causal join against Ctx. A Scoped delta's context
// applies only to the elements it lists (its Str when non-nil, the members
// and fields it names, the expiry register when ExpTouched); an unscoped
// one (a full state, DEL, SET) applies to the whole key.
//
// A key may hold data of several types at once only after concurrent
// type-creating writes; the type with the latest creation stamp (StrT, SetT,
// HashT) is shown, and the next local write removes the others.
type State struct {
	Ctx        Context
	Scoped     bool
	ExpTouched bool
	// pool: this State is the first field of a pooled delta struct whose
	// memory Release may reuse (poolSet...); a copy of the State by value
	// must clear it (Header does; Clone builds a new State)
	pool uint8
	// room: this State is the first field of a StringRoom, whose register
	// keeps short values in the room (roomVals); a copy by value must clear
	// it (Assign and Header do)
	room bool

	// StrT is the string's creation stamp; the set's and the hash's are in
	// coll (SetT, HashT), apart: most keys never hold a set or a hash, and
	// a string key's state must stay small (keyspace keeps it in a
	// 448-byte entry)
	StrT HLC
	coll *collStamps

	Str  *Reg
	Set  *Table[[]Dot]
	Hash *Table[*Reg]
	Exp  []Exp

	// live names a field seen holding a value and its register, checked
	// first by hashExists (iterating a big map from a random start costs
	// ~1 µs; a lookup of the field in a big hash ~65 ns, three per HSET).
	// A pointer, so that a string key's state stays small (see StrT).
	live *liveHint
}

// liveHint is a field of s.Hash and its register as they were when
// cached. A live register is never removed from a map nor replaced
// (mergeField, Compact and Forget delete only fields that read as
// absent; a field is assigned anew only in a map being built), so while
// the cached register reads as live it is still s.Hash's field. Copies of
// a State sharing its map may share its hint; a copy with a map of its
// own must not (Header drops it, Clone does not copy it).
type liveHint struct {
	field string
	r     *Reg
}

// liveReg returns the cached live field and its register, or nil.
func (s *State) liveReg() (string, *Reg) {
	if h := s.live; h != nil && h.r.Exists() {
		return h.field, h.r
	}
	return "", nil
}

// cacheLive caches f, holding r, as s's live field.
func (s *State) cacheLive(f string, r *Reg) {
	if s.live == nil {
		s.live = &liveHint{}
	}
	s.live.field, s.live.r = f, r
}

// EachField calls fn with each field of s.Hash, live or not. A map of one
// field that is the cached live one (an HSET delta's: HSetAdded caches
// it) is read without an iteration, whose start alone (a random number
// drawn) cost ~70 ns — each HSET delta was iterated four times (merged,
// listed as touched, encoded, sized) — nor a lookup.
func (s *State) EachField(fn func(f string, r *Reg)) {
	switch s.Hash.Len() {
	case 0: // (a range over an empty map still starts an iterator)
		return
	case 1:
		if f, r := s.liveReg(); r != nil {
			fn(f, r)
			return
		}
	}
	for f, r := range s.Hash.All() {
		fn(f, r)
	}
}

// EachMember calls fn with each member of s.Set and its dots; an empty
// set starts no iteration (whose start alone, a random number drawn, was
// ~1% of an INCR: every delta is encoded, sized and listed as touched).
func (s *State) EachMember(fn func(m string, ds []Dot)) {
	if s.Set.Len() == 0 {
		return
	}
	for m, ds := range s.Set.All() {
		fn(m, ds)
	}
}

// collStamps are a state's set and hash creation stamps. Copies of a State
// share them, so they are never changed in place: setStamps replaces them.
type collStamps struct{ set, hash HLC }

// SetT returns the set's creation stamp (zero if none).
func (s *State) SetT() HLC {
	if s.coll == nil {
		return HLC{}
	}
	return s.coll.set
}

// HashT returns the hash's creation stamp (zero if none).
func (s *State) HashT() HLC {
	if s.coll == nil {
		return HLC{}
	}
	return s.coll.hash
}

// setStamps sets the set's and the hash's creation stamps.
func (s *State) setStamps(set, hash HLC) {
	switch {
	case set.IsZero() && hash.IsZero():
		s.coll = nil
	case s.coll == nil || s.coll.set != set || s.coll.hash != hash:
		s.coll = &collStamps{set, hash}
	}
}

// Conflict flags reported by Merge: a resolution that discarded data.
const (
	ConflictLWW        = 1 << iota // concurrent assignments, one hidden by LWW
	ConflictType                   // concurrent type-creating writes
	ConflictNonNumeric             // increments absorbed by a non-numeric base
)

// Type returns the type the key shows (TypeNone when it holds no value).
func (s *State) Type() Type {
	t := TypeNone
	var best HLC
	if s.Str.Exists() {
		t, best = TypeString, s.StrT
	}
	if s.Set.Len() > 0 && (t == TypeNone || best.Less(s.SetT())) {
		t, best = TypeSet, s.SetT()
	}
	if s.hashExists() && (t == TypeNone || best.Less(s.HashT())) {
		t = TypeHash
	}
	return t
}

func (s *State) hashExists() bool {
	if s.Hash.Len() == 0 {
		return false
	}
	if _, r := s.liveReg(); r != nil {
		return true
	}
	for f, r := range s.Hash.All() {
		if r.Exists() {
			s.cacheLive(f, r)
			return true
		}
	}
	return false
}

// liveTypes counts the types holding data.
func (s *State) liveTypes() int {
	n := 0
	if s.Str.Exists() {
		n++
	}
	if s.Set.Len() > 0 {
		n++
	}
	if s.hashExists() {
		n++
	}
	return n
}

// ExpireAt returns the key's deadline in unix ms, or 0 for none. A live
// PERSIST wins over any deadline; among concurrent deadlines the latest wins.
func (s *State) ExpireAt() int64 {
	var at int64
	for _, e := range s.Exp {
		if e.At == 0 {
			return 0
		}
		if e.At > at {
			at = e.At
		}
	}
	return at
}

// IsEmpty reports whether the state holds nothing at all, metadata included.
func (s *State) IsEmpty() bool {
	return s.Ctx.IsEmpty() && s.Str.isEmpty() && s.Set.Len() == 0 && s.Hash.Len() == 0 && len(s.Exp) == 0
}

// Merge joins d into s. It is commutative, associative and idempotent over
// states; a Scoped delta gives the same result as its unscoped equivalent.
// The result reports conflicts the merge resolved by discarding data.
func (s *State) Merge(d *State) (conflicts int) {
	// The types live before and after, for ConflictType, without looking
	// for a live hash field when the answer cannot matter: a scoped delta
	// changes only the types it holds, so a delta of fields into a key
	// holding nothing else (every HSET into a hash) needs no hash check,
	// nor one without fields unless a string or set came alive.
	strB, setB := s.Str.Exists(), s.Set.Len() > 0
	hashFixed := d.Scoped && d.Hash.Len() == 0
	hashOnly := d.Scoped && d.Str == nil && d.Set.Len() == 0 && !strB && !setB
	hashB := !hashFixed && !hashOnly && s.hashExists()
	sctx := &s.Ctx
	dctx := &d.Ctx
	// Registers and elements first, against the contexts before the join.
	if !d.Scoped || d.Str != nil {
		if s.Str != nil || d.Str != nil {
			a := s.Str
			if a == nil {
				a = s.emptyReg()
			}
			b := d.Str
			if b == nil {
				b = &Reg{}
			}
			n := len(a.Base)
			mergeReg(a, sctx, b, dctx, s.roomVals(a))
			if a.isEmpty() {
				a = nil
			} else if len(a.Base) > 1 && len(a.Base) > n {
				conflicts |= ConflictLWW // a new concurrent assignment, not an old one still hidden
			}
			s.Str = a
		}
	}
	if d.Scoped { // (neither starts an iteration over an empty map)
		d.EachMember(func(m string, dd []Dot) { s.mergeMember(m, s.Set.Get(m), dd, dctx) })
		d.EachField(func(f string, dr *Reg) { conflicts |= s.mergeField(f, dr, dctx) })
	} else if s.Set.Len()+d.Set.Len()+s.Hash.Len()+d.Hash.Len() > 0 { // (a string's merge skips four empty ranges)
		switch {
		case s.Set.Len() == 0 && d.Set.Len() > 0:
			s.adoptMembers(d.Set)
		case d.Set.Len() == 0 && s.Set.Len() > 0 && s.allMembersSeen(dctx):
			s.Set = nil // (a DEL, a replace by another type: one pass, no lookups)
		case d.Set.Len() > 0 && noneSeenMembers(d.Set, &s.Ctx) && s.allMembersSeen(dctx):
			// a replace of the whole set (SINTERSTORE into a set, RENAME
			// over one): s saw none of its members' dots (tested first: a
			// state merged from a peer fails at its first member) and it
			// saw every member s has, so the result is its members,
			// adopted without a lookup each
			s.Set = nil
			s.adoptMembers(d.Set)
		default:
			for m, sd := range s.Set.All() {
				if !d.Set.Has(m) {
					s.mergeMember(m, sd, nil, dctx)
				}
			}
			for m, dd := range d.Set.All() {
				s.mergeMember(m, s.Set.Get(m), dd, dctx)
			}
		}
		switch {
		case s.Hash.Len() == 0 && d.Hash.Len() > 0:
			conflicts |= s.adoptFields(d.Hash, dctx)
		case d.Hash.Len() == 0 && s.Hash.Len() > 0 && s.allFieldsSeen(dctx):
			s.Hash, s.live = nil, nil // (as for members)
		case d.Hash.Len() > 0 && noneSeenFields(d.Hash, &s.Ctx) && s.allFieldsSeen(dctx):
			s.Hash, s.live = nil, nil // (as for members)
			conflicts |= s.adoptFields(d.Hash, dctx)
		default:
			for f := range s.Hash.All() {
				if !d.Hash.Has(f) {
					conflicts |= s.mergeField(f, nil, dctx)
				}
			}
			for f, dr := range d.Hash.All() {
				conflicts |= s.mergeField(f, dr, dctx)
			}
		}
	}
	if !d.Scoped || d.ExpTouched {
		s.Exp = joinExp(s.Exp, sctx, d.Exp, dctx)
	}
	s.StrT = maxHLC(s.StrT, d.StrT)
	if d.coll != nil {
		s.setStamps(maxHLC(s.SetT(), d.coll.set), maxHLC(s.HashT(), d.coll.hash))
	}
	s.Ctx.Join(dctx)
	strA, setA := s.Str.Exists(), s.Set.Len() > 0
	hashA := false
	switch {
	case hashFixed: // the hash's liveness is as it was
		if b2i(strA)+b2i(setA) > b2i(strB)+b2i(setB) {
			hashA = s.hashExists()
			hashB = hashA
		}
	case hashOnly: // nothing else lives: one type at most
	default:
		hashA = s.hashExists()
	}
	before := b2i(strB) + b2i(setB) + b2i(hashB)
	if after := b2i(strA) + b2i(setA) + b2i(hashA); after > 1 && after > before {
		conflicts |= ConflictType
	}
	if s.Str != nil && len(s.Str.Counts) > 0 && s.Str.dropsIncrements() {
		conflicts |= ConflictNonNumeric
	}
	return conflicts
}

// allMembersSeen reports whether ctx has seen every dot of s's members
// (a delta holding none and having seen them all removes them all).
func (s *State) allMembersSeen(ctx *Context) bool {
	for _, ds := range s.Set.All() {
		for _, x := range ds {
			if !ctx.Contains(x) {
				return false
			}
		}
	}
	return true
}

// noneSeenMembers reports whether ctx has seen none of the dots of set's
// members.
func noneSeenMembers(set *Table[[]Dot], ctx *Context) bool {
	for _, ds := range set.All() {
		for _, x := range ds {
			if ctx.Contains(x) {
				return false
			}
		}
	}
	return true
}

// noneSeenFields reports whether ctx has seen none of the assignments of
// h's fields.
func noneSeenFields(h *Table[*Reg], ctx *Context) bool {
	for _, r := range h.All() {
		if r == nil {
			continue
		}
		for _, b := range r.Base {
			if ctx.Contains(b.Dot) {
				return false
			}
		}
	}
	return true
}

// allFieldsSeen reports whether merging a register holding nothing, under
// ctx, empties every field of s: each holds assignments ctx has seen and
// no counts (increments, or a floor: a removal's, kept).
func (s *State) allFieldsSeen(ctx *Context) bool {
	for _, r := range s.Hash.All() {
		if len(r.Counts) > 0 || len(r.Floor) > 0 {
			return false
		}
		for _, b := range r.Base {
			if !ctx.Contains(b.Dot) {
				return false
			}
		}
	}
	return true
}

// adoptMembers merges the members of a delta into a state without any: a
// copy of the delta's table, each member with the dots s's context had not
// seen (mergeMember with nothing on s's side), made without hashing a name
// (a 600k-member SUNIONSTORE spent a third of its time in the lookups).
func (s *State) adoptMembers(src *Table[[]Dot]) {
	emptied := 0
	t := src.Clone(func(dd []Dot) []Dot {
		out := make([]Dot, 0, len(dd))
		for _, x := range dd {
			if !s.Ctx.Contains(x) {
				out = append(out, x)
			}
		}
		if len(out) == 0 {
			emptied++
		}
		return out
	})
	if emptied > 0 {
		var gone []string
		for m, ds := range t.All() {
			if len(ds) == 0 {
				gone = append(gone, m)
			}
		}
		for _, m := range gone {
			t.Delete(m)
		}
	}
	s.Set = t
}

// adoptFields is adoptMembers for a delta's fields: each register merged
// into an empty one (mergeField with nothing on s's side).
func (s *State) adoptFields(src *Table[*Reg], dctx *Context) (conflicts int) {
	emptied := 0
	t := src.Clone(func(b *Reg) *Reg {
		if b == nil {
			emptied++
			return nil
		}
		a := newReg()
		mergeReg(a, &s.Ctx, b, dctx, nil)
		if a.isEmpty() {
			emptied++
			return nil
		}
		if len(a.Base) > 1 {
			conflicts |= ConflictLWW
		}
		return a
	})
	if emptied > 0 {
		dropNil(t)
	}
	s.Hash = t
	return conflicts
}

func (s *State) mergeMember(m string, a, b []Dot, dctx *Context) {
	out := make([]Dot, 0, len(a)+len(b))
	for _, x := range a {
		if containsDot(b, x) || !dctx.Contains(x) {
			out = append(out, x)
		}
	}
	for _, x := range b {
		if !containsDot(a, x) && !s.Ctx.Contains(x) {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		s.Set.Delete(m)
		return
	}
	if s.Set == nil {
		s.Set = NewTable[[]Dot](0)
	}
	s.Set.Put(m, out)
}

func (s *State) mergeField(f string, b *Reg, dctx *Context) (conflicts int) {
	a := s.Hash.Get(f)
	stored := a != nil // merged in place: no second write of the map
	if a == nil {
		if b == nil {
			return 0
		}
		a = newReg()
	}
	if b == nil {
		b = &Reg{}
	}
	// the count of fields holding a value (HashLen), kept across the merge
	// when it was known (a Put or Delete forgets it)
	live, known := s.Hash.Aux()
	was := a.Exists()
	n := len(a.Base)
	mergeReg(a, &s.Ctx, b, dctx, nil)
	if a.isEmpty() {
		if stored {
			s.Hash.Delete(f)
		}
		if known {
			s.Hash.SetAux(live - b2i(was))
		}
		return 0
	}
	if len(a.Base) > 1 && len(a.Base) > n {
		conflicts |= ConflictLWW
	}
	if !stored {
		if s.Hash == nil {
			s.Hash = NewTable[*Reg](0)
		}
		s.Hash.Put(f, a)
	}
	if known {
		s.Hash.SetAux(live - b2i(was) + b2i(a.Exists()))
	}
	return conflicts
}

func containsDot(ds []Dot, d Dot) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}

func joinExp(a []Exp, actx *Context, b []Exp, bctx *Context) []Exp {
	out := a[:0]
	for _, e := range a {
		if hasExp(b, e.Dot) || !bctx.Contains(e.Dot) {
			out = append(out, e)
		}
	}
	for _, e := range b {
		if !hasExp(out, e.Dot) && !actx.Contains(e.Dot) {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func hasExp(es []Exp, d Dot) bool {
	for _, e := range es {
		if e.Dot == d {
			return true
		}
	}
	return false
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	o := &State{Ctx: s.Ctx.Clone(), Scoped: s.Scoped, ExpTouched: s.ExpTouched,
		StrT: s.StrT, Str: s.Str.clone()}
	o.setStamps(s.SetT(), s.HashT()) // not s.coll: a pooled delta's is reused
	if s.Set.Len() > 0 {
		o.Set = s.Set.Clone(func(ds []Dot) []Dot { return append([]Dot(nil), ds...) })
	}
	if s.Hash.Len() > 0 {
		o.Hash = s.Hash.Clone((*Reg).clone)
	}
	if len(s.Exp) > 0 {
		o.Exp = append([]Exp(nil), s.Exp...)
	}
	return o
}

// Compact drops metadata of values that no longer exist (hash fields and
// registers that read as absent, and the whole key when nothing is left).
// It is only safe once every region has seen every delta that touched the
// key (causal stability); with no peers that is always true. It reports
// whether the whole state can be forgotten.
func (s *State) Compact() (forget bool) {
	for f, r := range s.Hash.All() {
		if r.dead() {
			s.Hash.Delete(f)
		}
	}
	if s.Str != nil && s.Str.dead() {
		s.Str = nil
	}
	return s.Type() == TypeNone
}

// Members returns the set's members (unordered).
func (s *State) Members() []string {
	out := make([]string, 0, s.Set.Len())
	for m := range s.Set.All() {
		out = append(out, m)
	}
	return out
}

// MemberAt returns member i of the set (0 <= i < Set.Len(); see
// Table.At), and true (FieldAt's shape: a member always holds a value).
func (s *State) MemberAt(i int) (string, bool) {
	m, _ := s.Set.At(i)
	return m, true
}

// FieldAt returns field i of the hash (0 <= i < Hash.Len(); see Table.At)
// and whether it holds a value.
func (s *State) FieldAt(i int) (string, bool) {
	f, r := s.Hash.At(i)
	return f, r.Exists()
}

// HasMember reports whether m is in the set.
func (s *State) HasMember(m string) bool { return s.Set.Has(m) }

// Field returns a hash field's value.
// HasField reports whether hash field f holds a value.
func (s *State) HasField(f string) bool { return s.Hash.Get(f).Exists() }

// Field returns hash field f's value.
func (s *State) Field(f string) ([]byte, bool) {
	r := s.Hash.Get(f)
	if r == nil {
		return nil, false
	}
	v, ok, _ := r.Get()
	return v, ok
}

// StrValue returns the string value.
func (s *State) StrValue() ([]byte, bool) {
	v, ok, _ := s.Str.Get()
	return v, ok
}

// Fields returns the live hash fields (unordered).
func (s *State) Fields() []string {
	out := make([]string, 0, s.Hash.Len())
	for f, r := range s.Hash.All() {
		if r.Exists() {
			out = append(out, f)
		}
	}
	return out
}

// HashLen returns the number of live hash fields: counted once (each
// field's register read: 1 ms for 100k fields), then kept beside a big
// hash's table as merges change it (Table.Aux; HLEN was O(fields)).
func (s *State) HashLen() int {
	if n, ok := s.Hash.Aux(); ok {
		return n
	}
	n := 0
	for _, r := range s.Hash.All() {
		if r.Exists() {
			n++
		}
	}
	s.Hash.SetAux(n)
	return n
}

// MaxHLC returns the latest timestamp a state or delta carries (creation
// stamps and register assignments), for advancing a receiver's clock.
func (s *State) MaxHLC() HLC {
	m := maxHLC(maxHLC(s.StrT, s.SetT()), s.HashT())
	if s.Str != nil {
		for _, b := range s.Str.Base {
			m = maxHLC(m, b.HLC)
		}
	}
	for _, r := range s.Hash.All() {
		for _, b := range r.Base {
			m = maxHLC(m, b.HLC)
		}
	}
	return m
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
