package runner

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/entrowatch/entrowatch/schemas"
)

// metrics are the runner's Prometheus series, registered on the registry
// passed to New (never the default one).
type metrics struct {
	messages   prometheus.Counter
	rows       prometheus.Counter
	empty      prometheus.Counter
	markers    prometheus.Counter
	sinkRows   prometheus.Counter
	dead       *prometheus.CounterVec
	deadMsgs   *prometheus.CounterVec
	deadErrs   prometheus.Counter
	remnants   prometheus.Counter
	dupChunks  prometheus.Counter
	restChunks prometheus.Counter
	lost       *prometheus.CounterVec
	commits    prometheus.Counter
	commitErrs prometheus.Counter
	fetchErrs  prometheus.Counter
	sinkErrs   prometheus.Counter
	lag        *prometheus.GaugeVec
	uncommit   *prometheus.GaugeVec
	assigned   prometheus.Gauge   // registered by New, with Parts.Watermarks only
	changes    prometheus.Counter // likewise
	lastWrite  prometheus.Gauge
	open       prometheus.Gauge
	latency    prometheus.Histogram
	stage      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, topic string) (*metrics, error) {
	cl := prometheus.Labels{"topic": topic}
	m := &metrics{
		messages: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_messages_total",
			Help: "Kafka messages consumed.", ConstLabels: cl}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_rows_total",
			Help: "trace.v1 rows decoded from consumed messages (chunks count one each).", ConstLabels: cl}),
		empty: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_empty_messages_total",
			Help: "Messages holding a trace.v1 record batch of zero rows: nothing to score, consumed and committed.", ConstLabels: cl}),
		markers: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_transaction_markers_total",
			Help: "Commit and abort markers of transactional producers: no data, consumed and committed (not dead-lettered).", ConstLabels: cl}),
		sinkRows: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_sink_rows_total",
			Help: "scored rows the sink confirmed.", ConstLabels: cl}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "entrowatch_stream_dead_letter_total",
			Help: "Records produced to the dead-letter topic, by reason: one per message that could not be decoded (corrupt_ipc, wrong_schema: see entrowatch_stream_dead_letter_messages_total), one per rejected row (the other reasons).", ConstLabels: cl}, []string{"reason"}),
		deadMsgs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "entrowatch_stream_dead_letter_messages_total",
			Help: "Messages dead-lettered whole because they could not be decoded (corrupt_ipc, wrong_schema), by reason: the responses they carry are unknown and not in entrowatch_stream_rows_total; compare with entrowatch_stream_messages_total.", ConstLabels: cl}, []string{"reason"}),
		deadErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_dead_letter_errors_total",
			Help: "Dead-letter produces that failed (retried with backoff while the partition waits; /readyz says not ready until one succeeds).", ConstLabels: cl}),
		remnants: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_remnants_total",
			Help: "Chunked traces that would have been dead-lettered as incomplete but that the sink already holds (chunks delivered again after a restart).", ConstLabels: cl}),
		dupChunks: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_duplicate_chunks_total",
			Help: "Chunk rows dropped as copies: of a trace being reassembled that holds the chunk already, or (other than its first chunk) of a trace emitted recently (stream.assemble.remember); a trace sent again from its first chunk is reassembled and written again.", ConstLabels: cl}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "entrowatch_stream_retention_lost_messages_total",
			Help: "Messages retention deleted before the group read them (the log start passed the group's position), by partition: their responses are lost; the log names the offsets.", ConstLabels: cl}, []string{"partition"}),
		restChunks: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_rejected_trace_chunks_total",
			Help: "Chunk rows dropped because their trace was dead-lettered shortly before (stream.assemble.remember): the rest of a trace too_long, or given up as incomplete; the dead letter holds the chunks that came before.", ConstLabels: cl}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_commits_total",
			Help: "Offset commits the broker confirmed.", ConstLabels: cl}),
		commitErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_commit_errors_total",
			Help: "Offset commits that failed (retried at the next interval).", ConstLabels: cl}),
		fetchErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_fetch_errors_total",
			Help: "Errors the consumer reported while fetching (it retries on its own).", ConstLabels: cl}),
		sinkErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_sink_errors_total",
			Help: "Sink writes that failed (retried with backoff).", ConstLabels: cl}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "entrowatch_stream_lag_messages",
			Help: "Messages behind the partition's high watermark: refreshed from the broker every stream.lag_interval, fetching or not (it grows while a failing sink holds the stream), and at every fetch; series of partitions no longer assigned are deleted.", ConstLabels: cl}, []string{"partition"}),
		uncommit: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "entrowatch_stream_uncommitted_messages",
			Help: "Messages fetched from the partition but not yet committed (processing, waiting for the sink, or held by a failing sink).", ConstLabels: cl}, []string{"partition"}),
		assigned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "entrowatch_stream_assigned_partitions",
			Help: "Partitions of the topic this replica consumes now, as the group coordinator assigned them (refreshed every stream.lag_interval), plus any it fetched from since: 0 while the group rebalances. 0 on every replica means nobody consumes (after a crash the group waits for the dead member's source.session_timeout).", ConstLabels: cl}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_assignment_changes_total",
			Help: "Changes of this replica's assignment seen by the refresh every stream.lag_interval (partitions assigned or revoked): a rebalance counts 1, or 2 when a refresh falls inside it (no assignment while the group rebalances). Its rate is the rebalance rate; a member that keeps leaving and joining (a crash loop, session timeouts) makes it climb.", ConstLabels: cl}),
		lastWrite: prometheus.NewGauge(prometheus.GaugeOpts{Name: "entrowatch_stream_last_write_timestamp_seconds",
			Help: "Unix time of the last write of scored rows the sink confirmed (0 before the first): time() minus it is how long this replica has stored nothing, whether for lack of traffic or a stuck stream (compare with the lag).", ConstLabels: cl}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{Name: "entrowatch_stream_open_traces",
			Help: "Chunked traces waiting for more chunks.", ConstLabels: cl}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "entrowatch_stream_message_seconds",
			Help: "Time to process one message: decode, assemble, operators, dead letters of its rejected rows (batched sink writes, and the dead letters of messages that could not be decoded, batched likewise, are timed in stage_seconds).", ConstLabels: cl,
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		stage: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "entrowatch_stream_stage_seconds_total",
			Help: "Time spent per stage: decode, assemble, each operator by name, dead_letter, sink, sink_lookup (restart remnants).", ConstLabels: cl}, []string{"stage"}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.rows, m.empty, m.markers, m.sinkRows, m.dead, m.deadMsgs, m.deadErrs, m.remnants, m.dupChunks, m.restChunks, m.lost, m.commits, m.commitErrs, m.fetchErrs, m.sinkErrs, m.lag, m.uncommit, m.lastWrite, m.open, m.latency, m.stage} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every known series exists from the start, at 0: a series born between
	// two scrapes loses its first burst to rate() and increase().
	for _, r := range deadLetterReasons {
		m.dead.WithLabelValues(r)
	}
	for _, r := range messageReasons {
		m.deadMsgs.WithLabelValues(r)
	}
	for _, s := range fixedStages {
		m.stage.WithLabelValues(s)
	}
	return m, nil
}

