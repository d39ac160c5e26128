package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	arrowipc "github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/ipc"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// The delivery tests run the real Kafka protocol: one embedded kfake broker
// for the package, kafka-go on both sides, one topic (and group) per test.
var testBroker *broker.Broker

func TestMain(m *testing.M) {
	cfg := broker.DefaultConfig()
	cfg.MinSessionTimeout = 100 * time.Millisecond
	b, err := broker.Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testBroker = b
	code := m.Run()
	_ = b.Close(context.Background())
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var runs atomic.Int64

// names returns a fresh topic, dead-letter topic and group per call, so that
// -count=N and reruns never see an earlier run's records or offsets.
func names(base string) (topic, dead, group string) {
	n := runs.Add(1)
	topic = fmt.Sprintf("%s-%d-%d", base, os.Getpid(), n)
	return topic, topic + ".dead", "g-" + topic
}

func conn() kafka.Config {
	c := kafka.DefaultConfig()
	c.Brokers = []string{testBroker.Addr()}
	c.ClientID = "runner-test"
	return c
}

// sourceConfig shortens kafka-go's group timings (seconds by default) so that
// joins, rebalances and restarts take a fraction of a second.
func sourceConfig(topic, group string) kafka.SourceConfig {
	c := kafka.DefaultSourceConfig()
	c.Topic, c.Group = topic, group
	c.MaxWait = 50 * time.Millisecond
	c.HeartbeatInterval = 100 * time.Millisecond
	c.SessionTimeout = time.Second
	c.RebalanceTimeout = time.Second
	c.JoinGroupBackoff = 100 * time.Millisecond
	c.ReadBackoffMin = 10 * time.Millisecond
	c.ReadBackoffMax = 50 * time.Millisecond
	c.QueueCapacity = 4
	return c
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

func topics(t *testing.T, partitions int, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, kafka.EnsureTopics(ctx, conn(), partitions, names...))
}

func producer(t *testing.T, topic string) *kafka.Producer {
	t.Helper()
	cfg := kafka.DefaultProducerConfig()
	cfg.Topic = topic
	p, err := kafka.NewProducer(conn(), cfg, testLog(t))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// row describes one test trace: steps steps of 20 alternatives, optionally
// with a NaN chosen logprob at step 1 or a positive logprob (0.5) as step 4's
// first alternative, optionally a chunk (seq, final).
type row struct {
	id    string
	steps int
	nan   bool
	pos   bool
	seq   int32
	chunk bool // seq/final as given; otherwise a whole response
	final bool
}

func traceBatch(t testing.TB, mem memory.Allocator, rows ...row) arrow.RecordBatch {
	t.Helper()
	b := array.NewRecordBuilder(mem, schemas.Trace)
	defer b.Release()
	for _, r := range rows {
		for i, f := range schemas.Trace.Fields() {
			fb := b.Field(i)
			switch f.Name {
			case schemas.ColTraceID:
				fb.(*array.StringBuilder).Append(r.id)
			case schemas.ColModel:
				fb.(*array.StringBuilder).Append("test-model")
			case schemas.ColTS: // 2026-03-01, one second per seq (milliseconds)
				fb.(*array.TimestampBuilder).Append(arrow.Timestamp(1772323200000 + 1000*int64(r.seq)))
			case schemas.ColAttributes:
				fb.(*array.MapBuilder).Append(true)
			case schemas.ColSeq:
				fb.(*array.Int32Builder).Append(r.seq)
			case schemas.ColFinal:
				fb.(*array.BooleanBuilder).Append(!r.chunk || r.final)
			case schemas.ColTokenLogprob:
				lb := fb.(*array.ListBuilder)
				lb.Append(true)
				vb := lb.ValueBuilder().(*array.Float32Builder)
				for s := 0; s < r.steps; s++ {
					v := float32(-0.1 - 0.01*float32(s%7))
					if r.nan && s == 0 {
						v = float32(math.NaN())
					}
					vb.Append(v)
				}
			case schemas.ColTopLogprobs:
				lb := fb.(*array.ListBuilder)
				lb.Append(true)
				sb := lb.ValueBuilder().(*array.ListBuilder)
				vb := sb.ValueBuilder().(*array.Float32Builder)
				for s := 0; s < r.steps; s++ {
					sb.Append(true)
					for k := 0; k < 20; k++ {
						v := float32(-0.1 - 0.01*float32(s%7) - float32(k))
						if r.pos && s == 3 && k == 0 {
							v = 0.5
						}
						vb.Append(v)
					}
				}
			default:
				if f.Nullable {
					fb.AppendNull()
				} else {
					fb.AppendEmptyValue()
				}
			}
		}
	}
	return b.NewRecordBatch()
}

// produceTraces produces ids as whole traces, perMsg rows per message.
func produceTraces(t *testing.T, p *kafka.Producer, ids []string, perMsg int) {
	t.Helper()
	mem := memory.NewGoAllocator()
	var msgs []kafka.Message
	for lo := 0; lo < len(ids); lo += perMsg {
		var rows []row
		for _, id := range ids[lo:min(len(ids), lo+perMsg)] {
			rows = append(rows, row{id: id, steps: 8})
		}
		rec := traceBatch(t, mem, rows...)
		m, err := kafka.Messages(rec, nil, p.MaxMessageBytes())
		rec.Release()
		require.NoError(t, err)
		msgs = append(msgs, m...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, p.Produce(ctx, msgs...))
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// memSink is an idempotent sink by trace_id (the exactly-once effect): it
// counts every write but keeps one row per trace_id. It can be failed.
type memSink struct {
	mu       sync.Mutex
	writes   map[string]int
	status   map[string]string
	rows     int
	calls    int // successful writes
	down     atomic.Bool
	failures atomic.Int64
	onWrite  func(rows int) // after a successful write, with the rows so far
}

func newMemSink() *memSink {
	return &memSink{writes: map[string]int{}, status: map[string]string{}}
}

func (s *memSink) Write(_ context.Context, rec arrow.RecordBatch) error {
	if s.down.Load() {
		s.failures.Add(1)
		return errors.New("sink is down (test)")
	}
	ids := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
	st, _ := statusColumn(rec)
	s.mu.Lock()
	for i := 0; i < ids.Len(); i++ {
		s.writes[ids.Value(i)]++
		if st != nil {
			s.status[ids.Value(i)] = st.Value(i)
		}
	}
	s.rows += ids.Len()
	s.calls++
	rows := s.rows
	s.mu.Unlock()
	if s.onWrite != nil {
		s.onWrite(rows)
	}
	return nil
}

func (s *memSink) Close(context.Context) error { return nil }

func (s *memSink) unique() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes)
}

func (s *memSink) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes[id] > 0
}

// replica is one running stream processor.
type replica struct {
	r      *Runner
	src    *kafka.Source
	dlq    *kafka.Producer
	cancel context.CancelFunc
	done   chan error
}

func startReplica(t *testing.T, topic, group, deadTopic string, sink streams.Sink, mem memory.Allocator, tune func(*Config, *profile.Config)) *replica {
	t.Helper()
	cfg := DefaultConfig()
	cfg.CommitInterval = 20 * time.Millisecond
	cfg.DrainTimeout = 10 * time.Second
	cfg.SinkBackoffMin = 10 * time.Millisecond
	cfg.SinkBackoffMax = 100 * time.Millisecond
	cfg.SinkBatchRows = 0 // one write per message unless a test batches
	pcfg := profile.DefaultConfig()
	if tune != nil {
		tune(&cfg, &pcfg)
	}
	log := testLog(t)
	src, err := kafka.NewSource(conn(), sourceConfig(topic, group), log)
	require.NoError(t, err)
	dcfg := kafka.DefaultProducerConfig()
	dcfg.Topic = deadTopic
	dlq, err := kafka.NewProducer(conn(), dcfg, log)
	require.NoError(t, err)
	chain := func() ([]streams.Operator, error) {
		op, err := profile.New(pcfg, mem, log)
		return []streams.Operator{op}, err
	}
	r, err := New(cfg, Parts{Source: src, DeadLetter: dlq, Chain: chain, Sink: sink}, mem, log, prometheus.NewRegistry())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	rp := &replica{r: r, src: src, dlq: dlq, cancel: cancel, done: make(chan error, 1)}
	go func() { rp.done <- r.Run(ctx) }()
	return rp
}

// stop is SIGTERM: drain, commit, close.
func (rp *replica) stop(t *testing.T) {
	t.Helper()
	rp.cancel()
	require.NoError(t, <-rp.done)
	require.NoError(t, rp.src.Close())
	require.NoError(t, rp.dlq.Close())
}

// crash stops processing at once: no drain, no commit.
func (rp *replica) crash(t *testing.T) {
	t.Helper()
	rp.r.kill()
	require.NoError(t, <-rp.done)
	rp.cancel()
	require.NoError(t, rp.src.Close())
	require.NoError(t, rp.dlq.Close())
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // a guard against hanging, not a speed assertion
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// offsets returns, per partition, the group's committed offset and the end
// of the log.
func offsets(t *testing.T, topic, group string, partitions int) (committed, end map[int]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(testBroker.Addr()), Transport: tr}
	ps := make([]int, partitions)
	var reqs []kafkago.OffsetRequest
	for i := range ps {
		ps[i] = i
		reqs = append(reqs, kafkago.LastOffsetOf(i))
	}
	of, err := c.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
	require.NoError(t, err)
	committed = map[int]int64{}
	for _, p := range of.Topics[topic] {
		committed[p.Partition] = p.CommittedOffset
	}
	lo, err := c.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	require.NoError(t, err)
	end = map[int]int64{}
	for _, p := range lo.Topics[topic] {
		end[p.Partition] = p.LastOffset
	}
	return committed, end
}

// readAll reads n records of a one-partition topic from the start.
func readAll(t *testing.T, topic string, n int) []kafkago.Message {
	t.Helper()
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{testBroker.Addr()}, Topic: topic, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []kafkago.Message
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		require.NoError(t, err, "read %d of %d dead-letter records", len(out), n)
		out = append(out, m)
	}
	return out
}

