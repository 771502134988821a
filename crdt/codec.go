package crdt

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"sync"
	"unsafe"
)

// Encoding: a version byte, then a table of region names, then the state
// with every region written as its index in the table. Integers are varints.
// codecVersion is the absolute form: element records are written in it, and
// batches and states were before codecVersionRel (decoders read both).
const codecVersion = 1

// codecVersionRel is the form of batches (AppendBatch: the log's entries
// and the stream's messages) and of states (AppendState, AppendHeader: the
// checkpoints' header pages); element records (AppendMember, AppendField:
// mostly a single dot, which it would not shorten) stay in codecVersion.
// It is codecVersion with every dot counter and version-vector entry
// written as its difference from the previous one in the encoding, every
// timestamp's milliseconds as their difference from the previous
// timestamp's, and a state's zero creation stamps as flag bits. Dot
// counters are seeded from a key's first write's clock (~2^62), and a delta
// repeats its dot in its context and its stamp in its register and creation
// stamp: a SET's log entry shrinks from ~74 to ~43–50 bytes. Decoders read
// both forms.
const codecVersionRel = 3

// envelopeVersion starts a stream message that carries several batches in
// order (AppendEnvelope); a message that starts with codecVersion is one
// batch (AppendBatch).
const envelopeVersion = 2

// ErrCorrupt is returned by decoders for input they cannot read.
var ErrCorrupt = errors.New("crdt: corrupt encoding")

type encoder struct {
	b []byte
	// big are the values of at least bigValue bytes, not copied into b:
	// finish writes each where it belongs (at, an offset into b), straight
	// into its destination (a 100 MB SET was copied into b, then b into
	// the log's frame)
	big    []bigValueAt
	bigLen int
	names  []string // the region table; few regions, so a linear search
	nbuf   [4]string
	tbl    Regions // the packed form's shared table instead of names
	// codecVersionRel: counters and milliseconds as differences from the
	// last ones written
	rel      bool
	lastN    uint64
	lastPhys int64
	// ext: the string register being written is a delta's with this
	// Extend (only its part of the value is written)
	ext *Extend
}

// bigValueAt is a value that goes at offset at of the encoder's buffer.
type bigValueAt struct {
	at int
	v  []byte
}

// bigValue is the size from which a value is written by finish, not
// copied into the encoder's buffer first.
const bigValue = 64 << 10

func newEncoder() *encoder {
	e := &encoder{b: make([]byte, 0, 96)}
	e.names = e.nbuf[:0]
	return e
}

// encoders recycles the encoders of AppendState and AppendBatch: their
// buffer is copied out by finish, so it can serve the next encoding (one
// allocation, and its growth, less per group commit and checkpointed key).
var encoders = sync.Pool{New: func() any { return newEncoder() }}

func getEncoder() *encoder { return encoders.Get().(*encoder) }

func putEncoder(e *encoder) {
	if cap(e.b) > 1<<20 {
		return
	}
	e.b, e.names, e.tbl = e.b[:0], e.nbuf[:0], nil
	e.rel, e.lastN, e.lastPhys, e.ext = false, 0, 0, nil
	clear(e.nbuf[:])
	clear(e.big)
	e.big, e.bigLen = e.big[:0], 0
	encoders.Put(e)
}

func (e *encoder) uv(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) iv(v int64)  { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) bytes(v []byte) {
	e.uv(uint64(len(v)))
	if len(v) >= bigValue {
		e.big = append(e.big, bigValueAt{at: len(e.b), v: v})
		e.bigLen += len(v)
		return
	}
	e.b = append(e.b, v...)
}

// body returns the encoding so far as one slice (the big values copied in).
func (e *encoder) body() []byte {
	if len(e.big) == 0 {
		return e.b
	}
	return e.appendBody(make([]byte, 0, len(e.b)+e.bigLen))
}

// appendBody appends the encoding so far, the big values in their places.
func (e *encoder) appendBody(dst []byte) []byte {
	prev := 0
	for _, bv := range e.big {
		dst = append(dst, e.b[prev:bv.at]...)
		dst = append(dst, bv.v...)
		prev = bv.at
	}
	return append(dst, e.b[prev:]...)
}
func (e *encoder) str(v string) { e.uv(uint64(len(v))); e.b = append(e.b, v...) }

func (e *encoder) region(r string) {
	if e.tbl != nil {
		e.uv(e.tbl.Index(r))
		return
	}
	for i, n := range e.names {
		if n == r {
			e.uv(uint64(i))
			return
		}
	}
	e.names = append(e.names, r)
	e.uv(uint64(len(e.names) - 1))
}

