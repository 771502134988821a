package commands

import (
	"iter"
	"math/rand/v2"
	"slices"
	"sort"

	"concord/crdt"
	"concord/keyspace"
)

var setCmds = []*Cmd{
	{Name: "sadd", Arity: -3, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "set", Summary: "Adds one or more members to a set. Creates the key if it doesn't exist.", Since: "1.0.0", Fn: cmdSAdd},
	{Name: "srem", Arity: -3, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "set", Summary: "Removes one or more members from a set. Deletes the set if the last member was removed.", Since: "1.0.0", Fn: cmdSRem},
	{Name: "smembers", Arity: 2, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "set", Summary: "Returns all members of a set.", Since: "1.0.0", Fn: cmdSMembers},
	{Name: "sismember", Arity: 3, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "set", Summary: "Determines whether a member belongs to a set.", Since: "1.0.0", Fn: cmdSIsMember},
	{Name: "smismember", Arity: -3, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "set", Summary: "Determines whether multiple members belong to a set.", Since: "6.2.0", Fn: cmdSMIsMember},
	{Name: "scard", Arity: 2, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "set", Summary: "Returns the number of members in a set.", Since: "1.0.0", Fn: cmdSCard},
	{Name: "spop", Arity: -2, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "set", Summary: "Returns one or more random members from a set after removing them. Deletes the set if the last member was popped.", Since: "1.0.0", Fn: cmdSPop},
	{Name: "srandmember", Arity: -2, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "set", Summary: "Get one or multiple random members from a set", Since: "1.0.0", Fn: cmdSRandMember},
	{Name: "smove", Arity: 4, Flags: []string{"write", "fast"}, First: 1, Last: 2, Step: 1, Group: "set", Summary: "Moves a member from one set to another.", Since: "1.0.0", Fn: cmdSMove},
	{Name: "sinter", Arity: -2, Flags: []string{"readonly"}, First: 1, Last: -1, Step: 1, Group: "set", Summary: "Returns the intersect of multiple sets.", Since: "1.0.0", Fn: func(c *Ctx) { setAlgebra(c, opInter, false) }},
	{Name: "sinterstore", Arity: -3, Flags: []string{"write", "denyoom"}, First: 1, Last: -1, Step: 1, Group: "set", Summary: "Stores the intersect of multiple sets in a key.", Since: "1.0.0", Fn: func(c *Ctx) { setAlgebra(c, opInter, true) }},
	{Name: "sunion", Arity: -2, Flags: []string{"readonly"}, First: 1, Last: -1, Step: 1, Group: "set", Summary: "Returns the union of multiple sets.", Since: "1.0.0", Fn: func(c *Ctx) { setAlgebra(c, opUnion, false) }},
	{Name: "sunionstore", Arity: -3, Flags: []string{"write", "denyoom"}, First: 1, Last: -1, Step: 1, Group: "set", Summary: "Stores the union of multiple sets in a key.", Since: "1.0.0", Fn: func(c *Ctx) { setAlgebra(c, opUnion, true) }},
	{Name: "sdiff", Arity: -2, Flags: []string{"readonly"}, First: 1, Last: -1, Step: 1, Group: "set", Summary: "Returns the difference of multiple sets.", Since: "1.0.0", Fn: func(c *Ctx) { setAlgebra(c, opDiff, false) }},
	{Name: "sdiffstore", Arity: -3, Flags: []string{"write", "denyoom"}, First: 1, Last: -1, Step: 1, Group: "set", Summary: "Stores the difference of multiple sets in a key.", Since: "1.0.0", Fn: func(c *Ctx) { setAlgebra(c, opDiff, true) }},
	{Name: "sintercard", Arity: -3, Flags: []string{"readonly"}, First: 2, Last: -1, Step: 1, Group: "set", Summary: "Returns the number of members of the intersect of multiple sets.", Since: "7.0.0", Fn: cmdSInterCard},
	{Name: "sscan", Arity: -3, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "set", Summary: "Iterates over members of a set.", Since: "2.8.0", Fn: cmdSScan},
}

func cmdSAdd(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := writable(tx, k, crdt.TypeSet)
		if err != nil {
			return err
		}
		n := 0
		var seen map[string]bool // members named twice count once (none with one)
		if len(c.Args) > 3 {
			seen = make(map[string]bool, len(c.Args)-2)
		}
		for _, m := range c.Args[2:] {
			if !st.HasMember(string(m)) && !seen[string(m)] {
				n++
			}
			if seen != nil {
				seen[string(m)] = true
			}
		}
		if n > 0 {
			tx.Apply(k, crdt.SAdd(st, tx.Op(), c.Args[2:]))
		}
		c.Conn.Int(int64(n))
		return nil
	})
}

