package runner

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// gateSink holds every write until gate is closed, as a hung ClickHouse
// does until its read timeout.
type gateSink struct {
	*memSink
	gate chan struct{}
}

func (g *gateSink) Write(ctx context.Context, rec arrow.RecordBatch) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.memSink.Write(ctx, rec)
}

// TestSinkStall: a sink write that waits longer than sink_stall_after makes
// the stream not ready, with a warning, until the sink answers. A frozen
// ClickHouse said ready, logged nothing and moved no error metric for the
// minute its read timeout took.
func TestSinkStall(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("stall")
	topics(t, 1, topic, dead)
	sink := &gateSink{memSink: newMemSink(), gate: make(chan struct{})}
	rp, logs := startOps(t, conn(), topic, group, dead, sink, mem, nil, func(c *Config) { c.SinkStallAfter = 300 * time.Millisecond })
	defer rp.stop(t)

	require.NoError(t, producer(t, topic).Produce(context.Background(), goodMessages(t, row{id: "held-1", steps: 5})...))
	waitFor(t, "not ready while the write waits", func() bool { return !rp.r.Ready() })
	require.Contains(t, rp.r.Unready(), "a sink write has waited")
	require.NotContains(t, rp.r.Unready(), "fail", "nothing failed: the sink does not answer")
	require.Greater(t, rp.r.writeWait(time.Now()), 300*time.Millisecond)
	waitFor(t, "the warning", func() bool { return strings.Contains(logs.String(), "sink write waiting") })

	close(sink.gate)
	waitFor(t, "the held trace written", func() bool { return sink.has("held-1") })
	waitFor(t, "ready again", func() bool { return rp.r.Ready() })
	require.Zero(t, rp.r.writeWait(time.Now()))
	waitFor(t, "the all-clear", func() bool { return strings.Contains(logs.String(), "sink write answered after a stall") })
}

// TestRetentionLoss: messages retention deleted before the group read them
// are logged with their offsets and counted, once; they were lost without
// a trace (a sink outage longer than the retention).
func TestRetentionLoss(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry(), "traces")
	require.NoError(t, err)
	logs := &logBuf{}
	r := &Runner{m: m, log: slog.New(slog.NewTextHandler(logs, nil))}
	lost := func(p string) float64 { return testutil.ToFloat64(m.lost.WithLabelValues(p)) }

	// Not fetched since assigned, committed at 100, the log starts at 160.
	r.checkRetention("traces", 0, kafka.PartitionOffsets{High: 500, Next: 160, Start: 160, Committed: 100}, 160, false)
	require.EqualValues(t, 60, lost("0"))
	require.Contains(t, logs.String(), "retention deleted messages the group had not read")
	require.Contains(t, logs.String(), "from_offset=100 to_offset=159 messages=60")
	// The next refresh, the same start: nothing new.
	r.checkRetention("traces", 0, kafka.PartitionOffsets{High: 500, Next: 160, Start: 160, Committed: 100}, 160, false)
	require.EqualValues(t, 60, lost("0"))
	// Fetching at 170 (held in memory, not lost) while the start moves to 200.
	r.checkRetention("traces", 0, kafka.PartitionOffsets{High: 600, Start: 200, Committed: 100}, 170, true)
	require.EqualValues(t, 90, lost("0"), "170..199 more")
	// A partition read past its log start loses nothing.
	r.checkRetention("traces", 1, kafka.PartitionOffsets{High: 600, Start: 200, Committed: 300}, 300, false)
	require.Zero(t, lost("1"))
	// No committed offset: the start is said once, not counted.
	r.checkRetention("traces", 2, kafka.PartitionOffsets{High: 600, Next: 50, Start: 50, Committed: -1}, 50, false)
	r.checkRetention("traces", 2, kafka.PartitionOffsets{High: 600, Next: 50, Start: 50, Committed: -1}, 50, false)
	require.Zero(t, lost("2"))
	require.Equal(t, 1, strings.Count(logs.String(), "the group has no committed offset for this partition"))
	// With start_offset latest a new group starts at the end by choice.
	r.checkRetention("traces", 3, kafka.PartitionOffsets{High: 600, Next: 600, Start: 50, Committed: -1, Latest: true}, 600, false)
	require.Equal(t, 1, strings.Count(logs.String(), "the group has no committed offset for this partition"))
	// The partition ends before the group's position (its log lost): said
	// once, at ERROR, not counted as retention's.
	for range 2 {
		r.checkRetention("traces", 4, kafka.PartitionOffsets{High: 2, Next: 300, Start: 0, Committed: 300}, 300, false)
	}
	require.Equal(t, 1, strings.Count(logs.String(), "the group's position is past the end of the partition"))
	require.Contains(t, logs.String(), "partition=4 position=300 end=2 log_start=0")
	require.Zero(t, lost("4"))
	// This replica fetched up to 11, then the log was lost and another
	// replica's start moved the group back to 0: not an ERROR telling to
	// reset by hand what is reset already (recheck9 F5).
	r.checkRetention("traces", 5, kafka.PartitionOffsets{High: 3, Start: 0, Committed: 0}, 11, true)
	require.Equal(t, 1, strings.Count(logs.String(), "the group's position is past the end of the partition"), "still only partition 4's")
	require.Contains(t, logs.String(), `level=INFO msg="this replica's position is past the end of the partition, but the group's committed offset was moved back into the log: the consumer resumes there" topic=traces partition=5 position=11 end=3 committed=0`)
	// Fetched past the end with the group's offset past it too: the loss.
	r.checkRetention("traces", 6, kafka.PartitionOffsets{High: 3, Start: 0, Committed: 11}, 11, true)
	require.Equal(t, 2, strings.Count(logs.String(), "the group's position is past the end of the partition"))
}

