package commands

import (
	"strings"

	"concord/crdt"
	"concord/keyspace"
)

var keyCmds = []*Cmd{
	{Name: "del", Arity: -2, Flags: []string{"write"}, First: 1, Last: -1, Step: 1, Group: "generic", Summary: "Deletes one or more keys.", Since: "1.0.0", Fn: cmdDel},
	{Name: "unlink", Arity: -2, Flags: []string{"write", "fast"}, First: 1, Last: -1, Step: 1, Group: "generic", Summary: "Asynchronously deletes one or more keys.", Since: "4.0.0", Fn: cmdDel},
	{Name: "exists", Arity: -2, Flags: []string{"readonly", "fast"}, First: 1, Last: -1, Step: 1, Group: "generic", Summary: "Determines whether one or more keys exist.", Since: "1.0.0", Fn: cmdExists},
	{Name: "touch", Arity: -2, Flags: []string{"readonly", "fast"}, First: 1, Last: -1, Step: 1, Group: "generic", Summary: "Returns the number of existing keys out of those specified after updating the time they were last accessed.", Since: "3.2.1", Fn: cmdExists},
	{Name: "type", Arity: 2, Flags: []string{"readonly", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Determines the type of value stored at a key.", Since: "1.0.0", Fn: cmdType},
	{Name: "keys", Arity: 2, Flags: []string{"readonly"}, Group: "generic", Summary: "Returns all key names that match a pattern.", Since: "1.0.0", Fn: cmdKeys},
	{Name: "scan", Arity: -2, Flags: []string{"readonly"}, Group: "generic", Summary: "Iterates over the key names in the database.", Since: "2.8.0", Fn: cmdScan},
	{Name: "randomkey", Arity: 1, Flags: []string{"readonly"}, Group: "generic", Summary: "Returns a random key name from the database.", Since: "1.0.0", Fn: cmdRandomKey},
	{Name: "rename", Arity: 3, Flags: []string{"write"}, First: 1, Last: 2, Step: 1, Group: "generic", Summary: "Renames a key and overwrites the destination.", Since: "1.0.0", Fn: func(c *Ctx) { cmdRename(c, false) }},
	{Name: "renamenx", Arity: 3, Flags: []string{"write", "fast"}, First: 1, Last: 2, Step: 1, Group: "generic", Summary: "Renames a key only when the target key name doesn't exist.", Since: "1.0.0", Fn: func(c *Ctx) { cmdRename(c, true) }},
	{Name: "copy", Arity: -3, Flags: []string{"write", "denyoom"}, First: 1, Last: 2, Step: 1, Group: "generic", Summary: "Copies the value of a key to a new key.", Since: "6.2.0", Fn: cmdCopy},
	{Name: "move", Arity: 3, Flags: []string{"write", "fast"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Moves a key to another database.", Since: "1.0.0", Fn: cmdMove},
	{Name: "dbsize", Arity: 1, Flags: []string{"readonly", "fast"}, Group: "server", Summary: "Returns the number of keys in the database.", Since: "1.0.0", Fn: cmdDBSize},
	{Name: "flushdb", Arity: -1, Flags: []string{"write"}, Group: "server", Summary: "Remove all keys from the current database.", Since: "1.0.0", Fn: func(c *Ctx) { cmdFlush(c, false) }},
	{Name: "flushall", Arity: -1, Flags: []string{"write"}, Group: "server", Summary: "Removes all keys from all databases.", Since: "1.0.0", Fn: func(c *Ctx) { cmdFlush(c, true) }},
	{Name: "swapdb", Arity: 3, Flags: []string{"write", "fast"}, Group: "server", Summary: "Swaps two Redis databases.", Since: "4.0.0", Fn: cmdSwapDB},
	{Name: "object", Arity: -2, Flags: []string{"readonly"}, First: 2, Last: 2, Step: 1, Group: "generic", Summary: "A container for object introspection commands.", Since: "2.2.3", Fn: cmdObject},
	{Name: "dump", Arity: 2, Flags: []string{"readonly"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Returns a serialized representation of the value stored at a key.", Since: "2.6.0", Fn: notSupported},
	{Name: "restore", Arity: -4, Flags: []string{"write", "denyoom"}, First: 1, Last: 1, Step: 1, Group: "generic", Summary: "Creates a key from the serialized representation of a value.", Since: "2.6.0", Fn: notSupported},
}

func notSupported(c *Ctx) {
	c.fail(Error("ERR " + strings.ToUpper(c.Cmd.Name) + " is not supported by Concord: values are CRDT states, not RDB objects"))
}

func cmdDel(c *Ctx) {
	keys := c.keys(1, len(c.Args), 1)
	c.run(keys, func(tx *keyspace.Tx) error {
		n := 0
		for _, k := range keys {
			if tx.Get(k) != nil {
				tx.Apply(k, crdt.Delete(tx.State(k)))
				n++
			}
		}
		c.Conn.Int(int64(n))
		return nil
	})
}

func cmdExists(c *Ctx) {
	keys := c.keys(1, len(c.Args), 1)
	c.run(keys, func(tx *keyspace.Tx) error {
		n := 0
		for _, k := range keys {
			if tx.Get(k) != nil {
				n++
			}
		}
		c.Conn.Int(int64(n))
		return nil
	})
}

func cmdType(c *Ctx) {
	c.run1(1, func(tx *keyspace.Tx, k keyspace.Key) error {
		c.Conn.Simple(tx.Type(k).String())
		return nil
	})
}

func cmdKeys(c *Ctx) {
	pat := c.arg(1)
	var out []string
	for cur := uint64(0); ; {
		var page []string
		page, cur = c.ks.ScanPage(c.tx, c.Conn.DB, cur, 1<<16, func(k string, _ func() *crdt.State) bool { return globMatch(pat, k, false) })
		out = append(out, page...)
		if cur == 0 {
			break
		}
	}
	c.bulks(out)
}

func cmdScan(c *Ctx) {
	cur, err := parseCursor(c.Args[1])
	if err != nil {
		c.fail(err)
		return
	}
	sa, err := c.parseScan(2, true)
	if err != nil {
		c.fail(err)
		return
	}
	page, next := c.ks.ScanPage(c.tx, c.Conn.DB, cur, sa.count, func(k string, st func() *crdt.State) bool {
		return (!sa.hasM || globMatch(sa.match, k, false)) && (sa.typ == "" || strings.EqualFold(st().Type().String(), sa.typ))
	})
	c.scanReply(next, page)
}

func cmdRandomKey(c *Ctx) {
	if k := c.ks.RandomKey(c.tx, c.Conn.DB); k != "" {
		c.Conn.BulkString(k)
	} else {
		c.Conn.Null()
	}
}

// copyValue makes dst hold the value and deadline of src (any type),
// replacing whatever dst held. Counters are copied as their current value.
func copyValue(tx *keyspace.Tx, src *crdt.State, dst keyspace.Key) {
	prev := tx.State(dst)
	op := tx.Op()
	switch src.Type() {
	case crdt.TypeString:
		v, _ := src.StrValue()
		tx.Apply(dst, crdt.SetString(prev, op, v, false))
	case crdt.TypeSet:
		tx.Apply(dst, crdt.ReplaceSetFrom(prev, op, src.Set))
	case crdt.TypeHash:
		tx.Apply(dst, crdt.ReplaceHashFrom(prev, op, src.Hash))
	}
	if at := src.ExpireAt(); at > 0 {
		tx.Apply(dst, crdt.Expire(tx.State(dst), tx.Op(), at))
	}
}

func cmdRename(c *Ctx, nx bool) {
	src, dst := c.key(1), c.key(2)
	c.run([]keyspace.Key{src, dst}, func(tx *keyspace.Tx) error {
		st := tx.Get(src)
		if st == nil {
			return ErrNoSuchKey
		}
		if src == dst {
			if nx {
				c.Conn.Int(0)
			} else {
				c.Conn.OK()
			}
			return nil
		}
		if nx && tx.Get(dst) != nil {
			c.Conn.Int(0)
			return nil
		}
		copyValue(tx, st, dst)
		tx.Apply(src, crdt.Delete(tx.State(src)))
		if nx {
			c.Conn.Int(1)
		} else {
			c.Conn.OK()
		}
		return nil
	})
}

func (c *Ctx) dbArg(i int) (int, error) {
	n, ok := crdt.ParseInt(c.Args[i])
	if !ok {
		return 0, ErrNotInt
	}
	if n < 0 || n >= int64(c.ks.DBs()) {
		return 0, ErrDBIndex
	}
	return int(n), nil
}

func cmdCopy(c *Ctx) {
	src, dst := c.key(1), c.key(2)
	replace := false
	for i := 3; i < len(c.Args); i++ {
		switch {
		case c.argIs(i, "replace"):
			replace = true
		case c.argIs(i, "db") && i+1 < len(c.Args):
			db, err := c.dbArg(i + 1)
			if err != nil {
				c.fail(err)
				return
			}
			dst.DB = db
			i++
		default:
			c.fail(ErrSyntax)
			return
		}
	}
	if src == dst {
		c.fail(ErrSameObject)
		return
	}
	c.run([]keyspace.Key{src, dst}, func(tx *keyspace.Tx) error {
		st := tx.Get(src)
		if st == nil || (tx.Get(dst) != nil && !replace) {
			c.Conn.Int(0)
			return nil
		}
		copyValue(tx, st, dst)
		c.Conn.Int(1)
		return nil
	})
}

func cmdMove(c *Ctx) {
	db, err := c.dbArg(2)
	if err != nil {
		c.fail(err)
		return
	}
	src := c.key(1)
	dst := keyspace.Key{DB: db, Key: src.Key}
	if db == src.DB {
		c.fail(ErrSameObject)
		return
	}
	c.run([]keyspace.Key{src, dst}, func(tx *keyspace.Tx) error {
		st := tx.Get(src)
		if st == nil || tx.Get(dst) != nil {
			c.Conn.Int(0)
			return nil
		}
		copyValue(tx, st, dst)
		tx.Apply(src, crdt.Delete(tx.State(src)))
		c.Conn.Int(1)
		return nil
	})
}

func cmdDBSize(c *Ctx) {
	n, _ := c.ks.Size(c.Conn.DB)
	c.Conn.Int(int64(n))
}

func cmdFlush(c *Ctx, all bool) {
	if len(c.Args) > 2 || (len(c.Args) == 2 && !c.argIs(1, "async") && !c.argIs(1, "sync")) {
		c.fail(ErrSyntax)
		return
	}
	c.all(func(tx *keyspace.Tx) error {
		dbs := []int{c.Conn.DB}
		if all {
			dbs = dbs[:0]
			for i := 0; i < c.ks.DBs(); i++ {
				dbs = append(dbs, i)
			}
		}
		for _, db := range dbs {
			keys := tx.Keys(db)
			tx.Reserve(len(keys))
			for _, key := range keys {
				k := keyspace.Key{DB: db, Key: key}
				tx.Apply(k, crdt.Delete(tx.State(k)))
			}
			tx.BumpEpoch(db)
		}
		c.Conn.OK()
		return nil
	})
}

func cmdSwapDB(c *Ctx) {
	a, err := c.dbArg(1)
	if err == nil {
		var b int
		if b, err = c.dbArg(2); err == nil {
			c.all(func(tx *keyspace.Tx) error {
				// Swapping is replicated as writes: each key of either
				// database is copied across and its old copy removed.
				type kv struct {
					key string
					st  *crdt.State
				}
				var fromA, fromB []kv
				for _, k := range tx.Keys(a) {
					fromA = append(fromA, kv{k, tx.Get(keyspace.Key{DB: a, Key: k}).Clone()})
				}
				for _, k := range tx.Keys(b) {
					fromB = append(fromB, kv{k, tx.Get(keyspace.Key{DB: b, Key: k}).Clone()})
				}
				if a != b {
					for _, x := range fromA {
						tx.Apply(keyspace.Key{DB: a, Key: x.key}, crdt.Delete(tx.State(keyspace.Key{DB: a, Key: x.key})))
					}
					for _, x := range fromB {
						tx.Apply(keyspace.Key{DB: b, Key: x.key}, crdt.Delete(tx.State(keyspace.Key{DB: b, Key: x.key})))
					}
					for _, x := range fromA {
						copyValue(tx, x.st, keyspace.Key{DB: b, Key: x.key})
					}
					for _, x := range fromB {
						copyValue(tx, x.st, keyspace.Key{DB: a, Key: x.key})
					}
				}
				tx.BumpEpoch(a)
				tx.BumpEpoch(b)
				c.Conn.OK()
				return nil
			})
			return
		}
	}
	if err == ErrNotInt {
		err = Error("ERR invalid first DB index")
		if _, e1 := c.dbArg(1); e1 != ErrNotInt {
			err = Error("ERR invalid second DB index")
		}
	}
	c.fail(err)
}

func cmdObject(c *Ctx) {
	sub := strings.ToLower(c.arg(1))
	if sub == "help" {
		c.bulks([]string{
			"OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
			"ENCODING <key>", "    Return the kind of internal representation the Redis object stored at <key> is using.",
			"FREQ <key>", "    Return the access frequency index of the key <key>.",
			"HELP", "    Print this help.",
			"IDLETIME <key>", "    Return the idle time of the key <key>.",
			"REFCOUNT <key>", "    Return the reference count of the object stored at <key>.",
		})
		return
	}
	if sub != "encoding" && sub != "freq" && sub != "idletime" && sub != "refcount" {
		c.fail(unknownSub(c, false))
		return
	}
	if len(c.Args) != 3 {
		c.fail(unknownSub(c, true))
		return
	}
	c.run1(2, func(tx *keyspace.Tx, k keyspace.Key) error {
		st := tx.Get(k)
		if st == nil {
			c.Conn.Null()
			return nil
		}
		switch sub {
		case "encoding":
			c.Conn.BulkString(encodingOf(st))
		case "freq":
			return Error("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.")
		case "idletime":
			c.Conn.Int(0)
		default:
			c.Conn.Int(1)
		}
		return nil
	})
}

// encodingOf names the encoding Redis would use for the same value, so that
// tools reading OBJECT ENCODING see familiar answers.
func encodingOf(st *crdt.State) string {
	switch st.Type() {
	case crdt.TypeString:
		v, _ := st.StrValue()
		if _, ok := crdt.ParseInt(v); ok {
			return "int"
		}
		if len(v) <= 44 {
			return "embstr"
		}
		return "raw"
	case crdt.TypeSet:
		if st.Set.Len() > 512 {
			return "hashtable"
		}
		for m := range st.Set.All() {
			if _, ok := crdt.ParseInt([]byte(m)); !ok {
				return "hashtable"
			}
		}
		return "intset"
	case crdt.TypeHash:
		if st.HashLen() > 128 {
			return "hashtable"
		}
		for _, f := range st.Fields() {
			v, _ := st.Field(f)
			if len(f) > 64 || len(v) > 64 {
				return "hashtable"
			}
		}
		return "listpack"
	}
	return "none"
}
