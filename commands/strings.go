package commands

import (
	"math"
	"strconv"

	"concord/crdt"
	"concord/keyspace"
)

var stringCmds = []*Cmd{
	{Name: "get", Arity: 2, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Returns the string value of a key.", Since: "1.0.0", Fn: cmdGet},
	{Name: "set", Arity: -3, Flags: []string{"write", "denyoom"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", Since: "1.0.0", Fn: cmdSet},
	{Name: "setnx", Arity: 3, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Set the string value of a key only when the key doesn't exist.", Since: "1.0.0", Fn: cmdSetNX},
	{Name: "setex", Arity: 4, Flags: []string{"write", "denyoom"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Sets the string value and expiration time of a key.", Since: "2.0.0", Fn: func(c *Ctx) { cmdSetEx(c, 1000) }},
	{Name: "psetex", Arity: 4, Flags: []string{"write", "denyoom"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Sets both string value and expiration time in milliseconds of a key.", Since: "2.6.0", Fn: func(c *Ctx) { cmdSetEx(c, 1) }},
	{Name: "getset", Arity: 3, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Returns the previous string value of a key after setting it to a new value.", Since: "1.0.0", Fn: cmdGetSet},
	{Name: "getdel", Arity: 2, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Returns the string value of a key after deleting the key.", Since: "6.2.0", Fn: cmdGetDel},
	{Name: "getex", Arity: -2, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Returns the string value of a key after setting its expiration time.", Since: "6.2.0", Fn: cmdGetEx},
	{Name: "mget", Arity: -2, Flags: []string{"readonly", "fast"}, First: 1, Last: -1, Step: 1, Group: "string", Summary: "Atomically returns the string values of one or more keys.", Since: "1.0.0", Fn: cmdMGet},
	{Name: "mset", Arity: -3, Flags: []string{"write", "denyoom"}, First: 1, Last: -1, Step: 2, Group: "string", Summary: "Atomically creates or modifies the string values of one or more keys.", Since: "1.0.1", Fn: func(c *Ctx) { cmdMSet(c, false) }},
	{Name: "msetnx", Arity: -3, Flags: []string{"write", "denyoom"}, First: 1, Last: -1, Step: 2, Group: "string", Summary: "Atomically modifies the string values of one or more keys only when all keys don't exist.", Since: "1.0.1", Fn: func(c *Ctx) { cmdMSet(c, true) }},
	{Name: "append", Arity: 3, Flags: []string{"write", "denyoom", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Appends a string to the value of a key. Creates the key if it doesn't exist.", Since: "2.0.0", Fn: cmdAppend},
	{Name: "strlen", Arity: 2, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Returns the length of a string value.", Since: "2.2.0", Fn: cmdStrlen},
	{Name: "getrange", Arity: 4, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Returns a substring of the string stored at a key.", Since: "2.4.0", Fn: cmdGetRange},
	{Name: "substr", Arity: 4, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Returns a substring from a string value.", Since: "1.0.0", Fn: cmdGetRange},
	{Name: "setrange", Arity: 4, Flags: []string{"write", "denyoom"}, First: 1, Last: 1, Step: 1, Group: "string", Summary: "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", Since: "2.2.0", Fn: cmdSetRange},
	{Name: "lcs", Arity: -3, Flags: []string{"readonly"}, First: 1, Last: 2, Step: 1, Group: "string", Summary: "Finds the longest common substring.", Since: "7.0.0", Fn: cmdLCS},
}

// strValue reads k as a string: nil, false when absent.
func (c *Ctx) strValue(tx *keyspace.Tx, k keyspace.Key) ([]byte, bool, error) {
	st, err := c.get(tx, k, crdt.TypeString)
	if st == nil || err != nil {
		return nil, false, err
	}
	v, ok := st.StrValue()
	return v, ok, nil
}

func cmdGet(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		v, ok, err := c.strValue(tx, k)
		if err != nil {
			return err
		}
		if !ok {
			c.Conn.Null()
			return nil
		}
		c.Conn.Bulk(v)
		return nil
	})
}

// setString assigns v to k, replacing any type; at > 0 sets a deadline,
// keepTTL keeps the current one.
func setString(tx *keyspace.Tx, k keyspace.Key, v []byte, at int64, keepTTL bool) {
	if at > 0 && at <= tx.NowMs() { // already expired: Redis deletes the key
		if tx.Get(k) != nil {
			tx.Apply(k, crdt.Delete(tx.State(k)))
		}
		return
	}
	if at > 0 {
		tx.Apply(k, crdt.SetStringExpire(tx.State(k), tx.Op(), v, at))
		return
	}
	tx.Apply(k, crdt.SetString(tx.State(k), tx.Op(), v, keepTTL))
}

// ttlOpt is an EX/PX/EXAT/PXAT option of SET and GETEX.
type ttlOpt struct {
	unit int64 // 0: not given; 1000 seconds, 1 milliseconds
	abs  bool
	when []byte
}

// parse consumes an EX/PX/EXAT/PXAT option at argument i, if there is one.
func (o *ttlOpt) parse(c *Ctx, i *int) bool {
	a := c.Args[*i]
	if o.unit != 0 || *i+1 >= len(c.Args) || !(c.argIs(*i, "ex") || c.argIs(*i, "px") || c.argIs(*i, "exat") || c.argIs(*i, "pxat")) {
		return false
	}
	o.unit, o.abs = 1000, len(a) == 4
	if a[0] == 'p' || a[0] == 'P' {
		o.unit = 1
	}
	*i++
	o.when = c.Args[*i]
	return true
}

// deadline resolves the option to a unix-ms deadline (0 when not given).
func (o *ttlOpt) deadline(now int64, cmd string) (int64, error) {
	if o.unit == 0 {
		return 0, nil
	}
	return expireArg(o.when, o.unit, o.abs, now, cmd)
}

// expireArg parses an expiry amount in unit ms (1000 for seconds), absolute
// when abs, into a unix-ms deadline.
func expireArg(b []byte, unit int64, abs bool, now int64, cmd string) (int64, error) {
	n, ok := crdt.ParseInt(b)
	if !ok {
		return 0, ErrNotInt
	}
	bad := Error("ERR invalid expire time in '" + cmd + "' command")
	if n <= 0 || n > math.MaxInt64/unit {
		return 0, bad
	}
	ms := n * unit
	if !abs {
		if ms > math.MaxInt64-now {
			return 0, bad
		}
		ms += now
	}
	return ms, nil
}

func cmdSet(c *Ctx) {
	var nx, xx, get, keep bool
	var ttl ttlOpt
	for i := 3; i < len(c.Args); i++ {
		switch {
		case c.argIs(i, "nx") && !xx:
			nx = true
		case c.argIs(i, "xx") && !nx:
			xx = true
		case c.argIs(i, "get"):
			get = true
		case c.argIs(i, "keepttl") && ttl.unit == 0:
			keep = true
		case !keep && ttl.parse(c, &i):
		default:
			c.fail(ErrSyntax)
			return
		}
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		at, err := ttl.deadline(tx.NowMs(), "set")
		if err != nil {
			return err
		}
		var old []byte
		var had bool
		if get {
			var err error
			if old, had, err = c.strValue(tx, k); err != nil {
				return err
			}
		}
		exists := tx.Get(k) != nil
		if (nx && exists) || (xx && !exists) {
			if get && had {
				c.Conn.Bulk(old)
			} else {
				c.Conn.Null()
			}
			return nil
		}
		setString(tx, k, c.Args[2], at, keep)
		switch {
		case get && had:
			c.Conn.Bulk(old)
		case get:
			c.Conn.Null()
		default:
			c.Conn.OK()
		}
		return nil
	})
}

func cmdSetNX(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		if tx.Get(k) != nil {
			c.Conn.Int(0)
			return nil
		}
		setString(tx, k, c.Args[2], 0, false)
		c.Conn.Int(1)
		return nil
	})
}

func cmdSetEx(c *Ctx, unit int64) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		at, err := expireArg(c.Args[2], unit, false, tx.NowMs(), c.Cmd.Name)
		if err != nil {
			return err
		}
		setString(tx, k, c.Args[3], at, false)
		c.Conn.OK()
		return nil
	})
}

func cmdGetSet(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		old, had, err := c.strValue(tx, k)
		if err != nil {
			return err
		}
		setString(tx, k, c.Args[2], 0, false)
		if had {
			c.Conn.Bulk(old)
		} else {
			c.Conn.Null()
		}
		return nil
	})
}

func cmdGetDel(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		old, had, err := c.strValue(tx, k)
		if err != nil {
			return err
		}
		if !had {
			c.Conn.Null()
			return nil
		}
		tx.Apply(k, crdt.Delete(tx.State(k)))
		c.Conn.Bulk(old)
		return nil
	})
}

func cmdGetEx(c *Ctx) {
	var ttl ttlOpt
	var persist bool
	for i := 2; i < len(c.Args); i++ {
		switch {
		case c.argIs(i, "persist") && ttl.unit == 0:
			persist = true
		case !persist && ttl.parse(c, &i):
		default:
			c.fail(ErrSyntax)
			return
		}
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		at, err := ttl.deadline(tx.NowMs(), "getex")
		if err != nil {
			return err
		}
		v, had, err := c.strValue(tx, k)
		if err != nil {
			return err
		}
		if !had {
			c.Conn.Null()
			return nil
		}
		st := tx.State(k)
		switch {
		case at > 0 && at <= tx.NowMs():
			tx.Apply(k, crdt.Delete(st))
		case at > 0:
			tx.Apply(k, crdt.Expire(st, tx.Op(), at))
		case persist && st.ExpireAt() > 0:
			tx.Apply(k, crdt.Expire(st, tx.Op(), 0))
		}
		c.Conn.Bulk(v)
		return nil
	})
}

func cmdMGet(c *Ctx) {
	keys := c.keys(1, len(c.Args), 1)
	c.run(keys, func(tx *keyspace.Tx) error {
		c.Conn.Array(len(keys))
		for _, k := range keys {
			st := tx.Get(k)
			if st == nil || st.Type() != crdt.TypeString {
				c.Conn.Null()
				continue
			}
			v, _ := st.StrValue()
			c.Conn.Bulk(v)
		}
		return nil
	})
}

func cmdMSet(c *Ctx, nx bool) {
	if len(c.Args)%2 != 1 {
		c.fail(Error(argErr(c.Cmd.Name)))
		return
	}
	keys := c.keys(1, len(c.Args), 2)
	c.run(keys, func(tx *keyspace.Tx) error {
		if nx {
			for _, k := range keys {
				if tx.Get(k) != nil {
					c.Conn.Int(0)
					return nil
				}
			}
		}
		for i, k := range keys {
			setString(tx, k, c.Args[2+2*i], 0, false)
		}
		if nx {
			c.Conn.Int(1)
		} else {
			c.Conn.OK()
		}
		return nil
	})
}

func (c *Ctx) maxBulk() int64 { return c.e.Config.Int("proto-max-bulk-len") }

func cmdAppend(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		old, _, err := c.strValue(tx, k)
		if err != nil {
			return err
		}
		if int64(len(old)+len(c.Args[2])) > c.maxBulk() {
			return ErrStringTooBig
		}
		tx.Splice(k, old, len(old), c.Args[2], true)
		c.Conn.Int(int64(len(old) + len(c.Args[2])))
		return nil
	})
}

func cmdStrlen(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		v, _, err := c.strValue(tx, k)
		if err != nil {
			return err
		}
		c.Conn.Int(int64(len(v)))
		return nil
	})
}

