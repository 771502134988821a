package commands

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"concord/resp"
)

// User is one ACL user: whether it is enabled, its password hashes, the
// commands it may run and the key patterns it may touch.
type User struct {
	Name      string
	Enabled   bool
	NoPass    bool
	passwords map[string]bool // sha256 hex
	allowed   map[string]bool // command name -> allowed
	subs      map[string]bool // "cmd|sub" explicitly allowed (+) or denied (-)
	cmdRules  []string        // the command rules in order, as given
	// allCmds: every command allowed and no subcommand rule (canRun then
	// looks nothing up; kept by apply)
	allCmds  bool
	allKeys  bool
	keys     []string
	allChans bool
}

// ACL holds the users of one engine.
type ACL struct {
	mu    sync.RWMutex
	users map[string]*User
	log   []aclLogEntry
	e     *Engine
}

type aclLogEntry struct {
	count    int
	reason   string // "command" | "key" | "auth"
	context  string
	object   string
	username string
	created  time.Time
	updated  time.Time
	client   string
}

func newACL(e *Engine) *ACL {
	a := &ACL{users: map[string]*User{}, e: e}
	d := a.newUser("default")
	a.apply(d, []string{"on", "nopass", "~*", "&*", "+@all"})
	d.allChans = true
	a.users["default"] = d
	return a
}

func (a *ACL) newUser(name string) *User {
	return &User{Name: name, passwords: map[string]bool{}, allowed: map[string]bool{}, subs: map[string]bool{}}
}

func hashPass(p string) string { h := sha256.Sum256([]byte(p)); return hex.EncodeToString(h[:]) }

// categories lists the ACL categories Concord's commands belong to.
var categories = []string{"keyspace", "read", "write", "set", "hash", "string", "fast", "slow", "admin", "dangerous", "connection", "transaction"}

// inCategory reports whether cmd belongs to @cat.
func inCategory(cmd *Cmd, cat string) bool {
	if cat == "all" {
		return true
	}
	for _, c := range aclCategories(cmd) {
		if c == "@"+cat {
			return true
		}
	}
	return false
}

// ruleError is a rule apply refused, with Redis's reason.
type ruleError struct{ rule, msg string }

func (e *ruleError) Error() string { return e.msg }

// apply applies ACL rules to u in order; an error names the bad rule.
func (a *ACL) apply(u *User, rules []string) error {
	defer func() { u.allCmds = a.allowsAll(u) }()
	for _, r := range rules {
		if err := a.apply1(u, r); err != nil {
			return &ruleError{rule: r, msg: err.Error()}
		}
	}
	return nil
}

func (a *ACL) apply1(u *User, r string) error {
	{
		lr := strings.ToLower(r)
		switch {
		case lr == "on":
			u.Enabled = true
		case lr == "off":
			u.Enabled = false
		case lr == "nopass":
			u.NoPass, u.passwords = true, map[string]bool{}
		case lr == "resetpass":
			u.NoPass, u.passwords = false, map[string]bool{}
		case strings.HasPrefix(r, ">"):
			u.passwords[hashPass(r[1:])], u.NoPass = true, false
		case strings.HasPrefix(r, "<"):
			delete(u.passwords, hashPass(r[1:]))
		case strings.HasPrefix(r, "#"):
			if len(r) != 65 || strings.Trim(r[1:], "0123456789abcdef") != "" {
				return fmt.Errorf("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters")
			}
			u.passwords[r[1:]], u.NoPass = true, false
		case strings.HasPrefix(r, "!"):
			delete(u.passwords, strings.ToLower(r[1:]))
		case lr == "allkeys" || r == "~*":
			u.allKeys, u.keys = true, nil
		case lr == "resetkeys":
			u.allKeys, u.keys = false, nil
		case strings.HasPrefix(r, "~"):
			if !u.allKeys {
				u.keys = append(u.keys, r[1:])
			}
		case strings.HasPrefix(r, "%"):
			return fmt.Errorf("Syntax error")
		case lr == "allchannels" || r == "&*":
			u.allChans = true // Concord has no pub/sub: kept for ACL LIST
		case lr == "resetchannels" || strings.HasPrefix(r, "&"):
			u.allChans = false
		case lr == "allcommands":
			a.cmdRule(u, "+@all")
		case lr == "nocommands":
			a.cmdRule(u, "-@all")
		case lr == "reset":
			*u = *a.newUser(u.Name)
		case strings.HasPrefix(r, "+") || strings.HasPrefix(r, "-"):
			if err := a.checkCmdRule(r); err != nil {
				return err
			}
			a.cmdRule(u, lr)
		default:
			return fmt.Errorf("Syntax error")
		}
	}
	return nil
}

