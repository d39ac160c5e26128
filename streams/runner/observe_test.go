package runner

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// TestSeriesExistBeforeFirstUse: the labelled series of known values exist
// at 0 from the start. They were created on first use, so a burst between
// two scrapes (2,293 dead letters in the audit) never showed in rate().
func TestSeriesExistBeforeFirstUse(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry(), "traces")
	require.NoError(t, err)
	require.Equal(t, len(deadLetterReasons), testutil.CollectAndCount(m.dead))
	for _, r := range []string{schemas.ReasonCorruptIPC, schemas.ReasonUnknownModel, schemas.ReasonNaNLogprob} {
		require.Zero(t, testutil.ToFloat64(m.dead.WithLabelValues(r)))
	}
	require.Equal(t, 2, testutil.CollectAndCount(m.deadMsgs))
	require.Equal(t, len(fixedStages), testutil.CollectAndCount(m.stage))
	require.Len(t, deadLetterReasons, 11, "every reason of docs/streams.md, What happens to bad input")
}

// TestUndecodableMessages: messages that cannot be decoded are counted as
// messages (Stats.Messages skipped them: the progress log said messages=40
// while entrowatch_stream_messages_total said 10040), in their own series
// of messages (entrowatch_stream_dead_letter_messages_total, so that an
// alert compares them with messages, not with rows), and the time spent
// dead-lettering them is in stage_seconds{stage="dead_letter"} (58 of 60 s
// of message_seconds were in no stage).
func TestUndecodableMessages(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("garbage")
	topics(t, 1, topic, dead)
	p := producer(t, topic)
	const n = 40
	msgs := garbage(n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, p.Produce(ctx, msgs...))

	rp := startReplica(t, topic, group, dead, newMemSink(), mem, nil)
	deadMsgs := func() float64 { return testutil.ToFloat64(rp.r.m.deadMsgs.WithLabelValues(schemas.ReasonCorruptIPC)) }
	waitFor(t, "the garbage dead-lettered", func() bool { return deadMsgs() == n })
	// No message reached the chain: its operator's stage exists anyway.
	require.Equal(t, len(fixedStages)+1, testutil.CollectAndCount(rp.r.m.stage), "the stages and the operator profile")
	waitCommitted(t, topic, group, 1)
	rp.stop(t)

	st := rp.r.Stats()
	require.EqualValues(t, n, st.Messages, "undecodable messages are messages")
	require.EqualValues(t, n, testutil.ToFloat64(rp.r.m.messages))
	require.Zero(t, st.Rows)
	require.EqualValues(t, n, st.DeadLettered[schemas.ReasonCorruptIPC])
	require.EqualValues(t, n, testutil.ToFloat64(rp.r.m.dead.WithLabelValues(schemas.ReasonCorruptIPC)), "records, as before")
	require.Zero(t, testutil.ToFloat64(rp.r.m.deadMsgs.WithLabelValues(schemas.ReasonWrongSchema)))
	require.Zero(t, testutil.ToFloat64(rp.r.m.lastWrite), "dead letters are no write of scored rows")

	// Where the time went: dead-lettering is nearly all of it. The bound is
	// loose; what it catches is the dead letters timed in no stage.
	dl := testutil.ToFloat64(rp.r.m.stage.WithLabelValues("dead_letter"))
	require.Positive(t, dl)
	require.InDelta(t, st.Stages["dead_letter"].Seconds(), dl, 1e-6)
	reg := prometheus.NewRegistry()
	reg.MustRegister(rp.r.m.latency)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	h := mfs[0].GetMetric()[0].GetHistogram()
	require.EqualValues(t, n, h.GetSampleCount())
	total := h.GetSampleSum()
	staged := dl + testutil.ToFloat64(rp.r.m.stage.WithLabelValues("decode"))
	require.Greater(t, staged, total/2, "message_seconds %.3fs, of which in stages %.3fs", total, staged)
}

