package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"concord/cmd/concord/server"

	"github.com/redis/go-redis/v9"
)

func TestACL(t *testing.T) {
	aclFile := filepath.Join(t.TempDir(), "users.acl")
	os.WriteFile(aclFile, []byte("user reader on >r-pass ~* +@read +@connection\nuser default on nopass ~* &* +@all\n"), 0o600)
	in := startConcord(t, func(c *server.Config) { c.ACLFile = aclFile })
	admin := client(t, in.Addr())
	admin.Set(ctx, "app:1", "v", 0)

	// a user from the ACL file: reads yes, writes no
	reader := redis.NewClient(&redis.Options{Addr: in.Addr(), Username: "reader", Password: "r-pass", Protocol: 3})
	defer reader.Close()
	if v, err := reader.Get(ctx, "app:1").Result(); err != nil || v != "v" {
		t.Fatalf("reader GET: %q %v", v, err)
	}
	if err := reader.Set(ctx, "app:1", "x", 0).Err(); err == nil || err.Error() != "NOPERM this user has no permissions to run the 'set' command" {
		t.Fatalf("reader SET: %v", err)
	}
	// key patterns and categories
	if err := admin.Do(ctx, "ACL", "SETUSER", "app", "on", ">app-pass", "~app:*", "+@string", "+@connection", "-getdel").Err(); err != nil {
		t.Fatal(err)
	}
	app := redis.NewClient(&redis.Options{Addr: in.Addr(), Username: "app", Password: "app-pass", Protocol: 2})
	defer app.Close()
	if err := app.Set(ctx, "app:2", "y", 0).Err(); err != nil {
		t.Fatalf("app SET own key: %v", err)
	}
	if err := app.Set(ctx, "other", "y", 0).Err(); err == nil || !strings.Contains(err.Error(), "no permissions to access one of the keys") {
		t.Fatalf("app SET other key: %v", err)
	}
	if err := app.MSet(ctx, "app:3", "1", "other", "2").Err(); err == nil {
		t.Fatal("MSET touching a forbidden key succeeded")
	}
	if err := app.SAdd(ctx, "app:set", "m").Err(); err == nil || !strings.Contains(err.Error(), "'sadd'") {
		t.Fatalf("app SADD (not @string): %v", err)
	}
	if err := app.GetDel(ctx, "app:2").Err(); err == nil {
		t.Fatal("-getdel not enforced")
	}
	if who, _ := app.Do(ctx, "ACL", "WHOAMI").Text(); who != "" {
		t.Fatalf("app may not run ACL: %q", who)
	}
	// the ACL log records the denials
	entries, err := admin.Do(ctx, "ACL", "LOG").Slice()
	if err != nil || len(entries) < 3 {
		t.Fatalf("ACL LOG: %v %v", entries, err)
	}
	if !strings.Contains(strings.ToLower(strings.Join(strings.Fields(toString(entries)), " ")), "other") {
		t.Fatalf("ACL LOG lacks the denied key: %v", entries)
	}
	// HELLO 3 AUTH
	rc := dialRaw(t, in.Addr())
	if v, _ := rc.do([]string{"HELLO", "3", "AUTH", "app", "app-pass"}); !strings.Contains(v, `"proto" :3`) {
		t.Fatalf("HELLO 3 AUTH: %s", v)
	}
	if v, _ := rc.do([]string{"ACL", "WHOAMI"}); !strings.HasPrefix(v, "-NOPERM") {
		t.Fatalf("WHOAMI as app: %s", v)
	}
	// deleting a user closes its connections
	admin.Do(ctx, "ACL", "DELUSER", "app")
	if _, err := rc.do([]string{"PING"}); err == nil {
		t.Fatal("connection of a deleted user still open")
	}
	// ACL SAVE writes the file, ACL LOAD reads it back
	if err := admin.Do(ctx, "ACL", "SAVE").Err(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(aclFile)
	if !strings.Contains(string(b), "user reader on #") || strings.Contains(string(b), "user app ") {
		t.Fatalf("saved ACL file:\n%s", b)
	}
	admin.Do(ctx, "ACL", "SETUSER", "temp", "on")
	if err := admin.Do(ctx, "ACL", "LOAD").Err(); err != nil {
		t.Fatal(err)
	}
	if users, _ := admin.Do(ctx, "ACL", "USERS").StringSlice(); strings.Join(users, ",") != "default,reader" {
		t.Fatalf("users after LOAD: %v", users)
	}
	// requirepass through CONFIG SET protects the default user
	admin.ConfigSet(ctx, "requirepass", "pw")
	fresh := redis.NewClient(&redis.Options{Addr: in.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer fresh.Close()
	if err := fresh.Ping(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatalf("after requirepass: %v", err)
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case []any:
		var parts []string
		for _, e := range x {
			parts = append(parts, toString(e))
		}
		return strings.Join(parts, " ")
	case map[any]any:
		var parts []string
		for k, e := range x {
			parts = append(parts, toString(k), toString(e))
		}
		return strings.Join(parts, " ")
	case string:
		return x
	}
	return ""
}
