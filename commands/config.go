package commands

import (
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Param is one CONFIG parameter.
type Param struct {
	Name    string
	Aliases []string
	Value   string
	// Effect says what the parameter does in Concord; "none" for Redis
	// parameters that are accepted, stored and reported back but have no
	// effect (encodings, RDB/AOF settings).
	Effect   string
	ReadOnly bool
	// Check validates (and may normalise) a new value.
	Check func(v string) (string, error)
	// OnSet is called after a value is set (hooks installed by the server).
	OnSet func(v string)
}

// Config is the CONFIG GET/SET table.
type Config struct {
	mu     sync.RWMutex
	params map[string]*Param
	names  []string
}

func intParam(min, max int64) func(string) (string, error) {
	return func(v string) (string, error) {
		n, err := parseMemory(v)
		if err != nil || n < min || n > max {
			return "", Error("argument couldn't be parsed into an integer")
		}
		return strconv.FormatInt(n, 10), nil
	}
}

// parseMemory parses an integer with an optional kb/mb/gb (and k/m/g) unit.
func parseMemory(v string) (int64, error) {
	l := strings.ToLower(v)
	mul := int64(1)
	for _, u := range []struct {
		s string
		m int64
	}{{"kb", 1024}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"k", 1000}, {"m", 1000000}, {"g", 1000000000}} {
		if strings.HasSuffix(l, u.s) {
			mul = u.m
			l = strings.TrimSuffix(l, u.s)
			break
		}
	}
	n, err := strconv.ParseInt(l, 10, 64)
	return n * mul, err
}

func enumParam(vals ...string) func(string) (string, error) {
	return func(v string) (string, error) {
		for _, x := range vals {
			if strings.EqualFold(v, x) {
				return x, nil
			}
		}
		return "", Error("argument(s) must be one of the following: " + strings.Join(vals, ", "))
	}
}

func boolParam(v string) (string, error) { return enumParam("yes", "no")(v) }

func anyParam(v string) (string, error) { return v, nil }