func (a *ACL) checkCmdRule(r string) error {
	name := strings.ToLower(r[1:])
	if strings.HasPrefix(name, "@") {
		cat := name[1:]
		if cat == "all" {
			return nil
		}
		for _, c := range categories {
			if c == cat {
				return nil
			}
		}
		return fmt.Errorf("Unknown command or category name in ACL")
	}
	base, _, _ := strings.Cut(name, "|")
	if a.e.cmds[base] == nil {
		return fmt.Errorf("Unknown command or category name in ACL")
	}
	return nil
}

// cmdRule applies one +/- command or category rule.
func (a *ACL) cmdRule(u *User, r string) {
	allow := r[0] == '+'
	name := r[1:]
	u.cmdRules = append(u.cmdRules, r)
	if strings.HasPrefix(name, "@") {
		for cname, cmd := range a.e.cmds {
			if inCategory(cmd, name[1:]) {
				u.allowed[cname] = allow
			}
		}
		if name == "@all" {
			u.subs = map[string]bool{}
		}
		return
	}
	if strings.Contains(name, "|") {
		u.subs[name] = allow
		return
	}
	// like Redis, describe the result, not the history: earlier mentions of
	// this command go, and a rule that changes nothing is not listed
	u.cmdRules = u.cmdRules[:len(u.cmdRules)-1]
	kept := u.cmdRules[:0]
	for _, x := range u.cmdRules {
		if x[1:] != name {
			kept = append(kept, x)
		}
	}
	u.cmdRules = kept
	if a.stateFromRules(u.cmdRules, name) != allow {
		u.cmdRules = append(u.cmdRules, r)
	}
	u.allowed[name] = allow
	for s := range u.subs {
		if strings.HasPrefix(s, name+"|") {
			delete(u.subs, s)
		}
	}
}

// stateFromRules evaluates whether rules allow the command name.
func (a *ACL) stateFromRules(rules []string, name string) bool {
	cmd := a.e.cmds[name]
	allowed := false
	for _, r := range rules {
		target := r[1:]
		switch {
		case strings.HasPrefix(target, "@"):
			if cmd != nil && inCategory(cmd, target[1:]) {
				allowed = r[0] == '+'
			}
		case target == name:
			allowed = r[0] == '+'
		}
	}
	return allowed
}

// containers have subcommands: ACL errors name "cmd|sub".
var containers = map[string]bool{"acl": true, "config": true, "client": true, "command": true, "object": true, "memory": true, "slowlog": true, "debug": true, "concord": true}

func permName(cmd *Cmd, args [][]byte) string {
	if containers[cmd.Name] && len(args) > 1 {
		return cmd.Name + "|" + strings.ToLower(string(args[1]))
	}
	return cmd.Name
}

// allowsAll reports whether u may run every command and subcommand.
func (a *ACL) allowsAll(u *User) bool {
	if len(u.subs) > 0 {
		return false
	}
	for name := range a.e.cmds {
		if !u.allowed[name] {
			return false
		}
	}
	return true
}

// canRun reports whether u may run cmd with args.
func (u *User) canRun(cmd *Cmd, args [][]byte) bool {
	if u.allCmds {
		return true
	}
	if len(args) > 1 && len(u.subs) > 0 {
		if v, ok := u.subs[cmd.Name+"|"+strings.ToLower(string(args[1]))]; ok {
			return v
		}
	}
	return u.allowed[cmd.Name]
}

