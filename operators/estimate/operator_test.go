package estimate

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/entrowatch/entrowatch/schemas"
)

// testSet trains a small set on synthetic rows whose features are named like
// scored.v1 profile columns: "mean" carries the signal.
func testSet(t testing.TB, fallback bool) *Set {
	tbl := synthetic(2000, []string{"mean", "std"}, 4)
	cfg := DefaultTrainConfig()
	cfg.Ensemble = 0 // one model on both features, so that both are read
	m, err := Fit(tbl, "llm-a", cfg)
	require.NoError(t, err)
	set := &Set{Models: map[string]*Model{"llm-a": m}}
	if fallback {
		f, err := Fit(tbl, FallbackKey, TrainConfig{Family: FamilyLogreg, Calibration: CalPlatt, Folds: 3, Seed: 1})
		require.NoError(t, err)
		set.Models[FallbackKey] = f
		set.Fallback = FallbackKey
	}
	set.Seal()
	require.NoError(t, set.Validate())
	return set
}

type scoredRow struct {
	model, status string
	mean, std     float64
	label         int // 0 unlabelled, 1 wrong, 2 correct
}

// scoredBatch builds a scored.v1 batch; columns not set here are zero/empty.
func scoredBatch(t testing.TB, mem memory.Allocator, rows []scoredRow) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, schemas.Scored)
	defer b.Release()
	for _, r := range rows {
		for i, f := range schemas.Scored.Fields() {
			fb := b.Field(i)
			switch f.Name {
			case schemas.ColModel:
				fb.(*array.StringBuilder).Append(r.model)
			case schemas.ColStatus:
				fb.(*array.StringBuilder).Append(r.status)
			case "mean":
				fb.(*array.Float64Builder).Append(r.mean)
			case "std":
				fb.(*array.Float64Builder).Append(r.std)
			case schemas.ColCorrect:
				if r.label == 0 {
					fb.AppendNull()
				} else {
					fb.(*array.BooleanBuilder).Append(r.label == 2)
				}
			case schemas.ColPCorrect, schemas.ColEstimatorVersion, schemas.ColClusterID, schemas.ColClusterLabel,
				schemas.ColClusterDistance, schemas.ColDomain, schemas.ColPrompt:
				fb.AppendNull()
			case schemas.ColTraceID:
				fb.(*array.StringBuilder).Append("t")
			default:
				fb.AppendEmptyValue()
			}
		}
	}
	return b.NewRecordBatch()
}

func TestOperator(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rows := []scoredRow{
		{"llm-a", schemas.StatusOK, 1.5, 0.2, 0},
		{"llm-a", schemas.StatusOK, -2, 0.1, 0},
		{"llm-b", schemas.StatusOK, 0.3, 0.4, 0},
		{"llm-a", schemas.StatusOK, math.NaN(), 0.1, 0},
		{"llm-a", schemas.StatusOK, 0.1, math.Inf(1), 0},
		{"llm-a", schemas.ReasonEmpty, 0, 0, 0},
	}
	for _, tc := range []struct {
		name     string
		fallback bool
		strict   bool
		status   []string
	}{
		{"no fallback", false, false, []string{"ok", "ok", schemas.ReasonUnknownModel, schemas.ReasonBadFeature, schemas.ReasonBadFeature, schemas.ReasonEmpty}},
		{"fallback", true, false, []string{"ok", "ok", "ok", schemas.ReasonBadFeature, schemas.ReasonBadFeature, schemas.ReasonEmpty}},
		{"strict ignores fallback", true, true, []string{"ok", "ok", schemas.ReasonUnknownModel, schemas.ReasonBadFeature, schemas.ReasonBadFeature, schemas.ReasonEmpty}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := testSet(t, tc.fallback)
			op, err := New(Config{Set: set, Strict: tc.strict}, mem, nil)
			require.NoError(t, err)
			defer op.Close()
			in := scoredBatch(t, mem, rows)
			defer in.Release()
			out, err := op.Process(context.Background(), in)
			require.NoError(t, err)
			require.Len(t, out, 1)
			rec := out[0]
			defer rec.Release()
			require.True(t, rec.Schema().Equal(schemas.Scored))
			require.Equal(t, in.NumRows(), rec.NumRows())
			p := rec.Column(schemas.MustIndex(schemas.Scored, schemas.ColPCorrect)).(*array.Float64)
			ver := rec.Column(schemas.MustIndex(schemas.Scored, schemas.ColEstimatorVersion)).(*array.String)
			st := rec.Column(schemas.MustIndex(schemas.Scored, schemas.ColStatus)).(*array.String)
			z := make([]float64, 2)
			for i, want := range tc.status {
				require.Equal(t, want, st.Value(i), "row %d", i)
				if want != schemas.StatusOK {
					require.True(t, p.IsNull(i), "row %d has no estimate", i)
					require.True(t, ver.IsNull(i))
					continue
				}
				m := set.For(rows[i].model)
				require.InDelta(t, m.Predict([]float64{rows[i].mean, rows[i].std}, z), p.Value(i), 0)
				require.Equal(t, m.Version, ver.Value(i))
				require.True(t, p.Value(i) >= 0 && p.Value(i) <= 1)
			}
			require.Greater(t, p.Value(0), p.Value(1), "the signal feature orders the estimates")
			// Unchanged columns are the input's arrays, not copies.
			mi := schemas.MustIndex(schemas.Scored, schemas.ColModel)
			require.Same(t, in.Column(mi).Data(), rec.Column(mi).Data())
		})
	}
}