func header(m kafkago.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func TestNoLoss(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("noloss")
	topics(t, 4, topic)
	topics(t, 1, dead)
	want := ids("nl", 500)
	produceTraces(t, producer(t, topic), want, 7)

	sink := newMemSink()
	rp := startReplica(t, topic, group, dead, sink, mem, func(c *Config, _ *profile.Config) {
		c.SinkBatchRows, c.SinkBatchWait = 100, 20*time.Millisecond
	})
	waitFor(t, "all traces at the sink", func() bool { return sink.unique() == len(want) })
	rp.stop(t)
	msgs := (len(want) + 6) / 7
	require.Less(t, sink.calls, msgs, "the output of several messages goes in one write")
	t.Logf("%d messages in %d sink writes", msgs, sink.calls)

	for _, id := range want {
		require.True(t, sink.has(id), "trace %s lost", id)
		require.Equal(t, schemas.StatusOK, sink.status[id])
	}
	require.Equal(t, len(want), sink.rows, "a clean run writes every trace once")
	st := rp.r.Stats()
	require.EqualValues(t, len(want), st.SinkRows)
	require.Empty(t, st.DeadLettered)
	committed, end := offsets(t, topic, group, 4)
	require.Equal(t, end, committed, "a drained replica commits everything it wrote")
}

// waitCommitted waits until the group's committed offsets reach the end of
// every partition: a sink can hold every trace (from another replica's
// uncommitted writes) before the replica that took over has committed.
func waitCommitted(t *testing.T, topic, group string, parts int) {
	t.Helper()
	waitFor(t, "the group's commits to reach the log end", func() bool {
		committed, end := offsets(t, topic, group, parts)
		return maps.Equal(committed, end)
	})
}

func TestCrashRestart(t *testing.T) {
	for _, batchRows := range []int{0, 100} {
		t.Run(fmt.Sprintf("sink_batch_rows=%d", batchRows), func(t *testing.T) { crashRestart(t, batchRows) })
	}
}

func crashRestart(t *testing.T, batchRows int) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("crash")
	topics(t, 4, topic)
	topics(t, 1, dead)
	want := ids("cr", 600)
	// Half the traces now, half after the crash: the crash is mid-stream
	// however fast the first replica runs.
	prod := producer(t, topic)
	produceTraces(t, prod, want[:300], 5)

	sink := newMemSink()
	slowSink := &hookSink{memSink: sink, before: func() { time.Sleep(2 * time.Millisecond) }}
	batch := func(c *Config, _ *profile.Config) {
		c.CommitInterval = 20 * time.Millisecond
		c.SinkBatchRows, c.SinkBatchWait = batchRows, 20*time.Millisecond
	}
	first := startReplica(t, topic, group, dead, slowSink, mem, batch)
	waitFor(t, "a third of the traces and a commit", func() bool {
		return sink.unique() >= len(want)/3 && first.r.Stats().Commits > 0
	})
	first.crash(t)
	produceTraces(t, prod, want[300:], 5)
	committedAtCrash, _ := offsets(t, topic, group, 4)
	before := sink.unique()
	require.Less(t, before, len(want), "the crash must happen mid-stream")
	var atCrash int64
	for _, c := range committedAtCrash {
		atCrash += max(c, 0)
	}
	require.Positive(t, atCrash, "some offsets were committed before the crash")

	second := startReplica(t, topic, group, dead, sink, mem, batch)
	// The sink may already hold every trace from the crashed replica's
	// uncommitted writes; wait for the second replica's commits too.
	waitFor(t, "all traces after the restart", func() bool { return sink.unique() == len(want) })
	waitCommitted(t, topic, group, 4)
	second.stop(t)

	for _, id := range want {
		require.True(t, sink.has(id), "trace %s lost across the crash", id)
	}
	t.Logf("crash after %d unique traces, %d messages committed; %d rows written for %d traces (redelivered: %d), idempotent sink holds %d",
		before, atCrash, sink.rows, len(want), sink.rows-len(want), sink.unique())
	committed, end := offsets(t, topic, group, 4)
	require.Equal(t, end, committed)
}

