package commands

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sort"
	"strings"
	"time"

	"concord/crdt"
	"concord/keyspace"
)

var serverCmds = []*Cmd{
	{Name: "info", Arity: -1, Flags: []string{"loading", "stale"}, Group: "server", Summary: "Returns information and statistics about the server.", Since: "1.0.0", Fn: cmdInfo},
	{Name: "config", Arity: -2, Flags: []string{"admin", "noscript", "loading", "stale"}, Group: "server", Summary: "A container for server configuration commands.", Since: "2.0.0", Fn: cmdConfig},
	{Name: "time", Arity: 1, Flags: []string{"loading", "stale", "fast"}, Group: "server", Summary: "Returns the server time.", Since: "2.6.0", Fn: cmdTime},
	{Name: "memory", Arity: -2, Flags: []string{"readonly"}, Group: "server", Summary: "A container for memory diagnostics commands.", Since: "4.0.0", Fn: cmdMemory},
	{Name: "slowlog", Arity: -2, Flags: []string{"admin", "loading", "stale"}, Group: "server", Summary: "A container for slow log commands.", Since: "2.2.12", Fn: cmdSlowlog},
	{Name: "debug", Arity: -2, Flags: []string{"admin", "noscript", "loading", "stale"}, Group: "server", Summary: "A container for debugging commands.", Since: "1.0.0", Fn: cmdDebug},
	{Name: "lastsave", Arity: 1, Flags: []string{"loading", "stale", "fast"}, Group: "server", Summary: "Returns the Unix timestamp of the last successful save to disk.", Since: "1.0.0", Fn: cmdLastSave},
	{Name: "save", Arity: 1, Flags: []string{"admin", "noscript", "no_multi"}, Group: "server", Summary: "Synchronously saves the database(s) to disk (a checkpoint).", Since: "1.0.0", Fn: cmdSave},
	{Name: "bgsave", Arity: -1, Flags: []string{"admin", "noscript"}, Group: "server", Summary: "Asynchronously saves the database(s) to disk (a checkpoint).", Since: "1.0.0", Fn: cmdBgsave},
	{Name: "shutdown", Arity: -1, Flags: []string{"admin", "noscript", "loading", "stale", "no_multi"}, Group: "server", Summary: "Synchronously saves the database(s) to disk and shuts down the server.", Since: "1.0.0", Fn: cmdShutdown},
	{Name: "bgrewriteaof", Arity: 1, Flags: []string{"admin", "noscript"}, Group: "server", Summary: "Asynchronously rewrites the append-only file to disk (a checkpoint, which drops the log it covers).", Since: "1.0.0", Fn: cmdBgsave},
	{Name: "concord", Arity: -2, Flags: []string{"admin"}, Group: "server", Summary: "Concord's own commands: CONFLICTS [COUNT n], REGION, PEERS [LIST | REMOVE name | RESTORE name].", Since: "7.2.4", Fn: cmdConcord},
}

var commandCmd = &Cmd{Name: "command", Arity: -1, Flags: []string{"loading", "stale"}, Group: "server", Summary: "Returns detailed information about all commands.", Since: "2.8.13", Fn: cmdCommand}

