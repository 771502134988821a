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

// A loop over the index that lets changes in between its steps (PackCold
// lets the shard's lock go every so many keys) sees every key that was
// there before it started and is still there, once, with its entry of the
// moment, none it deleted before reaching it, while puts grow the table
// and deletes leave deleted slots behind, over many seeds.
func TestIndexLoopWhileItChanges(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 2))
		x, model := newIndex(0), map[string]*entry{}
		for i := range 50 + r.IntN(500) {
			k := fmt.Sprint("k", i)
			e := &entry{ver: uint64(i)}
			x.put(hashKey(k), k, e)
			model[k] = e
		}
		before := map[string]bool{}
		for k := range model {
			before[k] = true
		}
		gone := map[string]bool{} // deleted at some point in the loop
		seen := map[string]bool{}
		next := len(model)
		for k, e := range x.all() {
			if seen[k] {
				t.Fatalf("seed %d: %q yielded twice", seed, k)
			}
			seen[k] = true
			if model[k] != e {
				t.Fatalf("seed %d: %q yielded with an entry it no longer has", seed, k)
			}
			for range r.IntN(6) { // what commands do meanwhile
				switch k2 := fmt.Sprint("k", r.IntN(next+20)); r.IntN(3) {
				case 0:
					x.del(hashKey(k2), k2)
					delete(model, k2)
					gone[k2] = true
				case 1:
					if model[k2] != nil {
						e2 := &entry{ver: 1e6}
						x.put(hashKey(k2), k2, e2)
						model[k2] = e2
					}
				default:
					k3 := fmt.Sprint("k", next)
					next++
					x.put(hashKey(k3), k3, &entry{})
					model[k3] = x.get(hashKey(k3), k3)
				}
			}
		}
		for k := range before {
			if !gone[k] && !seen[k] {
				t.Fatalf("seed %d: %q, there all along, not yielded", seed, k)
			}
		}
		if x.len() != len(model) {
			t.Fatalf("seed %d: len %d, want %d", seed, x.len(), len(model))
		}
		for k, e := range model {
			if x.get(hashKey(k), k) != e {
				t.Fatalf("seed %d: %q lost", seed, k)
			}
		}
	}
}

// A table holds its keys at a load of 3/8 to 3/4 as it grows (a slot is 32
// bytes: four times the slots would be ~4x the memory per warm key).
func TestIndexLoad(t *testing.T) {
	x := newIndex(0)
	for i := range 100000 {
		k := fmt.Sprint("k", i)
		x.put(hashKey(k), k, &entry{})
		if load := float64(x.len()) / float64(len(x.slots)); i > 8 && (load <= 3.0/8-0.01 || load > 0.75) {
			t.Fatalf("%d keys in %d slots", x.len(), len(x.slots))
		}
	}
}
