package runner

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// logBuf collects a runner's log lines.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startOps starts a replica like startReplica, with parts.Watermarks = wm,
// logging to the returned buffer, on the Kafka at c.
func startOps(t *testing.T, c kafka.Config, topic, group, dead string, sink streams.Sink, mem memory.Allocator,
	wm func(context.Context) (map[int]kafka.PartitionOffsets, error), tune func(*Config)) (*replica, *logBuf) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.CommitInterval = 20 * time.Millisecond
	cfg.DrainTimeout = 10 * time.Second
	cfg.SinkBackoffMin = 10 * time.Millisecond
	cfg.SinkBackoffMax = 50 * time.Millisecond
	cfg.SinkBatchRows = 0
	cfg.LagInterval = 20 * time.Millisecond
	if tune != nil {
		tune(&cfg)
	}
	buf := &logBuf{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sc := sourceConfig(topic, group)
	src, err := kafka.NewSource(c, sc, log)
	require.NoError(t, err)
	dcfg := kafka.DefaultProducerConfig()
	dcfg.Topic = dead
	dlq, err := kafka.NewProducer(c, dcfg, log)
	require.NoError(t, err)
	chain := func() ([]streams.Operator, error) {
		op, err := profile.New(profile.DefaultConfig(), mem, log)
		return []streams.Operator{op}, err
	}
	r, err := New(cfg, Parts{Source: src, DeadLetter: dlq, Chain: chain, Sink: sink, Watermarks: wm}, mem, log, prometheus.NewRegistry())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	rp := &replica{r: r, src: src, dlq: dlq, cancel: cancel, done: make(chan error, 1)}
	go func() { rp.done <- r.Run(ctx) }()
	return rp, buf
}

// highWatermarks asks the test broker for the end of partitions 0..n-1.
func highWatermarks(ctx context.Context, topic string, parts []int) (map[int]kafka.PartitionOffsets, error) {
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(testBroker.Addr()), Transport: tr}
	var reqs []kafkago.OffsetRequest
	for _, p := range parts {
		reqs = append(reqs, kafkago.LastOffsetOf(p))
	}
	res, err := c.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	out := map[int]kafka.PartitionOffsets{}
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, po.Error
		}
		out[po.Partition] = kafka.PartitionOffsets{High: po.LastOffset, Next: po.LastOffset} // Next: unknown here
	}
	return out, nil
}

// TestLagGrowsDuringSinkOutage: while a failing sink holds the fetching,
// the lag gauge follows the broker's high watermark (it stayed at its value
// of the last fetch, so "alert on lag growing" never fired); a partition
// no longer assigned loses its lag and uncommitted series; assignment
// changes and the drain are logged.
func TestLagGrowsDuringSinkOutage(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("lag")
	topics(t, 1, topic, dead)
	p := producer(t, topic)
	produceTraces(t, p, ids("lag-a", 20), 1)

	sink := newMemSink()
	sink.down.Store(true)
	var assigned atomic.Value
	assigned.Store([]int{0})
	wm := func(ctx context.Context) (map[int]kafka.PartitionOffsets, error) {
		return highWatermarks(ctx, topic, assigned.Load().([]int))
	}
	rp, logs := startOps(t, conn(), topic, group, dead, sink, mem, wm, nil)
	waitFor(t, "the sink to fail", func() bool { return sink.failures.Load() >= 3 })
	lag := func() float64 { return testutil.ToFloat64(rp.r.m.lag.WithLabelValues("0")) }
	waitFor(t, "the first lag refresh", func() bool { return strings.Contains(logs.String(), "partitions assigned") })
	before := lag()

	// 60 more messages arrive while the stream is held: the lag grows by them.
	produceTraces(t, p, ids("lag-b", 60), 1)
	waitFor(t, "lag to grow during the outage", func() bool { return lag() >= before+60 })
	require.Positive(t, testutil.ToFloat64(rp.r.m.uncommit.WithLabelValues("0")))

	// A rebalance takes partition 0 away: its series go.
	assigned.Store([]int{})
	waitFor(t, "the revoked partition's series to be deleted", func() bool {
		return testutil.CollectAndCount(rp.r.m.lag) == 0 && testutil.CollectAndCount(rp.r.m.uncommit) == 0
	})
	require.Contains(t, logs.String(), "partitions revoked")

	assigned.Store([]int{0})
	sink.down.Store(false)
	waitFor(t, "every trace after the outage", func() bool { return sink.unique() == 80 })
	waitFor(t, "lag back to 0", func() bool { return testutil.CollectAndCount(rp.r.m.lag) == 1 && lag() == 0 })
	rp.stop(t)
	require.Contains(t, logs.String(), "consuming partition")
	require.Contains(t, logs.String(), "draining")
}

// TestNotReadyWhileFetchFails: with Kafka unreachable the runner said ready
// for a whole run while every fetch failed.
func TestNotReadyWhileFetchFails(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("unreachable")
	c := kafka.DefaultConfig()
	c.Brokers = []string{"127.0.0.1:1"}
	c.DialTimeout = 100 * time.Millisecond
	rp, logs := startOps(t, c, topic, group, dead, newMemSink(), mem, nil, nil)
	waitFor(t, "fetching to fail persistently", func() bool { return strings.Contains(logs.String(), "fetching keeps failing") })
	require.False(t, rp.r.Ready(), "not ready while fetching fails")
	require.True(t, rp.r.ready.Load(), "the stream itself runs: only the fetches fail")
	rp.cancel()
	require.NoError(t, <-rp.done)
	require.NoError(t, rp.src.Close())
	require.NoError(t, rp.dlq.Close())
}

func TestFetchHealth(t *testing.T) {
	f := fetchHealth{failWindow: time.Minute}
	now := time.Now()
	for range fetchFailStreak - 1 {
		f.failed(now)
	}
	require.False(t, f.failing(now), "a transient error is not persistent")
	f.failed(now)
	require.True(t, f.failing(now))
	require.False(t, f.failing(now.Add(2*time.Minute)), "no error for a window: an idle topic, not a failing one")
	require.Equal(t, fetchFailStreak, f.ok())
	require.False(t, f.failing(now))
}
