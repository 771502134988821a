package commands

import (
	"math"
	"math/big"

	"concord/crdt"
	"concord/keyspace"
)

var hashCmds = []*Cmd{
	{Name: "hset", Arity: -4, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Creates or modifies the value of a field in a hash.", Since: "2.0.0", Fn: cmdHSet},
	{Name: "hmset", Arity: -4, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Sets the values of multiple fields.", Since: "2.0.0", Fn: cmdHSet},
	{Name: "hsetnx", Arity: 4, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Sets the value of a field in a hash only when the field doesn't exist.", Since: "2.0.0", Fn: cmdHSetNX},
	{Name: "hget", Arity: 3, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Returns the value of a field in a hash.", Since: "2.0.0", Fn: cmdHGet},
	{Name: "hmget", Arity: -3, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Returns the values of all fields in a hash.", Since: "2.0.0", Fn: cmdHMGet},
	{Name: "hdel", Arity: -3, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.", Since: "2.0.0", Fn: cmdHDel},
	{Name: "hgetall", Arity: 2, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Returns all fields and values in a hash.", Since: "2.0.0", Fn: func(c *Ctx) { hashDump(c, true, true) }},
	{Name: "hkeys", Arity: 2, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Returns all fields in a hash.", Since: "2.0.0", Fn: func(c *Ctx) { hashDump(c, true, false) }},
	{Name: "hvals", Arity: 2, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Returns all values in a hash.", Since: "2.0.0", Fn: func(c *Ctx) { hashDump(c, false, true) }},
	{Name: "hlen", Arity: 2, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Returns the number of fields in a hash.", Since: "2.0.0", Fn: cmdHLen},
	{Name: "hexists", Arity: 3, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Determines whether a field exists in a hash.", Since: "2.0.0", Fn: cmdHExists},
	{Name: "hstrlen", Arity: 3, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Returns the length of the value of a field.", Since: "3.2.0", Fn: cmdHStrlen},
	{Name: "hincrby", Arity: 4, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.", Since: "2.0.0", Fn: cmdHIncrBy},
	{Name: "hincrbyfloat", Arity: 4, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Increments the floating point value of a field by a number. Uses 0 as initial value if the field doesn't exist.", Since: "2.6.0", Fn: cmdHIncrByFloat},
	{Name: "hrandfield", Arity: -2, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Returns one or more random fields from a hash.", Since: "6.2.0", Fn: cmdHRandField},
	{Name: "hscan", Arity: -3, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "hash", Summary: "Iterates over fields and values of a hash.", Since: "2.8.0", Fn: cmdHScan},
}

func cmdHSet(c *Ctx) {
	if len(c.Args)%2 != 0 {
		c.fail(Error(argErr(c.Cmd.Name)))
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := writable(tx, k, crdt.TypeHash)
		if err != nil {
			return err
		}
		d, n := crdt.HSetAdded(st, tx.Op(), c.Args[2:])
		tx.Apply(k, d)
		if c.Cmd.Name == "hmset" {
			c.Conn.OK()
		} else {
			c.Conn.Int(int64(n))
		}
		return nil
	})
}

func cmdHSetNX(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := writable(tx, k, crdt.TypeHash)
		if err != nil {
			return err
		}
		if _, ok := st.Field(c.arg(2)); ok && tx.Get(k) != nil {
			c.Conn.Int(0)
			return nil
		}
		tx.Apply(k, crdt.HSet(st, tx.Op(), c.Args[2:4]))
		c.Conn.Int(1)
		return nil
	})
}

// hash returns the hash at k (nil when absent) or WRONGTYPE.
func (c *Ctx) hash(tx *keyspace.Tx, k keyspace.Key) (*crdt.State, error) {
	return c.get(tx, k, crdt.TypeHash)
}

func cmdHGet(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.hash(tx, k)
		if err != nil {
			return err
		}
		if st == nil {
			c.Conn.Null()
			return nil
		}
		if v, ok := st.Field(c.arg(2)); ok {
			c.Conn.Bulk(v)
		} else {
			c.Conn.Null()
		}
		return nil
	})
}

func cmdHMGet(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.hash(tx, k)
		if err != nil {
			return err
		}
		c.Conn.Array(len(c.Args) - 2)
		for _, f := range c.Args[2:] {
			if st == nil {
				c.Conn.Null()
			} else if v, ok := st.Field(string(f)); ok {
				c.Conn.Bulk(v)
			} else {
				c.Conn.Null()
			}
		}
		return nil
	})
}

func cmdHDel(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.hash(tx, k)
		if st == nil || err != nil {
			c.okInt(err, 0)
			return err
		}
		var rm [][]byte
		seen := map[string]bool{}
		for _, f := range c.Args[2:] {
			if _, ok := st.Field(string(f)); ok && !seen[string(f)] {
				rm = append(rm, f)
				seen[string(f)] = true
			}
		}
		if len(rm) > 0 {
			tx.Apply(k, crdt.HDel(st, rm))
		}
		c.Conn.Int(int64(len(rm)))
		return nil
	})
}

func hashDump(c *Ctx, fields, values bool) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.hash(tx, k)
		if err != nil {
			return err
		}
		// the live fields and their registers, in the table's order (a
		// small hash's: its fields' order, as Redis's listpack), read
		// once (not sorted, nor each value looked up again: HGETALL of
		// 100k fields took 131 ms)
		type fieldReg struct {
			f string
			r *crdt.Reg
		}
		var live []fieldReg
		if st != nil {
			live = make([]fieldReg, 0, st.Hash.Len())
			for f, r := range st.Hash.All() {
				if r.Exists() {
					live = append(live, fieldReg{f, r})
				}
			}
		}
		switch {
		case fields && values:
			c.Conn.Map(len(live))
		default:
			c.Conn.Array(len(live))
		}
		for _, x := range live {
			if fields {
				c.Conn.BulkString(x.f)
			}
			if values {
				v, _, _ := x.r.Get()
				c.Conn.Bulk(v)
			}
		}
		return nil
	})
}

func cmdHLen(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.hash(tx, k)
		if err != nil {
			return err
		}
		if st == nil {
			c.Conn.Int(0)
		} else {
			c.Conn.Int(int64(st.HashLen()))
		}
		return nil
	})
}

func cmdHExists(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.hash(tx, k)
		if err != nil {
			return err
		}
		ok := false
		if st != nil {
			_, ok = st.Field(c.arg(2))
		}
		c.Conn.Int(b2i(ok))
		return nil
	})
}

