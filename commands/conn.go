package commands

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"concord/resp"
)

// Version is the Redis version Concord reports (the command set it follows).
const Version = "7.0.15"

// ConcordVersion is Concord's own version.
const ConcordVersion = "0.1.0"

var connCmds = []*Cmd{
	{Name: "ping", Arity: -1, Flags: []string{"fast"}, Group: "connection", Summary: "Returns the server's liveliness response.", Since: "1.0.0", Fn: cmdPing},
	{Name: "echo", Arity: 2, Flags: []string{"fast"}, Group: "connection", Summary: "Returns the given string.", Since: "1.0.0", Fn: func(c *Ctx) { c.Conn.Bulk(c.Args[1]) }},
	{Name: "hello", Arity: -1, Flags: []string{"noauth", "fast"}, Group: "connection", Summary: "Handshakes with the Redis server.", Since: "6.0.0", Fn: cmdHello},
	{Name: "auth", Arity: -2, Flags: []string{"noauth", "fast"}, Group: "connection", Summary: "Authenticates the connection.", Since: "1.0.0", Fn: cmdAuth},
	{Name: "select", Arity: 2, Flags: []string{"fast"}, Group: "connection", Summary: "Changes the selected database.", Since: "1.0.0", Fn: cmdSelect},
	{Name: "quit", Arity: -1, Flags: []string{"noauth", "fast"}, Group: "connection", Summary: "Closes the connection.", Since: "1.0.0", Fn: func(c *Ctx) { c.Conn.OK(); c.Conn.CloseAfterReply() }},
	{Name: "reset", Arity: 1, Flags: []string{"noauth", "fast"}, Group: "connection", Summary: "Resets the connection.", Since: "6.2.0", Fn: cmdReset},
	{Name: "client", Arity: -2, Group: "connection", Summary: "A container for client connection commands.", Since: "2.4.0", Fn: cmdClient},
}

func cmdPing(c *Ctx) {
	switch len(c.Args) {
	case 1:
		c.Conn.Simple("PONG")
	case 2:
		c.Conn.Bulk(c.Args[1])
	default:
		c.fail(Error(argErr("ping")))
	}
}

// checkPass checks a user's password against the ACL.
func (c *Ctx) checkPass(user, pass string) bool { return c.e.ACL.Authenticate(user, pass) }