func (e *encoder) dot(d Dot) { e.region(d.Region); e.n(d.N) }
func (e *encoder) hlc(h HLC) { e.phys(h.Phys); e.uv(uint64(h.Log)); e.region(h.Region) }

// n writes a dot counter or version-vector entry.
func (e *encoder) n(v uint64) {
	if !e.rel {
		e.uv(v)
		return
	}
	e.iv(int64(v - e.lastN))
	e.lastN = v
}

// phys writes a timestamp's milliseconds.
func (e *encoder) phys(p int64) {
	if !e.rel {
		e.iv(p)
		return
	}
	e.iv(p - e.lastPhys)
	e.lastPhys = p
}

func (e *encoder) counts(cs []Count) {
	e.uv(uint64(len(cs)))
	for _, c := range cs {
		e.region(c.Region)
		e.uv(c.N)
		e.iv(c.I)
		e.str(c.F)
	}
}

func (e *encoder) reg(r *Reg) {
	e.uv(uint64(len(r.Base)))
	for _, b := range r.Base {
		e.dot(b.Dot)
		e.hlc(b.HLC)
		if x := e.ext; x != nil && !x.partial { // (a string delta has one Base)
			b.Val = b.Val[x.At : x.At+x.N]
		}
		e.bytes(b.Val)
		e.counts(b.Absorb)
	}
	e.counts(r.Counts)
	e.counts(r.Floor)
}

func (e *encoder) state(s *State) { e.stateOf(s, true) }

// stateOf writes s, without its set members and hash fields unless elems.
func (e *encoder) stateOf(s *State, elems bool) {
	var flags uint64
	if s.Scoped {
		flags |= 1
	}
	if s.ExpTouched {
		flags |= 2
	}
	if s.Str != nil {
		flags |= 4
	}
	if e.rel { // zero creation stamps as bits (most keys have one type)
		if s.StrT.IsZero() {
			flags |= 8
		}
		if s.SetT().IsZero() {
			flags |= 16
		}
		if s.HashT().IsZero() {
			flags |= 32
		}
	}
	e.uv(flags)
	e.uv(uint64(len(s.Ctx.VV)))
	for _, v := range s.Ctx.VV {
		e.region(v.Region)
		e.n(v.N)
	}
	e.uv(uint64(len(s.Ctx.Cloud)))
	for _, d := range s.Ctx.Cloud {
		e.dot(d)
	}
	for i, h := range [3]HLC{s.StrT, s.SetT(), s.HashT()} {
		if flags&(8<<i) == 0 {
			e.hlc(h)
		}
	}
	if s.Str != nil {
		e.reg(s.Str)
	}
	e.ext = nil
	if elems {
		e.members(s.Set, e.dot)
		e.uv(uint64(s.Hash.Len()))
		s.EachField(func(f string, r *Reg) {
			e.str(f)
			e.reg(r)
		})
	} else {
		e.uv(0)
		e.uv(0)
	}
	e.uv(uint64(len(s.Exp)))
	for _, x := range s.Exp {
		e.dot(x.Dot)
		e.iv(x.At)
	}
}

// members writes set members, each a name and its dots (written by dot).
func (e *encoder) members(set *Table[[]Dot], dot func(Dot)) {
	e.uv(uint64(set.Len()))
	if set.Len() == 0 { // (an empty set starts no iterator)
		return
	}
	for m, ds := range set.All() {
		e.str(m)
		e.uv(uint64(len(ds)))
		for _, d := range ds {
			dot(d)
		}
	}
}

// finish prepends the version and the region table to the body.
func (e *encoder) finish(dst []byte) []byte {
	need := 1 + binary.MaxVarintLen64 + len(e.b) + e.bigLen
	for _, n := range e.names {
		need += binary.MaxVarintLen64 + len(n)
	}
	if cap(dst)-len(dst) < need {
		// at least doubled: a checkpoint appends a page's headers to one buffer
		dst = append(make([]byte, 0, max(len(dst)+need, 2*cap(dst))), dst...)
	}
	if e.rel {
		dst = append(dst, codecVersionRel)
	} else {
		dst = append(dst, codecVersion)
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.names)))
	for _, n := range e.names {
		dst = binary.AppendUvarint(dst, uint64(len(n)))
		dst = append(dst, n...)
	}
	return e.appendBody(dst)
}

