package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"concord/crdt"
	"concord/keyspace"
	"concord/peering"

	"github.com/redis/go-redis/v9"
)

// A crash (no final checkpoint) at any point recovers exactly the state the
// region had: the last checkpoint's stored states plus the log after it
// (local deltas and, with a peer, merged remote deltas). Checkpoints run at
// random points, also concurrently with the writes, across several lives of
// one data dir. Odd seeds run alone (deleted keys are dropped at once), even
// seeds with a peer X (tombstones kept) whose deltas arrive in between.
func TestCrashRecoversCheckpointPlusLog(t *testing.T) {
	pagesRead := uint64(0) // element pages read back by checkpoints, all lives
	defer func() {
		if !t.Failed() && pagesRead == 0 {
			t.Fatal("no checkpoint read back a page of the big set: the workload misses that path")
		}
	}()
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			dir := t.TempDir()
			rng := rand.New(rand.NewPCG(seed, 7))
			remoteSeq := uint64(0)
			peer := seed%2 == 0
			for life := 0; life < 3; life++ {
				in := startForTest(t, dir, peer)
				if life > 0 {
					checkSame(t, "after restart", want(t, in), in)
				}
				runWorkload(t, in, rng, peer, &remoteSeq)
				pagesRead += in.KS.Stats.ElemPagesRead.Load()
				before := want(t, in)
				in.crash = true
				if err := in.Close(); err != nil {
					t.Fatal(err)
				}
				in = startForTest(t, dir, peer)
				checkSame(t, fmt.Sprintf("life %d after crash", life), before, in)
				if b := in.store.Meta("applied:X"); remoteSeq > 0 && (len(b) != 8 || b[7] != byte(remoteSeq)) {
					t.Fatalf("remote watermark %v, want %d", b, remoteSeq)
				}
				// a clean stop stores everything: nothing to replay next time
				if err := in.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func startForTest(t *testing.T, dir string, peer bool) *Instance {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", Dir: dir, LogLevel: "error", DBs: 2, Region: "A",
		CheckpointInterval: time.Hour, CheckpointLogBytes: 1 << 40, ColdAfter: 5 * time.Millisecond}
	if peer { // X never runs: its deltas are handed to the apply path below
		cfg.Bus, cfg.Peers = peering.NewBus(), map[string]string{"X": "mem"}
	}
	in, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// runWorkload writes through a real client, merges remote deltas through the
// apply path, and checkpoints at random moments (one running alongside).
func runWorkload(t *testing.T, in *Instance, rng *rand.Rand, peer bool, remoteSeq *uint64) {
	t.Helper()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: in.Addr(), DB: 0})
	defer c.Close()
	c1 := redis.NewClient(&redis.Options{Addr: in.Addr(), DB: 1})
	defer c1.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a checkpoint racing the writes
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if err := in.Checkpoint(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	key := func() string { return fmt.Sprint("k", rng.IntN(12)) }
	for i := 0; i < 400; i++ {
		cl := c
		if rng.IntN(4) == 0 {
			cl = c1
		}
		k := key()
		var err error
		switch rng.IntN(12) {
		case 0:
			err = cl.Set(ctx, k, fmt.Sprint("v", i), 0).Err()
		case 1:
			err = cl.IncrBy(ctx, "n"+k, int64(rng.IntN(9)-4)).Err()
		case 2:
			err = cl.IncrByFloat(ctx, "f"+k, 0.25).Err()
		case 3:
			err = cl.SAdd(ctx, "s"+k, fmt.Sprint("m", rng.IntN(6)), fmt.Sprint("m", rng.IntN(6))).Err()
		case 4:
			err = cl.SRem(ctx, "s"+k, fmt.Sprint("m", rng.IntN(6))).Err()
		case 5:
			err = cl.HSet(ctx, "h"+k, fmt.Sprint("f", rng.IntN(5)), i).Err()
		case 6:
			err = cl.HDel(ctx, "h"+k, fmt.Sprint("f", rng.IntN(5))).Err()
		case 7:
			err = cl.HIncrBy(ctx, "h"+k, "c", 3).Err()
		case 8:
			err = cl.Del(ctx, k, "s"+k, "h"+k).Err()
		case 9:
			err = cl.Expire(ctx, k, time.Hour).Err()
		case 10:
			if err = cl.Rename(ctx, "s"+k, "s"+key()).Err(); err != nil && err.Error() == "ERR no such key" {
				err = nil
			}
		case 11:
			if !peer {
				continue
			}
			*remoteSeq++
			applyRemote(t, in, rng, *remoteSeq)
		}
		if err != nil && err.Error() != "WRONGTYPE Operation against a key holding the wrong kind of value" {
			t.Fatal(err)
		}
		if rng.IntN(8) == 0 { // a few members of the big set: its checkpoint reads pages back
			m := fmt.Sprint("b", rng.IntN(3000))
			if err := cl.SAdd(ctx, "big", m).Err(); err != nil {
				t.Fatal(err)
			}
			if err := cl.SRem(ctx, "big", fmt.Sprint("b", rng.IntN(3000))).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if rng.IntN(80) == 0 { // a set bigger than a checkpoint's capture chunk
			var add, rem []any
			for j := 0; j < 1500; j++ {
				add = append(add, fmt.Sprint("b", rng.IntN(3000)))
				rem = append(rem, fmt.Sprint("b", rng.IntN(3000)))
			}
			if err := cl.SAdd(ctx, "big", add...).Err(); err != nil {
				t.Fatal(err)
			}
			if err := cl.SRem(ctx, "big", rem[:500]...).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if rng.IntN(50) == 0 {
			if err := in.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
}

// applyRemote merges a batch of region X's deltas through the apply path.
func applyRemote(t *testing.T, in *Instance, rng *rand.Rand, seq uint64) {
	t.Helper()
	op := crdt.Op{HLC: crdt.HLC{Phys: time.Now().UnixMilli(), Log: uint32(seq), Region: "X"}}
	k := fmt.Sprint("k", rng.IntN(12))
	var batch []crdt.KeyDelta
	switch rng.IntN(3) {
	case 0:
		batch = append(batch, crdt.KeyDelta{Key: "x" + k, Delta: crdt.SetString(&crdt.State{}, op, []byte(fmt.Sprint("remote", seq)), false)})
	case 1:
		batch = append(batch, crdt.KeyDelta{Key: "s" + k, Delta: crdt.SAdd(&crdt.State{}, op, [][]byte{[]byte(fmt.Sprint("r", seq))})})
	default:
		batch = append(batch, crdt.KeyDelta{DB: 1, Key: "n" + k, Delta: crdt.SetString(&crdt.State{}, op, []byte("7"), false)})
	}
	// odd sequences come as a peer's message logged as it came, in an
	// envelope; even ones are encoded into the log by the apply path
	if err := (applier{ks: in.KS, store: in.store}).ApplyBatch(peerBatch("X", seq, batch, seq%2 == 1)); err != nil {
		t.Fatal(err)
	}
}

// peerBatch is batch as peering hands it to the applier: with raw, the
// message it came in (an envelope holding it as one batch) and its newest
// timestamp.
func peerBatch(origin string, seq uint64, batch []crdt.KeyDelta, raw bool) peering.Batch {
	b := peering.Batch{Origin: origin, Seq: seq, Deltas: batch}
	if raw {
		b.Raw = crdt.AppendEnvelope(nil, [][]byte{crdt.AppendBatch(nil, batch)})
		for _, kd := range batch {
			if h := kd.Delta.MaxHLC(); h.Compare(b.Newest) > 0 {
				b.Newest = h
			}
		}
	}
	return b
}

// want returns every key's state (tombstones included).
func want(t *testing.T, in *Instance) map[keyspace.Key]*crdt.State {
	t.Helper()
	out := map[keyspace.Key]*crdt.State{}
	for db := 0; db < in.KS.DBs(); db++ {
		cursor := uint64(0)
		for {
			keys, next := in.KS.ScanPage(nil, db, cursor, 100, nil)
			for _, k := range keys {
				if st := in.KS.Snapshot(keyspace.Key{DB: db, Key: k}); st != nil {
					out[keyspace.Key{DB: db, Key: k}] = st
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	return out
}

func checkSame(t *testing.T, when string, before map[keyspace.Key]*crdt.State, in *Instance) {
	t.Helper()
	after := want(t, in)
	for k, st := range before {
		got := after[k]
		if got == nil || !crdt.Equal(st, got) {
			t.Fatalf("%s: key %v differs:\nbefore %+v\nafter  %+v", when, k, st, got)
		}
	}
	for k := range after {
		if before[k] == nil {
			t.Fatalf("%s: key %v came back", when, k)
		}
	}
}

// A batch bigger than a chunk is applied whole (every delta, in several
// transactions) and its watermark lands with it; an empty batch still
// records its watermark. A peer's message logged as it came is one inbound
// entry (not one per chunk), and a crash after it restores every delta
// from it (an envelope: the log replays envelopes too); deltas of a
// database this server does not have are skipped, then and on replay.
func TestApplyBatchInChunks(t *testing.T) {
	for _, raw := range []bool{false, true} {
		t.Run(fmt.Sprint("raw=", raw), func(t *testing.T) {
			dir := t.TempDir()
			in := startForTest(t, dir, true)
			// the message logged is told apart from the deltas merged: its
			// values are "m<i>", theirs "v<i>" (the same dots), so the
			// state rebuilt from the log after a crash says which was logged
			var batch, sent []crdt.KeyDelta
			for i := 0; i < 3*applyChunk+7; i++ {
				op := crdt.Op{HLC: crdt.HLC{Phys: time.Now().UnixMilli(), Log: uint32(i), Region: "X"}}
				batch = append(batch, crdt.KeyDelta{DB: i % 3, Key: fmt.Sprint("c", i), Delta: crdt.SetString(&crdt.State{}, op, []byte(fmt.Sprint("v", i)), false)})
				sent = append(sent, crdt.KeyDelta{DB: i % 3, Key: fmt.Sprint("c", i), Delta: crdt.SetString(&crdt.State{}, op, []byte(fmt.Sprint("m", i)), false)})
			}
			check := func(when, prefix string) {
				for i, kd := range batch {
					st := in.KS.Snapshot(keyspace.Key{DB: kd.DB, Key: kd.Key})
					if kd.DB >= in.KS.DBs() {
						continue
					}
					if st == nil {
						t.Fatalf("%s: delta %d not applied", when, i)
					}
					if v, _ := st.StrValue(); string(v) != fmt.Sprint(prefix, i) {
						t.Fatalf("%s: key %d = %q, want %s%d", when, i, v, prefix, i)
					}
				}
			}
			in0, groups0 := in.store.InboundSeq(), in.store.Stats().Groups
			b := peerBatch("X", 9, sent, raw)
			b.Deltas = batch
			newest := b.Newest
			if err := (applier{ks: in.KS, store: in.store}).ApplyBatch(b); err != nil {
				t.Fatal(err)
			}
			check("applied", "v")
			if g := in.store.Stats().Groups - groups0; g != 1 { // (the applier commits them itself)
				t.Fatalf("the message's %d transactions logged in %d group commits, want one", len(batch)/applyChunk+1, g)
			}
			if got := in.store.InboundSeq() - in0; raw && got != 1 || got < 1 {
				t.Fatalf("%d inbound log entries for a message of %d deltas (raw %v)", got, len(batch), raw)
			}
			if c := in.KS.Clock(); raw && (c.Phys < newest.Phys || c.Phys == newest.Phys && c.Log < newest.Log) {
				t.Fatalf("clock %v behind the message's newest timestamp %v", in.KS.Clock(), newest)
			}
			if b := in.store.Meta("applied:X"); len(b) != 8 || b[7] != 9 {
				t.Fatalf("watermark %v", b)
			}
			in.crash = true
			if err := in.Close(); err != nil {
				t.Fatal(err)
			}
			in = startForTest(t, dir, true)
			defer in.Close()
			if raw {
				check("after a crash", "m")
			} else {
				check("after a crash", "v")
			}
			if err := (applier{ks: in.KS, store: in.store}).ApplyBatch(peerBatch("X", 10, nil, raw)); err != nil {
				t.Fatal(err)
			}
			if b := in.store.Meta("applied:X"); len(b) != 8 || b[7] != 10 {
				t.Fatalf("watermark after an empty batch %v", b)
			}
		})
	}
}

// A checkpoint that rewrites a few element pages of a big set or hash reads
// their other elements back from the store instead of walking the key
// (checkpoint_elem_pages_read), and what it stores is exactly the state: a
// crash right after it (nothing in the log to replay) restores every member
// and field, added, removed, updated and untouched.
func TestCheckpointReadsBackFewElemPages(t *testing.T) {
	dir := t.TempDir()
	in := startForTest(t, dir, false)
	c := redis.NewClient(&redis.Options{Addr: in.Addr()})
	defer c.Close()
	ctx := context.Background()
	p := c.Pipeline()
	for i := 0; i < 4096; i++ {
		p.SAdd(ctx, "set", fmt.Sprint("m", i))
		p.HSet(ctx, "hash", fmt.Sprint("f", i), i)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	read0 := in.KS.Stats.ElemPagesRead.Load()
	p = c.Pipeline()
	p.SAdd(ctx, "set", "new1", "new2")
	p.SRem(ctx, "set", "m7", "m100")
	p.HSet(ctx, "hash", "f9", "updated", "newfield", "x")
	p.HDel(ctx, "hash", "f33")
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if n := in.KS.Stats.ElemPagesRead.Load() - read0; n == 0 || n > 8 {
		t.Fatalf("the checkpoint read back %d element pages, want the changed ones (1..8)", n)
	}
	before := want(t, in)
	in.crash = true
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	in = startForTest(t, dir, false)
	defer in.Close()
	checkSame(t, "after a crash right after the checkpoint", before, in)
	if n := before[keyspace.Key{Key: "set"}].Set.Len(); n != 4096 {
		t.Fatalf("set has %d members, want 4096", n)
	}
}
