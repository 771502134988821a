package commands

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// latencyMonitor keeps, per event, the latest and the worst latency above
// latency-monitor-threshold and a short history, like Redis's LATENCY.
type latencyMonitor struct {
	mu     sync.Mutex
	events map[string]*latencyEvent
}

type latencySample struct {
	at time.Time
	ms int64
}

type latencyEvent struct {
	latest  latencySample
	maxMs   int64
	history []latencySample // newest last, at most 160
}

// Observe records d for event if it is over the threshold (ms; 0 = off).
func (l *latencyMonitor) Observe(thresholdMs int64, event string, d time.Duration) {
	ms := d.Milliseconds()
	if thresholdMs <= 0 || ms < thresholdMs {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.events == nil {
		l.events = map[string]*latencyEvent{}
	}
	e := l.events[event]
	if e == nil {
		e = &latencyEvent{}
		l.events[event] = e
	}
	s := latencySample{at: time.Now(), ms: ms}
	e.latest = s
	e.maxMs = max(e.maxMs, ms)
	if n := len(e.history); n > 0 && e.history[n-1].at.Unix() == s.at.Unix() {
		e.history[n-1].ms = max(e.history[n-1].ms, ms)
	} else {
		e.history = append(e.history, s)
		if len(e.history) > 160 {
			e.history = e.history[1:]
		}
	}
}

var latencyCmd = &Cmd{Name: "latency", Arity: -2, Flags: []string{"admin", "noscript", "loading", "stale"}, Group: "server",
	Summary: "A container for latency diagnostics commands.", Since: "2.8.13", Fn: cmdLatency}

func cmdLatency(c *Ctx) {
	l := &c.e.latency
	sub := strings.ToLower(c.arg(1))
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case sub == "latest" && len(c.Args) == 2:
		names := make([]string, 0, len(l.events))
		for n := range l.events {
			names = append(names, n)
		}
		sort.Strings(names)
		c.Conn.Array(len(names))
		for _, n := range names {
			e := l.events[n]
			c.Conn.Array(4)
			c.Conn.BulkString(n)
			c.Conn.Int(e.latest.at.Unix())
			c.Conn.Int(e.latest.ms)
			c.Conn.Int(e.maxMs)
		}
	case sub == "history" && len(c.Args) == 3:
		e := l.events[c.arg(2)]
		if e == nil {
			c.Conn.Array(0)
			return
		}
		c.Conn.Array(len(e.history))
		for _, s := range e.history {
			c.Conn.Array(2)
			c.Conn.Int(s.at.Unix())
			c.Conn.Int(s.ms)
		}
	case sub == "reset":
		n := 0
		if len(c.Args) == 2 {
			n = len(l.events)
			l.events = nil
		}
		for _, a := range c.Args[2:] {
			if _, ok := l.events[string(a)]; ok {
				delete(l.events, string(a))
				n++
			}
		}
		c.Conn.Int(int64(n))
	case sub == "doctor" && len(c.Args) == 2:
		if len(l.events) == 0 {
			c.Conn.BulkString("Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit. I honestly think you ought to sleep tonight.\n")
			return
		}
		var b strings.Builder
		for n, e := range l.events {
			b.WriteString(n + ": latest " + formatInt(e.latest.ms) + " ms, worst " + formatInt(e.maxMs) + " ms, " + formatInt(int64(len(e.history))) + " samples\n")
		}
		c.Conn.BulkString(b.String())
	case sub == "help":
		c.bulks([]string{"LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "DOCTOR", "LATEST", "HISTORY <event>", "RESET [<event> ...]", "HELP"})
	default:
		c.fail(unknownSub(c, sub == "latest" || sub == "history" || sub == "doctor"))
	}
}
