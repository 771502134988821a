package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"concord/persistence"

	"github.com/dgraph-io/badger/v4"
)

// Flip a byte of a stored value in one region: the damage is detected at
// start (checksum), the key is not served, it is repaired from the other
// region, and both events are counted.
func TestCorruptStateRepairedFromPeer(t *testing.T) {
	c := startCluster(t, 2)
	a := c.clients["A"]
	a.Set(ctx, "s1", "precious", 0)
	a.SAdd(ctx, "set1", "x", "y")
	a.HSet(ctx, "h1", "f", "v")
	c.converged(t, 10*time.Second)

	c.regions["B"].Close()
	db, err := badger.Open(badger.DefaultOptions(c.dirs["B"] + "/badger").WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(persistence.StateKey(0, "s1"))
		if err != nil {
			return err
		}
		v, _ := item.ValueCopy(nil)
		v[len(v)/2] ^= 0x40 // bit rot in the middle of the record
		return txn.Set(persistence.StateKey(0, "s1"), v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	c.start(t, "B", c.nats["B"])
	b := c.clients["B"]
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		v, err := b.Get(ctx, "s1").Result()
		if err != nil && strings.HasPrefix(err.Error(), "TRYAGAIN") {
			return err // not served while damaged
		}
		if v != "precious" {
			return fmt.Errorf("s1 = %q, %v", v, err)
		}
		return nil
	})
	info, _ := b.Info(ctx, "stats").Result()
	if !strings.Contains(info, "corrupt_records:1") || !strings.Contains(info, "keys_repaired:1") {
		t.Fatalf("INFO stats:\n%s", info)
	}
	c.converged(t, 10*time.Second)
}