// deadLetterReasons are the reasons the stream dead-letters with;
// messageReasons those of whole messages that could not be decoded.
var (
	deadLetterReasons = []string{
		schemas.ReasonCorruptIPC, schemas.ReasonWrongSchema,
		schemas.ReasonEmpty, schemas.ReasonNoLogprobs, schemas.ReasonNaNLogprob, schemas.ReasonPositiveLogprob,
		schemas.ReasonTooLong, schemas.ReasonMismatch, schemas.ReasonIncomplete,
		schemas.ReasonUnknownModel, schemas.ReasonBadFeature,
	}
	messageReasons = []string{schemas.ReasonCorruptIPC, schemas.ReasonWrongSchema}
)

// fixedStages are the stages of stage_seconds besides the operators' (whose
// series Run creates from their names).
var fixedStages = []string{"decode", "assemble", "dead_letter", "sink", "sink_lookup"}

// Stats is a snapshot of what the runner did, for benchmarks and tests.
type Stats struct {
	Messages     int64                    // Kafka messages consumed
	Bytes        int64                    // their value bytes
	Rows         int64                    // trace.v1 rows decoded
	SinkRows     int64                    // rows the sink confirmed
	DeadLettered map[string]int64         // dead-letter records by reason
	Remnants     int64                    // incomplete traces not dead-lettered: the sink held them (streams.Holder)
	DupChunks    int64                    // chunk rows dropped as copies (profile.Assembled.Duplicates)
	RestChunks   int64                    // chunk rows of traces dead-lettered already (profile.Assembled.AfterReject)
	Commits      int64                    // offset commits confirmed
	Stages       map[string]time.Duration // time per stage, summed over workers
}

type stats struct {
	mu sync.Mutex
	s  Stats
}

func (s *stats) add(f func(*Stats)) {
	s.mu.Lock()
	f(&s.s)
	s.mu.Unlock()
}

func (s *stats) snapshot() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.s
	out.DeadLettered = make(map[string]int64, len(s.s.DeadLettered))
	for k, v := range s.s.DeadLettered {
		out.DeadLettered[k] = v
	}
	out.Stages = make(map[string]time.Duration, len(s.s.Stages))
	for k, v := range s.s.Stages {
		out.Stages[k] = v
	}
	return out
}

// offsetTracker follows, per partition, the last fetched and the last committed
// offset, for the uncommitted-messages gauge.
type offsetTracker struct {
	mu        sync.Mutex
	fetched   map[int]int64
	committed map[int]int64 // next offset to consume, as committed
	gauge     *prometheus.GaugeVec
}

func newOffsets(g *prometheus.GaugeVec) *offsetTracker {
	return &offsetTracker{fetched: map[int]int64{}, committed: map[int]int64{}, gauge: g}
}

// fetchedAt records a fetched message; before the first commit seen, the
// first fetched offset is the baseline.
func (o *offsetTracker) fetchedAt(partition int, offset int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.committed[partition]; !ok {
		o.committed[partition] = offset
	}
	o.fetched[partition] = offset
	o.set(partition)
}

// committedAt records a commit of everything up to offset.
func (o *offsetTracker) committedAt(partition int, offset int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.committed[partition] = offset + 1
	o.set(partition)
}

// position is the next offset to fetch from partition, once one was fetched.
func (o *offsetTracker) position(partition int) (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f, ok := o.fetched[partition]
	return f + 1, ok
}

// forget drops a revoked partition and its uncommitted series.
func (o *offsetTracker) forget(partition int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.fetched, partition)
	delete(o.committed, partition)
	o.gauge.DeleteLabelValues(strconv.Itoa(partition))
}

func (o *offsetTracker) set(partition int) {
	f, ok := o.fetched[partition]
	if !ok {
		return
	}
	o.gauge.WithLabelValues(strconv.Itoa(partition)).Set(float64(max(0, f+1-o.committed[partition])))
}

// writeWaitGauge reports wait(), how long the sink write in progress has
// waited (the runner's, which exists after the other metrics).
func writeWaitGauge(topic string, wait func() float64) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "entrowatch_stream_sink_write_wait_seconds",
		Help:        "How long the sink write in progress has waited for the sink to answer; 0 when none is in progress. Above stream.sink_stall_after the stream is not ready.",
		ConstLabels: prometheus.Labels{"topic": topic}}, wait)
}