// TestSentAgainCutShortWithHolder: a response sent again whose new sending
// is cut short (more than its first chunk, then nothing within the timeout)
// is dead-lettered even though the sink holds the first sending; the
// remnant lookup took it for the rest of a trace written before a restart
// and dropped it, logging a restart that never happened.
func TestSentAgainCutShortWithHolder(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("again-holder")
	topics(t, 1, topic, dead)
	p := producer(t, topic)
	produceRows(t, p,
		row{id: "x", steps: 2, chunk: true, seq: 0},
		row{id: "x", steps: 2, chunk: true, seq: 1, final: true}, // x written
		row{id: "x", steps: 3, chunk: true, seq: 0},              // sent again...
		row{id: "x", steps: 3, chunk: true, seq: 1},              // ...and cut short before its final chunk
	)
	sink := &holdingSink{memSink: newMemSink()}
	r := startReplica(t, topic, group, dead, sink, mem, func(c *Config, _ *profile.Config) {
		c.Assemble.Timeout = 100 * time.Millisecond
		c.ExpireInterval = 20 * time.Millisecond
	})
	recs := readAll(t, dead, 1)
	r.stop(t)
	require.Equal(t, schemas.ReasonIncomplete, header(recs[0], HeaderReason))
	require.Equal(t, "x", string(recs[0].Key))
	require.Zero(t, r.r.Stats().Remnants)
	require.Equal(t, 1, sink.writes["x"])
}

// TestDeadLetterRowOfMessage: entrowatch.row is the row within the
// message, also for whole rows after a chunk row (the assembler passes whole
// rows on as slices cut around chunk rows, and each slice counted from 0:
// deadletters took the second of two such rows for a copy of the first).
func TestDeadLetterRowOfMessage(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("dl-rows")
	topics(t, 1, topic, dead)
	gmem := memory.NewGoAllocator()
	rec := traceBatch(t, gmem,
		row{id: "w", steps: 3, nan: true},
		row{id: "c", steps: 2, chunk: true, seq: 0},
		row{id: "v", steps: 3, nan: true})
	msgs, err := kafka.Messages(rec, nil, producer(t, topic).MaxMessageBytes())
	rec.Release()
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.NoError(t, producer(t, topic).Produce(context.Background(), msgs...))
	r := startReplica(t, topic, group, dead, newMemSink(), mem, nil)
	recs := readAll(t, dead, 2)
	r.stop(t)
	got := map[string]string{}
	for _, m := range recs {
		got[string(m.Key)] = header(m, HeaderRow)
	}
	require.Equal(t, map[string]string{"w": "0", "v": "2"}, got)
}

// gateHolder is a holdingSink whose lookups wait for gate.
type gateHolder struct {
	*holdingSink
	gate chan struct{}
}

func (s *gateHolder) Held(ctx context.Context, refs []streams.TraceRef) (map[string]bool, error) {
	<-s.gate
	return s.holdingSink.Held(ctx, refs)
}

// TestSinkStallInLookup: a sink that hangs in the lookup of a restart's
// remnants (under the lock every write waits on) makes /readyz 503 as a
// hung write does; it stayed ready for as long as the lookup hung.
func TestSinkStallInLookup(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("stall-lookup")
	topics(t, 1, topic, dead)
	sink := &gateHolder{holdingSink: &holdingSink{memSink: newMemSink()}, gate: make(chan struct{})}
	rp, logs := startOps(t, conn(), topic, group, dead, sink, mem, nil, func(c *Config) {
		c.Assemble.Timeout = 100 * time.Millisecond
		c.ExpireInterval = 20 * time.Millisecond
		c.SinkStallAfter = 300 * time.Millisecond
	})
	defer rp.stop(t)
	var once sync.Once
	open := func() { once.Do(func() { close(sink.gate) }) }
	defer open() // before the stop, whatever fails
	// The rest of a trace without its first chunk: a remnant candidate.
	produceRows(t, producer(t, topic), row{id: "rest", steps: 2, chunk: true, seq: 1, final: true})
	waitFor(t, "not ready while the lookup waits", func() bool { return !rp.r.Ready() })
	require.Contains(t, rp.r.Unready(), "a sink write has waited")
	waitFor(t, "the warning", func() bool { return strings.Contains(logs.String(), "sink write waiting") })
	open()
	waitFor(t, "ready again", func() bool { return rp.r.Ready() })
}
