package persistence

import (
	"strconv"
	"sync"
	"testing"

	"concord/crdt"
)

// BenchmarkGroupCommit measures writes submitted by 50 concurrent writers
// (each waiting for its commit, like clients at pipeline 1).
func BenchmarkGroupCommit(b *testing.B) {
	s := open(&testing.T{}, b.TempDir(), FsyncEverysec)
	defer s.Close()
	b.ReportAllocs()
	var wg sync.WaitGroup
	per := b.N/50 + 1
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				s.Submit([]Write{{Key: "k" + strconv.Itoa(w*per+i), Header: []byte("0123456789")}}, []crdt.KeyDelta{delta("m")}, nil).Wait()
			}
		}(w)
	}
	wg.Wait()
}