// NewConfig returns the parameter table with defaults.
func NewConfig() *Config {
	c := &Config{params: map[string]*Param{}}
	none := "none: accepted, stored and reported back for compatibility; Concord's data structures are CRDTs, not Redis encodings"
	add := func(p *Param) {
		if p.Check == nil {
			p.Check = anyParam
		}
		c.params[p.Name] = p
		c.names = append(c.names, p.Name)
		for _, a := range p.Aliases {
			c.params[a] = p
		}
	}
	// Concord's own.
	add(&Param{Name: "region", ReadOnly: true, Effect: "this region's name (--region)"})
	add(&Param{Name: "dir", ReadOnly: true, Effect: "data directory (--dir)"})
	add(&Param{Name: "bind", ReadOnly: true, Effect: "listen address (--addr)"})
	add(&Param{Name: "port", ReadOnly: true, Value: "6379", Effect: "listen port (--addr)"})
	add(&Param{Name: "databases", ReadOnly: true, Value: "16", Effect: "number of databases"})
	add(&Param{Name: "appendfsync", Aliases: []string{"fsync"}, Value: "everysec", Check: enumParam("always", "everysec", "no"), ReadOnly: true, Effect: "fsync policy of the log, Badger and JetStream (--fsync); fixed at start"})
	add(&Param{Name: "requirepass", Check: anyParam, Effect: "the default user's password for AUTH; empty makes the default user nopass"})
	add(&Param{Name: "aclfile", ReadOnly: true, Effect: "ACL file loaded at start and by ACL LOAD, written by ACL SAVE (--aclfile)"})
	add(&Param{Name: "proto-max-bulk-len", Value: "536870912", Check: intParam(1<<20, 1<<40), Effect: "largest bulk string a client may send and largest string value"})
	add(&Param{Name: "client-query-buffer-limit", Value: "1073741824", Check: intParam(1<<20, 1<<40), Effect: "largest single command a client may send"})
	add(&Param{Name: "maxclients", Value: "10000", Check: intParam(1, 1<<20), ReadOnly: true, Effect: "maximum connected clients; fixed at start"})
	add(&Param{Name: "slowlog-log-slower-than", Value: "10000", Check: intParam(-1, 1<<40), Effect: "microseconds above which a command enters the slow log (-1 disables, 0 logs all)"})
	add(&Param{Name: "slowlog-max-len", Value: "128", Check: intParam(0, 1<<20), Effect: "entries kept in the slow log"})
	add(&Param{Name: "hz", Value: "10", Check: intParam(1, 500), Effect: "active expiry cycles per second"})
	add(&Param{Name: "active-expire-effort", Value: "1", Check: intParam(1, 10), Effect: "how long each active expiry cycle may run while the keys it samples are mostly expired: 25% of the cycle's period, +2% per step above 1 (as Redis)"})
	add(&Param{Name: "timeout", Value: "0", Check: intParam(0, 1<<31), Effect: "seconds after which an idle client is closed (0: never)"})
	add(&Param{Name: "command-deadline", Value: "60", Check: intParam(0, 1<<31), Effect: "seconds a client may take to send one command before it is closed (slowloris; 0: no deadline)"})
	add(&Param{Name: "protected-mode", Value: "yes", Check: boolParam, Effect: "with no password and a non-loopback bind, refuse clients that are not on loopback"})
	add(&Param{Name: "latency-monitor-threshold", Value: "0", Check: intParam(0, 1<<40), Effect: "milliseconds above which commands are recorded for LATENCY LATEST/HISTORY (0: off)"})
	add(&Param{Name: "client-output-buffer-limit", Value: "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60", Check: checkOutputLimit,
		Effect: "per client class: hard limit, soft limit, soft seconds on pending reply bytes; a normal client over it is closed (pubsub and replica classes are stored only: Concord has neither)"})
	add(&Param{Name: "maxmemory", Value: "0", Check: intParam(0, 1<<50), Effect: "bytes of heap (INFO used_memory) above which commands that may add data are refused with -OOM, as under Redis's noeviction (0: no limit); deltas from peers are still applied"})
	add(&Param{Name: "maxmemory-policy", Value: "noeviction", Check: enumParam("noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"),
		Effect: "accepted; every policy acts as noeviction: Concord does not evict (an eviction in one region would be a delete replicated to all)"})
	add(&Param{Name: "loglevel", Value: "notice", Check: enumParam("debug", "verbose", "notice", "warning", "nothing"), Effect: "log verbosity (Concord maps it onto zerolog levels)"})
	// Accepted for compatibility, no effect in Concord.
	for _, p := range []struct{ n, v string }{
		{"save", "3600 1 300 100 60 10000"}, {"appendonly", "no"}, {"appendfilename", "appendonly.aof"},
		{"dbfilename", "dump.rdb"}, {"rdbcompression", "yes"}, {"rdbchecksum", "yes"},
		{"set-max-intset-entries", "512"}, {"set-max-listpack-entries", "128"}, {"set-max-listpack-value", "64"},
		{"hash-max-listpack-entries", "128"}, {"hash-max-listpack-value", "64"},
		{"hash-max-ziplist-entries", "128"}, {"hash-max-ziplist-value", "64"},
		{"zset-max-listpack-entries", "128"}, {"zset-max-listpack-value", "64"},
		{"zset-max-ziplist-entries", "128"}, {"zset-max-ziplist-value", "64"},
		{"list-max-listpack-size", "-2"}, {"list-max-ziplist-size", "-2"}, {"list-compress-depth", "0"},
		{"stream-node-max-bytes", "4096"}, {"stream-node-max-entries", "100"},
		{"activerehashing", "yes"}, {"lazyfree-lazy-eviction", "no"}, {"lazyfree-lazy-expire", "no"},
		{"lazyfree-lazy-server-del", "no"}, {"lazyfree-lazy-user-del", "no"}, {"lazyfree-lazy-user-flush", "no"},
		{"maxmemory-samples", "5"},
		{"notify-keyspace-events", ""}, {"lua-time-limit", "5000"}, {"busy-reply-threshold", "5000"},
		{"tcp-keepalive", "300"},
		{"lfu-log-factor", "10"}, {"lfu-decay-time", "1"},
		{"replica-read-only", "yes"}, {"min-replicas-to-write", "0"}, {"io-threads", "1"},
		{"aof-use-rdb-preamble", "yes"}, {"auto-aof-rewrite-percentage", "100"}, {"auto-aof-rewrite-min-size", "67108864"},
		{"daemonize", "no"}, {"supervised", "no"}, {"latency-tracking", "yes"},
	} {
		add(&Param{Name: p.n, Value: p.v, Effect: none})
	}
	sort.Strings(c.names)
	return c
}

