package commands

import (
	"strings"
	"testing"
)

// FuzzACLRules applies arbitrary rules: never a panic, and a user rebuilt
// from its own ACL LIST line has the same permissions.
func FuzzACLRules(f *testing.F) {
	for _, s := range []string{"on >pw ~app:* +get +set", "off nopass allkeys +@all -@dangerous", "reset +@read -get ~* &*",
		"+config|get -config", "#" + strings.Repeat("a", 64), "resetkeys ~a ~b allcommands -flushall", "+@nosuch", "%R~x"} {
		f.Add(s)
	}
	e := New(nil, NewConfig())
	f.Fuzz(func(t *testing.T, rules string) {
		if len(rules) > 512 {
			return // keep every input cheap: the property is per rule
		}
		a := e.ACL
		u := a.newUser("fuzz")
		if err := a.apply(u, strings.Fields(rules)); err != nil {
			return
		}
		line := strings.Fields(u.describe())
		v := a.newUser("fuzz")
		if err := a.apply(v, line[2:]); err != nil {
			t.Fatalf("its own description %q does not parse: %v", line, err)
		}
		for name, cmd := range e.cmds {
			args := [][]byte{[]byte(name), []byte("app:1"), []byte("x")}
			if u.canRun(cmd, args[:1]) != v.canRun(cmd, args[:1]) {
				t.Fatalf("rules %q: %s allowed=%v, rebuilt from %q allowed=%v", rules, name, u.canRun(cmd, args[:1]), line, v.canRun(cmd, args[:1]))
			}
			if u.canKeys(cmd, args) != v.canKeys(cmd, args) {
				t.Fatalf("rules %q: keys of %s differ after rebuild", rules, name)
			}
		}
	})
}

// TestCanRunAfterRules: a user allowed every command answers without
// looking the command up, and loses that as soon as a rule denies one
// command or subcommand.
func TestCanRunAfterRules(t *testing.T) {
	e := New(nil, NewConfig())
	a := e.ACL
	get, cfg := e.cmds["get"], e.cmds["config"]
	args := func(s ...string) [][]byte {
		var out [][]byte
		for _, x := range s {
			out = append(out, []byte(x))
		}
		return out
	}
	cases := []struct {
		rules    string
		get, set bool // config get, config set
	}{
		{"+@all", true, true},
		{"+@all -get", false, true},
		{"+@all -get +get", true, true},
		{"+@all -config|set", true, false},
		{"+@all -config|set +@all", true, true},
		{"-@all +get", true, false},
	}
	for _, c := range cases {
		u := a.newUser("u")
		if err := a.apply(u, strings.Fields(c.rules)); err != nil {
			t.Fatal(err)
		}
		if got := u.canRun(get, args("get", "k")); got != c.get {
			t.Errorf("%q: get allowed=%v, want %v", c.rules, got, c.get)
		}
		if got := u.canRun(cfg, args("config", "set", "x", "y")); got != c.set {
			t.Errorf("%q: config set allowed=%v, want %v", c.rules, got, c.set)
		}
		if all := u.allCmds; all != (c.get && c.set && !strings.Contains(c.rules, "-@all")) {
			t.Errorf("%q: allCmds=%v", c.rules, all)
		}
	}
}