// AppendHeader appends the encoding of s.Header() (s without its set
// members and hash fields) without copying s.
func AppendHeader(dst []byte, s *State) []byte {
	e := getEncoder()
	e.rel = true
	e.stateOf(s, false)
	dst = e.finish(dst)
	putEncoder(e)
	return dst
}

// EncodedSize returns about len(AppendState(nil, s)): exactly when s has
// no more members and fields than samples or samples is 0, else measuring
// samples of them spread over their tables and extrapolating (MEMORY
// USAGE's SAMPLES: O(samples), where encoding a set of 100k members took
// ~10 ms).
func EncodedSize(s *State, samples int) int {
	if samples <= 0 || s.Set.Len()+s.Hash.Len() <= samples {
		return len(AppendState(nil, s))
	}
	e := getEncoder()
	defer putEncoder(e)
	e.rel = true
	e.stateOf(s, false)
	size := len(e.b) + 1 + e.bigLen // (the region table left out)
	for _, n := range e.names {
		size += 1 + len(n)
	}
	if n := s.Set.Len(); n > 0 {
		e.b = e.b[:0]
		for i := range min(samples, n) {
			m, ds := s.Set.At(i * n / min(samples, n))
			e.str(m)
			e.uv(uint64(len(ds)))
			for _, d := range ds {
				e.dot(d)
			}
		}
		size += len(e.b) * n / min(samples, n)
	}
	if n := s.Hash.Len(); n > 0 {
		e.b, e.big, e.bigLen = e.b[:0], e.big[:0], 0
		for i := range min(samples, n) {
			f, r := s.Hash.At(i * n / min(samples, n))
			e.str(f)
			e.reg(r)
		}
		size += (len(e.b) + e.bigLen) * n / min(samples, n)
	}
	return size
}

// AppendState appends the encoding of s to dst.
func AppendState(dst []byte, s *State) []byte {
	e := getEncoder()
	e.rel = true
	e.state(s)
	dst = e.finish(dst)
	putEncoder(e)
	return dst
}

// KeyDelta is one key's delta inside a batch.
type KeyDelta struct {
	DB    int
	Key   string
	Delta *State
	// Ext, when set, says Delta's string assignment rewrites part of an
	// earlier one, and only that part is encoded (see Extend)
	Ext *Extend
}

// extendedDB marks a key delta encoded with an Extend: its database number
// is written plus extendedDB (a database is at most 255; a build without
// Extend fails to decode the delta rather than merging a part of a value
// as the whole), then the Extend (Of, At), then the state with the N
// bytes as its value.
const extendedDB = 1 << 10

// AppendBatch encodes a batch of key deltas (one outbox entry).
func AppendBatch(dst []byte, batch []KeyDelta) []byte { return appendBatch(dst, batch, true) }

// appendBatch writes a batch in the relative form, or (rel false, tests
// only) in the absolute one that earlier builds wrote.
func appendBatch(dst []byte, batch []KeyDelta, rel bool) []byte {
	e := getEncoder()
	e.rel = rel
	e.uv(uint64(len(batch)))
	for _, kd := range batch {
		if x := kd.Ext; x != nil {
			e.uv(uint64(kd.DB) + extendedDB)
			e.str(kd.Key)
			e.dot(x.Of)
			e.uv(uint64(x.At))
			e.ext = x
			e.state(kd.Delta)
			e.ext = nil
			continue
		}
		e.uv(uint64(kd.DB))
		e.str(kd.Key)
		e.state(kd.Delta)
	}
	dst = e.finish(dst)
	putEncoder(e)
	return dst
}

type decoder struct {
	b     []byte
	names []string
	tbl   Regions // see encoder.tbl
	err   error
	reuse bool // string states from SetString's pool (see Release)
	// codecVersionRel (see encoder)
	rel      bool
	lastN    uint64
	lastPhys int64
}

func (d *decoder) fail() { d.err = ErrCorrupt; d.b = nil }

func (d *decoder) uv() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) > 0 && d.b[0] < 0x80 { // one byte: most lengths, flags, counts
		v := uint64(d.b[0])
		d.b = d.b[1:]
		return v
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) iv() int64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) > 0 && d.b[0] < 0x80 { // one byte (zigzag): -64..63
		u := uint64(d.b[0])
		d.b = d.b[1:]
		return int64(u>>1) ^ -int64(u&1)
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length and checks that at least min bytes per item remain.
func (d *decoder) count(min int) int {
	n := d.uv()
	if d.err != nil || n > uint64(len(d.b)/min) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) raw() []byte {
	n := d.uv()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.raw()) }

