package keyspace

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The index behaves as a map by name whatever the hashes: here they take
// three values, so most keys share theirs with others (FNV-1a collisions
// are rare by chance but can be made). Random puts and deletes against a
// map; every key looked up, and all yields each key once.
func TestIndexWithCollisions(t *testing.T) {
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 1))
		hash := func(k string) uint64 { return uint64(len(k)) % 3 }
		x, model := newIndex(0), map[string]*entry{}
		var names []string
		for i := range 20 {
			names = append(names, fmt.Sprint("k", i, "_", string(make([]byte, i%5))))
		}
		for op := range 300 {
			k := names[r.IntN(len(names))]
			if r.IntN(3) == 0 {
				x.del(hash(k), k)
				delete(model, k)
			} else {
				e := &entry{ver: uint64(op)}
				x.put(hash(k), k, e)
				model[k] = e
			}
			for _, k := range names {
				if got := x.get(hash(k), k); got != model[k] {
					t.Fatalf("seed %d op %d: %q is %v, want %v", seed, op, k, got, model[k])
				}
			}
			seen := map[string]bool{}
			for k, e := range x.all() {
				if seen[k] || model[k] != e {
					t.Fatalf("seed %d op %d: all yields %q twice or with another entry", seed, op, k)
				}
				seen[k] = true
			}
			if len(seen) != len(model) || x.len() != len(model) {
				t.Fatalf("seed %d op %d: all yields %d keys, len %d, want %d", seed, op, len(seen), x.len(), len(model))
			}
		}
		// a loop may delete the key it is at; a rebuilt index holds the same
		y := x.rebuilt()
		for k := range x.all() {
			x.del(hash(k), k)
		}
		if x.len() != 0 {
			t.Fatalf("seed %d: %d keys left after deleting each in a loop", seed, x.len())
		}
		for _, k := range names {
			if got := y.get(hash(k), k); got != model[k] {
				t.Fatalf("seed %d: rebuilt index has %q as %v, want %v", seed, k, got, model[k])
			}
		}
	}
}
