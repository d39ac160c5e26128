package kafka

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ipc"
)

// traceRow describes one trace.v1 row of traceRows: steps steps of k
// alternatives, values from seed.
type traceRow struct {
	id          string
	steps, k    int
	seed        int
	seq         int32
	final       bool
	prompt      string
	nullAt      int // 1-based step whose chosen logprob is null; 0 = none
	fewerTopAlt bool
}

// traceRows builds a trace.v1 batch (float32, or float64 with f64) with
// every per-row column set, so that a test sees each of them survive.
func traceRows(t testing.TB, mem memory.Allocator, f64 bool, rows ...traceRow) arrow.RecordBatch {
	t.Helper()
	s := schemas.Trace
	if f64 {
		s = schemas.Trace64
	}
	b := array.NewRecordBuilder(mem, s)
	defer b.Release()
	col := func(name string) array.Builder { return b.Field(schemas.MustIndex(s, name)) }
	appendF := func(vb array.Builder, v float64) {
		if f64 {
			vb.(*array.Float64Builder).Append(v)
		} else {
			vb.(*array.Float32Builder).Append(float32(v))
		}
	}
	for _, r := range rows {
		col(schemas.ColTraceID).(*array.StringBuilder).Append(r.id)
		col(schemas.ColTS).(*array.TimestampBuilder).Append(arrow.Timestamp(1_760_000_000_000 + int64(r.seed)))
		col(schemas.ColModel).(*array.StringBuilder).Append("m-" + r.id)
		col(schemas.ColProvider).(*array.StringBuilder).Append("vllm")
		col(schemas.ColLogprobsMode).(*array.StringBuilder).Append("raw_logprobs")
		col(schemas.ColTemperature).(*array.Float32Builder).Append(0.7)
		col(schemas.ColTopP).(*array.Float32Builder).Append(0.95)
		col(schemas.ColDomain).(*array.StringBuilder).Append("dom-" + r.id)
		if r.prompt == "" {
			col(schemas.ColPrompt).AppendNull()
		} else {
			col(schemas.ColPrompt).(*array.StringBuilder).Append(r.prompt)
		}
		mb := col(schemas.ColAttributes).(*array.MapBuilder)
		mb.Append(true)
		mb.KeyBuilder().(*array.StringBuilder).AppendValues([]string{"tenant", "route"}, nil)
		mb.ItemBuilder().(*array.StringBuilder).AppendValues([]string{"t-" + r.id, "/v1"}, nil)
		tok := col(schemas.ColTokenLogprob).(*array.ListBuilder)
		top := col(schemas.ColTopLogprobs).(*array.ListBuilder)
		inner := top.ValueBuilder().(*array.ListBuilder)
		tok.Append(true)
		top.Append(true)
		for st := range r.steps {
			x := float64((st*7919+r.seed*104729)%1000) / 1000
			if r.nullAt == st+1 {
				tok.ValueBuilder().AppendNull()
			} else {
				appendF(tok.ValueBuilder(), -x-0.01)
			}
			inner.Append(true)
			k := r.k
			if r.fewerTopAlt && st%3 == 0 {
				k = 1 + st%r.k // alternatives per step vary
			}
			for a := range k {
				appendF(inner.ValueBuilder(), -x-0.01-float64(a)*0.37)
			}
		}
		col(schemas.ColFinishReason).(*array.StringBuilder).Append("length")
		col(schemas.ColSeq).(*array.Int32Builder).Append(r.seq)
		col(schemas.ColFinal).(*array.BooleanBuilder).Append(r.final)
		col(schemas.ColCorrect).(*array.BooleanBuilder).Append(r.seed%2 == 0)
	}
	return b.NewRecordBatch()
}