func (d *decoder) region() string {
	i := d.uv()
	if d.tbl != nil {
		n, ok := d.tbl.Name(i)
		if !ok {
			d.fail()
		}
		return n
	}
	if d.err != nil || i >= uint64(len(d.names)) {
		d.fail()
		return ""
	}
	return d.names[i]
}

func (d *decoder) dot() Dot { r := d.region(); return Dot{Region: r, N: d.n()} }

// n reads a dot counter or version-vector entry.
func (d *decoder) n() uint64 {
	if !d.rel {
		return d.uv()
	}
	d.lastN += uint64(d.iv())
	return d.lastN
}

// phys reads a timestamp's milliseconds.
func (d *decoder) phys() int64 {
	if !d.rel {
		return d.iv()
	}
	d.lastPhys += d.iv()
	return d.lastPhys
}

func (d *decoder) hlc() HLC {
	p := d.phys()
	l := d.uv()
	if l > math.MaxUint32 {
		d.fail()
	}
	return HLC{Phys: p, Log: uint32(l), Region: d.region()}
}

func (d *decoder) counts() []Count {
	n := d.count(4)
	if n == 0 {
		return nil
	}
	cs := make([]Count, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		c := Count{Region: d.region(), N: d.uv(), I: d.iv(), F: d.str()}
		if c.F != "" {
			if _, ok := new(ratParser).parse(c.F); !ok {
				d.fail()
			}
		}
		cs = append(cs, c)
	}
	return cs
}

func (d *decoder) reg() *Reg {
	r := &Reg{}
	n := d.count(6)
	for i := 0; i < n && d.err == nil; i++ {
		r.Base = append(r.Base, Base{Dot: d.dot(), HLC: d.hlc(), Val: append([]byte(nil), d.raw()...), Absorb: d.counts()})
	}
	r.Counts = d.counts()
	r.Floor = d.counts()
	return r
}

// regInto reads a register into rb when it has one base (a SET's delta),
// else into a new register.
func (d *decoder) regInto(rb *regWithBase) *Reg {
	save := d.b
	if n := d.count(6); n != 1 || d.err != nil {
		d.b = save
		return d.reg()
	}
	b := Base{Dot: d.dot(), HLC: d.hlc()}
	val := d.raw()
	b.Absorb = d.counts()
	r := rb.set(b, val)
	r.Counts = d.counts()
	r.Floor = d.counts()
	return r
}

func (d *decoder) state() *State {
	flags := d.uv()
	// a state with a string register (a SET's delta, most of what peers
	// send) comes in one allocation with its register, base, short value
	// and a small version vector, like SetString's
	var x *setDelta
	var s *State
	if flags&4 != 0 {
		if d.reuse {
			x = setDeltas.Get().(*setDelta)
			x.st.pool = poolSet
		} else {
			x = &setDelta{}
		}
		s = &x.st
	} else {
		s = &State{}
	}
	s.Scoped = flags&1 != 0
	s.ExpTouched = flags&2 != 0
	n := d.count(2)
	if x != nil && n > 0 && n <= len(x.vv) {
		s.Ctx.VV = x.vv[:0]
	}
	for i := 0; i < n && d.err == nil; i++ {
		r := d.region()
		v := d.n()
		if v == 0 || (len(s.Ctx.VV) > 0 && s.Ctx.VV[len(s.Ctx.VV)-1].Region >= r) {
			d.fail()
		}
		s.Ctx.VV = append(s.Ctx.VV, VVEntry{Region: r, N: v})
	}
	n = d.count(2)
	for i := 0; i < n && d.err == nil; i++ {
		s.Ctx.Add(d.dot())
	}
	var ts [3]HLC // string, set, hash
	if d.rel {
		for i := range ts {
			if flags&(8<<i) == 0 {
				ts[i] = d.hlc()
			}
		}
	} else {
		ts = [3]HLC{d.hlc(), d.hlc(), d.hlc()}
	}
	s.StrT = ts[0]
	s.setStamps(ts[1], ts[2])
	if x != nil {
		s.Str = d.regInto(&x.reg)
	}
	if n = d.count(2); n > 0 {
		s.Set = d.members(n, d.dot)
	}
	n = d.count(4)
	if n > 0 {
		s.Hash = NewTable[*Reg](n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		f := d.str()
		s.Hash.Put(f, d.reg())
	}
	n = d.count(3)
	for i := 0; i < n && d.err == nil; i++ {
		s.Exp = append(s.Exp, Exp{Dot: d.dot(), At: d.iv()})
	}
	return s
}

// members reads n set members, each a name and its dots (read by dot).
func (d *decoder) members(n int, dot func() Dot) *Table[[]Dot] {
	set := NewTable[[]Dot](n)
	for i := 0; i < n && d.err == nil; i++ {
		m := d.str()
		k := d.count(2)
		ds := make([]Dot, 0, k)
		for j := 0; j < k && d.err == nil; j++ {
			ds = append(ds, dot())
		}
		set.Put(m, ds)
	}
	return set
}

func (d *decoder) header(b []byte) {
	if len(b) == 0 || (b[0] != codecVersion && b[0] != codecVersionRel) {
		d.fail()
		return
	}
	d.rel = b[0] == codecVersionRel
	d.b = b[1:]
	n := d.count(1)
	for i := 0; i < n && d.err == nil; i++ {
		d.names = append(d.names, d.str())
	}
}

// DecodeState decodes a state written by AppendState.
func DecodeState(b []byte) (*State, error) {
	var d decoder
	d.header(b)
	s := d.state()
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return nil, d.err
	}
	return s, nil
}

