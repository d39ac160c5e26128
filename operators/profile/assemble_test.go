package profile

import (
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// chunkRow is one trace.v1 row for the assembler tests; steps[t] is the
// chosen logprob of step t, and every step carries two alternatives
// (steps[t], steps[t]-1).
type chunkRow struct {
	id    string
	seq   int32
	final bool
	steps []float32
	model string // "" = "m-" + id
}

func chunkBatch(t testing.TB, mem memory.Allocator, rows ...chunkRow) arrow.RecordBatch {
	t.Helper()
	b := array.NewRecordBuilder(mem, schemas.Trace)
	defer b.Release()
	for _, r := range rows {
		for i, f := range schemas.Trace.Fields() {
			fb := b.Field(i)
			switch f.Name {
			case schemas.ColTraceID:
				fb.(*array.StringBuilder).Append(r.id)
			case schemas.ColTS:
				fb.(*array.TimestampBuilder).Append(arrow.Timestamp(1000 + r.seq))
			case schemas.ColModel:
				if r.model != "" {
					fb.(*array.StringBuilder).Append(r.model)
				} else {
					fb.(*array.StringBuilder).Append("m-" + r.id)
				}
			case schemas.ColSeq:
				fb.(*array.Int32Builder).Append(r.seq)
			case schemas.ColFinal:
				fb.(*array.BooleanBuilder).Append(r.final)
			case schemas.ColAttributes:
				mb := fb.(*array.MapBuilder)
				mb.Append(true)
				mb.KeyBuilder().(*array.StringBuilder).Append("tenant")
				mb.ItemBuilder().(*array.StringBuilder).Append("t1")
			case schemas.ColTokenLogprob:
				lb := fb.(*array.ListBuilder)
				lb.Append(true)
				lb.ValueBuilder().(*array.Float32Builder).AppendValues(r.steps, nil)
			case schemas.ColTopLogprobs:
				lb := fb.(*array.ListBuilder)
				lb.Append(true)
				sb := lb.ValueBuilder().(*array.ListBuilder)
				for _, s := range r.steps {
					sb.Append(true)
					sb.ValueBuilder().(*array.Float32Builder).AppendValues([]float32{s, s - 1}, nil)
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

// traceSteps reads back, per trace_id, the chosen logprobs, the flattened
// alternatives and the final flag of every row in recs.
type gotTrace struct {
	tok, alts []float32
	final     bool
	model     string
}

// readTraces reads the traces of recs by id; a trace emitted twice is an
// error unless again, when the later one is kept.
func readTraces(t *testing.T, recs []arrow.RecordBatch, again bool) map[string]gotTrace {
	t.Helper()
	out := map[string]gotTrace{}
	for _, rec := range recs {
		v, err := newChunkView(rec)
		require.NoError(t, err)
		for i := 0; i < int(rec.NumRows()); i++ {
			c := v.chunk(i)
			id := v.id.Value(i)
			_, dup := out[id]
			require.False(t, dup && !again, "trace %s emitted twice", id)
			out[id] = gotTrace{tok: c.tok, alts: c.vals, final: v.final(i), model: strAt(v.model, i)}
		}
	}
	return out
}

// A trace requeued from the dead letters starts anew at its first chunk,
// and when it fails again it is dead-lettered again. It was dropped as a
// late copy: its id was remembered, and its first chunk alone timed out.
func TestAssemblerRejectedSentAgain(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	t0 := time.Unix(1_700_000_000, 0)
	a, err := NewAssembler(DefaultAssemblerConfig(), mem)
	require.NoError(t, err)
	for round := range 2 {
		at := t0.Add(time.Duration(round) * time.Minute)
		in := chunkBatch(t, mem, chunkRow{id: "a", seq: 0, steps: []float32{-1}})
		out, err := a.Add(in, int64(round), at)
		in.Release()
		require.NoError(t, err)
		require.Empty(t, out.Complete)
		out.Release()
		out, err = a.Expire(at.Add(31 * time.Second))
		require.NoError(t, err)
		require.Equal(t, []string{schemas.ReasonIncomplete}, out.Reasons, "round %d", round)
		require.Zero(t, out.Duplicates, "round %d", round)
		out.Release()
	}
}

// TestAssemblerTwoModelsOneID: one id under two models is two responses
// (the store keys rows so): their chunks are not merged, and the second
// model's were dropped as duplicates.
func TestAssemblerTwoModelsOneID(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	a, err := NewAssembler(DefaultAssemblerConfig(), mem)
	require.NoError(t, err)
	in := chunkBatch(t, mem,
		chunkRow{id: "q1", model: "A", seq: 0, steps: []float32{-1}},
		chunkRow{id: "q1", model: "B", seq: 0, steps: []float32{-2}},
		chunkRow{id: "q1", model: " A", seq: 1, final: true, steps: []float32{-3}}, // blanks around a model are not another model
		chunkRow{id: "q1", model: "B", seq: 1, final: true, steps: []float32{-4}})
	out, err := a.Add(in, 1, time.Unix(0, 0))
	in.Release()
	require.NoError(t, err)
	defer out.Release()
	require.Zero(t, out.Duplicates)
	got := map[string][]float32{}
	for _, rec := range out.Complete {
		v, err := newChunkView(rec)
		require.NoError(t, err)
		for i := range int(rec.NumRows()) {
			got[strAt(v.model, i)] = v.chunk(i).tok
		}
	}
	require.Equal(t, map[string][]float32{"A": {-1, -3}, "B": {-2, -4}}, got)
	require.Equal(t, []int{-1}, out.CompleteFirst)
}

// TestAssemblerRowsAndFirst: a slice of whole rows says which input row it
// starts at (the dead letters of its rows name their message row); a
// rejected trace says whether it holds its first chunk (one that does is
// never a restart's remnant), and a too_long trace whose chunks all came is
// final (sent again after max_steps is raised, it is whole); a rejected
// trace says the message and row where it began.
func TestAssemblerRowsAndFirst(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cfg := DefaultAssemblerConfig()
	cfg.MaxSteps = 3
	a, err := NewAssembler(cfg, mem)
	require.NoError(t, err)
	in := chunkBatch(t, mem,
		chunkRow{id: "w1", seq: 0, final: true, steps: []float32{-1}},
		chunkRow{id: "long", seq: 0, steps: []float32{-1, -2}},
		chunkRow{id: "w2", seq: 0, final: true, steps: []float32{-1}},
		chunkRow{id: "w3", seq: 0, final: true, steps: []float32{-1}},
		chunkRow{id: "long", seq: 1, final: true, steps: []float32{-3, -4}},
		chunkRow{id: "rest", seq: 1, steps: []float32{-1}})
	out, err := a.Add(in, 1, time.Unix(0, 0))
	in.Release()
	require.NoError(t, err)
	require.Equal(t, []int{0, 2}, out.CompleteFirst, "w1 at row 0; w2, w3 from row 2")
	require.Equal(t, []string{schemas.ReasonTooLong}, out.Reasons)
	require.Equal(t, []bool{true}, out.HasFirst)
	require.Equal(t, []int64{1}, out.Origin)
	require.Equal(t, []int{1}, out.OriginRow, "long began at row 1, though it ended at row 4")
	v, err := newChunkView(out.Rejected[0])
	require.NoError(t, err)
	require.True(t, v.final(0), "every chunk of the too_long trace came")
	out.Release()
	in = chunkBatch(t, mem, chunkRow{id: "rest", seq: 2, steps: []float32{-1}})
	out, err = a.Add(in, 2, time.Unix(1, 0))
	in.Release()
	require.NoError(t, err)
	require.Empty(t, out.Rejected)
	out.Release()
	out, err = a.Expire(time.Unix(100, 0))
	require.NoError(t, err)
	require.Equal(t, []string{schemas.ReasonIncomplete}, out.Reasons)
	require.Equal(t, []bool{false}, out.HasFirst, "rest came without its first chunk")
	require.Equal(t, []int64{1}, out.Origin, "rest began in the message at 1")
	require.Equal(t, []int{5}, out.OriginRow)
	v, err = newChunkView(out.Rejected[0])
	require.NoError(t, err)
	require.False(t, v.final(0))
	out.Release()
}

func TestAssembler(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	type step struct {
		rows   []chunkRow
		origin int64
		at     time.Duration // after t0
	}
	tests := []struct {
		name        string
		cfg         func(*AssemblerConfig)
		steps       []step
		expireAt    time.Duration // 0: no Expire call
		complete    map[string][]float32
		rejected    map[string]string // trace_id -> reason
		duplicates  int
		afterReject int // chunks dropped because their trace was rejected
		open        int
		oldest      int64 // -1: none held
		rows        int   // complete rows over all batches, when a trace completes more than once
	}{
		{
			name: "whole rows pass through",
			steps: []step{{rows: []chunkRow{
				{id: "a", seq: 0, final: true, steps: []float32{-1, -2}},
				{id: "b", seq: 0, final: true, steps: []float32{-3}},
			}}},
			complete: map[string][]float32{"a": {-1, -2}, "b": {-3}},
			oldest:   -1,
		},
		{
			name: "in order across batches",
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}}, origin: 10},
				{rows: []chunkRow{{id: "a", seq: 1, steps: []float32{-2, -3}}}, origin: 11},
				{rows: []chunkRow{{id: "a", seq: 2, final: true, steps: []float32{-4}}}, origin: 12},
			},
			complete: map[string][]float32{"a": {-1, -2, -3, -4}},
			oldest:   -1,
		},
		{
			name: "out of order and duplicated",
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 2, final: true, steps: []float32{-4}}, {id: "a", seq: 0, steps: []float32{-1}}}, origin: 5},
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}, {id: "a", seq: 1, steps: []float32{-2}}}, origin: 6},
				{rows: []chunkRow{{id: "a", seq: 1, steps: []float32{-2}}}, origin: 7}, // after completion
			},
			complete:   map[string][]float32{"a": {-1, -2, -4}},
			duplicates: 2,
			oldest:     -1,
		},
		{
			// A long response sent again (to rescore it with a new
			// estimator) was dropped chunk by chunk as a redelivery, and
			// the stored row kept its old estimate.
			name: "sent again after completion",
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}, {id: "a", seq: 1, final: true, steps: []float32{-2}}}, origin: 1},
				{rows: []chunkRow{{id: "a", seq: 1, steps: []float32{-2}}}, origin: 2}, // a late copy: dropped
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-5}}, {id: "a", seq: 1, final: true, steps: []float32{-6}}}, origin: 3},
			},
			complete:   map[string][]float32{"a": {-5, -6}},
			rows:       2,
			duplicates: 1,
			oldest:     -1,
		},
		{
			// A producer's late copy of the first chunk alone (a retry)
			// starts the trace anew; when the rest never comes it is
			// dropped as a duplicate, not dead-lettered as incomplete.
			name: "a late copy of the first chunk alone",
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}, {id: "a", seq: 1, final: true, steps: []float32{-2}}}, origin: 1},
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}}, origin: 2},
			},
			expireAt:   31 * time.Second,
			complete:   map[string][]float32{"a": {-1, -2}},
			duplicates: 1,
			oldest:     -1,
		},
		{
			name: "an id remembered again outlives its older slot",
			cfg:  func(c *AssemblerConfig) { c.Remember = 2 },
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}, {id: "a", seq: 1, final: true, steps: []float32{-2}}}, origin: 1},
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}, {id: "a", seq: 1, final: true, steps: []float32{-2}}}, origin: 2},
				{rows: []chunkRow{{id: "b", seq: 0, steps: []float32{-3}}, {id: "b", seq: 1, final: true, steps: []float32{-4}}}, origin: 3},
				{rows: []chunkRow{{id: "a", seq: 1, final: true, steps: []float32{-2}}}, origin: 4}, // still remembered
			},
			complete:   map[string][]float32{"a": {-1, -2}, "b": {-3, -4}},
			rows:       3,
			duplicates: 1,
			oldest:     -1,
		},
		{
			name: "mixed whole and chunked rows keep the held origin",
			steps: []step{
				{rows: []chunkRow{
					{id: "w1", seq: 0, final: true, steps: []float32{-1}},
					{id: "c", seq: 0, steps: []float32{-2}},
					{id: "w2", seq: 0, final: true, steps: []float32{-3}},
				}, origin: 40},
				{rows: []chunkRow{{id: "d", seq: 0, steps: []float32{-5}}}, origin: 41},
			},
			complete: map[string][]float32{"w1": {-1}, "w2": {-3}},
			open:     2,
			oldest:   40,
		},
		{
			name: "timeout emits incomplete",
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}, {id: "a", seq: 2, final: true, steps: []float32{-3}}}, origin: 1},
				{rows: []chunkRow{{id: "b", seq: 0, steps: []float32{-1}}}, origin: 2, at: 20 * time.Second},
			},
			expireAt: 31 * time.Second,
			rejected: map[string]string{"a": schemas.ReasonIncomplete},
			open:     1,
			oldest:   2,
		},
		{
			name: "max open evicts the idlest",
			cfg:  func(c *AssemblerConfig) { c.MaxOpen = 2 },
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}}, origin: 1},
				{rows: []chunkRow{{id: "b", seq: 0, steps: []float32{-1}}}, origin: 2, at: time.Second},
				{rows: []chunkRow{{id: "c", seq: 0, steps: []float32{-1}}}, origin: 3, at: 2 * time.Second},
			},
			rejected: map[string]string{"a": schemas.ReasonIncomplete},
			open:     2,
			oldest:   2,
		},
		{
			name: "held steps bound evicts the idlest",
			cfg:  func(c *AssemblerConfig) { c.MaxSteps, c.MaxHeldSteps = 3, 4 },
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1, -2}}}, origin: 1},
				{rows: []chunkRow{{id: "b", seq: 0, steps: []float32{-1, -2}}}, origin: 2, at: time.Second},
				{rows: []chunkRow{{id: "c", seq: 0, steps: []float32{-1}}}, origin: 3, at: 2 * time.Second},
			},
			rejected: map[string]string{"a": schemas.ReasonIncomplete},
			open:     2,
			oldest:   2,
		},
		{
			name: "too many steps",
			cfg:  func(c *AssemblerConfig) { c.MaxSteps = 3 },
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1, -2}}}, origin: 1},
				{rows: []chunkRow{{id: "a", seq: 1, steps: []float32{-1, -2}}, {id: "a", seq: 2, final: true, steps: []float32{-1}}}, origin: 2},
			},
			rejected:    map[string]string{"a": schemas.ReasonTooLong},
			afterReject: 1, // the final chunk of a trace already emitted: not a copy
			oldest:      -1,
		},
		{
			// A response sent again (to rescore it) and given up for room
			// before its rest came was dropped as a duplicate: the new
			// sending vanished, with no dead letter.
			name: "sent again after completion, then evicted",
			cfg:  func(c *AssemblerConfig) { c.MaxOpen = 1 },
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}, {id: "a", seq: 1, final: true, steps: []float32{-2}}}, origin: 1},
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-5}}}, origin: 2, at: time.Second},
				{rows: []chunkRow{{id: "b", seq: 0, steps: []float32{-3}}}, origin: 3, at: 2 * time.Second},
				{rows: []chunkRow{{id: "a", seq: 1, final: true, steps: []float32{-6}}}, origin: 4, at: 3 * time.Second},
			},
			complete:    map[string][]float32{"a": {-1, -2}},
			rejected:    map[string]string{"a": schemas.ReasonIncomplete},
			afterReject: 1,
			open:        1,
			oldest:      3,
		},
		{
			// A sending with more than its first chunk that times out is
			// not a late copy of the first chunk: dead-lettered.
			name: "sent again after completion, cut short",
			steps: []step{
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-1}}, {id: "a", seq: 1, final: true, steps: []float32{-2}}}, origin: 1},
				{rows: []chunkRow{{id: "a", seq: 0, steps: []float32{-5}}, {id: "a", seq: 1, steps: []float32{-6}}}, origin: 2},
			},
			expireAt: 31 * time.Second,
			complete: map[string][]float32{"a": {-1, -2}},
			rejected: map[string]string{"a": schemas.ReasonIncomplete},
			oldest:   -1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			cfg := DefaultAssemblerConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			a, err := NewAssembler(cfg, mem)
			require.NoError(t, err)
			var all Assembled
			defer all.Release()
			collect := func(out Assembled) {
				all.Complete = append(all.Complete, out.Complete...)
				all.Rejected = append(all.Rejected, out.Rejected...)
				all.Reasons = append(all.Reasons, out.Reasons...)
				all.Duplicates += out.Duplicates
				all.AfterReject += out.AfterReject
			}
			for _, s := range tc.steps {
				in := chunkBatch(t, mem, s.rows...)
				out, err := a.Add(in, s.origin, t0.Add(s.at))
				in.Release() // outputs must not depend on the input staying alive
				require.NoError(t, err)
				collect(out)
			}
			if tc.expireAt > 0 {
				out, err := a.Expire(t0.Add(tc.expireAt))
				require.NoError(t, err)
				collect(out)
			}
			got := readTraces(t, all.Complete, tc.rows > 0)
			require.Len(t, got, len(tc.complete))
			if tc.rows > 0 {
				n := 0
				for _, r := range all.Complete {
					n += int(r.NumRows())
				}
				require.Equal(t, tc.rows, n, "complete rows")
			}
			for id, want := range tc.complete {
				g, ok := got[id]
				require.True(t, ok, "trace %s not completed", id)
				require.Equal(t, want, g.tok, "trace %s steps", id)
				require.Len(t, g.alts, 2*len(want), "trace %s alternatives", id)
				for i, s := range want {
					require.Equal(t, []float32{s, s - 1}, g.alts[2*i:2*i+2])
				}
				require.True(t, g.final)
				require.Equal(t, "m-"+id, g.model)
			}
			rej := readTraces(t, all.Rejected, false)
			require.Len(t, rej, len(tc.rejected))
			reasons := map[string]string{}
			i := 0
			for _, rec := range all.Rejected {
				ids := rec.Column(schemas.MustIndex(schemas.Trace, schemas.ColTraceID)).(*array.String)
				for r := 0; r < ids.Len(); r++ {
					reasons[ids.Value(r)] = all.Reasons[i]
					i++
				}
			}
			if tc.rejected == nil {
				tc.rejected = map[string]string{}
			}
			require.Equal(t, tc.rejected, reasons)
			for id := range tc.rejected {
				require.False(t, rej[id].final, "rejected %s must not be final", id)
			}
			require.Equal(t, tc.duplicates, all.Duplicates)
			require.Equal(t, tc.afterReject, all.AfterReject)
			require.Equal(t, tc.open, a.Open())
			o, ok := a.Oldest()
			if tc.oldest < 0 {
				require.False(t, ok)
			} else {
				require.True(t, ok)
				require.Equal(t, tc.oldest, o)
			}
		})
	}
}

