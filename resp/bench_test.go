package resp

import (
	"bytes"
	"strings"
	"testing"
)

type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	if l.off == len(l.data) {
		l.off = 0
	}
	n := copy(p, l.data[l.off:])
	l.off += n
	return n, nil
}

// BenchmarkGuardedReader measures parsing pipelined SETs through the guard
// and redcon's ReadNextCommand.
func BenchmarkGuardedReader(b *testing.B) {
	cmd := "*3\r\n$3\r\nSET\r\n$10\r\nkey:123456\r\n$3\r\nxxx\r\n"
	src := &loopReader{data: []byte(strings.Repeat(cmd, 256))}
	lim := Limits{}
	lim.Validate()
	g := newGuard(src, &lim, func() bool { return true })
	b.SetBytes(int64(len(cmd)))
	b.ReportAllocs()
	for n := 0; n < b.N; n++ {
		if _, err := g.next(true); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReplyWriting(b *testing.B) {
	c := &Conn{Proto: 2}
	var buf bytes.Buffer
	c.w = newWriterForBench(&buf)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Bulk([]byte("value"))
		c.Int(42)
		c.OK()
		if i%100 == 99 {
			c.w.Flush()
			buf.Reset()
		}
	}
}