// canKeys reports whether u may touch every key of the command.
func (u *User) canKeys(cmd *Cmd, args [][]byte) bool {
	if u.allKeys {
		return true
	}
	for _, k := range keyArgs(cmd, args) {
		ok := false
		for _, p := range u.keys {
			if globMatch(p, k, false) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// describe renders u's rules the way ACL LIST does.
func (u *User) describe() string {
	parts := []string{"user", u.Name}
	if u.Enabled {
		parts = append(parts, "on")
	} else {
		parts = append(parts, "off")
	}
	if u.NoPass {
		parts = append(parts, "nopass")
	}
	for _, h := range sortedKeys(u.passwords) {
		parts = append(parts, "#"+h)
	}
	if u.allKeys {
		parts = append(parts, "~*")
	} else {
		for _, k := range u.keys {
			parts = append(parts, "~"+k)
		}
	}
	if u.allChans {
		parts = append(parts, "&*")
	} else {
		parts = append(parts, "resetchannels")
	}
	return strings.Join(append(parts, u.commandsString()), " ")
}

func (u *User) commandsString() string {
	if len(u.cmdRules) == 0 {
		return "-@all"
	}
	// the last +@all / -@all resets what came before
	start := 0
	for i, r := range u.cmdRules {
		if r == "+@all" || r == "-@all" {
			start = i
		}
	}
	out := u.cmdRules[start:]
	if out[0] != "+@all" && out[0] != "-@all" {
		out = append([]string{"-@all"}, out...)
	}
	return strings.Join(out, " ")
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Authenticate checks a user's password.
func (a *ACL) Authenticate(name, pass string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	u := a.users[name]
	if u == nil || !u.Enabled {
		return false
	}
	if u.NoPass {
		return true
	}
	h := hashPass(pass)
	for p := range u.passwords {
		if subtle.ConstantTimeCompare([]byte(p), []byte(h)) == 1 {
			return true
		}
	}
	return false
}

// DefaultNeedsAuth reports whether new connections must authenticate.
func (a *ACL) DefaultNeedsAuth() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	d := a.users["default"]
	return d == nil || !d.Enabled || !d.NoPass
}

// SetRequirePass makes requirepass the default user's only password (or
// nopass when empty), as Redis does.
func (a *ACL) SetRequirePass(p string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.users["default"]
	if p == "" {
		a.apply(d, []string{"nopass"})
	} else {
		a.apply(d, []string{"resetpass", ">" + p})
	}
}

// check returns the NOPERM error for user running args, or "".
func (a *ACL) check(conn *resp.Conn, cmd *Cmd, args [][]byte) string {
	name := conn.User
	if name == "" {
		name = "default"
	}
	a.mu.RLock()
	u := a.users[name]
	a.mu.RUnlock()
	if u == nil || !u.canRun(cmd, args) {
		a.record(conn, "command", permName(cmd, args), name)
		return "NOPERM this user has no permissions to run the '" + permName(cmd, args) + "' command"
	}
	if !u.canKeys(cmd, args) {
		obj := ""
		if ks := keyArgs(cmd, args); len(ks) > 0 {
			obj = ks[0]
		}
		a.record(conn, "key", obj, name)
		return "NOPERM this user has no permissions to access one of the keys used as arguments"
	}
	return ""
}

func (a *ACL) record(conn *resp.Conn, reason, object, user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	ctxName := "toplevel"
	if conn != nil && conn.InMulti {
		ctxName = "multi"
	}
	for i := range a.log {
		e := &a.log[i]
		if e.reason == reason && e.object == object && e.username == user && e.context == ctxName && now.Sub(e.updated) < time.Minute {
			e.count++
			e.updated = now
			return
		}
	}
	client := ""
	if conn != nil {
		client = clientLine(conn)
	}
	a.log = append([]aclLogEntry{{count: 1, reason: reason, context: ctxName, object: object, username: user, created: now, updated: now, client: client}}, a.log...)
	if len(a.log) > 128 {
		a.log = a.log[:128]
	}
}

// LoadFile replaces the users with those of an ACL file ("user <name>
// <rules...>" lines); the default user is kept if the file has none.
func (a *ACL) LoadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	users := map[string]*User{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "user" {
			return fmt.Errorf("%s:%d: should start with user keyword", path, n)
		}
		u := a.newUser(fields[1])
		if err := a.apply(u, fields[2:]); err != nil {
			return fmt.Errorf("%s:%d: %v", path, n, err)
		}
		users[u.Name] = u
	}
	if err := sc.Err(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if users["default"] == nil {
		users["default"] = a.users["default"]
	}
	a.users = users
	return nil
}

// SaveFile writes the users as an ACL file.
func (a *ACL) SaveFile(path string) error {
	a.mu.RLock()
	var lines []string
	for _, n := range sortedUserNames(a.users) {
		lines = append(lines, a.users[n].describe())
	}
	a.mu.RUnlock()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func sortedUserNames(m map[string]*User) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

var aclCmd = &Cmd{Name: "acl", Arity: -2, Flags: []string{"admin", "noscript", "loading", "stale"}, Group: "server",
	Summary: "A container for Access List Control commands.", Since: "6.0.0", Fn: cmdACL}

func cmdACL(c *Ctx) {
	a := c.e.ACL
	sub := strings.ToLower(c.arg(1))
	n := len(c.Args)
	switch {
	case sub == "setuser" && n >= 3:
		var rules []string
		for _, r := range c.Args[3:] {
			rules = append(rules, string(r))
		}
		a.mu.Lock()
		u := a.users[c.arg(2)]
		fresh := u == nil
		if fresh {
			u = a.newUser(c.arg(2))
		}
		cp := *u
		cp.passwords, cp.allowed, cp.subs = copyMap(u.passwords), copyMap(u.allowed), copyMap(u.subs)
		cp.cmdRules, cp.keys = append([]string(nil), u.cmdRules...), append([]string(nil), u.keys...)
		err := a.apply(&cp, rules)
		if err == nil {
			a.users[cp.Name] = &cp
		}
		a.mu.Unlock()
		if err != nil {
			rule := lastRule(rules)
			if re, ok := err.(*ruleError); ok {
				rule = re.rule
			}
			c.fail(Error("ERR Error in ACL SETUSER modifier '" + truncate(rule, 128) + "': " + err.Error()))
			return
		}
		c.Conn.OK()
	case sub == "getuser" && n == 3:
		a.mu.RLock()
		u := a.users[c.arg(2)]
		a.mu.RUnlock()
		if u == nil {
			c.Conn.Null()
			return
		}
		flags := []string{"off"}
		if u.Enabled {
			flags[0] = "on"
		}
		if u.NoPass {
			flags = append(flags, "nopass")
		}
		c.Conn.Map(6)
		c.Conn.BulkString("flags")
		c.bulks(flags)
		c.Conn.BulkString("passwords")
		c.bulks(sortedKeys(u.passwords))
		c.Conn.BulkString("commands")
		c.Conn.BulkString(u.commandsString())
		c.Conn.BulkString("keys")
		if u.allKeys {
			c.Conn.BulkString("~*")
		} else {
			ks := make([]string, len(u.keys))
			for i, k := range u.keys {
				ks[i] = "~" + k
			}
			c.Conn.BulkString(strings.Join(ks, " "))
		}
		c.Conn.BulkString("channels")
		if u.allChans {
			c.Conn.BulkString("&*")
		} else {
			c.Conn.BulkString("")
		}
		c.Conn.BulkString("selectors")
		c.Conn.Array(0)
	case sub == "deluser" && n >= 3:
		deleted := 0
		var gone []string
		a.mu.Lock()
		for _, nb := range c.Args[2:] {
			name := string(nb)
			if name == "default" {
				a.mu.Unlock()
				c.fail(Error("ERR The 'default' user cannot be removed"))
				return
			}
			if a.users[name] != nil {
				delete(a.users, name)
				gone = append(gone, name)
				deleted++
			}
		}
		a.mu.Unlock()
		for _, cl := range c.e.srv.Clients() {
			for _, g := range gone {
				if cl.User == g && cl != c.Conn {
					c.e.srv.Kill(cl)
				}
			}
		}
		c.Conn.Int(int64(deleted))
	case sub == "list" && n == 2:
		a.mu.RLock()
		var lines []string
		for _, name := range sortedUserNames(a.users) {
			lines = append(lines, a.users[name].describe())
		}
		a.mu.RUnlock()
		c.bulks(lines)
	case sub == "users" && n == 2:
		a.mu.RLock()
		names := sortedUserNames(a.users)
		a.mu.RUnlock()
		c.bulks(names)
	case sub == "whoami" && n == 2:
		u := c.Conn.User
		if u == "" {
			u = "default"
		}
		c.Conn.BulkString(u)
	case sub == "cat" && n == 2:
		c.bulks(append([]string(nil), categories...))
	case sub == "cat" && n == 3:
		cat := strings.TrimPrefix(strings.ToLower(c.arg(2)), "@")
		known := false
		for _, k := range categories {
			known = known || k == cat
		}
		if !known {
			c.fail(Error("ERR Unknown category '" + c.arg(2) + "'"))
			return
		}
		var names []string
		for _, cmd := range c.e.sorted() {
			if inCategory(cmd, cat) {
				names = append(names, cmd.Name)
			}
		}
		c.bulks(names)
	case sub == "log" && n <= 3:
		if n == 3 && c.argIs(2, "reset") {
			a.mu.Lock()
			a.log = nil
			a.mu.Unlock()
			c.Conn.OK()
			return
		}
		count := 10
		if n == 3 {
			v, err := strconv.Atoi(c.arg(2))
			if err != nil || v < 0 {
				c.fail(Error("ERR value is out of range, must be positive"))
				return
			}
			count = v
		}
		a.mu.RLock()
		entries := append([]aclLogEntry(nil), a.log[:min(count, len(a.log))]...)
		a.mu.RUnlock()
		c.Conn.Array(len(entries))
		for _, e := range entries {
			c.Conn.Map(7)
			c.Conn.BulkString("count")
			c.Conn.Int(int64(e.count))
			c.Conn.BulkString("reason")
			c.Conn.BulkString(e.reason)
			c.Conn.BulkString("context")
			c.Conn.BulkString(e.context)
			c.Conn.BulkString("object")
			c.Conn.BulkString(e.object)
			c.Conn.BulkString("username")
			c.Conn.BulkString(e.username)
			c.Conn.BulkString("age-seconds")
			c.Conn.Double(time.Since(e.created).Seconds())
			c.Conn.BulkString("client-info")
			c.Conn.BulkString(e.client)
		}
	case sub == "genpass" && n <= 3:
		bits := 256
		if n == 3 {
			v, err := strconv.Atoi(c.arg(2))
			if err != nil || v <= 0 || v > 4096 {
				c.fail(Error("ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096"))
				return
			}
			bits = v
		}
		b := make([]byte, (bits+7)/8)
		rand.Read(b)
		c.Conn.BulkString(hex.EncodeToString(b)[:(bits+3)/4])
	case (sub == "load" || sub == "save") && n == 2:
		path := c.e.Config.Get("aclfile")
		if path == "" {
			c.fail(Error("ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration."))
			return
		}
		var err error
		if sub == "load" {
			err = a.LoadFile(path)
		} else {
			err = a.SaveFile(path)
		}
		if err != nil {
			c.fail(Error("ERR " + err.Error()))
			return
		}
		c.Conn.OK()
	case sub == "help":
		c.bulks([]string{"ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "CAT [<category>]", "DELUSER <username> [<username> ...]", "GETUSER <username>", "GENPASS [<bits>]", "LIST", "LOAD", "LOG [<count> | RESET]", "SAVE", "SETUSER <username> <attribute> [<attribute> ...]", "USERS", "WHOAMI", "HELP"})
	default:
		c.fail(unknownSub(c, sub == "setuser" || sub == "getuser" || sub == "deluser" || sub == "list" || sub == "users" || sub == "whoami" || sub == "cat" || sub == "log" || sub == "genpass" || sub == "load" || sub == "save"))
	}
}

func lastRule(rules []string) string {
	if len(rules) == 0 {
		return ""
	}
	return rules[len(rules)-1]
}

func copyMap(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