// rangeOf resolves Redis's start/end (negative from the end) over n items;
// ok is false for an empty range.
func rangeOf(start, end, n int64) (int64, int64, bool) {
	if start < 0 {
		start += n
	}
	if end < 0 {
		end += n
	}
	if start < 0 {
		start = 0
	}
	if end < 0 {
		end = 0
	}
	if end >= n {
		end = n - 1
	}
	if n == 0 || start > end {
		return 0, 0, false
	}
	return start, end, true
}

func cmdGetRange(c *Ctx) {
	start, ok1 := crdt.ParseInt(c.Args[2])
	end, ok2 := crdt.ParseInt(c.Args[3])
	if !ok1 || !ok2 {
		c.fail(ErrNotInt)
		return
	}
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		v, _, err := c.strValue(tx, k)
		if err != nil {
			return err
		}
		if start < 0 && end < 0 && start > end {
			c.Conn.BulkString("")
			return nil
		}
		s, e, ok := rangeOf(start, end, int64(len(v)))
		if !ok {
			c.Conn.BulkString("")
			return nil
		}
		c.Conn.Bulk(v[s : e+1])
		return nil
	})
}

func cmdSetRange(c *Ctx) {
	off, ok := crdt.ParseInt(c.Args[2])
	if !ok {
		c.fail(ErrNotInt)
		return
	}
	if off < 0 {
		c.fail(ErrOffset)
		return
	}
	val := c.Args[3]
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		old, had, err := c.strValue(tx, k)
		if err != nil {
			return err
		}
		if len(val) == 0 {
			c.Conn.Int(int64(len(old)))
			return nil
		}
		if off+int64(len(val)) > c.maxBulk() {
			return ErrStringTooBig
		}
		tx.Splice(k, old, int(off), val, had)
		c.Conn.Int(max(int64(len(old)), off+int64(len(val))))
		return nil
	})
}

