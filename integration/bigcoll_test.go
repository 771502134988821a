package integration

import (
	"fmt"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"
)

// addMany runs cmd [key] with the arguments of elements 0..n-1 (elem(j)),
// 1000 elements per command.
func addMany(t *testing.T, c *redis.Client, n int, cmd, key string, elem func(j int) []any) {
	t.Helper()
	for i := 0; i < n; i += 1000 {
		args := []any{cmd}
		if key != "" {
			args = append(args, key)
		}
		for j := i; j < min(i+1000, n); j++ {
			args = append(args, elem(j)...)
		}
		if err := c.Do(ctx, args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRandomElementsOfBigCollections: SPOP, SRANDMEMBER and HRANDFIELD
// on a set and a hash big enough to have many parts (crdt.Table), which
// they now draw from by index instead of listing: distinct when asked,
// members only, popped ones gone, and a hash's deleted fields never
// picked.
func TestRandomElementsOfBigCollections(t *testing.T) {
	in := startConcord(t, nil)
	c := client(t, in.Addr())
	const n = 20000
	addMany(t, c, n, "SADD", "big", func(j int) []any { return []any{fmt.Sprint("m", j)} })
	addMany(t, c, n, "HSET", "h", func(j int) []any { return []any{fmt.Sprint("f", j), fmt.Sprint("v", j)} })
	distinctMembers := func(what string, ms []string, want int) {
		t.Helper()
		seen := map[string]bool{}
		for _, m := range ms {
			if seen[m] {
				t.Fatalf("%s: %q twice in %v", what, m, ms)
			}
			seen[m] = true
		}
		if len(ms) != want {
			t.Fatalf("%s: %d members, want %d", what, len(ms), want)
		}
	}
	ms, err := c.SRandMemberN(ctx, "big", 50).Result()
	if err != nil {
		t.Fatal(err)
	}
	distinctMembers("SRANDMEMBER 50", ms, 50)
	for _, m := range ms {
		if !c.SIsMember(ctx, "big", m).Val() {
			t.Fatalf("SRANDMEMBER gave %q, not a member", m)
		}
	}
	if ms := c.Do(ctx, "SRANDMEMBER", "big", -30).Val().([]any); len(ms) != 30 {
		t.Fatalf("SRANDMEMBER -30: %d", len(ms))
	}
	popped, err := c.SPopN(ctx, "big", 100).Result()
	if err != nil {
		t.Fatal(err)
	}
	distinctMembers("SPOP 100", popped, 100)
	one, err := c.SPop(ctx, "big").Result()
	if err != nil || len(one) < 2 || one[0] != 'm' {
		t.Fatalf("SPOP: %q %v", one, err)
	}
	if got := c.SCard(ctx, "big").Val(); got != n-101 {
		t.Fatalf("SCARD after popping 101: %d", got)
	}
	for _, m := range append(popped, one) {
		if c.SIsMember(ctx, "big", m).Val() {
			t.Fatalf("%q popped and still a member", m)
		}
	}

	// all but ten fields deleted: only those ten are ever picked
	var del []string
	for j := 0; j < n; j++ {
		if j%(n/10) != 7 {
			del = append(del, fmt.Sprint("f", j))
		}
	}
	for i := 0; i < len(del); i += 1000 {
		if err := c.HDel(ctx, "h", del[i:min(i+1000, len(del))]...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	live := func(f string) bool {
		var j int
		fmt.Sscanf(f, "f%d", &j)
		return j%(n/10) == 7
	}
	fs, err := c.HRandField(ctx, "h", 5).Result()
	if err != nil {
		t.Fatal(err)
	}
	distinctMembers("HRANDFIELD 5", fs, 5)
	all, _ := c.HRandField(ctx, "h", 50).Result()
	distinctMembers("HRANDFIELD 50 of 10", all, 10)
	for range 20 {
		f, err := c.Do(ctx, "HRANDFIELD", "h").Text()
		if err != nil || !live(f) {
			t.Fatalf("HRANDFIELD: %q %v (a deleted field)", f, err)
		}
		fs = append(fs, f)
	}
	kv, err := c.HRandFieldWithValues(ctx, "h", -20).Result()
	if err != nil || len(kv) != 20 {
		t.Fatalf("HRANDFIELD -20 WITHVALUES: %d %v", len(kv), err)
	}
	for _, p := range kv {
		if !live(p.Key) || p.Value != "v"+p.Key[1:] {
			t.Fatalf("HRANDFIELD WITHVALUES: %s=%s", p.Key, p.Value)
		}
		fs = append(fs, p.Key)
	}
	for _, f := range append(fs, all...) {
		if !live(f) {
			t.Fatalf("picked deleted field %q", f)
		}
	}

	// counters' fields deleted keep their registers (the increments'
	// floors): entries that hold no value, which the draws skip
	for j := 0; j < 2000; j++ {
		if err := c.HIncrBy(ctx, "hc", fmt.Sprint("f", j), 1).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.HDel(ctx, "hc", del[:1990]...).Err(); err != nil { // all of hc but f7 and f1997-f1999
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, f := range c.HKeys(ctx, "hc").Val() {
		want[f] = true
	}
	if len(want) == 0 || len(want) > 20 {
		t.Fatalf("HKEYS hc: %d fields", len(want))
	}
	for range 50 {
		f, err := c.Do(ctx, "HRANDFIELD", "hc").Text()
		if err != nil || !want[f] {
			t.Fatalf("HRANDFIELD hc: %q %v (a deleted field)", f, err)
		}
	}
	if got, _ := c.HRandField(ctx, "hc", 100).Result(); len(got) != len(want) {
		t.Fatalf("HRANDFIELD hc 100: %d fields, want %d", len(got), len(want))
	}
}

// TestScanBigCollections: SSCAN and HSCAN page through a set and a hash of
// many parts (crdt.Table.Scan: each call sorts the part it starts in, not
// the whole set) — every element there throughout given at least once
// while others come and go between calls, about COUNT per call, MATCH
// applied, a hash's values beside their fields.
func TestScanBigCollections(t *testing.T) {
	in := startConcord(t, nil)
	c := client(t, in.Addr())
	const n = 20000
	addMany(t, c, n, "SADD", "s", func(j int) []any { return []any{fmt.Sprint("m", j)} })
	addMany(t, c, n, "HSET", "h", func(j int) []any { return []any{fmt.Sprint("f", j), fmt.Sprint("v", j)} })
	seen := map[string]int{}
	cursor, calls, added := uint64(0), 0, 0
	for {
		ms, next, err := c.SScan(ctx, "s", cursor, "", 100).Result()
		if err != nil {
			t.Fatal(err)
		}
		calls++
		for _, m := range ms {
			seen[m]++
		}
		if cursor = next; cursor == 0 {
			break
		}
		if len(ms) < 100 || calls > n/100*2 {
			t.Fatalf("call %d: %d members", calls, len(ms))
		}
		// others come and go (the set grows: its parts split under the scan)
		args := []any{"SADD", "s"}
		for range 20 {
			args = append(args, fmt.Sprint("new", added))
			added++
		}
		c.Do(ctx, args...)
		c.SRem(ctx, "s", fmt.Sprint("new", added/2), fmt.Sprint("new", added-1))
	}
	for j := 0; j < n; j++ {
		if seen[fmt.Sprint("m", j)] == 0 {
			t.Fatalf("m%d never given (%d calls)", j, calls)
		}
	}

	var fields []string
	cursor = 0
	for {
		kv, next, err := c.HScan(ctx, "h", cursor, "f1*", 500).Result()
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i][:2] != "f1" || kv[i+1] != "v"+kv[i][1:] {
				t.Fatalf("HSCAN MATCH f1*: %s=%s", kv[i], kv[i+1])
			}
			fields = append(fields, kv[i])
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	want := 0
	for j := 0; j < n; j++ {
		if fmt.Sprint(j)[0] == '1' {
			want++
		}
	}
	if len(fields) != want { // nothing changed: each once
		t.Fatalf("HSCAN MATCH f1*: %d fields, want %d", len(fields), want)
	}
}

// TestScanMatchReadsCountKeys: SCAN's COUNT bounds the keys a call looks
// at, matched or not (as Redis's counts buckets): a MATCH that few keys
// pass gives short pages and a cursor, instead of one call reading the
// whole keyspace; the whole iteration still gives every match once.
func TestScanMatchReadsCountKeys(t *testing.T) {
	in := startConcord(t, nil)
	c := client(t, in.Addr())
	const n = 20000
	addMany(t, c, n, "MSET", "", func(j int) []any { return []any{fmt.Sprint("k:", j), "v"} })
	for j := range 5 {
		c.Set(ctx, fmt.Sprint("x:", j), "v", 0)
	}
	page, cursor, err := c.Scan(ctx, 0, "x:*", 10).Result()
	if err != nil || cursor == 0 || len(page) > 5 {
		t.Fatalf("first call of SCAN MATCH x:* COUNT 10: %v, cursor %d, %v (read the whole keyspace?)", page, cursor, err)
	}
	got := map[string]int{}
	for _, k := range page {
		got[k]++
	}
	calls := 1
	for cursor != 0 {
		page, cursor, err = c.Scan(ctx, cursor, "x:*", 10).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page {
			got[k]++
		}
		calls++
	}
	if len(got) != 5 || calls < n/10/2 || calls > 2*n/10+256 {
		t.Fatalf("SCAN MATCH x:* COUNT 10: %v in %d calls", got, calls)
	}
	for k, c := range got {
		if c != 1 {
			t.Fatalf("%s given %d times", k, c)
		}
	}
}

// TestSetAlgebraBigAndSmall: SINTER, SDIFF, SUNION and their STORE and
// CARD forms over a big set and a small one, in either order (an
// intersection walks the smallest set, a difference looks the first
// set's members up when that is cheaper): the same answers whichever way
// they are computed.
func TestSetAlgebraBigAndSmall(t *testing.T) {
	in := startConcord(t, nil)
	c := client(t, in.Addr())
	const n = 20000
	addMany(t, c, n, "SADD", "big", func(j int) []any { return []any{fmt.Sprint("m", j)} })
	c.SAdd(ctx, "small", "m1", "m2", "x")
	sorted := func(ms []string) string { slices.Sort(ms); return fmt.Sprint(ms) }
	for _, tc := range []struct {
		got  []string
		want string
	}{
		{c.SInter(ctx, "big", "small").Val(), "[m1 m2]"},
		{c.SInter(ctx, "small", "big").Val(), "[m1 m2]"},
		{c.SInter(ctx, "big", "small", "nokey").Val(), "[]"},
		{c.SInter(ctx, "big").Val()[:0], "[]"},
		{c.SDiff(ctx, "small", "big").Val(), "[x]"},
		{c.SDiff(ctx, "small", "nokey", "big").Val(), "[x]"},
		{c.SDiff(ctx, "nokey", "big").Val(), "[]"},
	} {
		if got := sorted(tc.got); got != tc.want {
			t.Fatalf("got %s, want %s", got, tc.want)
		}
	}
	if got := len(c.SInter(ctx, "big").Val()); got != n {
		t.Fatalf("SINTER big: %d", got)
	}
	if got := len(c.SDiff(ctx, "big", "small").Val()); got != n-2 {
		t.Fatalf("SDIFF big small: %d", got)
	}
	if got := len(c.SUnion(ctx, "small", "big").Val()); got != n+1 {
		t.Fatalf("SUNION small big: %d", got)
	}
	if got := c.SInterStore(ctx, "dst", "big", "small").Val(); got != 2 {
		t.Fatalf("SINTERSTORE: %d", got)
	}
	if got := c.SInterCard(ctx, 0, "big", "small").Val(); got != 2 {
		t.Fatalf("SINTERCARD: %d", got)
	}
	if got := c.SDiffStore(ctx, "dst", "big", "small").Val(); got != n-2 {
		t.Fatalf("SDIFFSTORE: %d", got)
	}
}
