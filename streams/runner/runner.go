// Package runner is the stream: it fetches trace.v1 messages from Kafka,
// decodes them, reassembles chunked responses, runs the operator chain, writes
// the result to the sink and only then commits the offsets (at least once).
// Whatever cannot be processed goes to the dead-letter topic with a reason
// header and its original bytes; the stream goes on.
//
// Parallelism is per partition: every partition is handled by one worker (a
// partition's messages stay in order, so its commits do too), workers share
// nothing but the sink, and bounded queues between the fetcher and the workers
// are the backpressure: a slow or failing sink stops the fetching.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/ipc"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// Dead-letter headers. The value of a dead-letter record is the original
// message (whole-message failures) or the trace.v1 row as its own Arrow IPC
// stream (row failures); when that does not fit the dead-letter producer's
// max_message_bytes, the value is empty, HeaderOriginalBytes says how large
// it was and HeaderError why it is missing.
const (
	HeaderReason        = "entrowatch.reason"         // a schemas reason, e.g. "corrupt_ipc", "nan_logprob"
	HeaderError         = "entrowatch.error"          // detail, when there is one
	HeaderSource        = "entrowatch.source"         // topic/partition@offset of the message it came from
	HeaderRow           = "entrowatch.row"            // row index within that message's batch, for row failures
	HeaderOriginalBytes = "entrowatch.original_bytes" // size of the original message or row left out of the value
)