func cmdHStrlen(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.hash(tx, k)
		if err != nil {
			return err
		}
		var v []byte
		if st != nil {
			v, _ = st.Field(c.arg(2))
		}
		c.Conn.Int(int64(len(v)))
		return nil
	})
}

func cmdHIncrBy(c *Ctx) {
	n, ok := crdt.ParseInt(c.Args[3])
	if !ok {
		c.fail(ErrNotInt)
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := writable(tx, k, crdt.TypeHash)
		if err != nil {
			return err
		}
		var cur int64
		if v, ok := st.Field(c.arg(2)); ok && tx.Get(k) != nil {
			x, isInt := crdt.ParseInt(v)
			if !isInt {
				return ErrHashNotInt
			}
			cur = x
		}
		if (n > 0 && cur > math.MaxInt64-n) || (n < 0 && cur < math.MinInt64-n) {
			return ErrOverflow
		}
		tx.Apply(k, crdt.HIncrBy(st, tx.Op(), c.Args[2], n))
		c.Conn.Int(cur + n)
		return nil
	})
}

func cmdHIncrByFloat(c *Ctx) {
	r, ok := crdt.ParseFloat(c.Args[3])
	if !ok {
		c.fail(ErrNotFloat)
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := writable(tx, k, crdt.TypeHash)
		if err != nil {
			return err
		}
		cur := new(big.Rat)
		if v, ok := st.Field(c.arg(2)); ok && tx.Get(k) != nil {
			x, isF := crdt.ParseFloat(v)
			if !isF {
				return ErrHashNotFloat
			}
			cur = x
		}
		if tooBig(new(big.Rat).Add(cur, r)) {
			return ErrNaN
		}
		tx.Apply(k, crdt.HIncrByFloat(st, tx.Op(), c.Args[2], r))
		v, _ := tx.State(k).Field(c.arg(2))
		c.Conn.Bulk(v)
		return nil
	})
}

func cmdHRandField(c *Ctx) {
	n, given, err := c.countArg(2)
	withVals := false
	if len(c.Args) == 4 && c.argIs(3, "withvalues") {
		withVals = true
	} else if len(c.Args) > 3 {
		err = ErrSyntax
	}
	if err != nil {
		c.fail(err)
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.hash(tx, k)
		if err != nil {
			return err
		}
		if st == nil {
			st = &crdt.State{}
		}
		if !given {
			if fs := sample(st.Hash.Len(), 1, st.FieldAt, st.Fields); len(fs) == 0 {
				c.Conn.Null()
			} else {
				c.Conn.BulkString(fs[0])
			}
			return nil
		}
		picked := sample(st.Hash.Len(), n, st.FieldAt, st.Fields)
		if withVals && c.Conn.Proto == 3 {
			c.Conn.Array(len(picked))
		} else if withVals {
			c.Conn.Array(2 * len(picked))
		} else {
			c.Conn.Array(len(picked))
		}
		for _, f := range picked {
			if withVals && c.Conn.Proto == 3 {
				c.Conn.Array(2)
			}
			c.Conn.BulkString(f)
			if withVals {
				v, _ := st.Field(f)
				c.Conn.Bulk(v)
			}
		}
		return nil
	})
}

func cmdHScan(c *Ctx) {
	cur, sa, ok := c.elementScanArgs()
	if !ok {
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := c.hash(tx, k)
		if err != nil {
			return err
		}
		if st == nil {
			st = &crdt.State{}
		}
		var page []string
		var regs []*crdt.Reg
		next := st.Hash.Scan(cur, sa.count, func(f string, r *crdt.Reg) {
			if r.Exists() && (!sa.hasM || globMatch(sa.match, f, false)) {
				page, regs = append(page, f), append(regs, r)
			}
		})
		c.Conn.Array(2)
		c.Conn.BulkString(formatInt(int64(next)))
		if sa.noVals {
			c.bulks(page)
			return nil
		}
		c.Conn.Array(2 * len(page))
		for i, f := range page {
			v, _, _ := regs[i].Get()
			c.Conn.BulkString(f)
			c.Conn.Bulk(v)
		}
		return nil
	})
}