func TestRebalance(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("rebalance")
	topics(t, 4, topic)
	topics(t, 1, dead)
	p := producer(t, topic)
	want := ids("rb", 2400)
	produceTraces(t, p, want[:400], 4)

	sink := newMemSink()
	var mu sync.Mutex
	slow := true // keep the stream busy while the group changes
	slowSink := &hookSink{memSink: sink, before: func() {
		mu.Lock()
		s := slow
		mu.Unlock()
		if s {
			time.Sleep(2 * time.Millisecond)
		}
	}}
	batch := func(c *Config, _ *profile.Config) { c.SinkBatchRows, c.SinkBatchWait = 50, 20*time.Millisecond }
	a := startReplica(t, topic, group, dead, slowSink, mem, batch)
	waitFor(t, "a quarter through", func() bool { return sink.unique() >= 200 })
	b := startReplica(t, topic, group, dead, slowSink, mem, batch)
	// Joining the group takes a few heartbeats, in which a may drain
	// everything produced so far: keep traffic coming until b has some.
	next := 400
	for ; next < len(want) && b.r.Stats().Messages == 0; next += 20 {
		produceTraces(t, p, want[next:next+20], 4)
		time.Sleep(50 * time.Millisecond)
	}
	require.NotZero(t, b.r.Stats().Messages, "the second replica took no partitions while %d traces were produced", next)
	b.stop(t) // leaves mid-stream
	if next < len(want) {
		produceTraces(t, p, want[next:], 4)
	}
	mu.Lock()
	slow = false
	mu.Unlock()
	waitFor(t, "all traces", func() bool { return sink.unique() == len(want) })
	// Replica b's written but uncommitted rows may already complete the
	// sink; a must also re-consume and commit b's partitions.
	waitCommitted(t, topic, group, 4)
	a.stop(t)

	for _, id := range want {
		require.True(t, sink.has(id), "trace %s lost in the rebalance", id)
	}
	t.Logf("replica b handled %d messages; %d rows written for %d traces", b.r.Stats().Messages, sink.rows, len(want))
	committed, end := offsets(t, topic, group, 4)
	require.Equal(t, end, committed)
}

// hookSink runs before ahead of every write.
type hookSink struct {
	*memSink
	before func()
}

func (h *hookSink) Write(ctx context.Context, rec arrow.RecordBatch) error {
	h.before()
	return h.memSink.Write(ctx, rec)
}

