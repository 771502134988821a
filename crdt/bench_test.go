package crdt

import (
	"strconv"
	"testing"
)

func BenchmarkSetStringMerge(b *testing.B) {
	st := &State{}
	c := NewClock("A")
	v := []byte("xxx")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		st.Merge(SetString(st, Op{HLC: c.Now(int64(i))}, v, false))
	}
}

func BenchmarkIncrMerge(b *testing.B) {
	st := &State{}
	c := NewClock("A")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		st.Merge(IncrBy(st, Op{HLC: c.Now(int64(i))}, 1))
	}
}

func BenchmarkSAddBigSet(b *testing.B) {
	st := &State{}
	c := NewClock("A")
	for i := 0; i < 100000; i++ {
		st.Merge(SAdd(st, Op{HLC: c.Now(1)}, [][]byte{[]byte(strconv.Itoa(i))}))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st.Merge(SAdd(st, Op{HLC: c.Now(2)}, [][]byte{[]byte(strconv.Itoa(i % 200000))}))
	}
}

func BenchmarkEncodeDecodeState(b *testing.B) {
	st := &State{}
	c := NewClock("A")
	st.Merge(SetString(st, Op{HLC: c.Now(1)}, []byte("hello"), false))
	st.Merge(Expire(st, Op{HLC: c.Now(2)}, 100000))
	b.ReportAllocs()
	var buf []byte
	for i := 0; i < b.N; i++ {
		buf = AppendState(buf[:0], st)
		if _, err := DecodeState(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeBatch(b *testing.B) {
	batch := setBatch()
	b.ReportAllocs()
	var buf []byte
	for i := 0; i < b.N; i++ {
		buf = AppendBatch(buf[:0], batch)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkDecodeBatch decodes a batch of 100 SET deltas (the apply path of
// a replicating region, per received message).
func BenchmarkDecodeBatch(b *testing.B) {
	batch := setBatch()
	buf := AppendBatch(nil, batch)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		if _, err := DecodeBatch(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeMessageReleasable is BenchmarkDecodeBatch as the apply
// path decodes: into a slice reused from message to message, each string
// delta from the pool and released once used (persistence releases them
// once logged).
func BenchmarkDecodeMessageReleasable(b *testing.B) {
	batch := setBatch()
	buf := AppendBatch(nil, batch)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	var scratch []KeyDelta
	for i := 0; i < b.N; i++ {
		kds, err := DecodeMessageReleasable(scratch[:0], buf)
		if err != nil {
			b.Fatal(err)
		}
		for _, kd := range kds {
			Release(kd.Delta)
		}
		clear(kds)
		scratch = kds[:0]
	}
}

// setBatch is a batch of 100 SET deltas of 3-byte values to distinct keys.
func setBatch() []KeyDelta {
	c := NewClock("A")
	var batch []KeyDelta
	for i := 0; i < 100; i++ {
		batch = append(batch, KeyDelta{Key: "key:" + strconv.Itoa(i), Delta: SetString(&State{}, Op{HLC: c.Now(1)}, []byte("xxx"), false)})
	}
	return batch
}