// profileBits scores rec (whole responses) and returns, per trace_id, the
// status, n_tokens and the bits of every feature and baseline.
func profileBits(t testing.TB, mem memory.Allocator, rec arrow.RecordBatch) map[string][]uint64 {
	t.Helper()
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	require.NoError(t, err)
	outs, err := op.Process(context.Background(), rec)
	require.NoError(t, err)
	got := map[string][]uint64{}
	for _, out := range outs {
		sc := out.Schema()
		ids := out.Column(schemas.MustIndex(sc, schemas.ColTraceID)).(*array.String)
		st := out.Column(schemas.MustIndex(sc, schemas.ColStatus)).(*array.String)
		n := out.Column(schemas.MustIndex(sc, schemas.ColNTokens)).(*array.Int32)
		for i := range ids.Len() {
			require.Equal(t, schemas.StatusOK, st.Value(i), ids.Value(i))
			v := []uint64{uint64(n.Value(i))}
			for _, f := range append(append([]string{}, schemas.ProfileFeatures...), schemas.Baselines...) {
				v = append(v, math.Float64bits(out.Column(schemas.MustIndex(sc, f)).(*array.Float64).Value(i)))
			}
			got[ids.Value(i)] = v
		}
		out.Release()
	}
	return got
}

// TestMessagesChunksLargeRow: a whole response too large for one message
// goes out as chunk rows keyed by its trace_id, each under the limit, with
// the per-row columns of the response; the assembler joins them into a row
// that scores exactly as the response does. The rows around it go out as
// before, with the caller's key.
func TestMessagesChunksLargeRow(t *testing.T) {
	for _, tc := range []struct {
		name        string
		f64         bool
		steps, k    int
		fewerTopAlt bool
		limit       int
	}{
		{"12k steps x 20", false, 12000, 20, false, 1000000},
		{"30k steps x 21", false, 30000, 21, false, 1000000},
		{"uneven alternatives", false, 5000, 20, true, 100000},
		{"float64", true, 6000, 20, false, 1000000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			rec := traceRows(t, mem, tc.f64,
				traceRow{id: "small-1", steps: 30, k: 20, seed: 1, final: true},
				traceRow{id: "big", steps: tc.steps, k: tc.k, seed: 2, final: true, prompt: "why?", fewerTopAlt: tc.fewerTopAlt},
				traceRow{id: "small-2", steps: 40, k: 20, seed: 3, final: true})
			defer rec.Release()

			msgs, err := Messages(rec, []byte("caller-key"), tc.limit)
			require.NoError(t, err)
			asm, err := profile.NewAssembler(profile.DefaultAssemblerConfig(), mem)
			require.NoError(t, err)
			var chunks []int32
			var joined []arrow.RecordBatch
			for i, m := range msgs {
				require.LessOrEqual(t, len(m.Value), tc.limit, "message %d", i)
				require.Equal(t, "trace.v1", headerValue(m, HeaderSchema))
				dec, err := ipc.Decode(m.Value, mem)
				require.NoError(t, err)
				ids := dec.Column(schemas.MustIndex(dec.Schema(), schemas.ColTraceID)).(*array.String)
				if ids.Value(0) == "big" {
					require.EqualValues(t, 1, dec.NumRows(), "one chunk per message")
					require.Equal(t, "big", string(m.Key), "chunks are keyed by trace_id, so they share a partition")
					chunks = append(chunks, dec.Column(schemas.MustIndex(dec.Schema(), schemas.ColSeq)).(*array.Int32).Value(0))
					final := dec.Column(schemas.MustIndex(dec.Schema(), schemas.ColFinal)).(*array.Boolean).Value(0)
					require.Equal(t, i == len(msgs)-2, final, "final on the last chunk only")
				} else {
					require.Equal(t, "caller-key", string(m.Key))
				}
				out, err := asm.Add(dec, int64(i), time.Now())
				dec.Release()
				require.NoError(t, err)
				require.Empty(t, out.Rejected)
				joined = append(joined, out.Complete...)
			}
			require.Greater(t, len(chunks), 1)
			for j, seq := range chunks {
				require.EqualValues(t, j, seq, "seq 0..k-1 in order")
			}
			require.Zero(t, asm.Open())

			// The joined trace equals the response: per-row columns and lists.
			var big arrow.RecordBatch
			for _, j := range joined {
				if j.Column(0).(*array.String).Value(0) == "big" {
					big = j
				}
			}
			require.NotNil(t, big)
			orig := rec.NewSlice(1, 2)
			defer orig.Release()
			for i, f := range schemas.Trace.Fields() {
				if f.Name == schemas.ColTokenLogprob || f.Name == schemas.ColTopLogprobs {
					continue // compared through the profile below
				}
				require.Equal(t, orig.Column(schemas.MustIndex(orig.Schema(), f.Name)).String(), big.Column(i).String(), f.Name)
			}

			// Bit for bit the profile of the unsplit row: reassembly keeps
			// the chunks' precision (float64 chunks give a float64 trace;
			// they were narrowed to float32 once). The small rows went out
			// whole, as they were.
			want := profileBits(t, mem, rec)
			got := map[string][]uint64{}
			for _, j := range joined {
				for id, v := range profileBits(t, mem, j) {
					got[id] = v
				}
				j.Release()
			}
			require.Equal(t, want, got)
			require.EqualValues(t, tc.steps, got["big"][0])
		})
	}
}

