package commands

import (
	"errors"
	"strings"
)

// Error is a reply error: its text is sent as it is ("ERR ...",
// "WRONGTYPE ..."). Every error a handler can return maps to RESP here.
type Error string

func (e Error) Error() string { return string(e) }

// Redis's exact messages.
const (
	ErrWrongType    = Error("WRONGTYPE Operation against a key holding the wrong kind of value")
	ErrNotInt       = Error("ERR value is not an integer or out of range")
	ErrNotFloat     = Error("ERR value is not a valid float")
	ErrSyntax       = Error("ERR syntax error")
	ErrOverflow     = Error("ERR increment or decrement would overflow")
	ErrNaN          = Error("ERR increment would produce NaN or Infinity")
	ErrNoSuchKey    = Error("ERR no such key")
	ErrBadExpire    = Error("ERR invalid expire time in 'set' command")
	ErrHashNotInt   = Error("ERR hash value is not an integer")
	ErrHashNotFloat = Error("ERR hash value is not a float")
	ErrOffset       = Error("ERR offset is out of range")
	ErrStringTooBig = Error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
	ErrDBIndex      = Error("ERR DB index is out of range")
	ErrSameObject   = Error("ERR source and destination objects are the same")
	ErrNegCount     = Error("ERR value is out of range, must be positive")
	ErrCursor       = Error("ERR invalid cursor")
	ErrNotOne       = Error("ERR numkeys should be greater than 0")
	ErrRepairing    = Error("TRYAGAIN this key's stored state failed its checksum and is being repaired from another region")
)

func (c *Ctx) fail(err error) {
	var e Error
	if errors.As(err, &e) {
		c.e.countErr(prefixOf(string(e)))
		c.e.stats[c.Cmd].failed.Add(1)
		c.Conn.Err(string(e))
		return
	}
	c.e.countErr("ERR")
	c.e.stats[c.Cmd].failed.Add(1)
	c.Conn.Err("ERR " + err.Error())
}

func prefixOf(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			return s[:i]
		}
	}
	return s
}

// unknownSub is Redis's reply for an unknown subcommand, or a known one
// with the wrong number of arguments.
func unknownSub(c *Ctx, known bool) Error {
	name := strings.ToUpper(c.Cmd.Name)
	if known {
		return Error("ERR wrong number of arguments for '" + c.Cmd.Name + "|" + strings.ToLower(c.arg(1)) + "' command")
	}
	return Error("ERR unknown subcommand '" + truncate(c.arg(1), 128) + "'. Try " + name + " HELP.")
}
