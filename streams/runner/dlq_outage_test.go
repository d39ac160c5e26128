package runner

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// TestDeadLetterOutage: while the dead-letter topic cannot be produced to
// (here: it does not exist on a cluster that does not create topics), the
// partition waits and retries, each failure is counted in
// entrowatch_stream_dead_letter_errors_total and /readyz says not ready;
// once the topic exists the record is delivered, nothing is lost and the
// stream is ready again. Before, an outage of the dead-letter topic showed
// only as warnings in the log while /readyz said ready.
func TestDeadLetterOutage(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("dlqdown")
	topics(t, 1, topic)
	dlc, err := kfake.NewCluster(kfake.NumBrokers(1)) // no automatic topic creation
	require.NoError(t, err)
	defer dlc.Close()

	cfg := DefaultConfig()
	cfg.CommitInterval = 20 * time.Millisecond
	cfg.SinkBackoffMin = 10 * time.Millisecond
	cfg.SinkBackoffMax = 50 * time.Millisecond
	cfg.SinkBatchRows = 0
	buf := &logBuf{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	src, err := kafka.NewSource(conn(), sourceConfig(topic, group), log)
	require.NoError(t, err)
	dconn := kafka.DefaultConfig()
	dconn.Brokers = dlc.ListenAddrs()
	dcfg := kafka.DefaultProducerConfig()
	dcfg.Topic = dead
	dlq, err := kafka.NewProducer(dconn, dcfg, log)
	require.NoError(t, err)
	chain := func() ([]streams.Operator, error) {
		op, err := profile.New(profile.DefaultConfig(), mem, log)
		return []streams.Operator{op}, err
	}
	sink := newMemSink()
	r, err := New(cfg, Parts{Source: src, DeadLetter: dlq, Chain: chain, Sink: sink}, mem, log, prometheus.NewRegistry())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	p := producer(t, topic)
	require.NoError(t, p.Produce(ctx, goodMessages(t, row{id: "ok-1", steps: 5})...))
	waitFor(t, "the first trace", func() bool { return sink.has("ok-1") })
	require.True(t, r.Ready(), "ready before the outage")

	require.NoError(t, p.Produce(ctx, goodMessages(t, row{id: "nan-1", steps: 5, nan: true}, row{id: "ok-2", steps: 5})...))
	errs := func() float64 { return testutil.ToFloat64(r.m.deadErrs) }
	waitFor(t, "dead-letter produce failures", func() bool { return errs() >= 3 })
	require.False(t, r.Ready(), "not ready while dead-lettering fails")
	// /readyz says which topic: it said "the sink is failing or fetching
	// from Kafka keeps failing", and the on-call checked ClickHouse.
	require.Contains(t, r.Unready(), "producing to the dead-letter topic "+dead+" fails")
	require.NotContains(t, r.Unready(), "sink")
	require.NotContains(t, r.Unready(), "fetching")
	require.Contains(t, buf.String(), "dead-letter produce failed, retrying")
	committed, _ := offsets(t, topic, group, 1)
	require.Less(t, committed[0], int64(2), "the message being dead-lettered is not committed")

	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	require.NoError(t, kafka.EnsureTopics(dctx, dconn, 1, dead))
	waitFor(t, "the dead-letter record after the outage", func() bool {
		return testutil.ToFloat64(r.m.dead.WithLabelValues("nan_logprob")) == 1
	})
	waitFor(t, "the trace after the dead-lettered one", func() bool { return sink.has("ok-2") })
	require.True(t, r.Ready(), "ready again once dead-lettering succeeds")
	require.Empty(t, r.Unready())
	require.Contains(t, buf.String(), "dead-letter produce recovered")
	after := errs()
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, src.Close())
	require.NoError(t, dlq.Close())
	require.Equal(t, after, errs(), "no failure after the recovery")
	require.False(t, strings.Contains(buf.String(), "level=ERROR"), buf.String())
}