func TestPoison(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("poison")
	topics(t, 1, topic, dead)
	p := producer(t, topic)
	gmem := memory.NewGoAllocator()

	good := traceBatch(t, gmem, row{id: "ok-1", steps: 5}, row{id: "nan-1", steps: 5, nan: true},
		row{id: "empty-1", steps: 0}, row{id: "long-1", steps: 150}, row{id: "ok-2", steps: 5})
	goodMsgs, err := kafka.Messages(good, nil, p.MaxMessageBytes())
	good.Release()
	require.NoError(t, err)
	require.Len(t, goodMsgs, 1)

	lb := array.NewRecordBuilder(gmem, schemas.Label)
	lb.Field(0).(*array.StringBuilder).Append("label-1")
	lb.Field(1).(*array.BooleanBuilder).Append(true)
	lb.Field(2).(*array.StringBuilder).Append("test")
	lb.Field(3).(*array.TimestampBuilder).Append(0)
	label := lb.NewRecordBatch()
	lb.Release()
	labelMsgs, err := kafka.Messages(label, nil, p.MaxMessageBytes())
	label.Release()
	require.NoError(t, err)

	corrupt := []byte("this is not an arrow ipc stream")
	truncated := append([]byte(nil), goodMsgs[0].Value[:len(goodMsgs[0].Value)/2]...)
	zero := traceBatch(t, gmem)
	zeroMsgs, err := ipc.Encode(zero, p.MaxMessageBytes())
	zero.Release()
	require.NoError(t, err)
	require.Len(t, zeroMsgs, 1)
	after := traceBatch(t, gmem, row{id: "ok-3", steps: 3})
	afterMsgs, err := kafka.Messages(after, nil, p.MaxMessageBytes())
	after.Release()
	require.NoError(t, err)

	msgs := []kafka.Message{
		{Value: corrupt},
		labelMsgs[0],
		goodMsgs[0],
		{Value: truncated, Key: []byte("trunc")},
		{Value: nil},
		{Value: zeroMsgs[0]},
		afterMsgs[0],
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Produce(ctx, msgs...))

	sink := newMemSink()
	rp := startReplica(t, topic, group, dead, sink, mem, func(_ *Config, pc *profile.Config) { pc.MaxSteps = 100 })
	waitFor(t, "the good traces after the poison", func() bool { return sink.has("ok-3") })
	rp.stop(t)
	// A batch of zero rows is valid and holds nothing: counted, not
	// dead-lettered (readAll below finds exactly the 7 poison records).
	require.Equal(t, 1.0, testutil.ToFloat64(rp.r.m.empty))
	// The good rows were written: the last write is now, within the test.
	require.InDelta(t, float64(time.Now().Unix()), testutil.ToFloat64(rp.r.m.lastWrite), 60)

	for _, id := range []string{"ok-1", "ok-2", "ok-3"} {
		require.Equal(t, schemas.StatusOK, sink.status[id])
	}
	// Bad rows reach the sink too, with their reason as status.
	require.Equal(t, schemas.ReasonNaNLogprob, sink.status["nan-1"])
	require.Equal(t, schemas.ReasonEmpty, sink.status["empty-1"])
	require.Equal(t, schemas.ReasonTooLong, sink.status["long-1"])

	recs := readAll(t, dead, 7)
	byReason := map[string][]kafkago.Message{}
	for _, m := range recs {
		byReason[header(m, HeaderReason)] = append(byReason[header(m, HeaderReason)], m)
		require.NotEmpty(t, header(m, HeaderSource))
	}
	require.Len(t, byReason[schemas.ReasonCorruptIPC], 3, "plain garbage, truncated and empty messages")
	var corruptValues []string
	for _, m := range byReason[schemas.ReasonCorruptIPC] {
		corruptValues = append(corruptValues, string(m.Value))
		require.NotEmpty(t, header(m, HeaderError))
	}
	require.ElementsMatch(t, []string{string(corrupt), string(truncated), ""}, corruptValues, "original bytes kept")
	require.Len(t, byReason[schemas.ReasonWrongSchema], 1)
	require.Equal(t, labelMsgs[0].Value, byReason[schemas.ReasonWrongSchema][0].Value)
	for reason, id := range map[string]string{schemas.ReasonNaNLogprob: "nan-1", schemas.ReasonEmpty: "empty-1", schemas.ReasonTooLong: "long-1"} {
		require.Len(t, byReason[reason], 1, reason)
		m := byReason[reason][0]
		require.Equal(t, id, string(m.Key))
		// Read with the plain Arrow reader: ipc.Decode's validation refuses
		// a batch whose lists are all empty (see the report to the lead).
		rd, err := arrowipc.NewReader(bytes.NewReader(m.Value), arrowipc.WithAllocator(gmem))
		require.NoError(t, err, "a dead-lettered row is its own Arrow IPC stream")
		require.True(t, rd.Next(), reason)
		rec := rd.RecordBatch()
		require.Equal(t, schemas.Tag(schemas.TraceName), schemas.NameOf(rec.Schema()))
		require.EqualValues(t, 1, rec.NumRows())
		require.Equal(t, id, rec.Column(0).(*array.String).Value(0))
		rd.Release()
	}
	committed, end := offsets(t, topic, group, 1)
	require.Equal(t, end, committed, "the stream went on past the poison")
}