func cmdSRem(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.get(tx, k, crdt.TypeSet)
		if st == nil || err != nil {
			c.okInt(err, 0)
			return err
		}
		var rm [][]byte
		seen := map[string]bool{}
		for _, m := range c.Args[2:] {
			if st.HasMember(string(m)) && !seen[string(m)] {
				rm = append(rm, m)
				seen[string(m)] = true
			}
		}
		if len(rm) > 0 {
			tx.Apply(k, crdt.SRem(st, rm))
		}
		c.Conn.Int(int64(len(rm)))
		return nil
	})
}

// okInt writes n when err is nil (a handler's reply for an absent key).
func (c *Ctx) okInt(err error, n int64) {
	if err == nil {
		c.Conn.Int(n)
	}
}

func cmdSMembers(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.get(tx, k, crdt.TypeSet)
		if err != nil {
			return err
		}
		var ms []string
		if st != nil {
			ms = st.Members()
		}
		c.Conn.Set(len(ms))
		for _, m := range ms {
			c.Conn.BulkString(m)
		}
		return nil
	})
}

func cmdSIsMember(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.get(tx, k, crdt.TypeSet)
		if err != nil {
			return err
		}
		c.Conn.Int(b2i(st != nil && st.HasMember(c.arg(2))))
		return nil
	})
}

func cmdSMIsMember(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.get(tx, k, crdt.TypeSet)
		if err != nil {
			return err
		}
		c.Conn.Array(len(c.Args) - 2)
		for _, m := range c.Args[2:] {
			c.Conn.Int(b2i(st != nil && st.HasMember(string(m))))
		}
		return nil
	})
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func cmdSCard(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.get(tx, k, crdt.TypeSet)
		if err != nil {
			return err
		}
		if st == nil {
			c.Conn.Int(0)
		} else {
			c.Conn.Int(int64(st.Set.Len()))
		}
		return nil
	})
}

// countArg parses the optional count of SPOP/SRANDMEMBER/HRANDFIELD.
func (c *Ctx) countArg(i int) (n int64, given bool, err error) {
	if len(c.Args) <= i {
		return 1, false, nil
	}
	n, ok := crdt.ParseInt(c.Args[i])
	if !ok {
		return 0, true, ErrNotInt
	}
	return n, true, nil
}

func cmdSPop(c *Ctx) {
	if len(c.Args) > 3 {
		c.fail(ErrSyntax)
		return
	}
	n, given, err := c.countArg(2)
	if err == nil && n < 0 {
		err = ErrNegCount
	}
	if err != nil {
		c.fail(err)
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.get(tx, k, crdt.TypeSet)
		if err != nil {
			return err
		}
		if st == nil {
			if given {
				c.Conn.Set(0)
			} else {
				c.Conn.Null()
			}
			return nil
		}
		count := n
		if !given {
			count = 1
		}
		ms := sample(st.Set.Len(), count, st.MemberAt, st.Members)
		rm := make([][]byte, len(ms))
		for i, m := range ms {
			rm[i] = []byte(m)
		}
		if len(rm) > 0 {
			tx.Apply(k, crdt.SRem(st, rm))
		}
		if !given {
			c.Conn.BulkString(ms[0])
			return nil
		}
		c.Conn.Set(len(ms))
		for _, m := range ms {
			c.Conn.BulkString(m)
		}
		return nil
	})
}

func cmdSRandMember(c *Ctx) {
	if len(c.Args) > 3 {
		c.fail(ErrSyntax)
		return
	}
	n, given, err := c.countArg(2)
	if err != nil {
		c.fail(err)
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.get(tx, k, crdt.TypeSet)
		if err != nil {
			return err
		}
		if st == nil {
			st = &crdt.State{}
		}
		if !given {
			if ms := sample(st.Set.Len(), 1, st.MemberAt, st.Members); len(ms) == 0 {
				c.Conn.Null()
			} else {
				c.Conn.BulkString(ms[0])
			}
			return nil
		}
		c.bulks(sample(st.Set.Len(), n, st.MemberAt, st.Members))
		return nil
	})
}

