package runner

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the runner's Prometheus series, registered on the registry
// passed to New (never the default one).
type metrics struct {
	messages   prometheus.Counter
	rows       prometheus.Counter
	sinkRows   prometheus.Counter
	dead       *prometheus.CounterVec
	remnants   prometheus.Counter
	commits    prometheus.Counter
	commitErrs prometheus.Counter
	fetchErrs  prometheus.Counter
	sinkErrs   prometheus.Counter
	lag        *prometheus.GaugeVec
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
		sinkRows: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_sink_rows_total",
			Help: "scored rows the sink confirmed.", ConstLabels: cl}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "entrowatch_stream_dead_letter_total",
			Help: "Messages or rows produced to the dead-letter topic, by reason.", ConstLabels: cl}, []string{"reason"}),
		remnants: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_remnants_total",
			Help: "Chunked traces that would have been dead-lettered as incomplete but that the sink already holds (chunks delivered again after a restart).", ConstLabels: cl}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_commits_total",
			Help: "Offset commits the broker confirmed.", ConstLabels: cl}),
		commitErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_commit_errors_total",
			Help: "Offset commits that failed (retried at the next interval).", ConstLabels: cl}),
		fetchErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_fetch_errors_total",
			Help: "Errors the consumer reported while fetching (it retries on its own).", ConstLabels: cl}),
		sinkErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_stream_sink_errors_total",
			Help: "Sink writes that failed (retried with backoff).", ConstLabels: cl}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "entrowatch_stream_lag_messages",
			Help: "Messages behind the partition's high watermark at the last fetch from it.", ConstLabels: cl}, []string{"partition"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{Name: "entrowatch_stream_open_traces",
			Help: "Chunked traces waiting for more chunks.", ConstLabels: cl}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "entrowatch_stream_message_seconds",
			Help: "Time to process one message: decode, assemble, operators, dead-letter (batched sink writes are timed in stage_seconds).", ConstLabels: cl,
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		stage: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "entrowatch_stream_stage_seconds_total",
			Help: "Time spent per stage: decode, assemble, each operator by name, dead_letter, sink, sink_lookup (restart remnants).", ConstLabels: cl}, []string{"stage"}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.rows, m.sinkRows, m.dead, m.remnants, m.commits, m.commitErrs, m.fetchErrs, m.sinkErrs, m.lag, m.open, m.latency, m.stage} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Stats is a snapshot of what the runner did, for benchmarks and tests.
type Stats struct {
	Messages     int64                    // Kafka messages consumed
	Bytes        int64                    // their value bytes
	Rows         int64                    // trace.v1 rows decoded
	SinkRows     int64                    // rows the sink confirmed
	DeadLettered map[string]int64         // dead-letter records by reason
	Remnants     int64                    // incomplete traces not dead-lettered: the sink held them (streams.Holder)
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