// BenchmarkUndecodable measures how fast one replica with the default
// stream settings (2 workers, sink batching) dead-letters messages that
// cannot be decoded, over 2 partitions of the embedded broker: each
// iteration produces 10,000 of them and waits until all are dead-lettered
// and committed. docs/streams.md quotes it.
func BenchmarkUndecodable(b *testing.B) {
	topic, dead, group := names("bench-garbage")
	ctx := context.Background()
	require.NoError(b, kafka.EnsureTopics(ctx, conn(), 2, topic, dead))
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = topic
	p, err := kafka.NewProducer(conn(), pcfg, testLog(nil))
	require.NoError(b, err)
	defer p.Close()
	const per = 10000
	msgs := garbage(per)

	cfg := DefaultConfig()
	src, err := kafka.NewSource(conn(), sourceConfig(topic, group), testLog(nil))
	require.NoError(b, err)
	dcfg := kafka.DefaultProducerConfig()
	dcfg.Topic = dead
	dlq, err := kafka.NewProducer(conn(), dcfg, testLog(nil))
	require.NoError(b, err)
	mem := memory.NewGoAllocator()
	chain := func() ([]streams.Operator, error) {
		op, err := profile.New(profile.DefaultConfig(), mem, testLog(nil))
		return []streams.Operator{op}, err
	}
	r, err := New(cfg, Parts{Source: src, DeadLetter: dlq, Chain: chain, Sink: newMemSink()}, mem, testLog(nil), prometheus.NewRegistry())
	require.NoError(b, err)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	deadLettered := func() int64 { return r.Stats().DeadLettered[schemas.ReasonCorruptIPC] }

	var want int64
	start := time.Now()
	for b.Loop() {
		require.NoError(b, p.Produce(ctx, msgs...))
		want += per
		for deadLettered() < want {
			time.Sleep(time.Millisecond)
		}
	}
	b.ReportMetric(float64(want)/time.Since(start).Seconds(), "msgs/s")
	cancel()
	require.NoError(b, <-done)
	require.NoError(b, src.Close())
	require.NoError(b, dlq.Close())
}

// TestUndecodableBatchAtLeastOnce: the dead letters of undecodable messages
// wait for a batch (they were produced one acknowledged request each: 330
// messages/s with 2 workers), and their offsets are committed only after
// the dead-letter topic acknowledged them. A crash while they wait commits
// nothing; the next replica dead-letters them again and commits.
func TestUndecodableBatchAtLeastOnce(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("garbage-batch")
	topics(t, 1, topic, dead)
	p := producer(t, topic)
	const n = 30
	msgs := garbage(n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, p.Produce(ctx, msgs...))

	// A batch that does not fill in time: the dead letters wait.
	rp := startReplica(t, topic, group, dead, newMemSink(), mem, func(c *Config, _ *profile.Config) {
		c.SinkBatchRows, c.SinkBatchWait = 1000, time.Hour
	})
	waitFor(t, "every message handled", func() bool { return rp.r.Stats().Messages == n })
	time.Sleep(100 * time.Millisecond) // several commit intervals
	require.Zero(t, rp.r.Stats().DeadLettered[schemas.ReasonCorruptIPC], "waiting for the batch")
	committed, _ := offsets(t, topic, group, 1)
	require.Less(t, committed[0], int64(1), "nothing committed before the dead letters are acknowledged")
	rp.crash(t)

	rp = startReplica(t, topic, group, dead, newMemSink(), mem, func(c *Config, _ *profile.Config) {
		c.SinkBatchRows, c.SinkBatchWait = 1000, 20*time.Millisecond
	})
	waitCommitted(t, topic, group, 1)
	rp.stop(t)
	require.EqualValues(t, n, rp.r.Stats().DeadLettered[schemas.ReasonCorruptIPC])
	recs := readAll(t, dead, n)
	for i, m := range recs {
		require.Equal(t, fmt.Sprintf("not arrow %d", i), string(m.Value), "in order, with the original bytes")
		require.Equal(t, schemas.ReasonCorruptIPC, header(m, HeaderReason))
	}
}

// garbage returns n messages that are not Arrow IPC ("not arrow <i>",
// keyed g<i>): each is dead-lettered whole, as corrupt_ipc.
func garbage(n int) []kafka.Message {
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: fmt.Appendf(nil, "g%d", i), Value: fmt.Appendf(nil, "not arrow %d", i)}
	}
	return msgs
}
