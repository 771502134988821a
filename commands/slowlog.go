package commands

import (
	"sync"
	"time"
)

type slowEntry struct {
	id     int64
	at     time.Time
	dur    time.Duration
	args   []string
	client string
	name   string
}

type slowlog struct {
	mu      sync.Mutex
	nextID  int64
	entries []slowEntry // newest first
}

// record logs c, which ran for d and has just returned, when d is at least
// limit µs (never when limit < 0).
func (s *slowlog) record(limit int64, cfg *Config, c *Ctx, d time.Duration) {
	if limit < 0 || d.Microseconds() < limit || c.Cmd.Name == "exec" {
		return
	}
	e := slowEntry{at: time.Now().Add(-d), dur: d, client: c.Conn.RemoteAddr(), name: c.Conn.Name}
	for i, a := range c.Args {
		if i == 31 && len(c.Args) > 32 {
			e.args = append(e.args, "... ("+formatInt(int64(len(c.Args)-31))+" more arguments)")
			break
		}
		e.args = append(e.args, slowArg(a))
	}
	max := int(cfg.Int("slowlog-max-len"))
	s.mu.Lock()
	defer s.mu.Unlock()
	e.id = s.nextID
	s.nextID++
	s.entries = append([]slowEntry{e}, s.entries...)
	if len(s.entries) > max {
		s.entries = s.entries[:max]
	}
}

// slowArg is an argument as the slow log keeps it: its first 128 bytes
// and how many more there were, as Redis does (without a copy of all of a
// 512 MB argument first).
func slowArg(a []byte) string {
	if len(a) > 128 {
		return string(a[:128]) + "... (" + formatInt(int64(len(a)-128)) + " more bytes)"
	}
	return string(a)
}

func (s *slowlog) get(n int) []slowEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n < 0 || n > len(s.entries) {
		n = len(s.entries)
	}
	return append([]slowEntry(nil), s.entries[:n]...)
}

func (s *slowlog) len() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.entries) }

func (s *slowlog) reset() { s.mu.Lock(); s.entries = nil; s.mu.Unlock() }