// AppendEnvelope appends one message carrying the encoded batches in order
// (each written by AppendBatch): a publisher ships several small batches as
// one stream message.
func AppendEnvelope(dst []byte, batches [][]byte) []byte {
	dst = append(dst, envelopeVersion)
	dst = binary.AppendUvarint(dst, uint64(len(batches)))
	for _, b := range batches {
		dst = binary.AppendUvarint(dst, uint64(len(b)))
		dst = append(dst, b...)
	}
	return dst
}

// DecodeMessage decodes a stream message, one batch or an envelope of
// batches, into their deltas in order.
func DecodeMessage(b []byte) ([]KeyDelta, error) { return decodeMessage(nil, b, false) }

// DecodeMessageReleasable is DecodeMessage for the apply path: it appends
// the deltas to dst (a slice the caller reuses from message to message),
// and its string deltas come from the pool Release hands memory back to,
// so whoever ends their use (persistence, once it logged them as inbound
// entries) releases them, and nothing reads them after. The deltas' keys
// point into b (no string allocated per key): a caller that keeps a key
// beyond its use of b keeps a copy (keyspace's Tx.MergeReceived does).
func DecodeMessageReleasable(dst []KeyDelta, b []byte) ([]KeyDelta, error) {
	return decodeMessage(dst, b, true)
}

func decodeMessage(out []KeyDelta, b []byte, reuse bool) ([]KeyDelta, error) {
	if len(b) == 0 || b[0] != envelopeVersion {
		return decodeBatchInto(out, b, reuse)
	}
	d := decoder{b: b[1:]}
	n := d.count(2) // a batch is at least a length and a version byte
	for i := 0; i < n && d.err == nil; i++ {
		var err error
		if out, err = decodeBatchInto(out, d.raw(), reuse); d.err != nil || err != nil {
			return nil, ErrCorrupt
		}
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, ErrCorrupt
	}
	return out, nil
}

// DecodeBatch decodes a batch written by AppendBatch.
func DecodeBatch(b []byte) ([]KeyDelta, error) { return decodeBatch(b, false) }

func decodeBatch(b []byte, reuse bool) ([]KeyDelta, error) { return decodeBatchInto(nil, b, reuse) }

// decodeBatchInto appends the batch b's deltas to out (an envelope's
// batches into one slice).
func decodeBatchInto(out []KeyDelta, b []byte, reuse bool) ([]KeyDelta, error) {
	d := decoder{reuse: reuse}
	d.header(b)
	n := d.count(3)
	out = slices.Grow(out, n)
	for i := 0; i < n && d.err == nil; i++ {
		db := d.uv()
		if db > math.MaxInt32 {
			d.fail()
		}
		ext := db >= extendedDB
		if ext {
			db -= extendedDB
		}
		var k string
		if reuse { // (DecodeMessageReleasable: the key points into b)
			if kb := d.raw(); len(kb) > 0 {
				k = unsafe.String(&kb[0], len(kb))
			}
		} else {
			k = d.str()
		}
		var x *Extend
		if ext {
			x = &Extend{Of: d.dot(), At: int(min(d.uv(), maxExtendAt+1)), partial: true}
		}
		st := d.state()
		if x != nil && d.err == nil {
			if x.At > maxExtendAt || st.Str == nil || len(st.Str.Base) != 1 {
				d.fail()
				break
			}
			x.N = len(st.Str.Base[0].Val)
		}
		out = append(out, KeyDelta{DB: int(db), Key: k, Delta: st, Ext: x})
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return nil, d.err
	}
	return out, nil
}
