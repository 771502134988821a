package commands

import "testing"

// The commands whose second argument Prefetch looks up as a member or
// field: set and hash commands of one key, and no others (SMOVE's second
// argument is a key).
func TestElemHint(t *testing.T) {
	for name, want := range map[string]bool{
		"sadd": true, "srem": true, "sismember": true, "hset": true, "hget": true, "hdel": true, "hincrby": true,
		"smove": false, "get": false, "set": false, "incr": false, "lpush": false, "sinter": false,
	} {
		var cmd *Cmd
		for _, group := range groups() {
			for _, c := range group {
				if c.Name == name {
					cmd = c
				}
			}
		}
		if cmd == nil {
			if want {
				t.Fatalf("no command %s", name)
			}
			continue
		}
		if cmd.elemHint != want {
			t.Fatalf("%s: elemHint %v, want %v", name, cmd.elemHint, want)
		}
	}
}

// Every command named as reading its value exists and names its key
// first (Prefetch looks at the first key only).
func TestValReadersExist(t *testing.T) {
	e := New(nil, NewConfig())
	for name := range valReaders {
		c := e.cmds[name]
		if c == nil || c.First != 1 || !c.valHint {
			t.Errorf("%s: %+v", name, c)
		}
	}
}
