package persistence

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"concord/crdt"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"
)

// replayed returns the set members of every delta Load replays.
func replayed(t *testing.T, s *Store) []string {
	t.Helper()
	var got []string
	err := s.Load(Loader{Replay: func(seq uint64, b []byte) error {
		kds, err := crdt.DecodeBatch(b)
		for _, kd := range kds {
			for m := range kd.Delta.Set.All() {
				got = append(got, m)
			}
		}
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir+"-wal", "*"+segSuffix))
	sort.Strings(names)
	return names
}

// A crash in the middle of a write leaves a torn frame at the end of the
// log: it is cut off at open (that group was never acknowledged), what
// precedes it is kept, and the log goes on after it.
func TestLogTornTailCutOff(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(b []byte) []byte
		keep   int // groups of the 5 written that survive
	}{
		{"half a frame appended", func(b []byte) []byte {
			return append(b, 100, 0, 0, 0, 1, 2, 3, 4, 'o', 1, 2)
		}, 5},
		{"a few header bytes appended", func(b []byte) []byte { return append(b, 7, 0) }, 5},
		{"last frame cut short", func(b []byte) []byte { return b[:len(b)-3] }, 4},
		{"last frame's bytes changed", func(b []byte) []byte { b[len(b)-2] ^= 0xff; return b }, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, FsyncEverysec)
			for i := 0; i < 5; i++ {
				if err := s.Submit(nil, []crdt.KeyDelta{delta(fmt.Sprint("m", i))}, nil).Wait(); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			segs := segments(t, dir)
			last := segs[len(segs)-1]
			b, err := os.ReadFile(last)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(last, c.damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
			s = open(t, dir, FsyncEverysec)
			if got := replayed(t, s); len(got) != c.keep {
				t.Fatalf("replayed %v, want %d groups", got, c.keep)
			}
			if err := s.Submit(nil, []crdt.KeyDelta{delta("after")}, nil).Wait(); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s = open(t, dir, FsyncEverysec)
			defer s.Close()
			got := replayed(t, s)
			if len(got) != c.keep+1 || got[len(got)-1] != "after" {
				t.Fatalf("after a write and a reopen: %v", got)
			}
			if last, _ := s.OutboxSeq(); last != uint64(c.keep+1) {
				t.Fatalf("outbox sequence %d, want %d", last, c.keep+1)
			}
		})
	}
}

// Damage before the end of the log is not a torn write: the open fails
// and says which file, instead of silently dropping what follows.
func TestLogDamageBeforeTheEndRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Fsync: FsyncNo, Region: "A", Log: zerolog.Nop(), SegmentBytes: 512})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		if err := s.Submit(nil, []crdt.KeyDelta{delta(fmt.Sprint("member-", i))}, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs := segments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments of 512 bytes for 40 groups", len(segs))
	}
	b, _ := os.ReadFile(segs[1])
	b[len(b)-5] ^= 0x40
	os.WriteFile(segs[1], b, 0o644)
	_, err = Open(Options{Dir: dir, Fsync: FsyncNo, Region: "A", Log: zerolog.Nop()})
	if err == nil || !strings.Contains(err.Error(), filepath.Base(segs[1])) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("open over a damaged segment: %v", err)
	}
}

// Damage inside the last segment with whole frames after it is not a torn
// write either (a crash tears only the last write; the frames after were
// acknowledged): the open fails and says where, where the scan used to
// cut the segment at the damage with a warning, dropping them.
func TestLogDamageInTheLastSegmentRefused(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(b []byte, frame int)
	}{
		{"a frame's body", func(b []byte, f int) { b[f+frameHeader+3] ^= 0x10 }},
		{"a frame's length", func(b []byte, f int) { b[f+1] ^= 0x01 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, FsyncAlways)
			for i := 0; i < 6; i++ {
				if err := s.Submit(nil, []crdt.KeyDelta{delta(fmt.Sprint("m", i))}, nil).Wait(); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			segs := segments(t, dir)
			last := segs[len(segs)-1]
			b, _ := os.ReadFile(last)
			var frames []int
			for p := len(walMagic); p+frameHeader <= len(b); p += frameHeader + int(binary.LittleEndian.Uint32(b[p:])) {
				frames = append(frames, p)
			}
			if len(frames) < 5 {
				t.Fatalf("%d frames in the last segment", len(frames))
			}
			c.damage(b, frames[len(frames)-3])
			os.WriteFile(last, b, 0o644)
			_, err := Open(Options{Dir: dir, Fsync: FsyncAlways, Region: "A", Log: zerolog.Nop()})
			if err == nil || !strings.Contains(err.Error(), filepath.Base(last)) || !strings.Contains(err.Error(), "whole frame follows") {
				t.Fatalf("open over damage before the last segment's end: %v", err)
			}
		})
	}
}