// Config configures the stream.
type Config struct {
	// Workers is the number of partition workers; partition p goes to worker
	// p mod Workers. Default 2.
	Workers int `yaml:"workers"`
	// QueueDepth is how many fetched messages wait per worker. Default 2.
	QueueDepth int `yaml:"queue_depth"`
	// CommitInterval is how often confirmed offsets are committed; 0 commits
	// after every message. Default 500ms.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// DrainTimeout bounds the graceful stop (SIGTERM): in-flight messages
	// are finished, the sink written and the offsets committed within it.
	// Default 30s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// SinkBackoffMin and SinkBackoffMax bound the wait between retries of a
	// failed sink or dead-letter write, and of a failed fetch (entrowatch
	// run retries reaching Kafka and ClickHouse at start with them too).
	// Defaults 100ms and 10s.
	SinkBackoffMin time.Duration `yaml:"sink_backoff_min"`
	SinkBackoffMax time.Duration `yaml:"sink_backoff_max"`
	// SinkBatchRows gathers the output of several messages into one sink
	// write of at least this many rows (ClickHouse wants large inserts);
	// their offsets are committed after that write. 0 or 1 writes each
	// message's rows at once. Default 1000.
	SinkBatchRows int `yaml:"sink_batch_rows"`
	// SinkBatchWait bounds how long rows wait for a batch to fill.
	// Default 200ms. The dead letters of messages that cannot be decoded
	// are batched the same way (at most SinkBatchRows of them or 8 MiB),
	// and their offsets committed once the dead-letter topic acknowledged
	// them.
	SinkBatchWait time.Duration `yaml:"sink_batch_wait"`
	// ExpireInterval is how often open chunked traces are checked against
	// the assemble timeout. Default 1s.
	ExpireInterval time.Duration `yaml:"expire_interval"`
	// LagInterval is how often the lag gauges are refreshed from the
	// broker's high watermarks of the assigned partitions, fetching or not
	// (so lag grows while a failing sink holds the fetching), and the series
	// of partitions no longer assigned are deleted. Default 5s.
	LagInterval time.Duration `yaml:"lag_interval"`
	// SinkStallAfter is how long one sink write may wait for the sink to
	// answer before the stream says so: /readyz turns not ready, a warning
	// is logged, entrowatch_stream_sink_write_wait_seconds shows the wait.
	// A sink that hangs (a frozen ClickHouse) fails a write only at its
	// read timeout, a minute by default. 0 turns it off. Default 15s.
	SinkStallAfter time.Duration `yaml:"sink_stall_after"`
	// Assemble bounds chunk reassembly (see profile.AssemblerConfig).
	Assemble profile.AssemblerConfig `yaml:"assemble"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Workers:        2,
		QueueDepth:     2,
		CommitInterval: 500 * time.Millisecond,
		DrainTimeout:   30 * time.Second,
		SinkBackoffMin: 100 * time.Millisecond,
		SinkBackoffMax: 10 * time.Second,
		SinkBatchRows:  1000,
		SinkBatchWait:  200 * time.Millisecond,
		ExpireInterval: time.Second,
		LagInterval:    5 * time.Second,
		SinkStallAfter: 15 * time.Second,
		Assemble:       profile.DefaultAssemblerConfig(),
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.Workers < 1:
		return fmt.Errorf("stream.workers %d: want >= 1", c.Workers)
	case c.QueueDepth < 1:
		return fmt.Errorf("stream.queue_depth %d: want >= 1", c.QueueDepth)
	case c.CommitInterval < 0:
		return fmt.Errorf("stream.commit_interval %v: want >= 0", c.CommitInterval)
	case c.DrainTimeout <= 0:
		return fmt.Errorf("stream.drain_timeout %v: want > 0", c.DrainTimeout)
	case c.SinkBackoffMin <= 0 || c.SinkBackoffMax < c.SinkBackoffMin:
		return fmt.Errorf("stream.sink_backoff_min %v / sink_backoff_max %v: want 0 < min <= max", c.SinkBackoffMin, c.SinkBackoffMax)
	case c.SinkBatchRows < 0:
		return fmt.Errorf("stream.sink_batch_rows %d: want >= 0", c.SinkBatchRows)
	case c.SinkBatchRows > 1 && c.SinkBatchWait <= 0:
		return fmt.Errorf("stream.sink_batch_wait %v: want > 0 when sink_batch_rows is set", c.SinkBatchWait)
	case c.ExpireInterval <= 0:
		return fmt.Errorf("stream.expire_interval %v: want > 0", c.ExpireInterval)
	case c.LagInterval <= 0:
		return fmt.Errorf("stream.lag_interval %v: want > 0", c.LagInterval)
	case c.SinkStallAfter < 0:
		return fmt.Errorf("stream.sink_stall_after %v: want >= 0 (0: off)", c.SinkStallAfter)
	}
	return c.Assemble.Validate()
}

// Parts are the components the runner drives; the caller creates and closes
// them (the runner neither closes the source nor the sink).
type Parts struct {
	// Source is the consumer-group source of trace.v1 messages; the runner
	// fetches from it and commits its offsets once their rows are written
	// (or dead-lettered). Required.
	Source *kafka.Source
	// DeadLetter produces to the dead-letter topic what cannot be
	// processed: undecodable messages, rejected traces and rows the chain's
	// status selects, each with a reason header. Required.
	DeadLetter *kafka.Producer
	// Chain builds one operator chain per worker (operators reuse buffers
	// and are not shared). Every operator must keep rows one for one and in
	// order; the last one's "status" column, when present, selects the rows
	// that are also dead-lettered.
	Chain func() ([]streams.Operator, error)
	// Sink receives the chain's output; the runner calls Write from one
	// goroutine at a time.
	Sink streams.Sink
	// Watermarks, when set, returns the partitions of the source topic
	// assigned to this member now, each with its high watermark (the offset
	// the next produced message gets) and the group's next offset (used for
	// a partition this member has not fetched from yet). The runner calls it every
	// LagInterval, independent of fetching: it refreshes the lag gauges,
	// deletes the series of partitions no longer assigned and logs
	// assignment changes. Without it the lag is set per fetched message.
	Watermarks func(ctx context.Context) (map[int]kafka.PartitionOffsets, error)
}

// Runner is one stream replica. Run it once.
type Runner struct {
	cfg   Config
	parts Parts
	mem   memory.Allocator
	log   *slog.Logger
	m     *metrics
	stats stats
	ready atomic.Bool
	// dlqFailing counts the workers whose dead-letter produce is failing
	// and being retried; sinkFailing says the last sink write failed.
	dlqFailing  atomic.Int32
	sinkFailing atomic.Bool
	// writeSince is when the sink write in progress began (UnixNano), 0
	// when none is (writes are one at a time, under sinkMu).
	writeSince atomic.Int64
	fetch      fetchHealth

	// assigned is the assignment Watermarks last reported (nil: unknown),
	// plus the partitions fetched from since; announced is the assignment
	// as last logged ("partitions assigned", "partitions revoked").
	assignMu  sync.Mutex
	assigned  map[int]bool
	announced map[int]bool
	// lostUpTo is, per partition, the log start up to which messages lost
	// to retention were reported; startWarned, the partitions whose start
	// without a committed offset was.
	lostUpTo    map[int]int64
	startWarned map[int]bool
	pastEnd     map[int]int64 // the position reported past a partition's end
	seen        map[int]bool  // partitions fetched from since assigned, for the log

	sinkMu  sync.Mutex
	rejects *rejectLog
	offs    *offsetTracker

	// killed is the crash switch of the tests: stop at once, commit nothing.
	killed atomic.Bool
	abort  atomic.Pointer[context.CancelCauseFunc]
}

// New checks the configuration and registers the metrics on reg.
func New(cfg Config, parts Parts, mem memory.Allocator, log *slog.Logger, reg prometheus.Registerer) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if parts.Source == nil || parts.DeadLetter == nil || parts.Chain == nil || parts.Sink == nil {
		return nil, errors.New("runner: source, dead-letter producer, chain and sink are all required")
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry() // metrics kept, not exported
	}
	m, err := newMetrics(reg, parts.Source.Topic())
	if err != nil {
		return nil, fmt.Errorf("registering stream metrics: %w", err)
	}
	if parts.Watermarks != nil {
		// Without them the runner does not know its assignment.
		for _, c := range []prometheus.Collector{m.assigned, m.changes} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering stream metrics: %w", err)
			}
		}
	}
	r := &Runner{cfg: cfg, parts: parts, mem: mem, log: log, m: m, rejects: newRejectLog(log), offs: newOffsets(m.uncommit),
		announced: map[int]bool{}, seen: map[int]bool{}}
	// Errors come at least every SinkBackoffMax while the consumer fails.
	r.fetch.failWindow = max(30*time.Second, 3*cfg.SinkBackoffMax)
	if err := reg.Register(writeWaitGauge(parts.Source.Topic(), func() float64 { return r.writeWait(time.Now()).Seconds() })); err != nil {
		return nil, fmt.Errorf("registering stream metrics: %w", err)
	}
	return r, nil
}

// Ready reports whether the stream is consuming, its fetches from Kafka do
// not fail persistently, its sink is accepting writes and no dead-letter
// produce is failing (for /readyz).
func (r *Runner) Ready() bool { return r.Unready() == "" }

// Unready says why the stream is not ready, "" when it is: each of the
// causes that hold, for the body of /readyz.
func (r *Runner) Unready() string {
	var why []string
	if h, ok := r.parts.Sink.(streams.HealthReporter); (ok && !h.Healthy()) || r.sinkFailing.Load() {
		why = append(why, "writes to the sink fail and are retried (see the log: sink write failed)")
	}
	if wait := r.writeWait(time.Now()); r.cfg.SinkStallAfter > 0 && wait > r.cfg.SinkStallAfter {
		why = append(why, fmt.Sprintf("a sink write has waited %v for the sink to answer (is ClickHouse up and answering? see the log: sink write waiting)", wait.Round(time.Second)))
	}
	if r.dlqFailing.Load() > 0 {
		why = append(why, "producing to the dead-letter topic "+r.parts.DeadLetter.Topic()+
			" fails and is retried (does the topic exist? check its ACLs and max.message.bytes; see the log: dead-letter produce failed)")
	}
	if r.fetch.failing(time.Now()) {
		why = append(why, "fetching from Kafka keeps failing (is Kafka reachable at kafka.brokers?)")
	}
	if len(why) == 0 && !r.ready.Load() {
		why = append(why, "the stream is not consuming (starting or stopping)")
	}
	return strings.Join(why, "; ")
}

// fetchHealth follows consecutive fetch errors. Fetching fails persistently
// once fetchFailStreak fetches in a row failed and the latest failure is
// recent (within failWindow): an idle but healthy topic returns neither
// messages nor errors, so without new errors readiness comes back.
type fetchHealth struct {
	mu         sync.Mutex
	streak     int
	last       time.Time
	failWindow time.Duration
}

const fetchFailStreak = 3

func (f *fetchHealth) failed(now time.Time) (streak int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.streak++
	f.last = now
	return f.streak
}

// ok records a successful fetch and returns the failures it ended.
func (f *fetchHealth) ok() (streak int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	streak, f.streak = f.streak, 0
	return streak
}

func (f *fetchHealth) failing(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streak >= fetchFailStreak && now.Sub(f.last) < f.failWindow
}

// Stats returns a snapshot of the counters.
func (r *Runner) Stats() Stats { return r.stats.snapshot() }

var errDrainTimeout = errors.New("drain timeout: in-flight messages abandoned (they will be redelivered)")

// Run consumes until ctx is done, then drains: it stops fetching, finishes
// the messages in flight, flushes stateful operators and commits, within
// DrainTimeout. It returns nil after a clean drain; an error when a component
// failed in a way the stream cannot skip (an operator error, the source).
func (r *Runner) Run(ctx context.Context) error {
	hard, abort := context.WithCancelCause(context.WithoutCancel(ctx))
	defer abort(nil)
	r.abort.Store(&abort)

	workers := make([]*worker, r.cfg.Workers)
	for i := range workers {
		ops, err := r.parts.Chain()
		if err != nil {
			return fmt.Errorf("building operator chain: %w", err)
		}
		w := &worker{r: r, ops: ops, in: make(chan kafka.Message, r.cfg.QueueDepth),
			asm: map[int]*profile.Assembler{}, last: map[int]int64{}, waiting: map[int]string{}}
		w.onReject = w.addDetail
		workers[i] = w
	}
	for _, op := range workers[0].ops {
		r.m.stage.WithLabelValues(op.Name())
	}
	points := make(chan kafka.Message, r.cfg.Workers*(r.cfg.QueueDepth+2))

	var wg sync.WaitGroup
	errs := make([]error, len(workers))
	for i, w := range workers {
		wg.Go(func() {
			if err := w.run(hard, points); err != nil {
				errs[i] = err
				abort(err)
			}
		})
	}
	commitDone := make(chan error, 1)
	go func() { commitDone <- r.commitLoop(hard, points) }()
	lagCtx, stopLag := context.WithCancel(hard)
	lagDone := make(chan struct{}, 2)
	go func() { defer func() { lagDone <- struct{}{} }(); r.lagLoop(lagCtx) }()
	go func() { defer func() { lagDone <- struct{}{} }(); r.stallLoop(lagCtx) }()

	r.ready.Store(true)
	fetchErr := r.fetchLoop(ctx, hard, workers)
	r.ready.Store(false)
	if fetchErr != nil {
		abort(fetchErr)
	}
	if !r.killed.Load() {
		r.log.Info("draining: fetching stopped; finishing the messages in flight, writing them to the sink and committing",
			"drain_timeout", r.cfg.DrainTimeout.String())
	}
	for _, w := range workers {
		close(w.in)
	}
	// The drain (workers, stateful operators, the commit loop) is bounded
	// as a whole; the final commit has its own short timeout.
	drain := time.AfterFunc(r.cfg.DrainTimeout, func() { abort(errDrainTimeout) })
	wg.Wait()
	if hard.Err() == nil && !r.killed.Load() {
		for _, w := range workers {
			if err := w.flush(hard); err != nil {
				abort(err)
			}
		}
	}
	close(points)
	commitErr := <-commitDone
	drain.Stop()
	stopLag()
	<-lagDone
	<-lagDone

	if r.killed.Load() {
		return nil
	}
	var all []error
	if cause := context.Cause(hard); errors.Is(cause, errDrainTimeout) {
		all = append(all, fmt.Errorf("after %v: %w", r.cfg.DrainTimeout, errDrainTimeout))
	}
	if fetchErr != nil {
		all = append(all, fetchErr)
	}
	for _, e := range errs {
		if e != nil {
			all = append(all, e)
		}
	}
	if commitErr != nil {
		all = append(all, commitErr)
	}
	return errors.Join(all...)
}

// kill simulates a crash for the delivery tests: processing stops at once and
// nothing more is committed.
func (r *Runner) kill() {
	r.killed.Store(true)
	if a := r.abort.Load(); a != nil {
		(*a)(errors.New("killed"))
	}
}

// fetch hands messages to their partition's worker until ctx (graceful) or
// hard (abort) is done. A message fetched but not handed over is simply not
// committed: the group sees it again. Fetch errors (broker or coordinator
// unreachable, rebalances) are reported by the consumer while it keeps
// retrying on its own: they are logged and fetching goes on; only a closed
// source ends the stream.
func (r *Runner) fetchLoop(ctx, hard context.Context, workers []*worker) error {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(hard, cancel)
	defer stop()
	wait := r.cfg.SinkBackoffMin
	for {
		m, err := r.parts.Source.Fetch(fctx)
		if err != nil {
			switch {
			case fctx.Err() != nil:
				return nil
			case errors.Is(err, io.EOF):
				return err
			case kafka.Refused(err):
				// Retrying cannot help: the group's settings or rights
				// are wrong, and the replica would sit live, consuming
				// nothing, for ever.
				return fmt.Errorf("the brokers refuse this consumer's settings or rights, which retrying cannot fix: %w (check source.session_timeout against the brokers' group.min/max.session.timeout.ms, and the user's ACLs on the topic and group)", err)
			}
			r.m.fetchErrs.Inc()
			if n := r.fetch.failed(time.Now()); n == fetchFailStreak {
				r.log.Error("fetching keeps failing: not ready until a fetch succeeds (is Kafka reachable at kafka.brokers?)", "err", err, "failures", n)
			} else {
				r.log.Warn("fetch failed, the consumer retries", "err", err, "backoff", wait.String())
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-fctx.Done():
				t.Stop()
				return nil
			}
			wait = min(2*wait, r.cfg.SinkBackoffMax)
			continue
		}
		wait = r.cfg.SinkBackoffMin
		if n := r.fetch.ok(); n >= fetchFailStreak {
			r.log.Info("fetching recovered", "failures", n)
		}
		r.m.messages.Inc()
		r.fetched(m)
		w := workers[m.Partition%len(workers)]
		select {
		case w.in <- m:
		case <-fctx.Done():
			return nil
		}
	}
}

// fetched records a fetched message: the partition's position, its lag at
// this fetch, and an INFO line for the first message of a partition since it
// was assigned. A partition the last Watermarks call did not list counts as
// assigned from now on (in the lag and the assigned-partitions gauge; the
// next refresh logs it as assigned): the refresh may have run before this
// member joined or before a rebalance gave it the partition, and without
// its position the lag of a partition that stalls right after would never
// show. A message the consumer still held from before a rebalance re-adds
// its partition until the next refresh removes it again.
func (r *Runner) fetched(m kafka.Message) {
	r.assignMu.Lock()
	if r.assigned != nil && !r.assigned[m.Partition] {
		r.assigned[m.Partition] = true
		r.m.assigned.Set(float64(len(r.assigned)))
	}
	first := !r.seen[m.Partition]
	r.seen[m.Partition] = true
	r.assignMu.Unlock()
	if first {
		r.log.Info("consuming partition", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset)
	}
	// The consumer skips to the log start, at once, when its position is
	// gone: the lag refresh alone would see the loss only when it ran
	// between the deletion and the skip. So the first message of a
	// partition (against the committed offset) and one that skips ahead
	// are checked against the log start here.
	next, had := r.offs.position(m.Partition)
	if r.parts.Watermarks != nil && (first || had && m.Offset > next) {
		r.checkSkipped(m.Partition, next, had && !first)
	}
	r.offs.fetchedAt(m.Partition, m.Offset)
	r.m.lag.WithLabelValues(strconv.Itoa(m.Partition)).Set(float64(max(0, m.HighWaterMark-m.Offset-1)))
}

// lagLoop refreshes the lag gauges from Parts.Watermarks every LagInterval
// until ctx is done, whether or not messages are being fetched.
// writeWait is how long the sink write in progress has waited, 0 when none.
func (r *Runner) writeWait(now time.Time) time.Duration {
	since := r.writeSince.Load()
	if since == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, since))
}

// stallLoop warns once per write that waits longer than SinkStallAfter for
// the sink, and says when it ends.
func (r *Runner) stallLoop(ctx context.Context) {
	if r.cfg.SinkStallAfter <= 0 {
		return
	}
	t := time.NewTicker(min(time.Second, r.cfg.SinkStallAfter/2))
	defer t.Stop()
	var warned int64 // writeSince of the write warned about
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			since := r.writeSince.Load()
			switch {
			case since != 0 && since != warned && r.writeWait(now) > r.cfg.SinkStallAfter:
				warned = since
				r.log.Warn("sink write waiting: the sink has not answered; not ready until it does (a hung ClickHouse fails the write at clickhouse.conn.read_timeout)",
					"waited", r.writeWait(now).Round(time.Second).String(), "sink_stall_after", r.cfg.SinkStallAfter.String())
			case warned != 0 && since != warned:
				r.log.Info("sink write answered after a stall", "took", now.Sub(time.Unix(0, warned)).Round(time.Second).String())
				warned = 0
			}
		}
	}
}

func (r *Runner) lagLoop(ctx context.Context) {
	if r.parts.Watermarks == nil {
		return
	}
	t := time.NewTicker(r.cfg.LagInterval)
	defer t.Stop()
	failing := false
	for {
		wctx, cancel := context.WithTimeout(ctx, max(r.cfg.LagInterval, time.Second))
		hw, err := r.parts.Watermarks(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing { // once per outage, the fetch errors say the rest
				r.log.Warn("reading the partitions' high watermarks failed; the lag gauges are stale until it works", "err", err)
			}
			failing = true
		default:
			if failing {
				r.log.Info("reading the partitions' high watermarks works again")
			}
			failing = false
			r.refreshLag(hw)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refreshLag sets the lag of every assigned partition from its high
// watermark and the position this member fetched it to (the group's next
// offset before the first fetch: a partition taken over while the stream is
// held, or after a restart during a sink outage, has a lag too), deletes
// the lag and uncommitted series of partitions no longer assigned, sets the
// assigned-partitions gauge (0 while the group rebalances: the coordinator
// reports no assignment then) and logs what changed since the assignment
// it logged last, so that each new assignment is logged once, also when a
// fetch saw a partition before this refresh did.
func (r *Runner) refreshLag(hw map[int]kafka.PartitionOffsets) {
	r.assignMu.Lock()
	prev := r.assigned
	r.assigned = make(map[int]bool, len(hw))
	var added, revoked []int
	for p := range hw {
		r.assigned[p] = true
		if !r.announced[p] {
			added = append(added, p)
		}
	}
	for p := range r.announced {
		if !r.assigned[p] {
			revoked = append(revoked, p)
		}
	}
	for p := range prev {
		if !r.assigned[p] && !r.announced[p] {
			revoked = append(revoked, p) // fetched from, never listed: gone too
		}
	}
	for _, p := range revoked {
		delete(r.seen, p)
	}
	r.announced = maps.Clone(r.assigned)
	r.m.assigned.Set(float64(len(r.assigned)))
	if len(added) > 0 || len(revoked) > 0 {
		r.m.changes.Inc()
	}
	r.assignMu.Unlock()
	topic := r.parts.Source.Topic()
	if len(revoked) > 0 {
		slices.Sort(revoked)
		r.log.Info("partitions revoked (rebalance): their lag and uncommitted series are deleted", "topic", topic, "partitions", partitionList(revoked))
		for _, p := range revoked {
			r.m.lag.DeleteLabelValues(strconv.Itoa(p))
			r.offs.forget(p)
		}
	}
	if len(added) > 0 {
		slices.Sort(added)
		r.log.Info("partitions assigned", "topic", topic, "partitions", partitionList(added), "assigned", len(hw))
	}
	for p, o := range hw {
		next, ok := r.offs.position(p)
		if !ok {
			next = o.Next // not fetched since assigned: where the group stands
		}
		r.m.lag.WithLabelValues(strconv.Itoa(p)).Set(float64(max(0, o.High-next)))
		r.m.lost.WithLabelValues(strconv.Itoa(p)) // at 0 from the assignment on, for increase()
		r.checkRetention(topic, p, o, next, ok)
	}
}

// checkRetention reports the messages of partition p that retention deleted
// before the group read them: from the group's position (fetched is whether
// this replica fetched from p since it was assigned; next is then where it
// goes on, else the committed offset) up to the log start. They are gone,
// with the responses they carried: logged at ERROR with the offsets, and
// counted, once each. A group without a committed offset starts at the log
// start: what retention deleted before is said once, at WARN (a new group
// on an old topic, or a stream that never wrote, e.g. a sink down since the
// start).
func (r *Runner) checkRetention(topic string, p int, o kafka.PartitionOffsets, next int64, fetched bool) {
	r.assignMu.Lock()
	defer r.assignMu.Unlock()
	if r.lostUpTo == nil {
		r.lostUpTo = map[int]int64{}
	}
	if !fetched && o.Committed < 0 {
		// With start_offset latest the group starts at the end by choice.
		if o.Start > 0 && !o.Latest && !r.startWarned[p] {
			if r.startWarned == nil {
				r.startWarned = map[int]bool{}
			}
			r.startWarned[p] = true
			r.log.Warn("the group has no committed offset for this partition: it starts at the log start, and the messages before it were deleted by retention before the group read any (a new group on an old topic; or a stream that never wrote, e.g. a sink down since the start, whose traffic is lost)",
				"topic", topic, "partition", p, "log_start", o.Start)
		}
		return
	}
	if !fetched {
		next = o.Committed // o.Next is clamped to the log start already
	}
	if next > o.High {
		if r.pastEnd == nil {
			r.pastEnd = map[int]int64{}
		}
		if r.pastEnd[p] == next {
			return // said already
		}
		r.pastEnd[p] = next
		if fetched && o.Committed >= 0 && o.Committed <= o.High {
			// This replica's position is from before the group's
			// committed offset was moved back into the log (another
			// replica's start reset it after the embedded broker lost
			// the log, or an operator did): the consumer goes on from
			// there once the group hands the partition out again.
			r.log.Info("this replica's position is past the end of the partition, but the group's committed offset was moved back into the log: the consumer resumes there",
				"topic", topic, "partition", p, "position", next, "end", o.High, "committed", o.Committed)
			return
		}
		// The partition ends before the group's position: its log was
		// lost or truncated (the topic deleted and created again, an
		// unclean leader election). Messages produced now get offsets
		// below the position and are never read.
		r.log.Error("the group's position is past the end of the partition (its log was lost or truncated: the topic deleted and created again, an unclean leader election): messages produced to it now get lower offsets and will not be read; reset the group's offset for this partition to the log start (docs/deploy.md, Operations)",
			"topic", topic, "partition", p, "position", next, "end", o.High, "log_start", o.Start)
		return
	}
	from := max(next, r.lostUpTo[p])
	if o.Start <= from {
		return
	}
	r.lostUpTo[p] = o.Start
	r.m.lost.WithLabelValues(strconv.Itoa(p)).Add(float64(o.Start - from))
	r.log.Error("retention deleted messages the group had not read: the responses they carried are lost; resend them (broker.retention / retention_bytes, or the topic's retention.ms / retention.bytes, bound how long an outage may last)",
		"topic", topic, "partition", p, "from_offset", from, "to_offset", o.Start-1, "messages", o.Start-from)
}

// checkSkipped runs checkRetention for partition p now, from next when
// fetched (the message after the last one fetched), else from the group's
// committed offset.
func (r *Runner) checkSkipped(p int, next int64, fetched bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wm, err := r.parts.Watermarks(ctx)
	if err != nil {
		return // the lag refresh logs it
	}
	if o, ok := wm[p]; ok {
		r.checkRetention(r.parts.Source.Topic(), p, o, next, fetched)
	}
}

// partitionList renders partitions for a log line: "0,3,7".
func partitionList(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// commitLoop commits the highest confirmed offset per partition every
// CommitInterval (or at once when it is 0), and once more when points closes.
func (r *Runner) commitLoop(hard context.Context, points <-chan kafka.Message) error {
	type tp struct {
		topic     string
		partition int
	}
	// pending holds the newest processed message per partition. There is no
	// memory of what this member committed before: after a rebalance another
	// member may have committed a partition lower (its last write), and the
	// redelivered messages must be committed again or the partition stalls.
	pending := map[tp]kafka.Message{}
	flush := func(ctx context.Context) error {
		if len(pending) == 0 || r.killed.Load() {
			return nil
		}
		msgs := make([]kafka.Message, 0, len(pending))
		for _, m := range pending {
			msgs = append(msgs, m)
		}
		if err := r.parts.Source.Commit(ctx, msgs...); err != nil {
			r.m.commitErrs.Inc()
			return err
		}
		for _, m := range msgs {
			r.offs.committedAt(m.Partition, m.Offset)
		}
		clear(pending)
		r.m.commits.Inc()
		r.stats.add(func(s *Stats) { s.Commits++ })
		return nil
	}
	var tick <-chan time.Time
	if r.cfg.CommitInterval > 0 {
		t := time.NewTicker(r.cfg.CommitInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case m, ok := <-points:
			if !ok {
				if r.killed.Load() {
					return nil
				}
				// Final commit: bounded on its own, the drain may have used up hard.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := flush(ctx); err != nil {
					return fmt.Errorf("final commit: %w", err)
				}
				return nil
			}
			// Points of one partition arrive in processing order; a lower
			// offset than the pending one means a redelivery began (after a
			// rebalance), and it is the new progress.
			pending[tp{m.Topic, m.Partition}] = m
			if tick == nil {
				if err := flush(hard); err != nil && hard.Err() == nil {
					r.log.Warn("offset commit failed, retrying with the next message", "err", err)
				}
			}
		case <-tick:
			if err := flush(hard); err != nil && hard.Err() == nil {
				r.log.Warn("offset commit failed, retrying at the next interval", "err", err)
			}
		}
	}
}

// worker owns the operator chain and the assemblers of its partitions.
type worker struct {
	r    *Runner
	ops  []streams.Operator
	in   chan kafka.Message
	asm  map[int]*profile.Assembler
	open int           // traces its assemblers hold, as last added to the open_traces gauge
	last map[int]int64 // last offset handled per partition

	// Output waiting for one batched sink write, the dead letters of
	// messages that could not be decoded waiting to be produced with it
	// (pendSince is when the oldest of either came), and the partitions
	// whose commit points wait for them.
	pend      []arrow.RecordBatch
	pendRows  int64
	pendDL    []kafka.Message
	pendBytes int // of pendDL
	pendSince time.Time
	waiting   map[int]string // partition -> topic

	// Why the profile operator rejected rows of the message in process, by
	// row index over it, ascending; reused. onReject (w.addDetail, bound
	// once) appends to it, at row detailBase + its row.
	details    []rowDetail
	detailBase int
	onReject   func(row int, r *profile.Reject)
}

// rowDetail is one row's reject reason and detail.
type rowDetail struct {
	row            int
	reason, detail string
}

func (w *worker) addDetail(row int, r *profile.Reject) {
	w.details = append(w.details, rowDetail{w.detailBase + row, r.Reason, r.Detail})
}

func (w *worker) run(hard context.Context, points chan<- kafka.Message) error {
	defer w.dropPending()
	tick := time.NewTicker(w.r.cfg.ExpireInterval)
	defer tick.Stop()
	var batchTick <-chan time.Time
	if w.batching() {
		t := time.NewTicker(max(w.r.cfg.SinkBatchWait/2, time.Millisecond))
		defer t.Stop()
		batchTick = t.C
	}
	for {
		select {
		case m, ok := <-w.in:
			if !ok {
				if err := w.flushSink(hard, points); err != nil && hard.Err() == nil {
					return err
				}
				return nil
			}
			start := time.Now()
			if err := w.handle(hard, m); err != nil {
				if hard.Err() != nil {
					return nil // aborted mid-message: not committed, redelivered
				}
				return err
			}
			w.r.m.latency.Observe(time.Since(start).Seconds())
			w.waiting[m.Partition] = m.Topic
			if err := w.maybeFlush(hard, points); err != nil {
				if hard.Err() != nil {
					return nil
				}
				return err
			}
		case <-batchTick:
			if !w.pendSince.IsZero() && time.Since(w.pendSince) >= w.r.cfg.SinkBatchWait {
				if err := w.flushSink(hard, points); err != nil {
					if hard.Err() != nil {
						return nil
					}
					return err
				}
			}
		case <-tick.C:
			if err := w.expire(hard, points); err != nil {
				if hard.Err() != nil {
					return nil
				}
				return err
			}
		case <-hard.Done():
			return nil
		}
	}
}

func (w *worker) batching() bool { return w.r.cfg.SinkBatchRows > 1 }

// maxPendingDLBytes bounds the bytes of the dead letters of undecodable
// messages that wait for a batch (each is the whole message, up to the
// dead-letter max_message_bytes).
const maxPendingDLBytes = 8 << 20

// maybeFlush writes the pending output and dead letters when the batch is
// full (or batching is off), and then offers the waiting commit points.
// With nothing pending the commit points go at once.
func (w *worker) maybeFlush(ctx context.Context, points chan<- kafka.Message) error {
	full := w.pendRows >= int64(w.r.cfg.SinkBatchRows) || len(w.pendDL) >= w.r.cfg.SinkBatchRows || w.pendBytes >= maxPendingDLBytes
	if (len(w.pend) == 0 && len(w.pendDL) == 0) || !w.batching() || full {
		return w.flushSink(ctx, points)
	}
	return nil
}

// queueDeadLetter holds the dead letter of a whole message (one that could
// not be decoded) for the next flush, which produces it before it offers
// the commit points: a run of such messages is produced in one request,
// not one acknowledged produce each, and nothing is committed before the
// dead-letter topic acknowledged it.
func (w *worker) queueDeadLetter(m kafka.Message) {
	w.pendDL = append(w.pendDL, m)
	w.pendBytes += recordSize(m)
	if w.pendSince.IsZero() {
		w.pendSince = time.Now()
	}
}

// flushSink produces the pending dead letters, writes the pending output as
// one batch, then offers the commit points of the partitions that waited
// for them.
func (w *worker) flushSink(ctx context.Context, points chan<- kafka.Message) error {
	if len(w.pendDL) > 0 {
		if err := w.flushDeadLetters(ctx); err != nil {
			return err
		}
		if len(w.pend) == 0 {
			w.pendSince = time.Time{}
		}
	}
	if len(w.pend) > 0 {
		t := time.Now()
		recs, err := concatBatches(w.pend, w.r.mem)
		if err != nil {
			return err
		}
		for i, rec := range recs {
			if err := w.write(ctx, rec); err != nil {
				for _, r := range recs[i:] {
					r.Release()
				}
				return err
			}
			rec.Release()
		}
		w.stage("sink", t)
		w.dropPending()
	}
	for p, topic := range w.waiting {
		if err := w.offer(ctx, points, topic, p); err != nil {
			return err
		}
		delete(w.waiting, p)
	}
	return nil
}

func (w *worker) dropPending() {
	for _, b := range w.pend {
		b.Release()
	}
	w.pend, w.pendRows, w.pendSince = w.pend[:0], 0, time.Time{}
	w.pendDL, w.pendBytes = nil, 0
}

// concatBatches joins runs of batches with equal schemas into single
// batches; the result belongs to the caller.
func concatBatches(recs []arrow.RecordBatch, mem memory.Allocator) ([]arrow.RecordBatch, error) {
	var out []arrow.RecordBatch
	for lo := 0; lo < len(recs); {
		hi := lo + 1
		for hi < len(recs) && recs[hi].Schema().Equal(recs[lo].Schema()) {
			hi++
		}
		if hi-lo == 1 {
			recs[lo].Retain()
			out = append(out, recs[lo])
			lo = hi
			continue
		}
		cols := make([]arrow.Array, recs[lo].NumCols())
		var rows int64
		for _, r := range recs[lo:hi] {
			rows += r.NumRows()
		}
		for c := range cols {
			parts := make([]arrow.Array, 0, hi-lo)
			for _, r := range recs[lo:hi] {
				parts = append(parts, r.Column(c))
			}
			a, err := array.Concatenate(parts, mem)
			if err != nil {
				for _, x := range cols[:c] {
					x.Release()
				}
				for _, o := range out {
					o.Release()
				}
				return nil, fmt.Errorf("joining sink batches: %w", err)
			}
			cols[c] = a
		}
		out = append(out, array.NewRecordBatch(recs[lo].Schema(), cols, rows))
		for _, x := range cols {
			x.Release()
		}
		lo = hi
	}
	return out, nil
}

// offer sends the commit point of a partition: the last offset handled,
// held back before the oldest chunk the assembler still needs.
func (w *worker) offer(hard context.Context, points chan<- kafka.Message, topic string, partition int) error {
	off, ok := w.last[partition]
	if !ok {
		return nil
	}
	if a := w.asm[partition]; a != nil {
		if o, held := a.Oldest(); held && o <= off {
			off = o - 1
		}
	}
	if off < 0 || hard.Err() != nil {
		return hard.Err()
	}
	select {
	case points <- kafka.Message{Topic: topic, Partition: partition, Offset: off}:
		return nil
	case <-hard.Done():
		return hard.Err()
	}
}

func (w *worker) stage(name string, since time.Time) {
	d := time.Since(since)
	w.r.m.stage.WithLabelValues(name).Add(d.Seconds())
	w.r.stats.add(func(s *Stats) {
		if s.Stages == nil {
			s.Stages = map[string]time.Duration{}
		}
		s.Stages[name] += d
	})
}

// txnMarker reports a transaction's commit or abort marker, which kafka-go's
// reader hands over as a message: key version 0 and type 0 (abort) or 1
// (commit), value version 0 and the coordinator's epoch, no headers (Kafka's
// control record). No Arrow stream is 6 bytes long, so no trace is taken
// for one.
func txnMarker(m kafka.Message) bool {
	k, v := m.Key, m.Value
	return len(k) == 4 && k[0] == 0 && k[1] == 0 && k[2] == 0 && k[3] <= 1 &&
		len(v) == 6 && v[0] == 0 && v[1] == 0 && len(m.Headers) == 0
}

// handle processes one message up to the sink (and the dead-letter topic).
// A nil return means everything it held is durable or dead-lettered.
func (w *worker) handle(ctx context.Context, m kafka.Message) error {
	w.last[m.Partition] = m.Offset
	w.r.stats.add(func(s *Stats) { s.Messages++; s.Bytes += int64(len(m.Value)) })
	part := m.Topic + "/" + strconv.Itoa(m.Partition)
	src := part + "@" + strconv.FormatInt(m.Offset, 10)
	if txnMarker(m) {
		w.r.m.markers.Inc()
		return nil
	}
	t := time.Now()
	rec, err := ipc.Decode(m.Value, w.r.mem)
	w.stage("decode", t)
	if err != nil {
		reason := schemas.ReasonCorruptIPC
		if errors.Is(err, ipc.ErrSchema) {
			reason = schemas.ReasonWrongSchema
		}
		w.queueDeadLetter(w.dlq(m.Key, m.Value, m.Headers, reason, err.Error(), src, -1))
		return nil
	}
	w.r.m.rows.Add(float64(rec.NumRows()))
	w.r.stats.add(func(s *Stats) { s.Rows += rec.NumRows() })
	if rec.NumRows() == 0 {
		// Valid, but nothing to score (a producer flushing an empty batch):
		// counted, not dead-lettered, so heartbeats do not flood the topic.
		rec.Release()
		w.r.m.empty.Inc()
		return nil
	}

	t = time.Now()
	a, err := w.assembler(m.Partition)
	if err != nil {
		rec.Release()
		return err
	}
	out, err := a.Add(rec, m.Offset, time.Now())
	rec.Release()
	w.stage("assemble", t)
	if err != nil {
		w.queueDeadLetter(w.dlq(m.Key, m.Value, m.Headers, schemas.ReasonWrongSchema, err.Error(), src, -1))
		return nil
	}
	w.setOpen()
	return w.emit(ctx, out, part, src)
}

// setOpen brings the open_traces gauge, summed over workers and their
// partitions, up to date with this worker's assemblers. (It was set to
// one partition's count, by whichever worker came last, and not lowered
// when traces expired.)
func (w *worker) setOpen() {
	n := 0
	for _, a := range w.asm {
		n += a.Open()
	}
	w.r.m.open.Add(float64(n - w.open))
	w.open = n
}

func (w *worker) assembler(partition int) (*profile.Assembler, error) {
	if a := w.asm[partition]; a != nil {
		return a, nil
	}
	a, err := profile.NewAssembler(w.r.cfg.Assemble, w.r.mem)
	if err != nil {
		return nil, err
	}
	w.asm[partition] = a
	return a, nil
}

// emit sends assembler output on: rejected traces to the dead-letter topic,
// complete ones through the chain to the sink. part is the topic/partition
// of out; src is the message it comes from (complete rows), or part when it
// comes from Expire (the timeout), not from Add (the bounds). A rejected
// trace's source is the message and row of its earliest chunk, so that the
// copy dead-lettered again after a redelivery says the same. It releases out.
func (w *worker) emit(ctx context.Context, out profile.Assembled, part, src string) error {
	expired := src == part
	defer out.Release()
	if out.Duplicates > 0 {
		w.r.m.dupChunks.Add(float64(out.Duplicates))
		w.r.stats.add(func(s *Stats) { s.DupChunks += int64(out.Duplicates) })
	}
	if out.AfterReject > 0 {
		w.r.m.restChunks.Add(float64(out.AfterReject))
		w.r.stats.add(func(s *Stats) { s.RestChunks += int64(out.AfterReject) })
	}
	if len(out.Rejected) > 0 {
		held := w.remnants(ctx, out)
		var dl []kafka.Message
		i := 0
		for _, rec := range out.Rejected {
			for row := 0; row < int(rec.NumRows()); row++ {
				if !held[i] {
					from, msgRow := src, -1
					if i < len(out.Origin) {
						from, msgRow = part+"@"+strconv.FormatInt(out.Origin[i], 10), out.OriginRow[i]
					}
					dl = append(dl, w.rowDLQ(rec, row, msgRow, out.Reasons[i], w.assembleDetail(out.Reasons[i], expired), from))
				}
				i++
			}
		}
		if err := w.deadLetterTimed(ctx, dl); err != nil {
			return err
		}
	}
	for j, rec := range out.Complete {
		first := -1
		if j < len(out.CompleteFirst) {
			first = out.CompleteFirst[j]
		}
		if err := w.process(ctx, rec, src, first); err != nil {
			return err
		}
	}
	return nil
}

// remnants tells which rejected rows of out are incomplete traces that the
// sink already holds (see streams.Holder), by their index over out.Reasons.
// Only a trace without its first chunk can be a remnant (the last chunks of
// a trace written before a restart): one with it is a sending cut short (a
// response sent again and given up for room, say), dead-lettered even when
// the sink holds an earlier sending. Without a Holder, or when the lookup
// fails, there are none: every row is dead-lettered.
func (w *worker) remnants(ctx context.Context, out profile.Assembled) map[int]bool {
	h, ok := w.r.parts.Sink.(streams.Holder)
	if !ok {
		return nil
	}
	var refs []streams.TraceRef
	var at []int
	i := 0
	for _, rec := range out.Rejected {
		sc := rec.Schema()
		ids, _ := rec.Column(schemas.MustIndex(sc, schemas.ColTraceID)).(*array.String)
		models, _ := rec.Column(schemas.MustIndex(sc, schemas.ColModel)).(*array.String)
		ts, _ := rec.Column(schemas.MustIndex(sc, schemas.ColTS)).(*array.Timestamp)
		for row := 0; row < int(rec.NumRows()); row++ {
			first := i < len(out.HasFirst) && out.HasFirst[i]
			if out.Reasons[i] == schemas.ReasonIncomplete && !first && ids != nil && models != nil && ts != nil {
				ref := streams.TraceRef{ID: ids.Value(row), Model: models.Value(row)}
				if v := ts.Value(row); v > 0 {
					ref.TS = v.ToTime(ts.DataType().(*arrow.TimestampType).Unit)
				}
				refs = append(refs, ref)
				at = append(at, i)
			}
			i++
		}
	}
	if len(refs) == 0 {
		return nil
	}
	// One lookup per model: Held answers by id, and one id under two
	// models is two traces.
	byModel := map[string][]int{}
	for j, ref := range refs {
		byModel[ref.Model] = append(byModel[ref.Model], j)
	}
	t := time.Now()
	held := map[int]bool{}
	for _, js := range byModel {
		part := make([]streams.TraceRef, len(js))
		for k, j := range js {
			part[k] = refs[j]
		}
		w.r.sinkMu.Lock()
		// Timed as a write: a sink that hangs here holds every write up.
		w.r.writeSince.Store(time.Now().UnixNano())
		found, err := h.Held(ctx, part)
		w.r.writeSince.Store(0)
		w.r.sinkMu.Unlock()
		if err != nil {
			w.stage("sink_lookup", t)
			w.r.log.Warn("looking up incomplete traces in the sink failed; dead-lettering them all", "traces", len(refs), "err", err)
			return nil
		}
		for _, j := range js {
			if found[refs[j].ID] {
				held[at[j]] = true
			}
		}
	}
	w.stage("sink_lookup", t)
	if len(held) > 0 {
		w.r.m.remnants.Add(float64(len(held)))
		w.r.stats.add(func(s *Stats) { s.Remnants += int64(len(held)) })
		w.r.log.Info("chunks of traces the sink already holds came again (after a restart); not dead-lettered", "traces", len(held))
	}
	return held
}

// assembleDetail says why the assembler gave up on a trace.
func (w *worker) assembleDetail(reason string, expired bool) string {
	c := w.r.cfg.Assemble
	switch {
	case reason == schemas.ReasonTooLong:
		return fmt.Sprintf("its chunks hold more than stream.assemble.max_steps (%d) steps", c.MaxSteps)
	case reason == schemas.ReasonIncomplete && expired:
		return fmt.Sprintf("the chunks did not all arrive (seq 0 to the final one) within stream.assemble.timeout (%v) of the latest; send all chunks of a trace with the key trace_id", c.Timeout)
	case reason == schemas.ReasonIncomplete:
		return fmt.Sprintf("given up before all chunks arrived: the partition held more than stream.assemble.max_open (%d) open traces or max_held_steps (%d) steps, and this one was idle the longest", c.MaxOpen, c.MaxHeldSteps)
	}
	return ""
}

// expire emits timed-out chunked traces of every partition and moves their
// commit points on.
func (w *worker) expire(ctx context.Context, points chan<- kafka.Message) error {
	for p, a := range w.asm {
		if a.Open() == 0 {
			continue
		}
		out, err := a.Expire(time.Now())
		if err != nil {
			return err
		}
		w.setOpen()
		if len(out.Rejected) == 0 && out.Duplicates == 0 {
			out.Release()
			continue
		}
		// Rejected traces are dead-lettered; either way what expired no
		// longer holds the commit point back.
		part := w.r.parts.Source.Topic() + "/" + strconv.Itoa(p)
		if err := w.emit(ctx, out, part, part); err != nil {
			return err
		}
		w.waiting[p] = w.r.parts.Source.Topic()
		if err := w.maybeFlush(ctx, points); err != nil {
			return err
		}
	}
	return nil
}

// process runs in (trace.v1, not released) through the chain, dead-letters
// the rows whose status is not ok and queues the output for the sink.
// process runs in through the chain and its rows to the sink, dead-letters
// the rows the chain rejected. first is the message row of in's first row
// (in is a slice of the message's whole rows), or -1 when in holds
// reassembled traces: the entrowatch.row header says the message row.
func (w *worker) process(ctx context.Context, in arrow.RecordBatch, src string, first int) error {
	cur := []arrow.RecordBatch{in}
	owned := false // cur[0] is in, which the caller owns
	release := func() {
		if owned {
			for _, b := range cur {
				b.Release()
			}
		}
	}
	w.details = w.details[:0]
	for _, op := range w.ops {
		t := time.Now()
		var next []arrow.RecordBatch
		base := 0
		for _, b := range cur {
			outs, err := w.apply(ctx, op, b, base)
			base += int(b.NumRows())
			if err != nil {
				for _, o := range next {
					o.Release()
				}
				release()
				return fmt.Errorf("operator %s on %s: %w", op.Name(), src, err)
			}
			next = append(next, outs...)
		}
		release()
		cur, owned = next, true
		w.stage(op.Name(), t)
	}
	defer release()

	var rows int64
	for _, b := range cur {
		rows += b.NumRows()
	}
	if rows != in.NumRows() {
		return fmt.Errorf("operator chain turned %d rows into %d on %s: operators must keep rows one for one", in.NumRows(), rows, src)
	}
	t := time.Now()
	var dl []kafka.Message
	base := 0
	details := w.details
	for _, b := range cur {
		if st, ok := statusColumn(b); ok {
			for i := 0; i < st.Len(); i++ {
				s := st.Value(i)
				if s == schemas.StatusOK {
					continue
				}
				row := base + i
				for len(details) > 0 && details[0].row < row {
					details = details[1:]
				}
				var detail string
				if len(details) > 0 && details[0].row == row && details[0].reason == s {
					detail = details[0].detail
				} else {
					detail = schemas.StatusDetail(b, i, s)
				}
				msgRow := row
				if first >= 0 {
					msgRow = first + row
				}
				dl = append(dl, w.rowDLQ(in, row, msgRow, s, detail, src))
			}
		}
		base += int(b.NumRows())
	}
	if err := w.deadLetters(ctx, dl); err != nil {
		return err
	}
	w.stage("dead_letter", t)

	for _, b := range cur {
		b.Retain()
		w.pend = append(w.pend, b)
		w.pendRows += b.NumRows()
	}
	if w.pendSince.IsZero() && len(w.pend) > 0 {
		w.pendSince = time.Now()
	}
	return nil
}

// apply runs op on b, whose first row is row base of the message's rows.
// The profile operator is called through Score, which also says why it
// rejects a row (Process drops that); the callback runs for rejected rows
// only, so ok rows cost nothing more.
func (w *worker) apply(ctx context.Context, op streams.Operator, b arrow.RecordBatch, base int) ([]arrow.RecordBatch, error) {
	p, ok := op.(*profile.Operator)
	if !ok {
		return op.Process(ctx, b)
	}
	w.detailBase = base
	out, err := p.Score(b, w.onReject)
	if err != nil {
		return nil, err
	}
	return []arrow.RecordBatch{out}, nil
}

func statusColumn(b arrow.RecordBatch) (*array.String, bool) {
	idx := b.Schema().FieldIndices(schemas.ColStatus)
	if len(idx) == 0 {
		return nil, false
	}
	s, ok := b.Column(idx[0]).(*array.String)
	return s, ok
}

// write hands b to the sink, retrying with backoff while it fails.
func (w *worker) write(ctx context.Context, b arrow.RecordBatch) error {
	return w.retry(ctx, "sink write", func() error {
		w.r.sinkMu.Lock()
		defer w.r.sinkMu.Unlock()
		w.r.writeSince.Store(time.Now().UnixNano())
		err := w.r.parts.Sink.Write(ctx, b)
		w.r.writeSince.Store(0)
		if err != nil {
			w.r.m.sinkErrs.Inc()
			w.r.sinkFailing.Store(true)
			w.r.ready.Store(false)
			return err
		}
		w.r.sinkFailing.Store(false)
		w.r.ready.Store(true)
		w.r.m.sinkRows.Add(float64(b.NumRows()))
		w.r.m.lastWrite.SetToCurrentTime()
		w.r.stats.add(func(s *Stats) { s.SinkRows += b.NumRows() })
		return nil
	})
}

// retry calls f until it succeeds, fails with a *permanentError or ctx is
// done, backing off between tries.
func (w *worker) retry(ctx context.Context, what string, f func() error) error {
	wait := w.r.cfg.SinkBackoffMin
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			if attempt > 1 {
				w.r.log.Info(what+" recovered", "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if pe := (*permanentError)(nil); errors.As(err, &pe) {
			return fmt.Errorf("%s: %w", what, pe.err)
		}
		w.r.log.Warn(what+" failed, retrying", "err", err, "attempt", attempt, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		wait = min(2*wait, w.r.cfg.SinkBackoffMax)
	}
}

// dlq builds one dead-letter record. A record over the dead-letter
// producer's max_message_bytes goes without value (see bare): the producer
// would refuse it for ever.
func (w *worker) dlq(key, value []byte, headers []kafka.Header, reason, detail, src string, row int) kafka.Message {
	h := make([]kafka.Header, 0, len(headers)+4)
	for _, x := range headers {
		switch x.Key {
		case HeaderReason, HeaderError, HeaderSource, HeaderRow, HeaderOriginalBytes:
		default:
			h = append(h, x)
		}
	}
	h = append(h, kafka.Header{Key: HeaderReason, Value: []byte(reason)}, kafka.Header{Key: HeaderSource, Value: []byte(src)})
	if detail != "" {
		h = append(h, kafka.Header{Key: HeaderError, Value: []byte(detail)})
	}
	if row >= 0 {
		h = append(h, kafka.Header{Key: HeaderRow, Value: []byte(strconv.Itoa(row))})
	}
	m := kafka.Message{Key: key, Value: value, Headers: h}
	limit := w.r.parts.DeadLetter.MaxMessageBytes()
	why := fmt.Sprintf("over the dead-letter max_message_bytes (%d)", limit)
	if recordSize(m) > limit && len(m.Value) > 0 {
		m = bare(m, len(m.Value), why, false)
	}
	if recordSize(m) > limit {
		m = bare(m, 0, why, true)
	}
	return m
}

// bare returns m without its value, the original message or row of size
// bytes (0: none was attached): HeaderOriginalBytes holds the size and
// HeaderError says why it is missing. With keyToo the key and the original
// message's headers go as well; what is left is the reason, the detail, the
// source, the row and the size.
func bare(m kafka.Message, size int, why string, keyToo bool) kafka.Message {
	what := "message"
	var detail string
	h := make([]kafka.Header, 0, len(m.Headers)+1)
	for _, x := range m.Headers {
		switch x.Key {
		case HeaderError:
			detail = string(x.Value)
			continue
		case HeaderOriginalBytes:
			if size > 0 {
				continue
			}
		case HeaderRow:
			what = "row"
		case HeaderReason, HeaderSource:
		default:
			if keyToo {
				continue
			}
		}
		h = append(h, x)
	}
	var notes []string
	if detail != "" {
		notes = append(notes, detail)
	}
	if size > 0 {
		notes = append(notes, fmt.Sprintf("original %s of %d bytes not attached: %s", what, size, why))
		h = append(h, kafka.Header{Key: HeaderOriginalBytes, Value: []byte(strconv.Itoa(size))})
	}
	key := m.Key
	if keyToo {
		key = nil
		notes = append(notes, "key and headers of the original left out: "+why)
	}
	h = append(h, kafka.Header{Key: HeaderError, Value: []byte(strings.Join(notes, "; "))})
	return kafka.Message{Key: key, Headers: h}
}

// hasOriginal reports whether m carries a key or headers of the original
// message, which bare can still leave out.
func hasOriginal(m kafka.Message) bool {
	if len(m.Key) > 0 {
		return true
	}
	for _, x := range m.Headers {
		switch x.Key {
		case HeaderReason, HeaderError, HeaderSource, HeaderRow, HeaderOriginalBytes:
		default:
			return true
		}
	}
	return false
}

// recordSize is what m adds to a produce request, near enough: the key, the
// value and the headers.
func recordSize(m kafka.Message) int {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// rowDLQ dead-letters row i of the trace.v1 batch rec as its own IPC stream,
// keyed by trace_id. A row over the dead-letter producer's max_message_bytes
// goes without its bytes (it is not cut into chunks: one record per row).
func (w *worker) rowDLQ(rec arrow.RecordBatch, i, msgRow int, reason, detail, src string) kafka.Message {
	var key []byte
	if idx := rec.Schema().FieldIndices(schemas.ColTraceID); len(idx) > 0 {
		if ids, ok := rec.Column(idx[0]).(*array.String); ok && ids.IsValid(i) {
			key = []byte(ids.Value(i))
		}
	}
	row := rec.NewSlice(int64(i), int64(i+1))
	defer row.Release()
	limit := w.r.parts.DeadLetter.MaxMessageBytes()
	var value []byte
	size := 0
	err := ipc.Split(row, limit, func(b []byte) error {
		value = b
		return nil
	}, func(_ int64, _ arrow.RecordBatch, n int) error {
		size = n
		return nil
	})
	switch {
	case err != nil:
		return w.dlq(key, nil, nil, reason, fmt.Sprintf("%s; original row not attached: %v", detail, err), src, msgRow)
	case value == nil:
		m := w.dlq(key, nil, nil, reason, detail, src, msgRow)
		return bare(m, size, fmt.Sprintf("it encodes to more than the dead-letter max_message_bytes (%d)", limit), false)
	}
	return w.dlq(key, value, []kafka.Header{{Key: kafka.HeaderSchema, Value: []byte(schemas.NameOf(rec.Schema()))}}, reason, detail, src, msgRow)
}

// permanentError ends retry at once: trying again cannot succeed.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// deadLetterTimed is deadLetters timed as the dead_letter stage.
func (w *worker) deadLetterTimed(ctx context.Context, msgs []kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	defer w.stage("dead_letter", time.Now())
	return w.deadLetters(ctx, msgs)
}

// deadLetters produces msgs with deadLetter, after the pending dead letters
// of whole messages (queueDeadLetter), so that the dead-letter topic keeps
// the order of the source; nothing when msgs is empty (those wait for their
// batch).
func (w *worker) deadLetters(ctx context.Context, msgs []kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if len(w.pendDL) > 0 {
		msgs = append(w.pendDL, msgs...)
		w.pendDL, w.pendBytes = nil, 0
	}
	return w.deadLetter(ctx, msgs)
}

// flushDeadLetters produces the pending dead letters of whole messages,
// timed as the dead_letter stage.
func (w *worker) flushDeadLetters(ctx context.Context) error {
	if len(w.pendDL) == 0 {
		return nil
	}
	defer w.stage("dead_letter", time.Now())
	msgs := w.pendDL
	w.pendDL, w.pendBytes = nil, 0
	return w.deadLetter(ctx, msgs)
}

// deadLetter produces msgs to the dead-letter topic, retrying while that
// fails. A record the brokers refuse as too large (the topic's
// max.message.bytes below dead_letter.max_message_bytes) cannot succeed
// later: the records are then produced one by one, the refused ones without
// their value; one refused even so stops the stream with an error rather
// than stalling it.
func (w *worker) deadLetter(ctx context.Context, msgs []kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	dl := w.r.parts.DeadLetter
	failing := false
	defer func() {
		if failing {
			w.r.dlqFailing.Add(-1)
		}
	}()
	fail := func(err error) error {
		w.r.m.deadErrs.Inc()
		if !failing {
			failing = true
			w.r.dlqFailing.Add(1)
		}
		return err
	}
	err := w.retry(ctx, "dead-letter produce", func() error {
		err := dl.Produce(ctx, msgs...)
		if err == nil {
			return nil
		}
		if !kafka.IsMessageTooLarge(err) {
			return fail(err)
		}
		w.r.log.Warn("the dead-letter topic refuses records as too large; producing them one by one, the refused ones without the original bytes",
			"topic", dl.Topic(), "records", len(msgs), "err", err)
		const why = "the dead-letter topic refused it as too large (see its max.message.bytes)"
		var went kafkago.WriteErrors // per record: nil for those stored already
		if !errors.As(err, &went) || len(went) != len(msgs) {
			went = nil
		}
		for i := range msgs {
			if went != nil && went[i] == nil {
				continue // stored: not twice
			}
			for {
				err := dl.Produce(ctx, msgs[i])
				switch {
				case err == nil:
				case !kafka.IsMessageTooLarge(err):
					return fail(err)
				case len(msgs[i].Value) > 0:
					msgs[i] = bare(msgs[i], len(msgs[i].Value), why, false)
					continue
				case hasOriginal(msgs[i]):
					msgs[i] = bare(msgs[i], 0, why, true)
					continue
				default:
					return &permanentError{fmt.Errorf("dead-letter topic %s refuses a record of %d bytes as too large, even without the original's bytes, key and headers; "+
						"raise the topic's max.message.bytes: %w", dl.Topic(), recordSize(msgs[i]), err)}
				}
				break
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	now := time.Now()
	for _, m := range msgs {
		var reason, detail, src string
		row := false
		for _, h := range m.Headers {
			switch h.Key {
			case HeaderReason:
				reason = string(h.Value)
			case HeaderError:
				detail = string(h.Value)
			case HeaderSource:
				src = string(h.Value)
			case HeaderRow:
				row = true
			}
		}
		var id string
		if row {
			id = string(m.Key)
		}
		w.r.rejects.note(now, reason, id, detail, src)
		w.r.m.dead.WithLabelValues(reason).Inc()
		if !row { // the whole message
			w.r.m.deadMsgs.WithLabelValues(reason).Inc()
		}
		w.r.stats.add(func(s *Stats) {
			if s.DeadLettered == nil {
				s.DeadLettered = map[string]int64{}
			}
			s.DeadLettered[reason]++
		})
	}
	return nil
}

// flush drains stateful operators at a graceful stop and writes what they
// held. The assemblers are not flushed: their chunks are not committed and
// come back to whoever owns the partition next.
func (w *worker) flush(ctx context.Context) error {
	for i, op := range w.ops {
		f, ok := op.(streams.Flusher)
		if !ok {
			continue
		}
		outs, err := f.Flush(ctx)
		if err != nil {
			return fmt.Errorf("flushing operator %s: %w", op.Name(), err)
		}
		for _, b := range outs {
			cur := []arrow.RecordBatch{b}
			for _, next := range w.ops[i+1:] {
				var nx []arrow.RecordBatch
				for _, c := range cur {
					o, err := next.Process(ctx, c)
					c.Release()
					if err != nil {
						return fmt.Errorf("operator %s on flushed rows: %w", next.Name(), err)
					}
					nx = append(nx, o...)
				}
				cur = nx
			}
			for _, c := range cur {
				err := w.write(ctx, c)
				c.Release()
				if err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// rejectLog logs dead-lettered records (reason, trace_id for rows, detail,
// source) through a streams.RejectLog: at most rejectLogLimit per reason per
// rejectLogWindow, the others only counted
// (entrowatch_stream_dead_letter_total). Shared by the workers.
type rejectLog struct{ *streams.RejectLog }

const (
	rejectLogLimit  = streams.RejectLogLimit
	rejectLogWindow = streams.RejectLogWindow
)

func newRejectLog(log *slog.Logger) *rejectLog {
	return &rejectLog{streams.NewRejectLog(log, "dead-lettered",
		"dead-lettered records not logged (over the limit per reason per minute; see entrowatch_stream_dead_letter_total)")}
}

// note logs one dead-lettered record unless its reason used up its window.
func (l *rejectLog) note(now time.Time, reason, traceID, detail, src string) {
	args := make([]any, 0, 6)
	if traceID != "" {
		args = append(args, "trace_id", traceID)
	}
	args = append(args, "detail", detail, "source", src)
	l.Note(now, reason, args...)
}
