package commands

import (
	"math"
	"math/big"

	"concord/crdt"
	"concord/keyspace"
)

var counterCmds = []*Cmd{
	{Name: "incr", Arity: 2, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", Since: "1.0.0", Fn: func(c *Ctx) { incrBy(c, 1) }},
	{Name: "decr", Arity: 2, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", Since: "1.0.0", Fn: func(c *Ctx) { incrBy(c, -1) }},
	{Name: "incrby", Arity: 3, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", Since: "1.0.0", Fn: cmdIncrBy},
	{Name: "decrby", Arity: 3, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", Since: "1.0.0", Fn: cmdIncrBy},
	{Name: "incrbyfloat", Arity: 3, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", Since: "2.6.0", Fn: cmdIncrByFloat},
}

func cmdIncrBy(c *Ctx) {
	n, ok := crdt.ParseInt(c.Args[2])
	if !ok {
		c.fail(ErrNotInt)
		return
	}
	if c.Cmd.Name == "decrby" {
		if n == math.MinInt64 {
			c.fail(Error("ERR decrement would overflow"))
			return
		}
		n = -n
	}
	incrBy(c, n)
}

func incrBy(c *Ctx, n int64) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := writable(tx, k, crdt.TypeString)
		if err != nil {
			return err
		}
		cur, _, ok, overflow := st.Str.IntValue()
		if tx.Get(k) == nil {
			cur, ok, overflow = 0, true, false
		}
		switch {
		case overflow:
			return ErrOverflow
		case !ok:
			return ErrNotInt
		case (n > 0 && cur > math.MaxInt64-n) || (n < 0 && cur < math.MinInt64-n):
			return ErrOverflow
		}
		tx.Apply(k, crdt.IncrBy(st, tx.Op(), n))
		c.Conn.Int(cur + n)
		return nil
	})
}

func cmdIncrByFloat(c *Ctx) {
	r, ok := crdt.ParseFloat(c.Args[2])
	if !ok {
		c.fail(ErrNotFloat)
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st, err := writable(tx, k, crdt.TypeString)
		if err != nil {
			return err
		}
		cur := new(big.Rat)
		if tx.Get(k) != nil {
			v, _ := st.StrValue()
			x, ok := crdt.ParseFloat(v)
			if !ok {
				return ErrNotFloat
			}
			cur = x
		}
		if tooBig(new(big.Rat).Add(cur, r)) {
			return ErrNaN
		}
		tx.Apply(k, crdt.IncrByFloat(st, tx.Op(), r))
		v, _ := tx.State(k).StrValue()
		c.Conn.Bulk(v)
		return nil
	})
}

// tooBig reports a result a long double could not hold (Redis's NaN or
// Infinity error).
func tooBig(r *big.Rat) bool {
	f := new(big.Float).SetPrec(64).SetRat(r)
	return f.MantExp(nil) > 16384
}
