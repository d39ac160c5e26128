package runner

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
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