func TestSinkOutage(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("outage")
	topics(t, 1, topic, dead)
	// One partition: message i holds traces out-%04d of rows [5i, 5i+5), so a
	// committed offset c says which traces must already be at the sink.
	want := ids("out", 400)
	produceTraces(t, producer(t, topic), want, 5)

	sink := newMemSink()
	var once sync.Once
	sink.onWrite = func(rows int) {
		if rows >= 100 {
			once.Do(func() { sink.down.Store(true) })
		}
	}
	rp := startReplica(t, topic, group, dead, sink, mem, nil)
	waitFor(t, "the sink to go down", func() bool { return sink.failures.Load() >= 5 })
	require.False(t, rp.r.Ready(), "not ready while the sink fails")
	uncommitted := func() float64 { return testutil.ToFloat64(rp.r.m.uncommit.WithLabelValues("0")) }
	require.GreaterOrEqual(t, uncommitted(), 1.0, "the message the sink refuses is fetched and not committed")
	// During the outage: nothing committed past what was written, and the
	// stream stops taking messages (bounded memory).
	for range 3 {
		committed, _ := offsets(t, topic, group, 1)
		if c := committed[0]; c > 0 {
			for _, id := range want[:5*c] {
				require.True(t, sink.has(id), "offset %d committed but trace %s not written", c, id)
			}
		}
		st := rp.r.Stats()
		require.LessOrEqual(t, st.Messages, int64(sink.unique()/5+1), "messages decoded past the failing one")
		time.Sleep(50 * time.Millisecond)
	}
	sink.down.Store(false)
	waitFor(t, "all traces after the sink came back", func() bool { return sink.unique() == len(want) })
	waitFor(t, "everything committed", func() bool { return uncommitted() == 0 })
	rp.stop(t)
	for _, id := range want {
		require.True(t, sink.has(id), "trace %s lost in the outage", id)
	}
	// A failed write is retried, not duplicated; redelivery after a group
	// rebalance (a slow, loaded machine can miss heartbeats) may duplicate.
	t.Logf("%d rows written for %d traces, %d failed writes", sink.rows, len(want), sink.failures.Load())
	committed, end := offsets(t, topic, group, 1)
	require.Equal(t, end, committed)
}

func TestChunks(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("chunks")
	topics(t, 2, topic)
	topics(t, 1, dead)
	p := producer(t, topic)
	gmem := memory.NewGoAllocator()
	// Chunks of one trace share a key, so a partition. c-2's final chunk
	// never comes.
	send := func(key string, rows ...row) {
		rec := traceBatch(t, gmem, rows...)
		msgs, err := kafka.Messages(rec, []byte(key), p.MaxMessageBytes())
		rec.Release()
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, p.Produce(ctx, msgs...))
	}
	send("c-1", row{id: "c-1", steps: 3, chunk: true, seq: 1})
	send("c-2", row{id: "w-0", steps: 2}, row{id: "c-2", steps: 3, chunk: true, seq: 0})
	send("c-1", row{id: "c-1", steps: 2, chunk: true, seq: 0}, row{id: "c-1", steps: 2, chunk: true, seq: 0})
	send("c-1", row{id: "c-1", steps: 4, chunk: true, seq: 2, final: true})
	send("w-1", row{id: "w-1", steps: 4})

	sink := newMemSink()
	rp := startReplica(t, topic, group, dead, sink, mem, func(c *Config, _ *profile.Config) {
		c.Assemble.Timeout = 300 * time.Millisecond
		c.ExpireInterval = 50 * time.Millisecond
	})
	waitFor(t, "c-1, w-0 and w-1", func() bool { return sink.has("c-1") && sink.has("w-0") && sink.has("w-1") })
	recs := readAll(t, dead, 1)
	rp.stop(t)

	require.Equal(t, 1, sink.writes["c-1"], "reassembled once despite the duplicate chunk")
	require.Equal(t, schemas.StatusOK, sink.status["c-1"])
	require.False(t, sink.has("c-2"))
	require.Equal(t, schemas.ReasonIncomplete, header(recs[0], HeaderReason))
	require.Contains(t, header(recs[0], HeaderError), "stream.assemble.timeout (300ms)")
	require.Equal(t, "c-2", string(recs[0].Key))
	// The dead letter names the message and row where c-2 began, as a
	// message's own rows do, so that a copy of it dead-lettered again after
	// a redelivery is known as one (entrowatch deadletters).
	var from string
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, kafka.ReadTopic(ctx, conn(), topic, false, func(m kafka.Message) error {
		if string(m.Key) == "c-2" {
			from = fmt.Sprintf("%s/%d@%d", topic, m.Partition, m.Offset)
		}
		return nil
	}))
	require.Equal(t, from, header(recs[0], HeaderSource))
	require.Equal(t, "1", header(recs[0], HeaderRow), "c-2 was the second row of its message")
	rec, err := ipc.Decode(recs[0].Value, memory.NewGoAllocator())
	require.NoError(t, err)
	require.EqualValues(t, 1, rec.NumRows())
	rec.Release()
	committed, end := offsets(t, topic, group, 2)
	require.Equal(t, end, committed, "after the timeout nothing is held back")
}

// TestChunksRestart: offsets are not committed past a chunk still held, so a
// stop while a trace is open loses no chunk; the next run finds it again.
// The last chunks of a trace completed before the stop come again without
// their first: a sink that can say it holds the trace (streams.Holder) keeps
// them out of the dead-letter topic; otherwise they are dead-lettered.
func TestChunksRestart(t *testing.T) {
	for _, tc := range []struct {
		name     string
		wrap     func(*memSink) streams.Sink
		dead     []string
		remnants int64
	}{
		{"plain sink", func(s *memSink) streams.Sink { return s }, []string{"open", "c"}, 0},
		{"holder", func(s *memSink) streams.Sink { return &holdingSink{memSink: s} }, []string{"open"}, 1},
		{"failing lookup", func(s *memSink) streams.Sink { return &holdingSink{memSink: s, fail: true} }, []string{"open", "c"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newMemSink()
			dead, remnants := chunksRestart(t, sink, tc.wrap(sink), sink.has)
			require.ElementsMatch(t, tc.dead, dead)
			require.Equal(t, tc.remnants, remnants)
			require.Equal(t, map[string]int{"a": 1, "b": 2, "c": 1}, sink.writes)
		})
	}
}