func TestAssemblerConfigValidate(t *testing.T) {
	require.NoError(t, DefaultAssemblerConfig().Validate())
	bad := DefaultAssemblerConfig()
	bad.Timeout, bad.MaxOpen = 0, 0
	require.ErrorContains(t, bad.Validate(), "assemble.timeout")
	require.ErrorContains(t, bad.Validate(), "assemble.max_open")
}

func BenchmarkAssemblerWhole(b *testing.B) {
	mem := memory.NewGoAllocator()
	rows := make([]chunkRow, 64)
	for i := range rows {
		rows[i] = chunkRow{id: string(rune('a' + i%26)), final: true, steps: make([]float32, 400)}
	}
	in := chunkBatch(b, mem, rows...)
	defer in.Release()
	a, _ := NewAssembler(DefaultAssemblerConfig(), mem)
	b.ReportAllocs()
	for b.Loop() {
		out, err := a.Add(in, 0, time.Time{})
		if err != nil {
			b.Fatal(err)
		}
		out.Release()
	}
}

// FuzzAssembler drives the assembler with arbitrary chunk sequences and checks
// it against a model: every chunked trace is emitted once (complete, or
// rejected with the right reason) per sending (a seq 0 chunk after the trace
// was emitted starts it anew), completed traces hold their chunks' steps in
// seq order, duplicates are counted, Oldest and Open match, and no memory is
// left behind.
func FuzzAssembler(f *testing.F) {
	f.Add([]byte{0x01, 0x12, 0x23, 0xff, 0x31})
	f.Add([]byte{0x81, 0x02, 0x82, 0x03, 0xfe, 0x10, 0x90})
	f.Add([]byte{0x00, 0x40, 0xc0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("0A\xc078000")) // a trace completed mid-batch, then chunks of it again
	f.Fuzz(func(t *testing.T, ops []byte) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		cfg := AssemblerConfig{Timeout: 3 * time.Second, MaxOpen: 1000, MaxSteps: 7, MaxHeldSteps: 1000, Remember: 1000}
		a, err := NewAssembler(cfg, mem)
		require.NoError(t, err)
		type mtrace struct {
			chunks map[int32]int // seq -> steps
			final  int32
			origin int64
			last   time.Time
			steps  int
			closed bool // completed or too long within the batch being added
			again  bool // started anew by seq 0 after the trace was emitted
		}
		open := map[string]*mtrace{}
		// Closed within the batch being added, in order, until emitted:
		// complete (emitted at the end of the batch) or too long (at once).
		closed := map[bool]map[string][]*mtrace{false: {}, true: {}}
		done := map[string]bool{} // emitted ids: whether rejected
		pop := func(id string, tooLong bool) *mtrace {
			q := closed[tooLong][id]
			require.NotEmpty(t, q, "trace %s emitted but not closed", id)
			closed[tooLong][id] = q[1:]
			return q[0]
		}
		now := time.Unix(0, 0)
		check := func(out Assembled) {
			defer out.Release()
			for _, rec := range out.Complete {
				v, err := newChunkView(rec)
				require.NoError(t, err)
				for i := 0; i < int(rec.NumRows()); i++ {
					id := v.id.Value(i)
					if id[0] == 'w' {
						continue // whole rows pass through
					}
					m := pop(id, false)
					require.True(t, m.closed && m.steps <= cfg.MaxSteps, "trace %s emitted but not complete", id)
					want := 0
					for s := int32(0); s <= m.final; s++ {
						n, ok := m.chunks[s]
						require.True(t, ok, "trace %s completed without seq %d", id, s)
						want += n
					}
					require.Len(t, v.chunk(i).tok, want, "steps of %s", id)
				}
			}
			j := 0
			for _, rec := range out.Rejected {
				ids := rec.Column(0).(*array.String)
				for i := 0; i < ids.Len(); i++ {
					id := ids.Value(i)
					if out.Reasons[j] == schemas.ReasonTooLong {
						m := pop(id, true)
						require.True(t, m.closed)
						require.Greater(t, m.steps, cfg.MaxSteps)
					} else {
						m := open[id]
						require.NotNil(t, m, "trace %s rejected but not open", id)
						require.Equal(t, schemas.ReasonIncomplete, out.Reasons[j])
						require.False(t, m.closed)
						require.Greater(t, now.Sub(m.last), cfg.Timeout)
						delete(open, id)
						done[id] = true
					}
					j++
				}
			}
			require.Len(t, out.Reasons, j)
		}
		var rows []chunkRow
		flush := func(origin int64) {
			if len(rows) == 0 {
				return
			}
			in := chunkBatch(t, mem, rows...)
			dups, afterReject := 0, 0
			for _, r := range rows {
				if r.id[0] == 'w' {
					continue
				}
				m := open[r.id]
				rejected, seen := done[r.id]
				again := false
				if seen {
					switch {
					case r.seq != 0 && rejected:
						afterReject++ // the rest of a rejected trace
						continue
					case r.seq != 0:
						dups++ // a late copy of a chunk of a completed trace
						continue
					}
					delete(done, r.id) // sent anew
					again = !rejected
				}
				if m == nil {
					m = &mtrace{chunks: map[int32]int{}, final: -1, origin: origin, again: again}
					open[r.id] = m
				}
				if _, dup := m.chunks[r.seq]; dup {
					dups++
					continue
				}
				m.chunks[r.seq] = len(r.steps)
				m.steps += len(r.steps)
				m.last = now
				if r.final {
					m.final = r.seq
				}
				complete := m.final >= 0
				for q := int32(0); complete && q <= m.final; q++ {
					_, complete = m.chunks[q]
				}
				if m.steps > cfg.MaxSteps || (complete && len(m.chunks) == int(m.final)+1) {
					tooLong := m.steps > cfg.MaxSteps
					m.closed, done[r.id] = true, tooLong
					delete(open, r.id)
					closed[tooLong][r.id] = append(closed[tooLong][r.id], m)
				}
			}
			out, err := a.Add(in, origin, now)
			in.Release()
			require.NoError(t, err)
			require.Equal(t, dups, out.Duplicates)
			require.Equal(t, afterReject, out.AfterReject)
			check(out)
			rows = rows[:0]
		}
		for i, op := range ops {
			switch {
			case op == 0xff: // time passes, expire
				flush(int64(i))
				now = now.Add(2 * time.Second)
				out, err := a.Expire(now)
				require.NoError(t, err)
				// A completed trace's first chunk alone again that times
				// out was a late copy: dropped as a duplicate, not rejected.
				dups := 0
				for id, m := range open {
					if m.again && len(m.chunks) == 1 && now.Sub(m.last) > cfg.Timeout {
						dups++
						delete(open, id)
						done[id] = false
					}
				}
				require.Equal(t, dups, out.Duplicates)
				check(out)
			case op == 0xfe:
				flush(int64(i))
			case op&0x80 != 0: // a whole row
				rows = append(rows, chunkRow{id: fmt.Sprintf("w%d", i), final: true, steps: make([]float32, op&3)})
			default: // a chunk: trace op>>4&7, seq op>>2&3, final op&1, steps 1 + (op>>1&1)
				seq := int32(op >> 2 & 3) // seq 0 with final is a whole response, not a chunk
				rows = append(rows, chunkRow{id: fmt.Sprintf("c%d", op>>4&7), seq: seq, final: op&1 == 1 && seq > 0,
					steps: make([]float32, 1+int(op>>1&1))})
			}
		}
		flush(int64(len(ops)))
		require.Equal(t, len(open), a.Open())
		held := 0
		for _, m := range open {
			held += m.steps
		}
		require.Equal(t, held, a.Held())
		oldest, ok := a.Oldest()
		require.Equal(t, len(open) > 0, ok)
		for _, m := range open {
			require.LessOrEqual(t, oldest, m.origin)
		}
	})
}

