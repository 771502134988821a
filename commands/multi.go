package commands

import (
	"concord/keyspace"
)

var multiCmds = []*Cmd{
	{Name: "multi", Arity: 1, Flags: []string{"fast"}, Group: "transactions", Summary: "Starts a transaction.", Since: "1.2.0", Fn: cmdMulti},
	{Name: "exec", Arity: 1, Group: "transactions", Summary: "Executes all commands in a transaction.", Since: "1.2.0", Fn: cmdExec},
	{Name: "discard", Arity: 1, Flags: []string{"fast"}, Group: "transactions", Summary: "Discards a transaction.", Since: "2.0.0", Fn: cmdDiscard},
	{Name: "watch", Arity: -2, Flags: []string{"fast"}, First: 1, Last: -1, Step: 1, Group: "transactions", Summary: "Monitors changes to keys to determine the execution of a transaction.", Since: "2.2.0", Fn: cmdWatch},
	{Name: "unwatch", Arity: 1, Flags: []string{"fast"}, Group: "transactions", Summary: "Forgets about watched keys of a transaction.", Since: "2.2.0", Fn: func(c *Ctx) { c.Conn.Watches = nil; c.Conn.OK() }},
}

func cmdMulti(c *Ctx) {
	if c.Conn.InMulti {
		c.fail(Error("ERR MULTI calls can not be nested"))
		return
	}
	c.Conn.InMulti = true
	c.Conn.OK()
}

func cmdDiscard(c *Ctx) {
	if !c.Conn.InMulti {
		c.fail(Error("ERR DISCARD without MULTI"))
		return
	}
	c.Conn.InMulti, c.Conn.Queue, c.Conn.MultiErr, c.Conn.Watches = false, nil, false, nil
	c.Conn.OK()
}

func cmdWatch(c *Ctx) {
	if c.Conn.InMulti {
		c.fail(Error("ERR WATCH inside MULTI is not allowed"))
		return
	}
	keys := c.keys(1, len(c.Args), 1)
	c.run(keys, func(tx *keyspace.Tx) error {
		for _, k := range keys {
			c.Conn.Watches = append(c.Conn.Watches, watchOf(k, tx.Version(k)))
		}
		return nil
	})
	c.Conn.OK()
}

// cmdExec runs the queued commands holding the whole keyspace, so they are
// atomic locally and their deltas form one batch.
func cmdExec(c *Ctx) {
	conn := c.Conn
	if !conn.InMulti {
		c.fail(Error("ERR EXEC without MULTI"))
		return
	}
	queue, watches, aborted := conn.Queue, conn.Watches, conn.MultiErr
	conn.InMulti, conn.Queue, conn.MultiErr, conn.Watches = false, nil, false, nil
	if aborted {
		c.fail(Error("EXECABORT Transaction discarded because of previous errors."))
		return
	}
	c.all(func(tx *keyspace.Tx) error {
		for _, w := range watches {
			if tx.Version(keyspace.Key{DB: w.DB, Key: w.Key}) != w.Ver {
				conn.NullArray()
				return nil
			}
		}
		conn.Array(len(queue))
		for _, args := range queue {
			cmd := c.e.Lookup(args[0])
			c.e.call(&Ctx{Args: args, Conn: conn, Cmd: cmd, ks: c.ks, e: c.e, tx: tx})
		}
		return nil
	})
}
