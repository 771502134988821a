package commands_test

import (
	"bufio"
	"fmt"
	"net"
	"testing"

	"concord/commands"
	"concord/keyspace"
	"concord/resp"
)

// BenchmarkDispatch measures a command's whole server-side path without
// persistence (allocations counted include the client's, which makes none): the guarded RESP read, lookup in the command table, arity
// and ACL checks, the handler and its keyspace transaction, and the reply,
// over a loopback connection with 16 commands per round trip.
func BenchmarkDispatch(b *testing.B) {
	for _, cmd := range []string{"SET", "GET", "INCR", "SADD", "HSET"} {
		b.Run(cmd, func(b *testing.B) {
			ks := keyspace.New(keyspace.Config{Region: "A"}, nil)
			e := commands.New(ks, commands.NewConfig())
			srv := resp.NewServer(resp.Config{}, e)
			e.Attach(srv)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(ln)
			defer srv.Close()
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			var batch []byte
			for i := 0; i < 16; i++ {
				k := fmt.Sprint("key:", i*7919%100000)
				var args []string
				switch cmd {
				case "SET":
					args = []string{"SET", k, "xxx"}
				case "GET", "INCR":
					args = []string{cmd, k}
				case "SADD":
					args = []string{"SADD", "myset", k}
				case "HSET":
					args = []string{"HSET", "myhash", k, "xxx"}
				}
				batch = fmt.Appendf(batch, "*%d\r\n", len(args))
				for _, a := range args {
					batch = fmt.Appendf(batch, "$%d\r\n%s\r\n", len(a), a)
				}
			}
			rd := bufio.NewReader(nc)
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; n += 16 {
				if _, err := nc.Write(batch); err != nil {
					b.Fatal(err)
				}
				for i := 0; i < 16; i++ {
					if err := skipReply(rd); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// skipReply reads one simple reply (status, error, integer, bulk).
func skipReply(rd *bufio.Reader) error {
	line, err := rd.ReadSlice('\n')
	if err != nil {
		return err
	}
	switch line[0] {
	case '-':
		return fmt.Errorf("error reply %q", line)
	case '$':
		if line[1] == '-' {
			return nil // null
		}
		n := 0
		for _, c := range line[1 : len(line)-2] {
			n = n*10 + int(c-'0')
		}
		_, err = rd.Discard(n + 2)
	}
	return err
}