// sample picks n of the size entries of a set or a hash (at(i): entry
// i's name, and whether it counts — a hash field holding no value does
// not), as SRANDMEMBER, HRANDFIELD and SPOP do: n > 0 distinct ones (all
// when n is at least how many count), n < 0 |n| with repeats. Entries are
// drawn by index (crdt.Table.At) instead of listing the whole set each
// call (SPOP on a set of a million members listed and shuffled a million
// names); when n is most of the set, or draws keep missing (most of a
// hash's fields hold no value), it lists the entries (list) and picks
// from the list.
func sample(size int, n int64, at func(int) (string, bool), list func() []string) []string {
	if size == 0 || n == 0 {
		return nil
	}
	if n < 0 {
		out := make([]string, 0, min(-n, 1<<20))
		for i := int64(0); i < -n; i++ {
			name, ok := "", false
			for try := 0; try < 16 && !ok; try++ {
				name, ok = at(rand.IntN(size))
			}
			if !ok {
				return randomPick(list(), n)
			}
			out = append(out, name)
		}
		return out
	}
	if n*2 > int64(size) {
		return randomPick(list(), n)
	}
	seen := make(map[int]bool, n)
	out := make([]string, 0, n)
	for draws := 0; int64(len(out)) < n; draws++ {
		if draws > 16*int(n)+64 {
			return randomPick(list(), n)
		}
		i := rand.IntN(size)
		if seen[i] {
			continue
		}
		seen[i] = true
		if name, ok := at(i); ok {
			out = append(out, name)
		}
	}
	return out
}

// randomPick returns n distinct items (n > 0) or |n| items with repeats
// (n < 0), like SRANDMEMBER and HRANDFIELD.
func randomPick(items []string, n int64) []string {
	if len(items) == 0 || n == 0 {
		return nil
	}
	if n < 0 {
		out := make([]string, 0, min(-n, 1<<20))
		for i := int64(0); i < -n; i++ {
			out = append(out, items[rand.IntN(len(items))])
		}
		return out
	}
	rand.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
	if int64(len(items)) > n {
		items = items[:n]
	}
	return items
}

func cmdSMove(c *Ctx) {
	src, dst := c.key(1), c.key(2)
	m := c.Args[3]
	c.run([]keyspace.Key{src, dst}, func(tx *keyspace.Tx) error {
		s, err := c.get(tx, src, crdt.TypeSet)
		if err != nil {
			return err
		}
		if t := tx.Type(dst); t != crdt.TypeNone && t != crdt.TypeSet {
			return ErrWrongType
		}
		if s == nil || !s.HasMember(string(m)) {
			c.Conn.Int(0)
			return nil
		}
		if src != dst {
			tx.Apply(src, crdt.SRem(s, [][]byte{m}))
			d := tx.State(dst)
			if !d.HasMember(string(m)) {
				tx.Apply(dst, crdt.SAdd(d, tx.Op(), [][]byte{m}))
			}
		}
		c.Conn.Int(1)
		return nil
	})
}

const (
	opInter = iota
	opUnion
	opDiff
)

// memberSet is a table of set members' names (a combine result: the
// values are not read).
type memberSet = crdt.Table[[]crdt.Dot]

// combine returns the union, intersection or difference of the sets at
// keys (a missing key is an empty set; nil for an empty result), every
// key's type checked first, as Redis does: one of the sets' own table when
// the result is that set — to read, not change — else a new table (a
// union starts from a copy of the biggest set's, made without hashing).
// An intersection walks the smallest set and looks its members up in the
// others; a difference looks the first set's members up in the others when
// that is cheaper than walking them (as Redis chooses): SINTER of a
// 95k-member set and a small one copied the big one first (29 ms, Redis
// 0.025).
func (c *Ctx) combine(tx *keyspace.Tx, keys []keyspace.Key, op int) (*memberSet, error) {
	sets, err := c.setsAt(tx, keys)
	if err != nil {
		return nil, err
	}
	switch op {
	case opUnion:
		var only, biggest *memberSet
		n := 0
		for _, st := range sets {
			if st != nil && st.Set.Len() > 0 {
				n++
				only = st.Set
				if st.Set.Len() > biggest.Len() {
					biggest = st.Set
				}
			}
		}
		if n <= 1 {
			return only, nil
		}
		acc := biggest.Clone(func([]crdt.Dot) []crdt.Dot { return nil })
		for _, st := range sets {
			if st != nil && st.Set != biggest {
				for m := range st.Set.Keys() {
					acc.Put(m, nil)
				}
			}
		}
		return acc, nil
	case opInter:
		if len(sets) == 1 && sets[0] != nil {
			return sets[0].Set, nil
		}
		acc := crdt.NewTable[[]crdt.Dot](0)
		for m := range intersection(sets) {
			acc.Put(m, nil)
		}
		return acc, nil
	default: // opDiff
		first, others, walk := sets[0], sets[1:], 0
		if first == nil {
			return nil, nil
		}
		for _, st := range others {
			if st != nil {
				walk += st.Set.Len()
			}
		}
		if walk == 0 {
			return first.Set, nil
		}
		if first.Set.Len()*len(others) <= walk {
			acc := crdt.NewTable[[]crdt.Dot](0)
			for m := range first.Set.Keys() {
				if inNone(others, m) {
					acc.Put(m, nil)
				}
			}
			return acc, nil
		}
		acc := first.Set.Clone(func([]crdt.Dot) []crdt.Dot { return nil })
		for _, st := range others {
			if st != nil {
				for m := range st.Set.Keys() {
					acc.Delete(m)
				}
			}
		}
		return acc, nil
	}
}

