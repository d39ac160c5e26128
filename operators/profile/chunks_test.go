package profile

import (
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// TestOperatorMarksChunksIncomplete: chunk rows fed to the operator without
// the Assembler are not profiled as if each were a whole response: they get
// status incomplete (Check agrees), and the same rows assembled are one ok
// row.
func TestOperatorMarksChunksIncomplete(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	in := chunkBatch(t, mem,
		chunkRow{id: "t1", seq: 0, final: false, steps: []float32{-0.1}},
		chunkRow{id: "whole", seq: 0, final: true, steps: []float32{-0.2, -0.3}},
		chunkRow{id: "t1", seq: 1, final: true, steps: []float32{-0.4}},
	)
	defer in.Release()
	op, err := New(DefaultConfig(), mem, nil)
	require.NoError(t, err)

	type rej struct {
		row    int
		reason string
	}
	var scored, checked []rej
	out, err := op.Score(in, func(row int, r *Reject) {
		require.Contains(t, r.Detail, "Assembler")
		scored = append(scored, rej{row, r.Reason})
	})
	require.NoError(t, err)
	defer out.Release()
	status, ntok := statusAndTokens(out)
	require.Equal(t, []string{schemas.ReasonIncomplete, schemas.StatusOK, schemas.ReasonIncomplete}, status)
	require.Equal(t, []int32{0, 2, 0}, ntok)
	want := []rej{{0, schemas.ReasonIncomplete}, {2, schemas.ReasonIncomplete}}
	require.Equal(t, want, scored)
	require.NoError(t, Check(DefaultConfig(), in, func(row int, r *Reject) { checked = append(checked, rej{row, r.Reason}) }))
	require.Equal(t, want, checked)

	// Through the Assembler first, as the stream does: t1 is one ok row of 2 tokens.
	a, err := NewAssembler(DefaultAssemblerConfig(), mem)
	require.NoError(t, err)
	asm, err := a.Add(in, 0, time.Unix(0, 0))
	require.NoError(t, err)
	defer asm.Release()
	require.Empty(t, asm.Rejected)
	var all []string
	var toks []int32
	for _, rec := range asm.Complete {
		o, err := op.Score(rec, nil)
		require.NoError(t, err)
		s, n := statusAndTokens(o)
		o.Release()
		all, toks = append(all, s...), append(toks, n...)
	}
	require.Equal(t, []string{schemas.StatusOK, schemas.StatusOK}, all)
	require.ElementsMatch(t, []int32{2, 2}, toks)
}

func statusAndTokens(out arrow.RecordBatch) ([]string, []int32) {
	s := out.Column(schemas.MustIndex(schemas.Scored, schemas.ColStatus)).(*array.String)
	n := out.Column(schemas.MustIndex(schemas.Scored, schemas.ColNTokens)).(*array.Int32)
	var ss []string
	for i := range s.Len() {
		ss = append(ss, s.Value(i))
	}
	return ss, n.Int32Values()
}

// TestAssemblerNilAllocator: a nil allocator means memory.DefaultAllocator.
func TestAssemblerNilAllocator(t *testing.T) {
	a, err := NewAssembler(DefaultAssemblerConfig(), nil)
	require.NoError(t, err)
	in := chunkBatch(t, memory.DefaultAllocator,
		chunkRow{id: "t1", seq: 0, final: false, steps: []float32{-0.1}},
		chunkRow{id: "t1", seq: 1, final: true, steps: []float32{-0.4}})
	defer in.Release()
	require.NotPanics(t, func() {
		out, err := a.Add(in, 0, time.Unix(0, 0))
		require.NoError(t, err)
		defer out.Release()
		require.Len(t, out.Complete, 1)
	})
}
