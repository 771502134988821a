package main

import (
	"net"
	"strings"
	"sync"

	"github.com/tidwall/redcon"
)

// serveBare serves SET and GET from a locked map with redcon's own server
// (one goroutine per connection): the baseline that shows how far a Go
// server of this shape gets on this machine before any of Concord's work.
func serveBare(ln net.Listener) error {
	store := &bareMap{m: make(map[string][]byte)}
	return redcon.Serve(ln, func(conn redcon.Conn, cmd redcon.Command) {
		conn.WriteRaw(store.serve(nil, cmd.Args))
	}, nil, nil)
}

// bareMap is the baselines' keyspace: SET and GET on a locked map; other
// commands (redis-benchmark's CONFIG GET, PING) get harmless replies.
type bareMap struct {
	mu sync.RWMutex
	m  map[string][]byte
}

func (s *bareMap) serve(out []byte, args [][]byte) []byte {
	switch strings.ToLower(string(args[0])) {
	case "set":
		if len(args) < 3 {
			return redcon.AppendError(out, "ERR wrong number of arguments for 'set' command")
		}
		s.mu.Lock()
		s.m[string(args[1])] = append([]byte(nil), args[2]...)
		s.mu.Unlock()
		return redcon.AppendOK(out)
	case "get":
		if len(args) < 2 {
			return redcon.AppendError(out, "ERR wrong number of arguments for 'get' command")
		}
		s.mu.RLock()
		v, ok := s.m[string(args[1])]
		s.mu.RUnlock()
		if !ok {
			return redcon.AppendNull(out)
		}
		return redcon.AppendBulk(out, v)
	case "config":
		return redcon.AppendArray(out, 0)
	case "ping":
		return redcon.AppendString(out, "PONG")
	}
	return redcon.AppendOK(out)
}
