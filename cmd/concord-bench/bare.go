package main

import (
	"strings"
	"sync"

	"github.com/tidwall/redcon"
)

// serveBare serves SET and GET from a locked map with redcon's own server
// (one goroutine per connection): the baseline that shows how far a Go
// server of this shape gets on this machine before any of Concord's work.
// Other commands (redis-benchmark's CONFIG GET, PING) get harmless replies.
func serveBare(addr string) error {
	var mu sync.RWMutex
	m := make(map[string][]byte)
	return redcon.ListenAndServe(addr, func(conn redcon.Conn, cmd redcon.Command) {
		switch strings.ToLower(string(cmd.Args[0])) {
		case "set":
			if len(cmd.Args) < 3 {
				conn.WriteError("ERR wrong number of arguments for 'set' command")
				return
			}
			mu.Lock()
			m[string(cmd.Args[1])] = append([]byte(nil), cmd.Args[2]...)
			mu.Unlock()
			conn.WriteString("OK")
		case "get":
			if len(cmd.Args) < 2 {
				conn.WriteError("ERR wrong number of arguments for 'get' command")
				return
			}
			mu.RLock()
			v, ok := m[string(cmd.Args[1])]
			mu.RUnlock()
			if ok {
				conn.WriteBulk(v)
			} else {
				conn.WriteNull()
			}
		case "config":
			conn.WriteArray(0)
		case "ping":
			conn.WriteString("PONG")
		default:
			conn.WriteString("OK")
		}
	}, nil, nil)
}
