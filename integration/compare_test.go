package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rawConn is a minimal RESP client that renders every reply exactly, so two
// servers' replies can be compared byte for byte (types, errors, nulls).
type rawConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) do(args []string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	rc.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return rc.read(false)
}

// read renders one reply; sorted sorts array elements (unordered replies).
func (rc *rawConn) read(sorted bool) (string, error) {
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+', '-', ':', ',', '#', '(':
		return line, nil
	case '_':
		return "nil", nil
	case '$', '=':
		n, _ := strconv.Atoi(body)
		if n < 0 {
			return "nil", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rc.r, buf); err != nil {
			return "", err
		}
		return strconv.Quote(string(buf[:n])), nil
	case '*', '~', '%':
		n, _ := strconv.Atoi(body)
		if n < 0 {
			return "nil", nil
		}
		if line[0] == '%' {
			n *= 2
		}
		items := make([]string, n)
		for i := range items {
			if items[i], err = rc.read(false); err != nil {
				return "", err
			}
		}
		return "[" + strings.Join(items, " ") + "]", nil
	}
	return "", fmt.Errorf("unknown reply %q", line)
}

func sortReply(s string) string {
	if !strings.HasPrefix(s, "[") {
		return s
	}
	items := strings.Fields(strings.Trim(s, "[]"))
	sort.Strings(items)
	return "[" + strings.Join(items, " ") + "]"
}

// splitLine splits a script line into arguments ("double quotes" allowed).
func splitLine(l string) []string {
	var out []string
	var cur strings.Builder
	inq, has := false, false
	for i := 0; i < len(l); i++ {
		ch := l[i]
		switch {
		case ch == '"':
			inq = !inq
			has = true
		case ch == '\\' && inq && i+1 < len(l):
			i++
			cur.WriteByte(l[i])
		case ch == ' ' && !inq:
			if has {
				out = append(out, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteByte(ch)
			has = true
		}
	}
	if has {
		out = append(out, cur.String())
	}
	return out
}

// TestCompareWithRedis sends the scripts in testdata/compare to a real
// redis-server and to Concord and requires identical replies. A line
// starting with "~ " compares its reply as unordered; "? " compares only
// the reply's kind (random results).
func TestCompareWithRedis(t *testing.T) {
	redisAddr := startRedis(t)
	in := startConcord(t, nil)
	files, _ := filepath.Glob("testdata/compare/*.txt")
	if len(files) == 0 {
		t.Fatal("no scripts")
	}
	total := 0
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			r, c := dialRaw(t, redisAddr), dialRaw(t, in.Addr())
			for _, conn := range []*rawConn{r, c} {
				conn.do([]string{"FLUSHALL"})
			}
			for n, line := range strings.Split(string(data), "\n") {
				line = strings.TrimSpace(line)
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				mode := ""
				if strings.HasPrefix(line, "~ ") || strings.HasPrefix(line, "? ") {
					mode, line = line[:1], line[2:]
				}
				args := splitLine(line)
				want, err1 := r.do(args)
				got, err2 := c.do(args)
				if err1 != nil || err2 != nil {
					t.Fatalf("%s:%d %s: redis err %v, concord err %v", f, n+1, line, err1, err2)
				}
				switch mode {
				case "~":
					want, got = sortReply(want), sortReply(got)
				case "?":
					want, got = want[:1], got[:1]
				}
				if want != got {
					t.Errorf("%s:%d %s\n  redis:   %s\n  concord: %s", filepath.Base(f), n+1, line, want, got)
				}
				total++
			}
		})
	}
	t.Logf("%d commands compared", total)
}
