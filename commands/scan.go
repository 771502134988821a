package commands

import (
	"concord/crdt"
)

// scanArgs parses the options of SCAN, SSCAN and HSCAN from argument i on.
type scanArgs struct {
	match  string
	hasM   bool
	count  int
	typ    string
	noVals bool
}

func (c *Ctx) parseScan(i int, allowType bool) (scanArgs, error) {
	a := scanArgs{count: 10}
	for ; i < len(c.Args); i++ {
		switch {
		case c.argIs(i, "match") && i+1 < len(c.Args):
			a.match, a.hasM = c.arg(i+1), true
			i++
		case c.argIs(i, "count") && i+1 < len(c.Args):
			n, ok := crdt.ParseInt(c.Args[i+1])
			if !ok {
				return a, ErrNotInt
			}
			if n < 1 {
				return a, ErrSyntax
			}
			a.count = int(min(n, 1<<20))
			i++
		case allowType && c.argIs(i, "type") && i+1 < len(c.Args):
			a.typ = c.arg(i + 1)
			i++
		case !allowType && c.argIs(i, "novalues"):
			a.noVals = true
		default:
			return a, ErrSyntax
		}
	}
	return a, nil
}

func parseCursor(b []byte) (uint64, error) {
	var v uint64
	if len(b) == 0 || len(b) > 20 {
		return 0, ErrCursor
	}
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, ErrCursor
		}
		v = v*10 + uint64(ch-'0')
	}
	return v, nil
}

func (c *Ctx) scanReply(cursor uint64, items []string) {
	c.Conn.Array(2)
	c.Conn.BulkString(formatInt(int64(cursor)))
	c.bulks(items)
}

// elementScanArgs parses "key cursor [MATCH p] [COUNT n] ..." of SSCAN and
// HSCAN, replying the error itself when they are bad.
func (c *Ctx) elementScanArgs() (uint64, scanArgs, bool) {
	cur, err := parseCursor(c.Args[2])
	if err == nil {
		var sa scanArgs
		if sa, err = c.parseScan(3, false); err == nil {
			return cur, sa, true
		}
	}
	c.fail(err)
	return 0, scanArgs{}, false
}