// An incomplete trace carries its final chunk's time, or, without one, its
// latest chunk's (the stream bounds sink lookups by it), never zero.
func TestAssemblerIncompleteTime(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	a, err := NewAssembler(DefaultAssemblerConfig(), mem)
	require.NoError(t, err)
	t0 := time.Unix(0, 0)
	for i, r := range []chunkRow{
		{id: "nofinal", seq: 3, steps: []float32{-1}},
		{id: "nofinal", seq: 1, steps: []float32{-1}},
		{id: "final", seq: 2, final: true, steps: []float32{-1}},
		{id: "final", seq: 1, steps: []float32{-1}},
	} {
		in := chunkBatch(t, mem, r)
		out, err := a.Add(in, int64(i), t0)
		in.Release()
		require.NoError(t, err)
		require.Empty(t, out.Complete)
		out.Release()
	}
	out, err := a.Expire(t0.Add(time.Hour))
	require.NoError(t, err)
	defer out.Release()
	got := map[string]int64{}
	for _, rec := range out.Rejected {
		ids := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
		ts := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTS)).(*array.Timestamp)
		for i := 0; i < ids.Len(); i++ {
			got[ids.Value(i)] = int64(ts.Value(i))
		}
	}
	require.Equal(t, map[string]int64{"nofinal": 1003, "final": 1002}, got)
}