func headerValue(m Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestMessagesRowsThatCannotBeSplit: a row over the limit that is not a
// whole trace.v1 response with lists it can cut exactly is left out with a
// *TooLargeError that names it; the other rows' messages still come back.
func TestMessagesRowsThatCannotBeSplit(t *testing.T) {
	const limit = 200000
	for _, tc := range []struct {
		name string
		row  traceRow
		why  string
	}{
		{"a chunk already", traceRow{id: "x", steps: 5000, k: 20, seq: 1}, "it is a chunk already (seq 1, final false)"},
		{"non-final first chunk", traceRow{id: "x", steps: 5000, k: 20}, "it is a chunk already (seq 0, final false)"},
		{"per-row columns fill a message", traceRow{id: "x", steps: 10, k: 20, final: true, prompt: strings.Repeat("p", limit)}, "its per-row columns alone"},
		{"null logprob", traceRow{id: "x", steps: 5000, k: 20, final: true, nullAt: 7}, "its logprob lists hold nulls"},
		{"no trace_id", traceRow{id: "", steps: 5000, k: 20, final: true}, "no trace_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			rec := traceRows(t, mem, false,
				traceRow{id: "a", steps: 30, k: 20, seed: 1, final: true}, tc.row,
				traceRow{id: "b", steps: 30, k: 20, seed: 3, final: true})
			defer rec.Release()
			msgs, err := Messages(rec, nil, limit)
			require.ErrorIs(t, err, ipc.ErrTooLarge)
			var tl *TooLargeError
			require.ErrorAs(t, err, &tl)
			require.Len(t, tl.Rows, 1)
			require.Equal(t, 1, tl.Rows[0].Row)
			require.Equal(t, tc.row.steps, tl.Rows[0].Steps)
			require.Greater(t, tl.Rows[0].Bytes, limit)
			require.Contains(t, tl.Rows[0].Why, tc.why)
			require.Contains(t, err.Error(), fmt.Sprintf("row 1 (%d steps) encodes to", tc.row.steps))
			var ids []string
			for _, m := range msgs {
				dec, err := ipc.Decode(m.Value, mem)
				require.NoError(t, err)
				col := dec.Column(0).(*array.String)
				for i := range col.Len() {
					ids = append(ids, col.Value(i))
				}
				dec.Release()
			}
			require.Equal(t, []string{"a", "b"}, ids, "the other rows are sent")
		})
	}

	// Another schema keeps the plain error.
	mem := memory.NewGoAllocator()
	lb := array.NewRecordBuilder(mem, schemas.Label)
	defer lb.Release()
	lb.Field(0).(*array.StringBuilder).Append(strings.Repeat("l", 2*limit))
	lb.Field(1).(*array.BooleanBuilder).Append(true)
	lb.Field(2).(*array.StringBuilder).Append("test")
	lb.Field(3).(*array.TimestampBuilder).Append(0)
	label := lb.NewRecordBatch()
	defer label.Release()
	msgs, err := Messages(label, nil, limit)
	require.ErrorIs(t, err, ipc.ErrTooLarge)
	require.ErrorContains(t, err, "not trace.v1")
	require.Empty(t, msgs)

	// ProduceBatch sends nothing of a batch with such a row (the broker
	// address is never dialled).
	conn := DefaultConfig()
	conn.Brokers = []string{"127.0.0.1:1"}
	p, err := NewProducer(conn, DefaultProducerConfig(), quiet)
	require.NoError(t, err)
	defer p.Close()
	rec := traceRows(t, mem, false, traceRow{id: "c", steps: 30, k: 20, final: true}, traceRow{id: "d", steps: 15000, k: 20, seq: 3})
	defer rec.Release()
	n, err := p.ProduceBatch(context.Background(), rec, nil)
	require.ErrorIs(t, err, ipc.ErrTooLarge)
	require.Zero(t, n)
}