func usedMemory() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func rssMemory() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, rss uint64
	fmt.Sscan(string(b), &size, &rss)
	return rss * uint64(os.Getpagesize())
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.2fK", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// infoSection returns the lines of one INFO section.
func (e *Engine) infoSection(in *keyspace.Tx, name string) []string {
	ks := e.ks
	switch name {
	case "server":
		up := time.Since(e.started)
		mux := "goroutines"
		if e.srv != nil {
			mux = e.srv.Multiplexing()
		}
		return []string{
			"redis_version:" + Version, "concord_version:" + ConcordVersion, "redis_mode:standalone",
			"os:" + runtime.GOOS, "arch_bits:64", "multiplexing_api:" + mux, "go_version:" + runtime.Version(),
			fmt.Sprintf("process_id:%d", os.Getpid()), "run_id:" + runID,
			"tcp_port:" + e.Config.Get("port"), fmt.Sprintf("uptime_in_seconds:%d", int(up.Seconds())),
			fmt.Sprintf("uptime_in_days:%d", int(up.Hours()/24)), "hz:" + e.Config.Get("hz"),
			"region:" + ks.Region(), "executable:" + exe(), "config_file:",
		}
	case "clients":
		n, blocked := 0, int64(0)
		if e.srv != nil {
			n, blocked = e.srv.NumClients(), e.srv.BlockedClients()
		}
		return []string{fmt.Sprintf("connected_clients:%d", n), "cluster_connections:0",
			"maxclients:" + e.Config.Get("maxclients"), "client_recent_max_input_buffer:0",
			"client_recent_max_output_buffer:0", fmt.Sprintf("blocked_clients:%d", blocked), "tracking_clients:0", "clients_in_timeout_table:0"}
	case "memory":
		used, rss := usedMemory(), rssMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return []string{fmt.Sprintf("used_memory:%d", used), "used_memory_human:" + humanBytes(used),
			fmt.Sprintf("used_memory_rss:%d", rss), "used_memory_rss_human:" + humanBytes(rss),
			fmt.Sprintf("used_memory_peak:%d", ms.HeapSys), fmt.Sprintf("total_system_memory:%d", ms.Sys),
			"maxmemory:" + e.Config.Get("maxmemory"), "maxmemory_policy:" + e.Config.Get("maxmemory-policy"),
			fmt.Sprintf("mem_fragmentation_ratio:%.2f", float64(rss)/float64(max(used, 1))),
			"mem_allocator:go", fmt.Sprintf("gc_cycles:%d", ms.NumGC), fmt.Sprintf("total_allocated_bytes:%d", ms.TotalAlloc),
			fmt.Sprintf("cold_keys:%d", ks.Stats.ColdKeys.Load()), fmt.Sprintf("cold_bytes:%d", ks.Stats.ColdBytes.Load()),
			fmt.Sprintf("warm_keys:%d", ks.Stats.WarmKeys.Load())}
	case "persistence":
		saving, last, changes := false, e.started.Unix(), uint64(0)
		if e.Saver != nil {
			saving, last, changes = e.Saver.Saving(), e.Saver.LastSave(), e.Saver.ChangesSinceSave()
		}
		lines := []string{"loading:0", "async_loading:0", fmt.Sprintf("rdb_changes_since_last_save:%d", changes),
			fmt.Sprintf("rdb_bgsave_in_progress:%d", b2i(saving)),
			fmt.Sprintf("rdb_last_save_time:%d", last), "rdb_last_bgsave_status:ok", "aof_enabled:1",
			fmt.Sprintf("aof_rewrite_in_progress:%d", b2i(saving)), "aof_last_write_status:ok",
			"appendfsync:" + e.Config.Get("appendfsync")}
		if e.Info != nil {
			lines = append(lines, e.Info.Persistence()...)
		}
		return lines
	case "stats":
		calls := e.Calls()
		acc, rej := uint64(0), uint64(0)
		if e.srv != nil {
			acc, rej = e.srv.Accepted.Load(), e.srv.Rejected.Load()
		}
		e.mu.Lock()
		var errs uint64
		for _, n := range e.errs {
			errs += n
		}
		e.mu.Unlock()
		return []string{fmt.Sprintf("total_connections_received:%d", acc), fmt.Sprintf("total_commands_processed:%d", calls),
			"instantaneous_ops_per_sec:0", fmt.Sprintf("rejected_connections:%d", 0),
			fmt.Sprintf("protocol_errors:%d", rej),
			fmt.Sprintf("expired_keys:%d", ks.Stats.ExpiredKeys.Load()), "evicted_keys:0",
			fmt.Sprintf("keyspace_hits:%d", ks.Stats.KeyspaceHits.Load()), fmt.Sprintf("keyspace_misses:%d", ks.Stats.KeyspaceMiss.Load()),
			"pubsub_channels:0", "pubsub_patterns:0", fmt.Sprintf("total_error_replies:%d", errs),
			fmt.Sprintf("conflicts_lww:%d", ks.Stats.ConflictsLWW.Load()), fmt.Sprintf("conflicts_type:%d", ks.Stats.ConflictsType.Load()),
			fmt.Sprintf("conflicts_non_numeric_base:%d", ks.Stats.ConflictsNum.Load()),
			fmt.Sprintf("remote_deltas_applied:%d", ks.Stats.RemoteApplied.Load()),
			fmt.Sprintf("tombstones:%d", ks.Stats.Tombstones.Load()),
			fmt.Sprintf("tombstones_gc:%d", ks.Stats.TombstonesGCd.Load()),
			fmt.Sprintf("field_metadata_gc:%d", ks.Stats.FieldsGCd.Load()),
			fmt.Sprintf("corrupt_records:%d", ks.Stats.CorruptRecords.Load()),
			fmt.Sprintf("keys_repaired:%d", ks.Stats.KeysRepaired.Load()),
			fmt.Sprintf("prefetched_keys:%d", ks.Stats.Prefetched.Load()),
			fmt.Sprintf("prefetched_cold_keys:%d", ks.Stats.PrefetchedCold.Load()),
			fmt.Sprintf("checkpoint_elem_pages_read:%d", ks.Stats.ElemPagesRead.Load())}
	case "replication":
		lines := []string{"role:master", "connected_slaves:0", "region:" + ks.Region()}
		if e.Info != nil {
			lines = append(lines, e.Info.Replication()...)
		}
		return lines
	case "cpu":
		sys, user := processCPU()
		return []string{fmt.Sprintf("used_cpu_sys:%.6f", sys.Seconds()), fmt.Sprintf("used_cpu_user:%.6f", user.Seconds()), fmt.Sprintf("goroutines:%d", runtime.NumGoroutine())}
	case "commandstats":
		var out []string
		for _, c := range e.sorted() {
			st := e.stats[c]
			n := st.calls.Load()
			if n == 0 && st.rejected.Load() == 0 {
				continue
			}
			us := st.usec.Load()
			out = append(out, fmt.Sprintf("cmdstat_%s:calls=%d,usec=%d,usec_per_call=%.2f,rejected_calls=%d,failed_calls=%d",
				c.Name, n, us, float64(us)/float64(max(n, 1)), st.rejected.Load(), st.failed.Load()))
		}
		return out
	case "errorstats":
		e.mu.Lock()
		defer e.mu.Unlock()
		var out []string
		for p, n := range e.errs {
			out = append(out, fmt.Sprintf("errorstat_%s:count=%d", p, n))
		}
		sort.Strings(out)
		return out
	case "keyspace":
		var out []string
		for i := 0; i < ks.DBs(); i++ {
			if n, x := ks.Size(i); n > 0 {
				out = append(out, fmt.Sprintf("db%d:keys=%d,expires=%d,avg_ttl=0", i, n, x))
			}
		}
		return out
	case "modules", "cluster":
		if name == "cluster" {
			return []string{"cluster_enabled:0"}
		}
		return nil
	}
	return nil
}