func cmdAuth(c *Ctx) {
	if len(c.Args) > 3 {
		c.fail(ErrSyntax)
		return
	}
	user, pass := "default", c.arg(1)
	if len(c.Args) == 3 {
		user, pass = c.arg(1), c.arg(2)
	}
	if !c.e.ACL.DefaultNeedsAuth() && len(c.Args) == 2 {
		c.fail(Error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"))
		return
	}
	if !c.checkPass(user, pass) {
		c.e.ACL.record(c.Conn, "auth", "AUTH", user)
		c.fail(Error("WRONGPASS invalid username-password pair or user is disabled."))
		return
	}
	c.Conn.SetAuthed(true, user)
	c.Conn.OK()
}

func cmdHello(c *Ctx) {
	proto := c.Conn.Proto
	i := 1
	if len(c.Args) > 1 {
		v, err := strconv.Atoi(c.arg(1))
		if err != nil {
			c.fail(Error("ERR Protocol version is not an integer or out of range"))
			return
		}
		if v != 2 && v != 3 {
			c.fail(Error("NOPROTO unsupported protocol version"))
			return
		}
		proto = v
		i = 2
	}
	var name *string
	for ; i < len(c.Args); i++ {
		switch {
		case c.argIs(i, "auth") && i+2 < len(c.Args):
			if !c.checkPass(c.arg(i+1), c.arg(i+2)) {
				c.fail(Error("WRONGPASS invalid username-password pair or user is disabled."))
				return
			}
			c.Conn.SetAuthed(true, c.arg(i+1))
			i += 2
		case c.argIs(i, "setname") && i+1 < len(c.Args):
			n := c.arg(i + 1)
			name = &n
			i++
		default:
			c.fail(Error("ERR Syntax error in HELLO option '" + c.arg(i) + "'"))
			return
		}
	}
	if !c.Conn.Authed() {
		c.fail(Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"))
		return
	}
	if name != nil {
		if !validName(*name) {
			c.fail(Error("ERR Client names cannot contain spaces, newlines or special characters."))
			return
		}
		c.Conn.Name = *name
	}
	c.Conn.Proto = proto
	c.Conn.Map(8)
	c.Conn.BulkString("server")
	c.Conn.BulkString("redis")
	c.Conn.BulkString("version")
	c.Conn.BulkString(Version)
	c.Conn.BulkString("proto")
	c.Conn.Int(int64(proto))
	c.Conn.BulkString("id")
	c.Conn.Int(c.Conn.ID)
	c.Conn.BulkString("mode")
	c.Conn.BulkString("standalone")
	c.Conn.BulkString("role")
	c.Conn.BulkString("master")
	c.Conn.BulkString("modules")
	c.Conn.Array(0)
	c.Conn.BulkString("concord")
	c.Conn.BulkString(ConcordVersion + " region=" + c.ks.Region())
}

func cmdSelect(c *Ctx) {
	n, ok := parseInt(c.Args[1])
	if !ok {
		c.fail(ErrNotInt)
		return
	}
	if n < 0 || n >= int64(c.ks.DBs()) {
		c.fail(ErrDBIndex)
		return
	}
	c.Conn.DB = int(n)
	c.Conn.OK()
}

func parseInt(b []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

func cmdReset(c *Ctx) {
	conn := c.Conn
	conn.InMulti, conn.Queue, conn.MultiErr, conn.Watches = false, nil, false, nil
	conn.DB, conn.Name, conn.Proto, conn.ReplyMode = 0, "", 2, resp.ReplyOn
	conn.SetAuthed(!c.e.ACL.DefaultNeedsAuth(), "default")
	conn.Simple("RESET")
}

func validName(n string) bool {
	for _, r := range n {
		if r < '!' || r > '~' {
			return false
		}
	}
	return true
}

func clientLine(conn *resp.Conn) string {
	multi := -1
	if conn.InMulti {
		multi = len(conn.Queue)
	}
	user := conn.User
	if user == "" {
		user = "default"
	}
	cmd := "NULL"
	if p := conn.LastCmd.Load(); p != nil {
		cmd = *p
	}
	return fmt.Sprintf("id=%d addr=%s laddr=%s fd=8 name=%s age=%d idle=%d flags=N db=%d sub=0 psub=0 ssub=0 multi=%d qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=16384 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=%s user=%s redir=-1 resp=%d lib-name=%s lib-ver=%s",
		conn.ID, conn.RemoteAddr(), conn.LocalAddr(), conn.Name, int(time.Since(conn.Created).Seconds()), int(conn.Idle().Seconds()),
		conn.DB, multi, cmd, user, conn.Proto, conn.LibName, conn.LibVer)
}

func cmdClient(c *Ctx) {
	sub := strings.ToLower(c.arg(1))
	n := len(c.Args)
	switch {
	case sub == "id" && n == 2:
		c.Conn.Int(c.Conn.ID)
	case sub == "getname" && n == 2:
		if c.Conn.Name == "" {
			c.Conn.Null()
		} else {
			c.Conn.BulkString(c.Conn.Name)
		}
	case sub == "setname" && n == 3:
		if !validName(c.arg(2)) {
			c.fail(Error("ERR Client names cannot contain spaces, newlines or special characters."))
			return
		}
		c.Conn.Name = c.arg(2)
		c.Conn.OK()
	case sub == "setinfo" && n == 4:
		switch strings.ToLower(c.arg(2)) {
		case "lib-name":
			c.Conn.LibName = c.arg(3)
		case "lib-ver":
			c.Conn.LibVer = c.arg(3)
		default:
			c.fail(Error("ERR Unrecognized option '" + c.arg(2) + "'"))
			return
		}
		c.Conn.OK()
	case sub == "info" && n == 2:
		c.Conn.BulkString(clientLine(c.Conn) + "\n")
	case sub == "list":
		var b strings.Builder
		for _, cl := range c.e.srv.Clients() {
			if n >= 4 && c.argIs(2, "id") {
				keep := false
				for _, a := range c.Args[3:] {
					if id, _ := parseInt(a); id == cl.ID {
						keep = true
					}
				}
				if !keep {
					continue
				}
			}
			b.WriteString(clientLine(cl) + "\n")
		}
		c.Conn.BulkString(b.String())
	case sub == "kill" && n >= 3:
		cmdClientKill(c)
	case sub == "reply" && n == 3:
		switch strings.ToLower(c.arg(2)) {
		case "on":
			c.Conn.ReplyMode = resp.ReplyOn
			c.Conn.OK()
		case "off":
			c.Conn.ReplyMode = resp.ReplyOff
		case "skip":
			c.Conn.SkipNextReply()
		default:
			c.fail(ErrSyntax)
		}
	case (sub == "no-evict" || sub == "no-touch") && n == 3:
		c.Conn.OK()
	case sub == "help":
		c.bulks([]string{"CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "ID", "GETNAME", "SETNAME <name>", "SETINFO <LIB-NAME|LIB-VER> <value>", "INFO", "LIST [ID <id> ...]", "KILL <ip:port> | ID <id> | ADDR <ip:port> | LADDR <ip:port> | USER <name> | SKIPME <yes|no>", "REPLY ON|OFF|SKIP", "HELP"})
	default:
		c.fail(Error("ERR unknown subcommand or wrong number of arguments for '" + c.arg(1) + "'. Try CLIENT HELP."))
	}
}

func cmdClientKill(c *Ctx) {
	if len(c.Args) == 3 { // old form: CLIENT KILL addr
		for _, cl := range c.e.srv.Clients() {
			if cl.RemoteAddr() == c.arg(2) {
				c.kill(cl)
				c.Conn.OK()
				return
			}
		}
		c.fail(Error("ERR No such client"))
		return
	}
	if len(c.Args)%2 != 0 {
		c.fail(ErrSyntax)
		return
	}
	skipMe := true
	var match []func(*resp.Conn) bool
	for i := 2; i < len(c.Args); i += 2 {
		v := c.arg(i + 1)
		switch strings.ToLower(c.arg(i)) {
		case "id":
			id, ok := parseInt(c.Args[i+1])
			if !ok {
				c.fail(Error("ERR client-id should be greater than 0"))
				return
			}
			match = append(match, func(cl *resp.Conn) bool { return cl.ID == id })
		case "addr":
			match = append(match, func(cl *resp.Conn) bool { return cl.RemoteAddr() == v })
		case "laddr":
			match = append(match, func(cl *resp.Conn) bool { return cl.LocalAddr() == v })
		case "user":
			match = append(match, func(cl *resp.Conn) bool { return cl.User == v || (cl.User == "" && v == "default") })
		case "type":
			if !strings.EqualFold(v, "normal") {
				match = append(match, func(*resp.Conn) bool { return false })
			}
		case "skipme":
			skipMe = !strings.EqualFold(v, "no")
		default:
			c.fail(ErrSyntax)
			return
		}
	}
	killed := 0
	for _, cl := range c.e.srv.Clients() {
		if skipMe && cl == c.Conn {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && m(cl)
		}
		if ok {
			c.kill(cl)
			killed++
		}
	}
	c.Conn.Int(int64(killed))
}

// kill closes a client; the calling client itself gets this command's
// reply first, as in Redis.
func (c *Ctx) kill(cl *resp.Conn) {
	if cl == c.Conn {
		c.Conn.CloseAfterReply()
		return
	}
	c.e.srv.Kill(cl)
}
