package server

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/metrics"
	"strconv"

	"concord/persistence"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// collector exposes the region's counters as concord_* Prometheus metrics,
// read at scrape time from the same sources as INFO.
type collector struct{ in *Instance }

var (
	mKeys        = prometheus.NewDesc("concord_keys", "Live keys per database.", []string{"db"}, nil)
	mExpired     = prometheus.NewDesc("concord_expired_keys_total", "Keys removed because their deadline passed.", nil, nil)
	mConflicts   = prometheus.NewDesc("concord_conflicts_total", "Conflict resolutions that discarded data, by kind.", []string{"kind"}, nil)
	mTombstones  = prometheus.NewDesc("concord_tombstones", "Deleted keys kept for merging (until tombstone GC).", nil, nil)
	mColdKeys    = prometheus.NewDesc("concord_cold_keys", "Keys kept packed in memory (not accessed for --cold-after).", nil, nil)
	mColdBytes   = prometheus.NewDesc("concord_cold_bytes", "Bytes of the packed states of cold keys.", nil, nil)
	mCommands    = prometheus.NewDesc("concord_commands_total", "Commands executed, by command.", []string{"cmd"}, nil)
	mCmdErrors   = prometheus.NewDesc("concord_command_errors_total", "Commands rejected or failed, by command.", []string{"cmd"}, nil)
	mClients     = prometheus.NewDesc("concord_connected_clients", "Connected clients.", nil, nil)
	mProtoErrors = prometheus.NewDesc("concord_protocol_errors_total", "Connections closed for a protocol error or input limit.", nil, nil)
	mGroups      = prometheus.NewDesc("concord_group_commits_total", "Group commits written to Badger.", nil, nil)
	mGroupWrites = prometheus.NewDesc("concord_group_commit_writes_total", "Deltas (local and merged) and metadata writes logged by group commits.", nil, nil)
	mOutbox      = prometheus.NewDesc("concord_outbox_pending", "Outbox entries not yet acknowledged by this region's stream.", nil, nil)
	mRemote      = prometheus.NewDesc("concord_remote_deltas_applied_total", "Deltas from other regions merged here.", nil, nil)
	mPeerUp      = prometheus.NewDesc("concord_peer_up", "1 when the link to the peer's NATS is connected.", []string{"peer"}, nil)
	mLagOps      = prometheus.NewDesc("concord_replication_lag_ops", "This region's delta batches the peer has not applied yet.", []string{"peer"}, nil)
	mAppliedFrom = prometheus.NewDesc("concord_replication_applied_seq", "Last stream sequence of the peer's deltas applied here.", []string{"peer"}, nil)
	mCmdSeconds  = prometheus.NewDesc("concord_command_duration_seconds", "Command execution time, by command.", []string{"cmd"}, nil)
	mMemory      = prometheus.NewDesc("concord_used_memory_bytes", "Live Go heap objects (INFO used_memory).", nil, nil)
	mGroupSize   = prometheus.NewDesc("concord_group_commit_size", "Deltas and metadata writes per group commit.", nil, nil)
	mCommitSecs  = prometheus.NewDesc("concord_group_commit_duration_seconds", "Time from a group commit handed to Badger to durable.", nil, nil)
	mOutLimited  = prometheus.NewDesc("concord_output_limit_disconnects_total", "Clients closed for client-output-buffer-limit.", nil, nil)
	mCorrupt     = prometheus.NewDesc("concord_corrupt_records_total", "Stored records that failed their checksum at load.", nil, nil)
	mRepaired    = prometheus.NewDesc("concord_keys_repaired_total", "Damaged keys restored from a peer.", nil, nil)
	mAERepaired  = prometheus.NewDesc("concord_antientropy_repairs_total", "Keys changed by anti-entropy repairs.", nil, nil)
	mExtFetches  = prometheus.NewDesc("concord_extend_fetches_total", "Keys' states fetched from a peer because its APPEND or SETRANGE extended a value not held here.", nil, nil)
	mAERounds    = prometheus.NewDesc("concord_antientropy_rounds_total", "Anti-entropy comparison rounds.", nil, nil)
	mCkpts       = prometheus.NewDesc("concord_checkpoints_total", "Checkpoints that stored the states of changed keys.", nil, nil)
	mCkptKeys    = prometheus.NewDesc("concord_checkpoint_keys_total", "Key states stored by checkpoints.", nil, nil)
	mCkptSecs    = prometheus.NewDesc("concord_last_checkpoint_duration_seconds", "Duration of the last checkpoint.", nil, nil)
	mLogBytes    = prometheus.NewDesc("concord_log_bytes_since_checkpoint", "Log written since the last checkpoint began (what a restart would replay).", nil, nil)
	mApplyLag    = prometheus.NewDesc("concord_replication_apply_lag_seconds", "Time from a write in the peer to its merge here.", []string{"peer", "quantile"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	in := c.in
	ks := in.KS
	for db := 0; db < ks.DBs(); db++ {
		if n, _ := ks.Size(db); n > 0 {
			ch <- prometheus.MustNewConstMetric(mKeys, prometheus.GaugeValue, float64(n), strconv.Itoa(db))
		}
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(mExpired, ks.Stats.ExpiredKeys.Load())
	counter(mConflicts, ks.Stats.ConflictsLWW.Load(), "lww")
	counter(mConflicts, ks.Stats.ConflictsType.Load(), "type")
	counter(mConflicts, ks.Stats.ConflictsNum.Load(), "non_numeric_base")
	counter(mRemote, ks.Stats.RemoteApplied.Load())
	counter(mCorrupt, ks.Stats.CorruptRecords.Load())
	counter(mAERepaired, in.ae.repaired.Load())
	counter(mAERounds, in.ae.rounds.Load())
	if in.Node != nil {
		counter(mExtFetches, in.Node.FetchedStates())
	}
	counter(mRepaired, ks.Stats.KeysRepaired.Load())
	ch <- prometheus.MustNewConstMetric(mTombstones, prometheus.GaugeValue, float64(ks.Stats.Tombstones.Load()))
	ch <- prometheus.MustNewConstMetric(mColdKeys, prometheus.GaugeValue, float64(ks.Stats.ColdKeys.Load()))
	ch <- prometheus.MustNewConstMetric(mColdBytes, prometheus.GaugeValue, float64(ks.Stats.ColdBytes.Load()))
	for name, st := range in.Engine.CommandStats() {
		counter(mCommands, st[0], name)
		counter(mCmdErrors, st[1], name)
	}
	ch <- prometheus.MustNewConstMetric(mClients, prometheus.GaugeValue, float64(in.srv.NumClients()))
	counter(mProtoErrors, in.srv.Rejected.Load())
	counter(mOutLimited, in.srv.OutputLimited.Load())
	for name, h := range in.Engine.CommandHistograms() {
		ch <- prometheus.MustNewConstHistogram(mCmdSeconds, h.Count, h.Sum, h.Buckets, name)
	}
	ch <- prometheus.MustNewConstMetric(mMemory, prometheus.GaugeValue, float64(usedMemory()))
	st := in.store.Stats()
	hist := func(d *prometheus.Desc, h persistence.Hist) {
		b := map[float64]uint64{}
		var cum uint64
		for i, bound := range h.Bounds {
			cum += h.Counts[i]
			b[bound] = cum
		}
		ch <- prometheus.MustNewConstHistogram(d, h.N, h.Sum, b)
	}
	hist(mGroupSize, st.GroupSize)
	hist(mCommitSecs, st.CommitSeconds)
	counter(mGroups, st.Groups)
	counter(mGroupWrites, st.Writes)
	counter(mCkpts, st.Checkpoints)
	counter(mCkptKeys, st.CheckpointKeys)
	ch <- prometheus.MustNewConstMetric(mCkptSecs, prometheus.GaugeValue, st.LastCheckpointS)
	ch <- prometheus.MustNewConstMetric(mLogBytes, prometheus.GaugeValue, float64(st.LogBytes))
	last, trimmed := in.store.OutboxSeq()
	ch <- prometheus.MustNewConstMetric(mOutbox, prometheus.GaugeValue, float64(last-trimmed))
	if in.Node == nil {
		return
	}
	for _, p := range in.Node.Status() {
		up := 0.0
		if p.Connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(mPeerUp, prometheus.GaugeValue, up, p.Name)
		ch <- prometheus.MustNewConstMetric(mLagOps, prometheus.GaugeValue, float64(p.Pending), p.Name)
		ch <- prometheus.MustNewConstMetric(mAppliedFrom, prometheus.GaugeValue, float64(p.AppliedFrom), p.Name)
		ch <- prometheus.MustNewConstMetric(mApplyLag, prometheus.GaugeValue, p.LagP50.Seconds(), p.Name, "0.5")
		ch <- prometheus.MustNewConstMetric(mApplyLag, prometheus.GaugeValue, p.LagP99.Seconds(), p.Name, "0.99")
	}
}

// serveMetrics serves /metrics, /healthz, /readyz and, with --pprof,
// /debug/pprof/ on addr.
func (in *Instance) serveMetrics(addr string) (net.Listener, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{in})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", in.readyz)
	if in.cfg.Pprof { // Go's profiles of a live region (opt-in: they cost CPU while running)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	go http.Serve(ln, mux)
	return ln, nil
}

// readyz answers load balancers (GeoDNS/anycast health checks): 200 with
// status "ready", or "degraded" when a peer has been unreachable longer than
// --peer-down-after (the region still serves its clients; only convergence
// with that peer waits).
func (in *Instance) readyz(w http.ResponseWriter, _ *http.Request) {
	type peerJSON struct {
		Name     string  `json:"name"`
		Link     string  `json:"link"`
		DownSecs float64 `json:"down_seconds"`
		LagOps   uint64  `json:"lag_ops"`
	}
	body := struct {
		Status string     `json:"status"`
		Region string     `json:"region"`
		Peers  []peerJSON `json:"peers"`
	}{Status: "ready", Region: in.cfg.Region, Peers: []peerJSON{}}
	if in.syncing.Load() {
		body.Status = "resyncing"
	}
	if in.Node != nil {
		for _, st := range in.Node.Status() {
			pj := peerJSON{Name: st.Name, Link: "up", LagOps: st.Pending, DownSecs: st.DownFor.Seconds()}
			if !st.Connected {
				pj.Link = "down"
				if st.DownFor > in.cfg.PeerDownAfter && body.Status == "ready" {
					body.Status = "degraded"
				}
			}
			body.Peers = append(body.Peers, pj)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(body)
}

func usedMemory() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
