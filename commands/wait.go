package commands

import (
	"context"
	"time"

	"concord/crdt"
)

var waitCmd = &Cmd{Name: "wait", Arity: 3, Group: "generic",
	Summary: "Blocks until the given number of other regions have applied every write this connection made, or the timeout (ms, 0 = forever) passes; returns how many have. The per-operation upgrade from LOCAL to GLOBAL_QUORUM / ALL.",
	Since:   "3.0.0", Fn: cmdWait}

func cmdWait(c *Ctx) {
	n, ok1 := crdt.ParseInt(c.Args[1])
	ms, ok2 := crdt.ParseInt(c.Args[2])
	if !ok1 || !ok2 {
		c.fail(ErrNotInt)
		return
	}
	if ms < 0 {
		c.fail(Error("ERR timeout is negative"))
		return
	}
	if c.e.Repl == nil || c.e.Repl.NumPeers() == 0 {
		c.Conn.Int(0)
		return
	}
	if c.Conn.LastWrite == nil {
		c.Conn.Int(int64(c.e.Repl.NumPeers()))
		return
	}
	t := c.Conn.LastWrite
	cc := *c // the Ctx goes back to its pool when the handler returns
	cc.Args = nil
	wait := func(ctx context.Context) {
		if err := t.Wait(); err != nil {
			cc.fail(err)
			return
		}
		var seq uint64
		if s, ok := t.(interface{ Seq() uint64 }); ok {
			seq = s.Seq()
		}
		if ms > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
			defer cancel()
		}
		cc.Conn.Int(int64(cc.e.Repl.WaitApplied(ctx, seq, int(n))))
	}
	if c.tx != nil {
		// inside EXEC, like Redis's blocking commands in a transaction: no
		// waiting for peers (EXEC holds its keys' locks), the count as it
		// stands
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		wait(ctx)
		return
	}
	// the wait holds up only this client (an event loop serves the others
	// meanwhile)
	c.Conn.Block(wait)
}
