package runner

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// TestRetentionLossEndToEnd: the embedded broker's retention deletes what a
// stopped group has not read; the replica that starts again is moved to the
// log start by its consumer at once, and reports the loss (ERROR with the
// offsets, the counter) from its first fetch. Before, retention deleted
// acknowledged responses without a trace, and a loss seen only by the lag
// refresh was missed when the consumer skipped ahead first.
func TestRetentionLossEndToEnd(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("retention")
	bcfg := broker.DefaultConfig()
	bcfg.Listen = "127.0.0.1:0"
	bcfg.MinSessionTimeout = 100 * time.Millisecond
	bcfg.Partitions = 1
	bcfg.Topics = []string{topic, dead}
	bcfg.RetentionBytes = 1 << 20 // segments of 1 MiB, the smallest
	bcfg.RetentionCheck = 50 * time.Millisecond
	b, err := broker.Start(bcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer b.Close(context.Background())
	c := kafka.DefaultConfig()
	c.Brokers = []string{b.Addr()}
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = topic
	pcfg.BatchTimeout = time.Millisecond
	p, err := kafka.NewProducer(c, pcfg, nil)
	require.NoError(t, err)
	defer p.Close()
	ctx := context.Background()
	sink := newMemSink()

	// The group reads the first trace and commits, then stops.
	// The replica's own source answers Watermarks, as entrowatch run wires
	// it; nothing is assigned until it is set.
	start := func() (*replica, *logBuf, *kafka.Source) {
		var src atomic.Pointer[kafka.Source]
		wm := func(ctx context.Context) (map[int]kafka.PartitionOffsets, error) {
			if s := src.Load(); s != nil {
				return s.Watermarks(ctx)
			}
			return map[int]kafka.PartitionOffsets{}, nil
		}
		rp, logs := startOps(t, c, topic, group, dead, sink, mem, wm, nil)
		src.Store(rp.src)
		return rp, logs, rp.src
	}
	first := ids("ret-a", 1)
	produceRows(t, p, row{id: first[0], steps: 50})
	rp, _, src := start()
	waitFor(t, "the first trace", func() bool { return sink.has(first[0]) })
	waitFor(t, "its commit", func() bool {
		o, err := src.Watermarks(ctx)
		return err == nil && o[0].Committed == 1
	})
	rp.stop(t)

	// 40 messages of about 170 KB while it is stopped: retention keeps 1 to
	// 2 MiB, so the oldest unread ones go.
	later := ids("ret-b", 40)
	for _, id := range later {
		produceRows(t, p, row{id: id, steps: 2000})
	}
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(b.Addr()), Transport: tr}
	var logStart int64
	waitFor(t, "retention to delete unread messages", func() bool {
		res, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: {kafkago.FirstOffsetOf(0)}}})
		if err != nil || len(res.Topics[topic]) == 0 {
			return false
		}
		logStart = res.Topics[topic][0].FirstOffset
		return logStart > 1
	})

	rp, logs, _ := start()
	defer rp.stop(t)
	waitFor(t, "the traces retention kept", func() bool { return sink.has(later[len(later)-1]) })
	lost := func() float64 { return testutil.ToFloat64(rp.r.m.lost.WithLabelValues("0")) }
	require.GreaterOrEqual(t, lost(), float64(logStart-1), "offsets 1 to %d were never read", logStart-1)
	require.Contains(t, logs.String(), "retention deleted messages the group had not read")
	require.Contains(t, logs.String(), "from_offset=1 ")
	require.False(t, sink.has(later[0]), "the first of them was deleted")
}
