package commands

import (
	"strings"
	"testing"
	"time"
)

func TestGlobMatch(t *testing.T) {
	cases := []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*", "abc", true}, {"a*c", "abc", true}, {"a*d", "abc", false},
		{"?", "a", true}, {"?", "", false}, {"a?c", "abc", true}, {"[abc]", "b", true}, {"[abc]", "d", false},
		{"[^abc]", "d", true}, {"[^abc]", "a", false}, {"[a-c]x", "bx", true}, {"[a-c]x", "dx", false},
		{"\\*", "*", true}, {"\\*", "a", false}, {"h[ae]llo", "hello", true}, {"h*llo", "heeeello", true},
		{"*a*b*c", "xaxbxc", true}, {"*a*b*c", "xaxbx", false}, {"key:*:name", "key:1:name", true},
		{"[sh]", "s", true}, {"[sh]", "x", false}, {"a[", "a", false}, {"*.txt", "a.txt.gz", false},
	}
	for _, c := range cases {
		if got := globMatch(c.p, c.s, false); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
	if !globMatch("HELLO", "hello", true) || globMatch("HELLO", "hello", false) {
		t.Error("nocase")
	}
}

// A pattern with many stars must not take exponential time.
func TestGlobNoBlowup(t *testing.T) {
	p := strings.Repeat("*a", 30) + "b"
	s := strings.Repeat("a", 10000)
	start := time.Now()
	if globMatch(p, s, false) {
		t.Fatal("matched")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v", d)
	}
}