// TestChunksRestartClickHouse: the same with the ClickHouse sink on a real
// clickhouse-server, which answers the remnant lookup from the scored table.
func TestChunksRestartClickHouse(t *testing.T) {
	if _, err := clickhouse.FindServerBinary(); err != nil {
		t.Skip("clickhouse-server not installed (make deps installs it): " + err.Error())
	}
	ctx := context.Background()
	srv, err := clickhouse.StartLocal(ctx, clickhouse.LocalConfig{Dir: t.TempDir()}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	cfg := clickhouse.DefaultConfig()
	cfg.DSN = srv.DSN()
	cfg.Database = "remnants"
	_, err = clickhouse.Migrate(ctx, cfg, nil)
	require.NoError(t, err)
	sink := func() streams.Sink {
		s, err := clickhouse.NewSink(ctx, cfg, nil)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close(ctx) })
		return s
	}
	conn, err := clickhouse.Open(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	count := func(id string) uint64 {
		var n uint64
		require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM remnants.scored WHERE trace_id = ?", id).Scan(&n))
		return n
	}
	dead, remnants := chunksRestart(t, sink(), sink(), func(id string) bool { return count(id) > 0 })
	require.Equal(t, []string{"open"}, dead)
	require.EqualValues(t, 1, remnants)
	require.Equal(t, []uint64{1, 2, 1, 0}, []uint64{count("a"), count("b"), count("c"), count("open")})
}

// chunksRestart runs two replicas over the same chunks, the first writing to
// first, the second (after a stop) to second, and returns the keys of the
// dead-letter records and the remnants the second replica counted. has tells
// whether the sink holds a trace.
func chunksRestart(t *testing.T, first, second streams.Sink, has func(id string) bool) ([]string, int64) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("chunks-restart")
	topics(t, 1, topic, dead)
	p := producer(t, topic)
	produceRows(t, p,
		row{id: "a", steps: 2},                                   // offset 0: whole
		row{id: "c", steps: 2, chunk: true, seq: 0},              // 1
		row{id: "open", steps: 3, chunk: true, seq: 0},           // 2: never completed
		row{id: "c", steps: 2, chunk: true, seq: 1, final: true}, // 3: c complete
		row{id: "b", steps: 2, chunk: true, seq: 0},              // 4
		row{id: "b", steps: 2, chunk: true, seq: 1, final: true}, // 5: b complete
	)

	one := startReplica(t, topic, group, dead, first, mem, func(c *Config, _ *profile.Config) { c.Assemble.Timeout = time.Hour })
	waitFor(t, "a, b and c", func() bool { return has("a") && has("b") && has("c") })
	one.stop(t)
	committed, _ := offsets(t, topic, group, 1)
	require.EqualValues(t, 2, committed[0], "commit held before the open trace's chunk")

	// The restart sees offsets 2.. again. "open" times out as incomplete; b
	// is reassembled and written again (at least once; the sink is
	// idempotent). c's last chunk comes back without its first.
	two := startReplica(t, topic, group, dead, second, mem, func(c *Config, _ *profile.Config) {
		c.Assemble.Timeout = 100 * time.Millisecond
		c.ExpireInterval = 20 * time.Millisecond
	})
	waitFor(t, "everything committed", func() bool {
		c, end := offsets(t, topic, group, 1)
		return c[0] == end[0]
	})
	two.stop(t)
	_, end := offsets(t, dead, group, 1)
	recs := readAll(t, dead, int(end[0]))
	var keys []string
	for _, r := range recs {
		require.Equal(t, schemas.ReasonIncomplete, header(r, HeaderReason))
		keys = append(keys, string(r.Key))
	}
	return keys, two.r.Stats().Remnants
}

