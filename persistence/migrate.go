package persistence

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
)

// openLog opens the log; a log kept by an earlier version in a Badger
// database (opts.Dir + "-log") is first moved into it and then deleted.
// Until that database is gone nothing else writes the log, so a migration
// cut short by a crash starts over from an empty log.
func openLog(opts Options) (*wal, error) {
	old := opts.Dir + "-log"
	if _, err := os.Stat(filepath.Join(old, "MANIFEST")); err != nil {
		return openWAL(opts.LogDir, opts.SegmentBytes, opts.Fsync != FsyncNo, opts.Log)
	}
	if err := os.RemoveAll(opts.LogDir); err != nil {
		return nil, err
	}
	w, err := openWAL(opts.LogDir, opts.SegmentBytes, true, opts.Log)
	if err != nil {
		return nil, err
	}
	if err := migrateBadgerLog(old, w, opts); err != nil {
		w.close()
		return nil, fmt.Errorf("move the log from %s: %w", old, err)
	}
	if err := os.RemoveAll(old); err != nil {
		w.close()
		return nil, err
	}
	w.syncs = opts.Fsync != FsyncNo
	opts.Log.Info().Str("from", old).Str("to", opts.LogDir).Msg("log moved out of Badger")
	return w, nil
}

// migrateBadgerLog copies the old log's entries ('o'/'i' + sequence) and
// metadata ("m:" keys) into w and fsyncs it.
func migrateBadgerLog(dir string, w *wal, opts Options) error {
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(badgerLogger{opts.Log}))
	if err != nil {
		return err
	}
	var fr frame
	fr.reset()
	flush := func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		err := w.write(&fr, false)
		fr.reset()
		return err
	}
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			switch {
			case len(k) == 9 && (k[0] == itemOut || k[0] == itemIn):
				fr.entry(k[0], binary.BigEndian.Uint64(k[1:]), func(b []byte) []byte { return append(b, v...) })
			case bytes.HasPrefix(k, []byte("m:")):
				fr.setMeta(string(k), v)
			}
			if len(fr.b) >= 4<<20 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		err = w.sync()
	}
	return errors.Join(err, db.Close())
}