// Segments go once a checkpoint covers their entries and peers have the
// outbox ones; the metadata written in them (watermarks, the region, the
// sequences) survives, and the sequences go on where they were.
func TestLogSegmentsDropped(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, Fsync: FsyncEverysec, Region: "A", Log: zerolog.Nop(), SegmentBytes: 1024}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Submit([]Write{{Meta: true, Key: "applied:B", Header: []byte("42")}}, nil, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if err := s.Submit(nil, []crdt.KeyDelta{delta(fmt.Sprint("out-", i))}, []crdt.KeyDelta{delta(fmt.Sprint("in-", i))}).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, n, _ := s.Size(); n < 10 {
		t.Fatalf("%d segments of 1 KB for 100 groups", n)
	}
	mark := s.Barrier()
	mark.Wait()
	out, in := mark.Bases()
	if err := s.Checkpointed(out, in, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, n, _ := s.Size(); n < 10 {
		t.Fatalf("segments dropped before peers had the outbox: %d left", n)
	}
	if err := s.TrimOutbox(out); err != nil {
		t.Fatal(err)
	}
	if _, _, n, bytes := s.Size(); n != 1 || len(segments(t, dir)) != 1 {
		t.Fatalf("%d segments (%d bytes; %d files) after a checkpoint and publishing", n, bytes, len(segments(t, dir)))
	}
	if seqs, _, _ := s.ReadOutbox(0, 1000); len(seqs) != 0 {
		t.Fatalf("outbox still holds %v", seqs)
	}
	s.Close()
	s, err = Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(s.Meta("applied:B")); got != "42" {
		t.Fatalf("watermark %q after its segment was dropped", got)
	}
	if last, published := s.OutboxSeq(); last != 100 || published != 100 || s.InboundSeq() != 100 {
		t.Fatalf("sequences after reopening: outbox %d published %d inbound %d", last, published, s.InboundSeq())
	}
	if got := replayed(t, s); len(got) != 0 {
		t.Fatalf("replayed %v after a checkpoint covering everything", got)
	}
	if err := s.Submit(nil, []crdt.KeyDelta{delta("next")}, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if seqs, _, _ := s.ReadOutbox(0, 10); fmt.Sprint(seqs) != "[101]" {
		t.Fatalf("next outbox entry %v", seqs)
	}
	s.Close()
	if _, err := Open(Options{Dir: dir, Region: "B", Log: zerolog.Nop()}); err == nil {
		t.Fatal("the region's name was lost with its segment")
	}
}

// A log kept by an earlier version in a Badger database moves into the
// file log at open: its entries, sequences, marks and metadata.
func TestLogMigratedFromBadger(t *testing.T) {
	dir := t.TempDir()
	old, err := badger.Open(badger.DefaultOptions(dir + "-log").WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	entry := func(m string) []byte { return crdt.AppendBatch(nil, []crdt.KeyDelta{delta(m)}) }
	key := func(p byte, seq uint64) []byte { return binary.BigEndian.AppendUint64([]byte{p}, seq) }
	ckpt := binary.BigEndian.AppendUint64(u64(1), 1)
	err = old.Update(func(txn *badger.Txn) error {
		for _, kv := range [][2][]byte{
			{key('o', 2), entry("out2")}, {key('o', 3), entry("out3")},
			{key('i', 1), entry("in1")}, {key('i', 2), entry("in2")},
			{[]byte("m:outseq"), u64(3)}, {[]byte("m:inseq"), u64(2)},
			{[]byte("m:trimmed"), u64(1)}, {[]byte("m:published"), u64(2)},
			{[]byte("m:ckpt"), ckpt}, {[]byte("m:region"), []byte("A")},
			{[]byte("m:applied:B"), []byte("7")},
		} {
			if err := txn.Set(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	s := open(t, dir, FsyncEverysec)
	defer s.Close()
	if _, err := os.Stat(dir + "-log"); !os.IsNotExist(err) {
		t.Fatalf("the old log is still there: %v", err)
	}
	if got := fmt.Sprint(replayed(t, s)); got != "[in2 out2 out3]" {
		t.Fatalf("replayed %s", got)
	}
	if last, published := s.OutboxSeq(); last != 3 || published != 2 || s.InboundSeq() != 2 || string(s.Meta("applied:B")) != "7" {
		t.Fatalf("outbox %d published %d inbound %d watermark %q", last, published, s.InboundSeq(), s.Meta("applied:B"))
	}
	if seqs, _, _ := s.ReadOutbox(2, 10); fmt.Sprint(seqs) != "[3]" {
		t.Fatalf("outbox after 2: %v", seqs)
	}
}

// A failed fsync of the log fails its group and every later write until a
// restart (the kernel may have dropped the pages); what was written before
// stays readable, and a restart reads the log back and writes again.
func TestLogFsyncFailureIsSticky(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, FsyncAlways)
	if err := s.Submit(nil, []crdt.KeyDelta{delta("ok")}, nil).Wait(); err != nil {
		t.Fatal(err)
	}
	s.log.mu.Lock()
	s.log.syncFile = func(*os.File) error { return fmt.Errorf("EIO") }
	s.log.mu.Unlock()
	if err := s.Submit(nil, []crdt.KeyDelta{delta("failed")}, nil).Wait(); err == nil {
		t.Fatal("a group whose fsync failed was acknowledged")
	}
	s.log.mu.Lock()
	s.log.syncFile = (*os.File).Sync
	s.log.mu.Unlock()
	if err := s.Submit(nil, []crdt.KeyDelta{delta("after")}, nil).Wait(); err == nil {
		t.Fatal("a write after a failed fsync was acknowledged")
	}
	if seqs, entries, err := s.ReadOutbox(0, 10); err != nil || len(seqs) != 2 || len(entries) != 2 {
		t.Fatalf("outbox after the failure: %v %d entries, %v", seqs, len(entries), err)
	} else if kds, err := crdt.DecodeBatch(entries[1]); err != nil || len(kds) != 1 {
		t.Fatalf("the entry written before the failed fsync reads back wrong: %v", err)
	}
	s.Close()
	s = open(t, dir, FsyncAlways)
	defer s.Close()
	if err := s.Submit(nil, []crdt.KeyDelta{delta("restarted")}, nil).Wait(); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if got := fmt.Sprint(replayed(t, s)); got != "[ok failed restarted]" {
		t.Fatalf("replayed %s", got)
	}
}

// A log whose directory is deleted under it refuses writes instead of
// acknowledging them into a file no restart will read: with fsync always
// the first write after the deletion fails, with everysec the next
// second's fsync finds it (what it acknowledged meanwhile is lost, as
// with a power loss) and every later write fails.
func TestLogDeletedRefusesWrites(t *testing.T) {
	for _, fsync := range []string{FsyncAlways, FsyncEverysec} {
		t.Run(fsync, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, fsync)
			defer s.Close()
			if err := s.Submit(nil, []crdt.KeyDelta{delta("ok")}, nil).Wait(); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(s.log.dir); err != nil {
				t.Fatal(err)
			}
			if fsync == FsyncEverysec {
				if err := s.log.sync(); err == nil || !strings.Contains(err.Error(), "deleted") {
					t.Fatalf("fsync of a deleted segment: %v", err)
				}
			}
			for i := range 2 {
				if err := s.Submit(nil, []crdt.KeyDelta{delta("lost")}, nil).Wait(); err == nil {
					t.Fatalf("write %d into a deleted log acknowledged", i)
				}
			}
		})
	}
}