// produceRows produces each row as a message of its own, in order.
func produceRows(t *testing.T, p *kafka.Producer, rows ...row) {
	t.Helper()
	gmem := memory.NewGoAllocator()
	var msgs []kafka.Message
	for _, r := range rows {
		rec := traceBatch(t, gmem, r)
		m, err := kafka.Messages(rec, nil, p.MaxMessageBytes())
		rec.Release()
		require.NoError(t, err)
		msgs = append(msgs, m...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Produce(ctx, msgs...))
}

// holdingSink is a memSink that answers streams.Holder lookups, or fails them.
type holdingSink struct {
	*memSink
	fail bool
}

func (s *holdingSink) Held(_ context.Context, refs []streams.TraceRef) (map[string]bool, error) {
	if s.fail {
		return nil, errors.New("lookup fails (test)")
	}
	out := map[string]bool{}
	for _, r := range refs {
		if r.Model == "" || r.TS.IsZero() {
			return nil, fmt.Errorf("ref %+v without model or time", r)
		}
		if s.has(r.ID) {
			out[r.ID] = true
		}
	}
	return out, nil
}

func TestDrain(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("drain")
	topics(t, 1, topic, dead)
	want := ids("dr", 300)
	produceTraces(t, producer(t, topic), want, 5)

	sink := newMemSink()
	slowSink := &hookSink{memSink: sink, before: func() { time.Sleep(5 * time.Millisecond) }}
	rp := startReplica(t, topic, group, dead, slowSink, mem, func(c *Config, _ *profile.Config) { c.CommitInterval = time.Hour })
	waitFor(t, "a sixth of the traces", func() bool { return sink.unique() >= 50 })
	rp.stop(t) // SIGTERM: no commit has happened yet (hourly interval); the drain must commit
	st := rp.r.Stats()
	require.Less(t, sink.unique(), len(want), "stopped mid-stream")
	committed, _ := offsets(t, topic, group, 1)
	require.Equal(t, st.Messages, committed[0], "every message taken in was finished and committed")
	require.Equal(t, 5*int(committed[0]), sink.unique())
	for _, id := range want[:5*committed[0]] {
		require.True(t, sink.has(id))
	}
}

// blockSink accepts n writes, then blocks until the context ends.
type blockSink struct {
	*memSink
	n atomic.Int64
}

func (b *blockSink) Write(ctx context.Context, rec arrow.RecordBatch) error {
	if b.n.Add(-1) < 0 {
		<-ctx.Done()
		return ctx.Err()
	}
	return b.memSink.Write(ctx, rec)
}

func TestDrainTimeout(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("drain-timeout")
	topics(t, 1, topic, dead)
	want := ids("dt", 100)
	produceTraces(t, producer(t, topic), want, 5)

	sink := &blockSink{memSink: newMemSink()}
	sink.n.Store(4)
	rp := startReplica(t, topic, group, dead, sink, mem, func(c *Config, _ *profile.Config) {
		c.DrainTimeout = 200 * time.Millisecond
		c.CommitInterval = 0
	})
	waitFor(t, "the sink to block", func() bool { return sink.n.Load() < 0 })
	rp.cancel()
	err := <-rp.done
	require.ErrorIs(t, err, errDrainTimeout)
	require.NoError(t, rp.src.Close())
	require.NoError(t, rp.dlq.Close())
	committed, _ := offsets(t, topic, group, 1)
	require.EqualValues(t, 4, committed[0], "exactly the written messages are committed")
	require.Equal(t, 20, sink.unique())
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, DefaultConfig().Validate())
	for name, mut := range map[string]func(*Config){
		"workers":     func(c *Config) { c.Workers = 0 },
		"queue_depth": func(c *Config) { c.QueueDepth = 0 },
		"drain":       func(c *Config) { c.DrainTimeout = 0 },
		"backoff":     func(c *Config) { c.SinkBackoffMax = c.SinkBackoffMin / 2 },
		"assemble":    func(c *Config) { c.Assemble.MaxOpen = 0 },
	} {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			mut(&c)
			err := c.Validate()
			require.Error(t, err)
			require.True(t, strings.Contains(err.Error(), strings.Split(name, "_")[0]) || name == "drain" || name == "backoff", err.Error())
		})
	}
}

func TestConcatBatches(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	a := traceBatch(t, mem, row{id: "a", steps: 2}, row{id: "b", steps: 1})
	b := traceBatch(t, mem, row{id: "c", steps: 3})
	lb := array.NewRecordBuilder(mem, schemas.Label)
	lb.Field(0).(*array.StringBuilder).Append("other-schema")
	lb.Field(1).(*array.BooleanBuilder).Append(true)
	lb.Field(2).(*array.StringBuilder).Append("x")
	lb.Field(3).(*array.TimestampBuilder).Append(0)
	other := lb.NewRecordBatch()
	lb.Release()
	c := traceBatch(t, mem, row{id: "d", steps: 1})
	in := []arrow.RecordBatch{a, b, other, c}
	out, err := concatBatches(in, mem)
	require.NoError(t, err)
	for _, r := range in {
		r.Release() // the output must not depend on the inputs
	}
	require.Len(t, out, 3, "runs of equal schemas are joined")
	var got []string
	for _, r := range out {
		ids := r.Column(0).(*array.String)
		for i := 0; i < ids.Len(); i++ {
			got = append(got, ids.Value(i))
		}
		r.Release()
	}
	require.Equal(t, []string{"a", "b", "c", "other-schema", "d"}, got)
}

// TestPartitionsAdded: partitions added to the topic while the stream runs
// are picked up without a restart (source.watch_partitions).
func TestPartitionsAdded(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for kafka-go's 5s partition watch")
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("grow")
	topics(t, 1, topic, dead)
	p := producer(t, topic)
	first := ids("g1", 50)
	produceTraces(t, p, first, 5)
	sink := newMemSink()
	rp := startReplica(t, topic, group, dead, sink, mem, nil)
	waitFor(t, "the first traces", func() bool { return sink.unique() == len(first) })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(testBroker.Addr()), Transport: tr}
	res, err := c.CreatePartitions(ctx, &kafkago.CreatePartitionsRequest{Topics: []kafkago.TopicPartitionsConfig{{Name: topic, Count: 3}}})
	require.NoError(t, err)
	for _, e := range res.Errors {
		require.NoError(t, e)
	}
	// A fresh producer sees the new partitions and spreads over them.
	p2 := producer(t, topic)
	second := ids("g2", 150)
	produceTraces(t, p2, second, 5)
	waitFor(t, "the traces on the new partitions", func() bool { return sink.unique() == len(first)+len(second) })
	rp.stop(t)
	committed, end := offsets(t, topic, group, 3)
	require.Len(t, end, 3)
	for part, e := range end {
		require.Positive(t, e, "partition %d got records", part)
	}
	require.Equal(t, end, committed)
}