var runID = fmt.Sprintf("%040x", time.Now().UnixNano())

func exe() string { p, _ := os.Executable(); return p }

var defaultSections = []string{"server", "clients", "memory", "persistence", "stats", "replication", "cpu", "modules", "errorstats", "cluster", "keyspace"}

func cmdInfo(c *Ctx) {
	var sections []string
	for _, a := range c.Args[1:] {
		switch s := strings.ToLower(string(a)); s {
		case "all", "everything":
			sections = append(sections, defaultSections...)
			sections = append(sections, "commandstats")
		case "default":
			sections = append(sections, defaultSections...)
		default:
			sections = append(sections, s)
		}
	}
	if len(sections) == 0 {
		sections = defaultSections
	}
	var b strings.Builder
	seen := map[string]bool{}
	for _, s := range sections {
		if seen[s] {
			continue
		}
		seen[s] = true
		lines := c.e.infoSection(c.tx, s)
		if lines == nil && s != "modules" && s != "keyspace" && s != "errorstats" && s != "commandstats" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + strings.ToUpper(s[:1]) + s[1:] + "\r\n")
		for _, l := range lines {
			b.WriteString(l + "\r\n")
		}
	}
	c.Conn.BulkString(b.String())
}

func cmdConfig(c *Ctx) {
	sub := strings.ToLower(c.arg(1))
	switch {
	case sub == "get" && len(c.Args) >= 3:
		var pats []string
		for _, a := range c.Args[2:] {
			pats = append(pats, string(a))
		}
		pairs := c.e.Config.match(pats)
		c.Conn.Map(len(pairs))
		for _, p := range pairs {
			c.Conn.BulkString(p[0])
			c.Conn.BulkString(p[1])
		}
	case sub == "set" && len(c.Args) >= 4:
		var args []string
		for _, a := range c.Args[2:] {
			args = append(args, string(a))
		}
		if err := c.e.Config.setMany(args); err != nil {
			c.fail(err)
			return
		}
		c.Conn.OK()
	case sub == "resetstat" && len(c.Args) == 2:
		for _, st := range c.e.stats {
			st.calls.Store(0)
			st.usec.Store(0)
			st.rejected.Store(0)
			st.failed.Store(0)
		}
		c.e.mu.Lock()
		c.e.errs = map[string]uint64{}
		c.e.mu.Unlock()
		c.ks.Stats.ExpiredKeys.Store(0)
		c.ks.Stats.KeyspaceHits.Store(0)
		c.ks.Stats.KeyspaceMiss.Store(0)
		if c.e.Info != nil {
			c.e.Info.ResetStats()
		}
		c.Conn.OK()
	case sub == "rewrite" && len(c.Args) == 2:
		c.fail(Error("ERR The server is running without a config file"))
	case sub == "help":
		c.bulks([]string{"CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "GET <pattern>", "SET <directive> <value>", "RESETSTAT", "REWRITE", "HELP"})
	default:
		c.fail(Error("ERR unknown subcommand or wrong number of arguments for '" + c.arg(1) + "'. Try CONFIG HELP."))
	}
}

func cmdTime(c *Ctx) {
	now := time.Now()
	c.Conn.Array(2)
	c.Conn.BulkString(formatInt(now.Unix()))
	c.Conn.BulkString(formatInt(int64(now.Nanosecond() / 1000)))
}

func cmdMemory(c *Ctx) {
	sub := strings.ToLower(c.arg(1))
	switch {
	case sub == "usage" && (len(c.Args) == 3 || (len(c.Args) == 5 && c.argIs(3, "samples"))):
		samples := int64(5) // as Redis: members or fields measured, 0 for all
		if len(c.Args) == 5 {
			var ok bool
			if samples, ok = crdt.ParseInt(c.Args[4]); !ok {
				c.fail(ErrNotInt)
				return
			}
			if samples < 0 {
				c.fail(ErrSyntax)
				return
			}
		}
		c.run1(2, func(tx *keyspace.Tx, k keyspace.Key) error {
			if n, ok := tx.Usage(k, int(min(samples, math.MaxInt32))); ok {
				c.Conn.Int(n)
			} else {
				c.Conn.Null()
			}
			return nil
		})
	case sub == "doctor":
		c.Conn.BulkString("Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.")
	case sub == "stats":
		used := usedMemory()
		c.Conn.Map(2)
		c.Conn.BulkString("total.allocated")
		c.Conn.Int(int64(used))
		c.Conn.BulkString("rss")
		c.Conn.Int(int64(rssMemory()))
	case sub == "purge":
		debug.FreeOSMemory() // collect and hand free pages back to the OS
		c.Conn.OK()
	case sub == "help":
		c.bulks([]string{"MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "DOCTOR", "STATS", "PURGE", "USAGE <key> [SAMPLES <count>]", "HELP"})
	default:
		c.fail(Error("ERR unknown subcommand or wrong number of arguments for '" + c.arg(1) + "'. Try MEMORY HELP."))
	}
}

func cmdSlowlog(c *Ctx) {
	sub := strings.ToLower(c.arg(1))
	switch {
	case sub == "get" && len(c.Args) <= 3:
		n := 10
		if len(c.Args) == 3 {
			v, ok := crdt.ParseInt(c.Args[2])
			if !ok || v < -1 {
				c.fail(Error("ERR count should be greater than or equal to -1"))
				return
			}
			n = int(v)
		}
		es := c.e.slow.get(n)
		c.Conn.Array(len(es))
		for _, e := range es {
			c.Conn.Array(6)
			c.Conn.Int(e.id)
			c.Conn.Int(e.at.Unix())
			c.Conn.Int(e.dur.Microseconds())
			c.bulks(e.args)
			c.Conn.BulkString(e.client)
			c.Conn.BulkString(e.name)
		}
	case sub == "len" && len(c.Args) == 2:
		c.Conn.Int(int64(c.e.slow.len()))
	case sub == "reset" && len(c.Args) == 2:
		c.e.slow.reset()
		c.Conn.OK()
	case sub == "help":
		c.bulks([]string{"SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "GET [<count>]", "LEN", "RESET", "HELP"})
	default:
		c.fail(Error("ERR unknown subcommand or wrong number of arguments for '" + c.arg(1) + "'. Try SLOWLOG HELP."))
	}
}

func cmdDebug(c *Ctx) {
	if c.argIs(1, "sleep") && len(c.Args) == 3 {
		var secs float64
		if _, err := fmt.Sscan(c.arg(2), &secs); err != nil || secs < 0 || secs > 3600 {
			c.fail(ErrNotFloat)
			return
		}
		time.Sleep(time.Duration(secs * float64(time.Second)))
		c.Conn.OK()
		return
	}
	c.fail(Error("ERR DEBUG " + strings.ToUpper(c.arg(1)) + " is not supported by Concord (only DEBUG SLEEP)"))
}

func cmdLastSave(c *Ctx) {
	if c.e.Saver == nil {
		c.Conn.Int(c.e.started.Unix())
		return
	}
	c.Conn.Int(c.e.Saver.LastSave())
}

func cmdSave(c *Ctx) {
	if c.e.Saver == nil {
		c.fail(Error("ERR this server has no persistence"))
		return
	}
	if err := c.e.Saver.Save(); err != nil {
		c.fail(Error("ERR " + err.Error()))
		return
	}
	c.Conn.OK()
}

// cmdShutdown is SHUTDOWN [NOSAVE | SAVE] [NOW] [FORCE] [ABORT]: the
// connection closes without a reply, as in Redis, and the server stops.
func cmdShutdown(c *Ctx) {
	save, saveArgs := true, 0
	for _, a := range c.Args[1:] {
		switch strings.ToLower(string(a)) {
		case "nosave":
			save, saveArgs = false, saveArgs+1
		case "save":
			saveArgs++
		case "now", "force":
		case "abort":
			c.fail(Error("ERR No shutdown in progress."))
			return
		default:
			c.fail(ErrSyntax)
			return
		}
	}
	switch {
	case saveArgs > 1:
		c.fail(ErrSyntax)
	case c.e.Saver == nil:
		c.fail(Error("ERR this server cannot be shut down from a client"))
	default:
		c.e.Saver.Shutdown(save)
		c.Conn.CloseAfterReply()
	}
}

// cmdBgsave is BGSAVE [SCHEDULE] and BGREWRITEAOF: both start a checkpoint.
func cmdBgsave(c *Ctx) {
	aof := c.Cmd.Name == "bgrewriteaof"
	switch {
	case len(c.Args) > 2 || len(c.Args) == 2 && !c.argIs(1, "schedule"):
		c.fail(ErrSyntax)
	case c.e.Saver == nil:
		c.fail(Error("ERR this server has no persistence"))
	case c.e.Saver.BackgroundSave():
		c.Conn.Simple(map[bool]string{false: "Background saving started", true: "Background append only file rewriting started"}[aof])
	case len(c.Args) == 2:
		go c.e.Saver.Save() // after the one running
		c.Conn.Simple("Background saving scheduled")
	case aof:
		c.fail(Error("ERR Background append only file rewriting already in progress"))
	default:
		c.fail(Error("ERR Background save already in progress"))
	}
}

func cmdConcord(c *Ctx) {
	switch {
	case c.argIs(1, "region") && len(c.Args) == 2:
		c.Conn.BulkString(c.ks.Region())
	case c.argIs(1, "conflicts") && (len(c.Args) == 2 || (len(c.Args) == 4 && c.argIs(2, "count"))):
		n := int64(10)
		if len(c.Args) == 4 {
			v, ok := crdt.ParseInt(c.Args[3])
			if !ok || v < 0 {
				c.fail(ErrNotInt)
				return
			}
			n = v
		}
		evs, _ := c.ks.Conflicts(int(n))
		c.Conn.Array(len(evs))
		for _, ev := range evs {
			c.Conn.Map(7)
			c.Conn.BulkString("db")
			c.Conn.Int(int64(ev.DB))
			c.Conn.BulkString("key")
			c.Conn.BulkString(ev.Key)
			c.Conn.BulkString("kind")
			c.Conn.BulkString(ev.Kind)
			c.Conn.BulkString("from")
			c.Conn.BulkString(ev.From)
			c.Conn.BulkString("hlc")
			c.Conn.BulkString(fmt.Sprintf("%d.%d@%s", ev.HLC.Phys, ev.HLC.Log, ev.HLC.Region))
			c.Conn.BulkString("winner")
			c.Conn.BulkString(ev.Winner)
			c.Conn.BulkString("loser")
			c.Conn.BulkString(ev.Loser)
		}
	case c.argIs(1, "peers") && (len(c.Args) == 2 || (len(c.Args) == 3 && c.argIs(2, "list"))):
		if c.e.Peers == nil {
			c.Conn.Array(0)
			return
		}
		names := c.e.Peers.PeerNames()
		c.Conn.Array(len(names))
		for _, n := range names {
			c.Conn.Array(2)
			c.Conn.BulkString(n)
			if c.e.Peers.Removed(n) {
				c.Conn.BulkString("removed")
			} else {
				c.Conn.BulkString("active")
			}
		}
	case c.argIs(1, "peers") && len(c.Args) == 4 && (c.argIs(2, "remove") || c.argIs(2, "restore")):
		if c.e.Peers == nil {
			c.fail(Error("ERR this region has no peers"))
			return
		}
		if err := c.e.Peers.SetRemoved(c.arg(3), c.argIs(2, "remove")); err != nil {
			c.fail(Error("ERR " + err.Error()))
			return
		}
		c.Conn.OK()
	default:
		c.fail(Error("ERR unknown subcommand or wrong number of arguments for '" + c.arg(1) + "'. Try CONCORD REGION, CONCORD CONFLICTS [COUNT n] or CONCORD PEERS [LIST | REMOVE name | RESTORE name]."))
	}
}

// --- COMMAND ---

// dangerous lists the commands Redis puts in @dangerous.
var dangerous = map[string]bool{"keys": true, "flushall": true, "flushdb": true, "swapdb": true, "config": true, "debug": true,
	"acl": true, "client": true, "info": true, "slowlog": true, "latency": true, "lastsave": true, "concord": true, "command": false, "restore": true, "migrate": true}

func aclCategories(cmd *Cmd) []string {
	var cats []string
	switch {
	case cmd.has("write"):
		cats = append(cats, "@write")
	case cmd.has("readonly"):
		cats = append(cats, "@read")
	}
	switch cmd.Group {
	case "generic":
		cats = append(cats, "@keyspace")
	case "string":
		cats = append(cats, "@string")
	case "set":
		cats = append(cats, "@set")
	case "hash":
		cats = append(cats, "@hash")
	case "connection":
		cats = append(cats, "@connection")
	case "server":
		if cmd.has("admin") {
			cats = append(cats, "@admin")
		}
	case "transactions":
		cats = append(cats, "@transaction")
	}
	if dangerous[cmd.Name] {
		cats = append(cats, "@dangerous")
	}
	if cmd.has("fast") {
		cats = append(cats, "@fast")
	} else {
		cats = append(cats, "@slow")
	}
	return cats
}

func (c *Ctx) commandInfo(cmd *Cmd) {
	c.Conn.Array(10)
	c.Conn.BulkString(cmd.Name)
	c.Conn.Int(int64(cmd.Arity))
	c.Conn.Set(len(cmd.Flags))
	for _, f := range cmd.Flags {
		c.Conn.Simple(f)
	}
	c.Conn.Int(int64(cmd.First))
	c.Conn.Int(int64(cmd.Last))
	c.Conn.Int(int64(cmd.Step))
	cats := aclCategories(cmd)
	c.Conn.Set(len(cats))
	for _, a := range cats {
		c.Conn.Simple(a)
	}
	c.Conn.Array(0)
	c.Conn.Array(0)
	c.Conn.Array(0)
}

func cmdCommand(c *Ctx) {
	if len(c.Args) == 1 {
		all := c.e.sorted()
		c.Conn.Array(len(all))
		for _, cmd := range all {
			c.commandInfo(cmd)
		}
		return
	}
	sub := strings.ToLower(c.arg(1))
	switch sub {
	case "count":
		c.Conn.Int(int64(len(c.e.cmds)))
	case "list":
		var names []string
		for _, cmd := range c.e.sorted() {
			names = append(names, cmd.Name)
		}
		c.bulks(names)
	case "info":
		if len(c.Args) == 2 {
			all := c.e.sorted()
			c.Conn.Array(len(all))
			for _, cmd := range all {
				c.commandInfo(cmd)
			}
			return
		}
		c.Conn.Array(len(c.Args) - 2)
		for _, n := range c.Args[2:] {
			if cmd := c.e.Lookup(n); cmd != nil {
				c.commandInfo(cmd)
			} else {
				c.Conn.NullArray()
			}
		}
	case "docs":
		var cmds []*Cmd
		if len(c.Args) == 2 {
			cmds = c.e.sorted()
		}
		for _, n := range c.Args[2:] {
			if cmd := c.e.Lookup(n); cmd != nil {
				cmds = append(cmds, cmd)
			}
		}
		c.Conn.Map(len(cmds))
		for _, cmd := range cmds {
			c.Conn.BulkString(cmd.Name)
			c.Conn.Map(3)
			c.Conn.BulkString("summary")
			c.Conn.BulkString(cmd.Summary)
			c.Conn.BulkString("since")
			c.Conn.BulkString(cmd.Since)
			c.Conn.BulkString("group")
			c.Conn.BulkString(cmd.Group)
		}
	case "getkeys":
		if len(c.Args) < 3 {
			c.fail(Error(argErr("command|getkeys")))
			return
		}
		args := c.Args[2:]
		cmd := c.e.Lookup(args[0])
		if cmd == nil {
			c.fail(Error("ERR Invalid command specified"))
			return
		}
		if !checkArity(cmd, len(args)) {
			c.fail(Error("ERR Invalid number of arguments specified for command"))
			return
		}
		keys := keyArgs(cmd, args)
		if len(keys) == 0 {
			c.fail(Error("ERR The command has no key arguments"))
			return
		}
		c.bulks(keys)
	case "help":
		c.bulks([]string{"COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "(no subcommand)", "COUNT", "DOCS [<command-name> ...]", "GETKEYS <full-command>", "INFO [<command-name> ...]", "LIST", "HELP"})
	default:
		c.fail(Error("ERR unknown subcommand or wrong number of arguments for '" + c.arg(1) + "'. Try COMMAND HELP."))
	}
}

// keyArgs returns the key arguments of a full command from the table.
func keyArgs(cmd *Cmd, args [][]byte) []string {
	if cmd.Name == "sintercard" {
		n, ok := crdt.ParseInt(args[1])
		if !ok || n < 1 || int(n)+2 > len(args) {
			return nil
		}
		var out []string
		for _, a := range args[2 : 2+n] {
			out = append(out, string(a))
		}
		return out
	}
	if cmd.First == 0 {
		return nil
	}
	last := cmd.Last
	if last < 0 {
		last = len(args) + last
	}
	var out []string
	for i := cmd.First; i <= last && i < len(args); i += max(cmd.Step, 1) {
		out = append(out, string(args[i]))
	}
	return out
}