// setsAt returns the sets at keys (nil for a missing key), every key's
// type checked first, as Redis does.
func (c *Ctx) setsAt(tx *keyspace.Tx, keys []keyspace.Key) ([]*crdt.State, error) {
	sets := make([]*crdt.State, len(keys))
	for i, k := range keys {
		st, err := c.get(tx, k, crdt.TypeSet)
		if err != nil {
			return nil, err
		}
		sets[i] = st
	}
	return sets, nil
}

// intersection yields the members of every one of sets (none when one is
// missing): the smallest set's, looked up in the others.
func intersection(sets []*crdt.State) iter.Seq[string] {
	return func(yield func(string) bool) {
		if slices.Contains(sets, nil) {
			return
		}
		small := 0
		for i, st := range sets {
			if st.Set.Len() < sets[small].Set.Len() {
				small = i
			}
		}
		for m := range sets[small].Set.Keys() {
			if inAll(sets, small, m) && !yield(m) {
				return
			}
		}
	}
}

// inAll reports whether m is in every set but sets[skip].
func inAll(sets []*crdt.State, skip int, m string) bool {
	for i, st := range sets {
		if i != skip && !st.HasMember(m) {
			return false
		}
	}
	return true
}

// inNone reports whether m is in none of sets (nil ones are empty).
func inNone(sets []*crdt.State, m string) bool {
	for _, st := range sets {
		if st != nil && st.HasMember(m) {
			return false
		}
	}
	return true
}

func setAlgebra(c *Ctx, op int, store bool) {
	from := 1
	if store {
		from = 2
	}
	srcs := c.keys(from, len(c.Args), 1)
	keys := srcs
	if store {
		keys = append([]keyspace.Key{c.key(1)}, srcs...)
	}
	c.run(keys, func(tx *keyspace.Tx) error {
		res, err := c.combine(tx, srcs, op)
		if err != nil {
			return err
		}
		n := res.Len() // (res may be dst's own table, which the write changes)
		if !store {
			ms := make([]string, 0, n)
			for m := range res.Keys() {
				ms = append(ms, m)
			}
			sort.Strings(ms)
			c.Conn.Set(len(ms))
			for _, m := range ms {
				c.Conn.BulkString(m)
			}
			return nil
		}
		dst := c.key(1)
		if n == 0 {
			if tx.Get(dst) != nil {
				tx.Apply(dst, crdt.Delete(tx.State(dst)))
			}
		} else {
			tx.Apply(dst, crdt.ReplaceSetFrom(tx.State(dst), tx.Op(), res))
		}
		c.Conn.Int(int64(n))
		return nil
	})
}

func cmdSInterCard(c *Ctx) {
	n, ok := crdt.ParseInt(c.Args[1])
	if !ok || n <= 0 {
		c.fail(ErrNotOne)
		return
	}
	if n > int64(len(c.Args)-2) {
		c.fail(Error("ERR Number of keys can't be greater than number of args"))
		return
	}
	var limit int64
	rest := c.Args[2+n:]
	if len(rest) == 2 && c.argIs(2+int(n), "limit") {
		l, ok := crdt.ParseInt(rest[1])
		if !ok || l < 0 {
			c.fail(Error("ERR LIMIT can't be negative"))
			return
		}
		limit = l
	} else if len(rest) != 0 {
		c.fail(ErrSyntax)
		return
	}
	keys := c.keys(2, 2+int(n), 1)
	c.run(keys, func(tx *keyspace.Tx) error {
		sets, err := c.setsAt(tx, keys)
		if err != nil {
			return err
		}
		card := int64(0) // up to the limit (as Redis: it stops there)
		for range intersection(sets) {
			if card++; card == limit {
				break
			}
		}
		c.Conn.Int(card)
		return nil
	})
}

func cmdSScan(c *Ctx) {
	cur, sa, ok := c.elementScanArgs()
	if !ok {
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.get(tx, k, crdt.TypeSet)
		if err != nil {
			return err
		}
		if st == nil {
			st = &crdt.State{}
		}
		var page []string
		next := st.Set.Scan(cur, sa.count, func(m string, _ []crdt.Dot) {
			if !sa.hasM || globMatch(sa.match, m, false) {
				page = append(page, m)
			}
		})
		c.scanReply(next, page)
		return nil
	})
}
