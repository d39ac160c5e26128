package runner

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/entrowatch/entrowatch/streams/kafka"
)

// TestLagFromSourceWatermarks: with the kafka Source's own Watermarks (as
// entrowatch run wires it), the lag gauge grows while a failing sink holds
// the fetching.
func TestLagFromSourceWatermarks(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("lagsrc")
	topics(t, 1, topic, dead)
	p := producer(t, topic)
	produceTraces(t, p, ids("lagsrc-a", 20), 1)

	sink := newMemSink()
	sink.down.Store(true)
	var src *kafka.Source
	ready := make(chan struct{})
	wm := func(ctx context.Context) (map[int]kafka.PartitionOffsets, error) {
		select {
		case <-ready:
			return src.Watermarks(ctx)
		default:
			return map[int]kafka.PartitionOffsets{}, nil
		}
	}
	rp, _ := startOps(t, conn(), topic, group, dead, sink, mem, wm, nil)
	src = rp.src
	close(ready)
	waitFor(t, "the sink to fail", func() bool { return sink.failures.Load() >= 3 })
	lag := func() float64 { return testutil.ToFloat64(rp.r.m.lag.WithLabelValues("0")) }
	produceTraces(t, p, ids("lagsrc-b", 60), 1)
	waitFor(t, "lag to reach the 60 messages produced during the outage", func() bool { return lag() >= 60 })
	sink.down.Store(false)
	waitFor(t, "every trace after the outage", func() bool { return sink.unique() == 80 })
	waitFor(t, "lag back to 0", func() bool { return lag() == 0 })
	rp.stop(t)
}

// TestLagOfUnfetchedPartition: a partition assigned but not fetched from
// yet (taken over while the stream is held by a failing sink, or every
// partition after a restart during an outage) has a lag series from the
// group's next offset; it had none, so the lag alerts saw less lag, or none.
func TestLagOfUnfetchedPartition(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("lagnofetch")
	topics(t, 1, topic, dead)
	rp, _ := startOps(t, conn(), topic, group, dead, newMemSink(), mem, nil, nil)
	rp.r.refreshLag(map[int]kafka.PartitionOffsets{5: {High: 100, Next: 40}})
	require.Equal(t, 60.0, testutil.ToFloat64(rp.r.m.lag.WithLabelValues("5")))
	rp.r.refreshLag(map[int]kafka.PartitionOffsets{})
	require.Zero(t, testutil.CollectAndCount(rp.r.m.lag), "revoked")
	rp.stop(t)
}