func cmdLCS(c *Ctx) {
	var wantLen, idx, withLen bool
	var minLen int64
	for i := 3; i < len(c.Args); i++ {
		switch {
		case c.argIs(i, "len"):
			wantLen = true
		case c.argIs(i, "idx"):
			idx = true
		case c.argIs(i, "withmatchlen"):
			withLen = true
		case c.argIs(i, "minmatchlen") && i+1 < len(c.Args):
			n, ok := crdt.ParseInt(c.Args[i+1])
			if !ok {
				c.fail(ErrNotInt)
				return
			}
			minLen = max(n, 0)
			i++
		default:
			c.fail(ErrSyntax)
			return
		}
	}
	if wantLen && idx {
		c.fail(Error("ERR If you want both the length and indexes, please just use IDX."))
		return
	}
	keys := []keyspace.Key{c.key(1), c.key(2)}
	c.run(keys, func(tx *keyspace.Tx) error {
		var vals [2][]byte
		for i, k := range keys {
			st := tx.Get(k)
			if st != nil && st.Type() != crdt.TypeString {
				return Error("ERR The specified keys must contain string values")
			}
			if st != nil {
				vals[i], _ = st.StrValue()
			}
		}
		a, b := vals[0], vals[1]
		if uint64(len(a)+1)*uint64(len(b)+1) > 1<<28 {
			return Error("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")
		}
		w := len(b) + 1
		dp := make([]uint32, (len(a)+1)*w)
		for i := 1; i <= len(a); i++ {
			for j := 1; j <= len(b); j++ {
				if a[i-1] == b[j-1] {
					dp[i*w+j] = dp[(i-1)*w+j-1] + 1
				} else {
					dp[i*w+j] = max(dp[(i-1)*w+j], dp[i*w+j-1])
				}
			}
		}
		total := dp[len(a)*w+len(b)]
		if wantLen {
			c.Conn.Int(int64(total))
			return nil
		}
		// walk back collecting the common string and the matching ranges
		res := make([]byte, total)
		type rng struct{ a1, a2, b1, b2 int }
		var matches []rng
		cur := rng{-1, -1, -1, -1}
		flush := func() {
			if cur.a1 >= 0 && int64(cur.a2-cur.a1+1) >= minLen {
				matches = append(matches, cur)
			}
			cur = rng{-1, -1, -1, -1}
		}
		i, j, n := len(a), len(b), total
		for i > 0 && j > 0 {
			if a[i-1] == b[j-1] {
				n--
				res[n] = a[i-1]
				if cur.a1 >= 0 && cur.a1 == i && cur.b1 == j {
					cur.a1, cur.b1 = i-1, j-1
				} else {
					flush()
					cur = rng{i - 1, i - 1, j - 1, j - 1}
				}
				i--
				j--
			} else if dp[(i-1)*w+j] > dp[i*w+j-1] {
				i--
			} else {
				j--
			}
		}
		flush()
		if !idx {
			c.Conn.Bulk(res)
			return nil
		}
		c.Conn.Map(2)
		c.Conn.BulkString("matches")
		c.Conn.Array(len(matches))
		for _, m := range matches {
			if withLen {
				c.Conn.Array(3)
			} else {
				c.Conn.Array(2)
			}
			c.Conn.Array(2)
			c.Conn.Int(int64(m.a1))
			c.Conn.Int(int64(m.a2))
			c.Conn.Array(2)
			c.Conn.Int(int64(m.b1))
			c.Conn.Int(int64(m.b2))
			if withLen {
				c.Conn.Int(int64(m.a2 - m.a1 + 1))
			}
		}
		c.Conn.BulkString("len")
		c.Conn.Int(int64(total))
		return nil
	})
}

func formatInt(n int64) string { return strconv.FormatInt(n, 10) }
