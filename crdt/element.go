package crdt

// Element records let a store persist a big set or hash piece by piece: a
// key's header (everything but its members and fields) and one record per
// member or field. A write then costs the header plus what it touched,
// whatever the size of the collection.

// Element kinds.
const (
	ElemMember byte = 's'
	ElemField  byte = 'h'
)

// Assign makes s a shallow copy of o (sharing its slices and maps), never
// a pooled delta (see Release) nor a room (StringRoom).
func (s *State) Assign(o *State) {
	*s = *o
	s.pool, s.room = 0, false
}

// Header returns a shallow copy of s without its members and fields.
func (s *State) Header() *State {
	h := *s
	h.Set, h.Hash, h.pool, h.room = nil, nil, 0, false // a copy is never a pooled delta nor a room
	h.live = nil                                       // (its fields will be its own: see liveHint)
	return &h
}

// AppendMember encodes the dots of a set member.
func AppendMember(dst []byte, dots []Dot) []byte {
	e := getEncoder()
	e.uv(uint64(len(dots)))
	for _, d := range dots {
		e.dot(d)
	}
	dst = e.finish(dst)
	putEncoder(e)
	return dst
}

// AppendField encodes a hash field's register.
func AppendField(dst []byte, r *Reg) []byte {
	e := getEncoder()
	e.reg(r)
	dst = e.finish(dst)
	putEncoder(e)
	return dst
}

// AddElement decodes an element record into s.
func (s *State) AddElement(kind byte, name string, b []byte) error {
	var d decoder
	d.header(b)
	switch kind {
	case ElemMember:
		n := d.count(2)
		dots := make([]Dot, 0, n)
		for i := 0; i < n && d.err == nil; i++ {
			dots = append(dots, d.dot())
		}
		if d.err == nil && len(d.b) == 0 && len(dots) > 0 {
			if s.Set == nil {
				s.Set = NewTable[[]Dot](0)
			}
			s.Set.Put(name, dots)
			return nil
		}
	case ElemField:
		r := d.reg()
		if d.err == nil && len(d.b) == 0 {
			if s.Hash == nil {
				s.Hash = NewTable[*Reg](0)
			}
			s.Hash.Put(name, r)
			return nil
		}
	}
	return ErrCorrupt
}

// Touched tells what merging d changes beyond the header: all is true when
// d may touch every element (an unscoped delta), else the elements d lists
// are appended to members and fields (returned).
func (d *State) Touched(members, fields []string) (all bool, _, _ []string) {
	if !d.Scoped {
		return true, members, fields
	}
	d.EachMember(func(m string, _ []Dot) { members = append(members, m) })
	d.EachField(func(f string, _ *Reg) { fields = append(fields, f) })
	return false, members, fields
}
