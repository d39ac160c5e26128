package estimate

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// TestOperatorIntegerFeature: a model trained on n_tokens (an int32 column
// of scored.v1) scores rows; before, New refused it ("not a float64
// feature") although train had accepted it.
func TestOperatorIntegerFeature(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	tbl := synthetic(600, []string{schemas.ColNTokens, "mean"}, 2)
	for i := range tbl.N() {
		tbl.X[i*2] = float64(int(tbl.X[i*2]*10) + 50) // whole token counts
	}
	cfg := DefaultTrainConfig()
	cfg.Ensemble = 0
	m, err := Fit(tbl, "llm-a", cfg)
	require.NoError(t, err)
	set := &Set{Models: map[string]*Model{"llm-a": m}}
	set.Seal()
	op, err := New(Config{Set: set}, mem, nil)
	require.NoError(t, err)
	defer op.Close()

	rows := []scoredRow{{"llm-a", schemas.StatusOK, 0.5, 0, 0}, {"llm-a", schemas.StatusOK, -1, 0, 0}}
	in := withNTokens(t, mem, scoredBatch(t, mem, rows), []int32{80, 20})
	defer in.Release()
	for range 2 { // the converted column is released after each batch
		out, err := op.Process(context.Background(), in)
		require.NoError(t, err)
		p := out[0].Column(schemas.MustIndex(schemas.Scored, schemas.ColPCorrect)).(*array.Float64)
		z := make([]float64, 2)
		require.InDelta(t, m.Predict([]float64{80, 0.5}, z), p.Value(0), 0)
		require.InDelta(t, m.Predict([]float64{20, -1}, z), p.Value(1), 0)
		out[0].Release()
	}
	require.Equal(t, int64(4), op.Stats().Estimated)
}

// TestOperatorRefusesLaterColumns: a model reading a column the estimator
// writes, or the topic tagger writes after it, is refused by New (it would
// see nulls only).
func TestOperatorRefusesLaterColumns(t *testing.T) {
	for _, f := range []string{schemas.ColPCorrect, schemas.ColClusterID} {
		cfg := DefaultTrainConfig()
		cfg.Ensemble = 0
		m, err := Fit(synthetic(200, []string{"mean"}, 2), "x", cfg)
		require.NoError(t, err)
		m.Features = []string{f} // by hand: Fit refuses such a feature
		set := &Set{Models: map[string]*Model{"x": m}}
		set.Seal()
		_, err = New(Config{Set: set}, memory.NewGoAllocator(), nil)
		require.ErrorContains(t, err, `uses column "`+f+`", which is written by`, f)
	}
}

// TestOperatorFallbackRows: the rows the fallback scores are counted per
// LLM model, so that entrowatch score can say which ones it scored.
func TestOperatorFallbackRows(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	op, err := New(Config{Set: testSet(t, true)}, mem, nil)
	require.NoError(t, err)
	defer op.Close()
	in := scoredBatch(t, mem, []scoredRow{
		{"llm-a", schemas.StatusOK, 1, 0.2, 0},
		{"llm-b", schemas.StatusOK, 1, 0.2, 0},
		{"llm-b", schemas.StatusOK, 0, 0.2, 0},
		{"llm-a", schemas.StatusOK, 1, 0.2, 0},
		{"llm-c", schemas.StatusOK, 1, 0.2, 0},
		{"llm-b", schemas.StatusOK, 1, 0.2, 0},
		{"llm-b", schemas.ReasonEmpty, 1, 0.2, 0},
	})
	defer in.Release()
	out, err := op.Process(context.Background(), in)
	require.NoError(t, err)
	out[0].Release()
	require.Equal(t, map[string]int64{"llm-b": 3, "llm-c": 1}, op.FallbackRows())
	st := op.Stats()
	require.Equal(t, int64(6), st.Estimated)
	require.Equal(t, int64(4), st.Fallback)

	strict, err := New(Config{Set: testSet(t, true), Strict: true}, mem, nil)
	require.NoError(t, err)
	defer strict.Close()
	out, err = strict.Process(context.Background(), in)
	require.NoError(t, err)
	out[0].Release()
	require.Empty(t, strict.FallbackRows())
}

// TestOperatorWarnsFallback: in a stream, rows of an LLM without a model of
// its own were scored by the fallback without a word (entrowatch score says
// so in its summary; run said nothing). The operator warns once per LLM.
func TestOperatorWarnsFallback(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	var buf bytes.Buffer
	op, err := New(Config{Set: testSet(t, true)}, mem, slog.New(slog.NewTextHandler(&buf, nil)))
	require.NoError(t, err)
	defer op.Close()
	in := scoredBatch(t, mem, []scoredRow{
		{"llm-a", schemas.StatusOK, 1, 0.2, 0},
		{"llm-b", schemas.StatusOK, 1, 0.2, 0},
		{"llm-a", schemas.StatusOK, 1, 0.2, 0},
		{"llm-b", schemas.StatusOK, 0, 0.2, 0},
	})
	defer in.Release()
	for range 2 {
		out, err := op.Process(context.Background(), in)
		require.NoError(t, err)
		out[0].Release()
	}
	require.Equal(t, 1, strings.Count(buf.String(), "scored by the estimator's fallback"), buf.String())
	require.Contains(t, buf.String(), "model=llm-b")
	require.NotContains(t, buf.String(), "model=llm-a")
}
