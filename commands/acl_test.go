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
