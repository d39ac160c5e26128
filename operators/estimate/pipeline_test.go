package estimate

import (
	"context"
	"errors"
	"io"
	"math"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// TestPipelineTinylm scores the real tinylm-dev traces with the ingest adapter
// and the profile operator, trains on the scored batches (the Arrow path of
// ReadTable), and runs the estimate operator over the same batches.
func TestPipelineTinylm(t *testing.T) {
	data := sharedData(t)
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	f, err := ingest.Open(filepath.Join(data, "tinylm-dev", "traces.jsonl.gz"))
	require.NoError(t, err)
	defer f.Close()
	rd := ingest.NewReader(f, ingest.DefaultConfig(), mem)
	defer rd.Release()
	prof, err := profile.New(profile.DefaultConfig(), mem, nil)
	require.NoError(t, err)
	var scored []arrow.RecordBatch
	defer func() {
		for _, r := range scored {
			r.Release()
		}
	}()
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		out, err := prof.Process(context.Background(), rec)
		rec.Release()
		require.NoError(t, err)
		scored = append(scored, out...)
	}
	tbl := &Table{Features: schemas.ProfileFeatures}
	for _, r := range scored {
		require.NoError(t, tbl.AppendScored(r))
	}
	require.Equal(t, 4800, tbl.N(), "every tinylm response is labelled and valid (skipped %v)", tbl.Skipped)

	set := &Set{Models: map[string]*Model{}}
	for _, name := range tbl.Models() {
		m, err := Fit(tbl.Subset(tbl.Where(func(i int) bool { return tbl.Model[i] == name })), name, DefaultTrainConfig())
		require.NoError(t, err)
		require.Greater(t, m.Metrics.AUROC, 0.8, name)
		set.Models[name] = m
	}
	set.Seal()
	op, err := New(Config{Set: set}, mem, nil)
	require.NoError(t, err)
	defer op.Close()
	sum, n := map[string]float64{}, map[string]float64{}
	for _, r := range scored {
		out, err := op.Process(context.Background(), r)
		require.NoError(t, err)
		rec := out[0]
		p := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColPCorrect)).(*array.Float64)
		st := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColStatus)).(*array.String)
		c := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColCorrect)).(*array.Boolean)
		for i := range int(rec.NumRows()) {
			require.Equal(t, schemas.StatusOK, st.Value(i))
			require.False(t, p.IsNull(i))
			sum["p"] += p.Value(i)
			if c.Value(i) {
				sum["y"]++
			}
			n["rows"]++
		}
		rec.Release()
	}
	require.Equal(t, int64(4800), op.Stats().Estimated)
	// In-sample, the isotonic maps reproduce the overall accuracy closely.
	require.Less(t, math.Abs(sum["p"]-sum["y"])/n["rows"], 0.02)
}