func TestOperatorConfigErrors(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	_, err := New(Config{}, mem, nil)
	require.ErrorContains(t, err, "no estimator given")
	_, err = New(Config{Path: filepath.Join(t.TempDir(), "missing.json")}, mem, nil)
	require.ErrorContains(t, err, "reading estimator")

	tbl := synthetic(500, []string{"confidence"}, 2)
	m, err := Fit(tbl, "x", DefaultTrainConfig())
	require.NoError(t, err)
	set := &Set{Models: map[string]*Model{"x": m}}
	set.Seal()
	_, err = New(Config{Set: set}, mem, nil)
	require.ErrorContains(t, err, `feature "confidence"`)

	// A batch that is not scored.v1 stops the stream with an error.
	op, err := New(Config{Set: testSet(t, false)}, mem, nil)
	require.NoError(t, err)
	defer op.Close()
	b := array.NewRecordBuilder(mem, schemas.Label)
	defer b.Release()
	rec := b.NewRecordBatch()
	defer rec.Release()
	_, err = op.Process(context.Background(), rec)
	require.ErrorContains(t, err, "not scored.v1")
}

func BenchmarkProcess(b *testing.B) {
	mem := memory.NewGoAllocator()
	set := testSet(b, true)
	op, err := New(Config{Set: set}, mem, nil)
	require.NoError(b, err)
	defer op.Close()
	const n = 4096
	rows := make([]scoredRow, n)
	for i := range rows {
		rows[i] = scoredRow{"llm-a", schemas.StatusOK, float64(i%100)/25 - 2, 0.3, 0}
	}
	in := scoredBatch(b, mem, rows)
	defer in.Release()
	b.ReportAllocs()
	b.SetBytes(n * 8 * 2)
	for b.Loop() {
		out, err := op.Process(context.Background(), in)
		if err != nil {
			b.Fatal(err)
		}
		out[0].Release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/row")
}

func BenchmarkPredict(b *testing.B) {
	set := testSet(b, false)
	m := set.Models["llm-a"]
	x, z := []float64{0.5, 0.2}, make([]float64, 2)
	b.ReportAllocs()
	for b.Loop() {
		x[0] = -x[0]
		_ = m.Predict(x, z)
	}
}

// TestSharedSetConcurrentNew: operators built from one set while others
// estimate with it never see it changed. New's check of the set used to
// blank the versions while hashing: rows estimated meanwhile carried an
// empty estimator_version (10% of them in an audit), and a concurrent New
// found the set "not sealed" (go test -race reports the old race).
func TestSharedSetConcurrentNew(t *testing.T) {
	set := testSet(t, true)
	mem := memory.NewGoAllocator()
	in := scoredBatch(t, mem, []scoredRow{{"llm-a", schemas.StatusOK, 1, 0.2, 0}, {"llm-b", schemas.StatusOK, -1, 0.1, 0}})
	defer in.Release()
	want := map[string]string{"llm-a": set.Models["llm-a"].Version, "llm-b": set.Models[FallbackKey].Version}
	var g errgroup.Group
	for range 4 {
		g.Go(func() error {
			for range 200 {
				op, err := New(Config{Set: set}, mem, nil)
				if err != nil {
					return err
				}
				out, err := op.Process(context.Background(), in)
				if err != nil {
					return err
				}
				ver := out[0].Column(schemas.MustIndex(schemas.Scored, schemas.ColEstimatorVersion)).(*array.String)
				for i, m := range []string{"llm-a", "llm-b"} {
					if ver.Value(i) != want[m] {
						return fmt.Errorf("row %d: estimator_version %q, want %q", i, ver.Value(i), want[m])
					}
				}
				out[0].Release()
				op.Close()
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	require.NoError(t, set.Validate())
}

// TestPredictInfinite: Predict gives NaN for an infinite feature, as its doc
// says; it gave a confident probability (up to 1) to callers outside the
// operator, which checks the rows itself.
func TestPredictInfinite(t *testing.T) {
	set := testSet(t, false)
	m := set.Models["llm-a"]
	z := make([]float64, 2)
	require.False(t, math.IsNaN(m.Predict([]float64{1, 0.2}, z)))
	for _, x := range [][]float64{{math.Inf(1), 0.2}, {math.Inf(-1), 0.2}, {1, math.Inf(1)}, {math.NaN(), 0.2}} {
		require.True(t, math.IsNaN(m.Predict(x, z)), "%v", x)
	}
}

// TestParseNewerFile: a file with fields this version does not know (a
// newer entrowatch's) says so; it was called edited.
func TestParseNewerFile(t *testing.T) {
	set := testSet(t, false)
	b, err := set.Marshal()
	require.NoError(t, err)
	// A newer version's hash covers the field it added.
	newer := bytes.Replace(b, []byte(`"fallback"`), []byte(`"drift_guard": {"k": 3},
  "fallback"`), 1)
	newer = bytes.Replace(newer, []byte(`"version": "`+set.Version+`"`), []byte(`"version": "sha256:0123456789abcdef"`), 1)
	_, err = Parse(newer)
	require.ErrorContains(t, err, "written by a newer entrowatch")
	require.ErrorContains(t, err, `unknown field "drift_guard"`)
	edited := bytes.Replace(b, []byte(`"fallback": ""`), []byte(`"fallback": "llm-a"`), 1)
	require.NotEqual(t, b, edited)
	_, err = Parse(edited)
	require.ErrorContains(t, err, "the file was edited")
}
