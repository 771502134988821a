package commands

import (
	"math"

	"concord/crdt"
	"concord/keyspace"
)

var expireCmds = []*Cmd{
	{Name: "expire", Arity: -3, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Sets the expiration time of a key in seconds.", Since: "1.0.0", Fn: func(c *Ctx) { cmdExpire(c, 1000, false) }},
	{Name: "pexpire", Arity: -3, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Sets the expiration time of a key in milliseconds.", Since: "2.6.0", Fn: func(c *Ctx) { cmdExpire(c, 1, false) }},
	{Name: "expireat", Arity: -3, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Sets the expiration time of a key to a Unix timestamp.", Since: "1.2.0", Fn: func(c *Ctx) { cmdExpire(c, 1000, true) }},
	{Name: "pexpireat", Arity: -3, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Sets the expiration time of a key to a Unix milliseconds timestamp.", Since: "2.6.0", Fn: func(c *Ctx) { cmdExpire(c, 1, true) }},
	{Name: "ttl", Arity: 2, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Returns the expiration time in seconds of a key.", Since: "1.0.0", Fn: func(c *Ctx) { cmdTTL(c, 1000, false) }},
	{Name: "pttl", Arity: 2, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Returns the expiration time in milliseconds of a key.", Since: "2.6.0", Fn: func(c *Ctx) { cmdTTL(c, 1, false) }},
	{Name: "expiretime", Arity: 2, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Returns the expiration time of a key as a Unix timestamp.", Since: "7.0.0", Fn: func(c *Ctx) { cmdTTL(c, 1000, true) }},
	{Name: "pexpiretime", Arity: 2, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Returns the expiration time of a key as a Unix milliseconds timestamp.", Since: "7.0.0", Fn: func(c *Ctx) { cmdTTL(c, 1, true) }},
	{Name: "persist", Arity: 2, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Removes the expiration time of a key.", Since: "2.2.0", Fn: cmdPersist},
}

func cmdExpire(c *Ctx, unit int64, abs bool) {
	n, ok := crdt.ParseInt(c.Args[2])
	if !ok {
		c.fail(ErrNotInt)
		return
	}
	var nx, xx, gt, lt bool
	for i := 3; i < len(c.Args); i++ {
		switch {
		case c.argIs(i, "nx"):
			nx = true
		case c.argIs(i, "xx"):
			xx = true
		case c.argIs(i, "gt"):
			gt = true
		case c.argIs(i, "lt"):
			lt = true
		default:
			c.fail(Error("ERR Unsupported option " + c.arg(i)))
			return
		}
	}
	if nx && (xx || gt || lt) {
		c.fail(Error("ERR NX and XX, GT or LT options at the same time are not compatible"))
		return
	}
	if gt && lt {
		c.fail(Error("ERR GT and LT options at the same time are not compatible"))
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		bad := Error("ERR invalid expire time in '" + c.Cmd.Name + "' command")
		if n > math.MaxInt64/unit || n < math.MinInt64/unit {
			return bad
		}
		at := n * unit
		if !abs {
			if at > 0 && at > math.MaxInt64-tx.NowMs() {
				return bad
			}
			at += tx.NowMs()
		}
		st := tx.Get(k)
		if st == nil {
			c.Conn.Int(0)
			return nil
		}
		cur := st.ExpireAt()
		switch {
		case nx && cur != 0, xx && cur == 0, gt && (cur == 0 || at <= cur), lt && cur != 0 && at >= cur:
			c.Conn.Int(0)
			return nil
		}
		if at <= tx.NowMs() {
			tx.Apply(k, crdt.Delete(tx.State(k)))
		} else {
			tx.Apply(k, crdt.Expire(tx.State(k), tx.Op(), at))
		}
		c.Conn.Int(1)
		return nil
	})
}

func cmdTTL(c *Ctx, unit int64, abs bool) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st := tx.Get(k)
		switch {
		case st == nil:
			c.Conn.Int(-2)
		case st.ExpireAt() == 0:
			c.Conn.Int(-1)
		case abs:
			c.Conn.Int(st.ExpireAt() / unit)
		default:
			left := st.ExpireAt() - tx.NowMs()
			c.Conn.Int((left + unit/2) / unit)
		}
		return nil
	})
}

func cmdPersist(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		st := tx.Get(k)
		if st == nil || st.ExpireAt() == 0 {
			c.Conn.Int(0)
			return nil
		}
		tx.Apply(k, crdt.Expire(tx.State(k), tx.Op(), 0))
		c.Conn.Int(1)
		return nil
	})
}
