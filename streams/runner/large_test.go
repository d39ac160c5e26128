package runner

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
)

// featureSink keeps, per trace_id, the status, n_tokens and the bits of
// every profile feature and baseline of the scored rows it is given.
type featureSink struct {
	mu   sync.Mutex
	rows map[string][]uint64
	st   map[string]string
}

func newFeatureSink() *featureSink {
	return &featureSink{rows: map[string][]uint64{}, st: map[string]string{}}
}

func (s *featureSink) Write(_ context.Context, rec arrow.RecordBatch) error {
	got, st := featureBits(rec)
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, v := range got {
		s.rows[id] = v
		s.st[id] = st[id]
	}
	return nil
}

func (s *featureSink) Close(context.Context) error { return nil }

func (s *featureSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rows)
}

func featureBits(rec arrow.RecordBatch) (map[string][]uint64, map[string]string) {
	sc := rec.Schema()
	ids := rec.Column(schemas.MustIndex(sc, schemas.ColTraceID)).(*array.String)
	st := rec.Column(schemas.MustIndex(sc, schemas.ColStatus)).(*array.String)
	n := rec.Column(schemas.MustIndex(sc, schemas.ColNTokens)).(*array.Int32)
	rows, status := map[string][]uint64{}, map[string]string{}
	for i := range ids.Len() {
		v := []uint64{uint64(n.Value(i))}
		for _, f := range append(append([]string{}, schemas.ProfileFeatures...), schemas.Baselines...) {
			v = append(v, math.Float64bits(rec.Column(schemas.MustIndex(sc, f)).(*array.Float64).Value(i)))
		}
		rows[ids.Value(i)] = v
		status[ids.Value(i)] = st.Value(i)
	}
	return rows, status
}

// synthRows is a trace.v1 batch of n synthetic traces of steps steps each,
// named synthetic-<seed>-<index>.
func synthRows(mem memory.Allocator, n, steps int, seed uint64) arrow.RecordBatch {
	return profile.Synthetic(mem, profile.SynthConfig{Traces: n, Steps: steps, K: 20, Seed: seed, Model: "synthetic-model"})
}

// TestLargeResponsesChunked: whole responses too large for one message (12k
// and 30k steps, among small ones in one batch) are produced as chunk rows
// keyed by trace_id, travel through the broker (4 partitions), are joined by
// the stream and score exactly as the unsplit rows do; one over max_steps is
// dead-lettered as too_long. Nothing is left uncommitted.
func TestLargeResponsesChunked(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("large")
	topics(t, 4, topic)
	topics(t, 1, dead)
	gmem := memory.NewGoAllocator()

	parts := []arrow.RecordBatch{
		synthRows(gmem, 300, 40, 1),
		synthRows(gmem, 1, 12000, 2),
		synthRows(gmem, 200, 60, 3),
		synthRows(gmem, 1, 30000, 4),
		synthRows(gmem, 1, 40000, 5), // over stream.assemble.max_steps
		synthRows(gmem, 100, 20, 6),
	}
	in, err := concatBatches(parts, gmem)
	require.NoError(t, err)
	for _, p := range parts {
		p.Release()
	}
	require.Len(t, in, 1)
	rec := in[0]
	defer rec.Release()

	// What the profile operator gives the unsplit rows.
	op, err := profile.New(profile.DefaultConfig(), gmem, nil)
	require.NoError(t, err)
	scored, err := op.Process(context.Background(), rec)
	require.NoError(t, err)
	want, wantStatus := featureBits(scored[0])
	scored[0].Release()
	require.Equal(t, schemas.ReasonTooLong, wantStatus["synthetic-5-0"])
	delete(want, "synthetic-5-0")

	p := producer(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := p.ProduceBatch(ctx, rec, nil)
	require.NoError(t, err, "rows over the message limit are sent as chunks")
	require.Greater(t, n, 2+3+4, "the three large rows alone take 9 messages or more")

	sink := newFeatureSink()
	rp := startReplica(t, topic, group, dead, sink, mem, nil)
	waitFor(t, "every trace at the sink", func() bool { return sink.len() >= len(want) })
	recs := readAll(t, dead, 1)
	waitCommitted(t, topic, group, 4)
	rp.stop(t)
	st := rp.r.Stats()
	require.EqualValues(t, 1, st.RestChunks, "the too_long trace's last chunk, after it was dead-lettered")
	require.Zero(t, st.DupChunks, "no chunk was sent twice")

	sink.mu.Lock()
	defer sink.mu.Unlock()
	require.Len(t, sink.rows, len(want))
	for id, w := range want {
		require.Equal(t, schemas.StatusOK, sink.st[id], id)
		require.Equal(t, w, sink.rows[id], "trace %s: profile of the joined chunks differs from the unsplit row's", id)
	}
	require.EqualValues(t, 12000, sink.rows["synthetic-2-0"][0])
	require.EqualValues(t, 30000, sink.rows["synthetic-4-0"][0])

	m := recs[0]
	require.Equal(t, schemas.ReasonTooLong, header(m, HeaderReason))
	require.Equal(t, "synthetic-5-0", string(m.Key))
	require.Contains(t, header(m, HeaderError), "stream.assemble.max_steps (32768)")
	require.Empty(t, m.Value, "the joined trace is over the dead-letter limit")
	require.NotEmpty(t, header(m, HeaderOriginalBytes))
}