// TestDeadLetterDetail: a row the profile operator rejects is dead-lettered
// with the operator's detail in entrowatch.error, as `entrowatch score`
// reports it.
func TestDeadLetterDetail(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("detail")
	topics(t, 1, topic, dead)
	p := producer(t, topic)
	rec := traceBatch(t, memory.NewGoAllocator(), row{id: "ok-1", steps: 5}, row{id: "pos-1", steps: 5, pos: true},
		row{id: "ok-2", steps: 5}, row{id: "nan-1", steps: 5, nan: true})
	msgs, err := kafka.Messages(rec, nil, p.MaxMessageBytes())
	rec.Release()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Produce(ctx, msgs...))

	sink := newMemSink()
	rp := startReplica(t, topic, group, dead, sink, mem, nil)
	recs := readAll(t, dead, 2)
	rp.stop(t)

	got := map[string][3]string{}
	for _, m := range recs {
		got[string(m.Key)] = [3]string{header(m, HeaderReason), header(m, HeaderError), header(m, HeaderRow)}
	}
	require.Equal(t, map[string][3]string{
		"pos-1": {schemas.ReasonPositiveLogprob, "step 4, alternative 1: logprob 0.5 is positive", "1"},
		"nan-1": {schemas.ReasonNaNLogprob, "step 1: chosen-token logprob is NaN", "3"},
	}, got)
	require.Equal(t, schemas.StatusOK, sink.status["ok-2"])
}

// Statuses that operators after profile set without a detail get one from
// the row.
func TestDeadLetterStatusDetail(t *testing.T) {
	mem := memory.NewGoAllocator()
	b := array.NewRecordBuilder(mem, schemas.Scored)
	defer b.Release()
	for i, f := range schemas.Scored.Fields() {
		switch {
		case f.Name == schemas.ColModel:
			b.Field(i).(*array.StringBuilder).Append("llama-x")
		case f.Name == "nll_mean":
			b.Field(i).(*array.Float64Builder).Append(math.Inf(1))
		case f.Name == "margin_mean":
			b.Field(i).(*array.Float64Builder).Append(math.NaN())
		case f.Type.ID() == arrow.FLOAT64 && !f.Nullable:
			b.Field(i).(*array.Float64Builder).Append(0.5)
		case f.Nullable:
			b.Field(i).AppendNull()
		default:
			b.Field(i).AppendEmptyValue()
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	require.Contains(t, schemas.StatusDetail(rec, 0, schemas.ReasonUnknownModel), `no estimator for model "llama-x" and no fallback applies`)
	require.Equal(t, "nll_mean is +Inf, margin_mean is NaN", schemas.StatusDetail(rec, 0, schemas.ReasonBadFeature))
	require.Empty(t, schemas.StatusDetail(rec, 0, "something_else"))
}

// Dead-lettered records are logged with their trace id, at most
// rejectLogLimit per reason per minute; the next window says how many were
// left out.
func TestDeadLetterLogLimit(t *testing.T) {
	var buf bytes.Buffer
	l := newRejectLog(slog.New(slog.NewTextHandler(&buf, nil)))
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range rejectLogLimit + 5 {
		l.note(t0.Add(time.Duration(i)*time.Second), schemas.ReasonNaNLogprob, fmt.Sprintf("nan-%d", i), "step 1: chosen-token logprob is NaN", "traces/0@7")
	}
	l.note(t0.Add(30*time.Second), schemas.ReasonCorruptIPC, "", "not an arrow stream", "traces/0@8")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, rejectLogLimit+1, "the limit is per reason")
	require.Contains(t, lines[0], "level=WARN")
	require.Contains(t, lines[0], "reason=nan_logprob trace_id=nan-0")
	require.Contains(t, lines[0], `detail="step 1: chosen-token logprob is NaN" source=traces/0@7`)
	require.NotContains(t, lines[rejectLogLimit], "trace_id", "no trace id for a whole message")

	buf.Reset()
	l.note(t0.Add(rejectLogWindow), schemas.ReasonNaNLogprob, "nan-late", "d", "s")
	lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[0], "reason=nan_logprob count=5")
	require.Contains(t, lines[1], "trace_id=nan-late")
}

// TestChunksSentAgain: a late copy of a chunk of a trace already written is
// dropped and counted (Stats.DupChunks, entrowatch_stream_duplicate_chunks_total);
// the trace sent again from its first chunk is reassembled and written
// again (before, all of it was dropped as a redelivery, silently); a late
// copy of the first chunk alone starts it anew and, when the rest never
// comes, is dropped as a copy at the timeout, not dead-lettered, and no
// longer holds the commit point or the open_traces gauge.
func TestChunksSentAgain(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("chunks-again")
	topics(t, 1, topic, dead)
	p := producer(t, topic)
	produceRows(t, p,
		row{id: "c", steps: 2, chunk: true, seq: 0},
		row{id: "c", steps: 2, chunk: true, seq: 1, final: true}, // c written
		row{id: "c", steps: 2, chunk: true, seq: 1, final: true}, // a late copy: dropped
		row{id: "c", steps: 3, chunk: true, seq: 0},              // sent again
		row{id: "c", steps: 3, chunk: true, seq: 1, final: true}, // c written again
		row{id: "c", steps: 3, chunk: true, seq: 0},              // a producer's late copy of the first chunk
	)
	sink := newMemSink()
	r := startReplica(t, topic, group, dead, sink, mem, func(c *Config, _ *profile.Config) {
		c.Assemble.Timeout = 100 * time.Millisecond
		c.ExpireInterval = 20 * time.Millisecond
	})
	waitFor(t, "everything committed", func() bool {
		c, end := offsets(t, topic, group, 1)
		return c[0] == end[0]
	})
	r.stop(t)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	require.Equal(t, 2, sink.writes["c"])
	require.EqualValues(t, 2, r.r.Stats().DupChunks)
	require.Zero(t, testutil.ToFloat64(r.r.m.open), "open_traces")
	_, end := offsets(t, dead, group, 1)
	require.Zero(t, end[0], "nothing dead-lettered")
}