// Set sets a parameter at start (bypassing ReadOnly); unknown names error.
func (c *Config) Set(name, v string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.params[strings.ToLower(name)]
	if p == nil {
		return Error("ERR Unknown option or number of arguments for CONFIG SET - '" + name + "'")
	}
	nv, err := p.Check(v)
	if err != nil {
		return err
	}
	p.Value = nv
	return nil
}

// Get returns a parameter's value.
func (c *Config) Get(name string) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if p := c.params[name]; p != nil {
		return p.Value
	}
	return ""
}

// Int returns a numeric parameter.
func (c *Config) Int(name string) int64 {
	n, _ := strconv.ParseInt(c.Get(name), 10, 64)
	return n
}

// OnSet installs a hook called when name changes through CONFIG SET.
func (c *Config) OnSet(name string, fn func(string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.params[name].OnSet = fn
}

// Params returns every parameter in name order (for docs and tests).
func (c *Config) Params() []*Param {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*Param, 0, len(c.names))
	for _, n := range c.names {
		out = append(out, c.params[n])
	}
	return out
}

// match returns name/value pairs whose names match any pattern.
func (c *Config) match(patterns []string) [][2]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	seen := map[string]bool{}
	var out [][2]string
	for _, pat := range patterns {
		pat = strings.ToLower(pat)
		for name, p := range c.params {
			if !seen[name] && globMatch(pat, name, true) {
				seen[name] = true
				out = append(out, [2]string{name, p.Value})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// setMany applies CONFIG SET name value [name value ...] atomically.
func (c *Config) setMany(args []string) error {
	if len(args) == 0 || len(args)%2 != 0 {
		return Error("ERR wrong number of arguments for 'config|set' command")
	}
	c.mu.Lock()
	vals := map[*Param]string{}
	for i := 0; i < len(args); i += 2 {
		p := c.params[strings.ToLower(args[i])]
		if p == nil {
			c.mu.Unlock()
			return Error("ERR Unknown option or number of arguments for CONFIG SET - '" + args[i] + "'")
		}
		if p.ReadOnly {
			c.mu.Unlock()
			return Error("ERR CONFIG SET failed (possibly related to argument '" + args[i] + "') - can't set immutable config")
		}
		v, err := p.Check(args[i+1])
		if err != nil {
			c.mu.Unlock()
			return Error("ERR CONFIG SET failed (possibly related to argument '" + args[i] + "') - " + err.Error())
		}
		vals[p] = v
	}
	var hooks []func()
	for p, v := range vals {
		p.Value = v
		if p.OnSet != nil {
			fn, val := p.OnSet, v
			hooks = append(hooks, func() { fn(val) })
		}
	}
	c.mu.Unlock()
	for _, h := range hooks {
		h()
	}
	return nil
}

// OutputLimit is one client class's output buffer limit.
type OutputLimit struct {
	Hard, Soft int64
	SoftFor    time.Duration
}

// ParseOutputLimits parses client-output-buffer-limit ("class hard soft
// seconds" groups; classes normal, replica/slave, pubsub).
func ParseOutputLimits(v string) (map[string]OutputLimit, error) {
	f := strings.Fields(v)
	if len(f)%4 != 0 {
		return nil, Error("Wrong number of arguments in buffer limit configuration.")
	}
	out := map[string]OutputLimit{}
	for i := 0; i < len(f); i += 4 {
		class := strings.ToLower(f[i])
		if class == "slave" {
			class = "replica"
		}
		if class != "normal" && class != "replica" && class != "pubsub" {
			return nil, Error("Invalid client class specified in buffer limit configuration.")
		}
		hard, err1 := parseMemory(f[i+1])
		soft, err2 := parseMemory(f[i+2])
		secs, err3 := strconv.ParseInt(f[i+3], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || hard < 0 || soft < 0 || secs < 0 {
			return nil, Error("Error in hard, soft or soft_seconds setting in buffer limit configuration.")
		}
		out[class] = OutputLimit{Hard: hard, Soft: soft, SoftFor: time.Duration(secs) * time.Second}
	}
	return out, nil
}

func checkOutputLimit(v string) (string, error) {
	if _, err := ParseOutputLimits(v); err != nil {
		return "", err
	}
	return v, nil
}
