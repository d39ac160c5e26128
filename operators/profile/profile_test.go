package profile_test

import (
	"context"
	"encoding/csv"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// readExpected reads a reference CSV (ref-features.py) keyed by id.
func readExpected(t *testing.T, path string) (map[string]map[string]string, []string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	out := map[string]map[string]string{}
	for _, r := range rows[1:] {
		m := map[string]string{}
		for i, h := range rows[0] {
			m[h] = r[i]
		}
		out[r[0]] = m
	}
	return out, rows[0]
}

// scoreFixture reads the golden responses through the JSON adapter and the
// profile operator, with logprobs stored as float64 or float32.
func scoreFixture(t *testing.T, mem memory.Allocator, f64 bool) arrow.RecordBatch {
	t.Helper()
	f, err := ingest.Open("testdata/valid.jsonl.gz")
	require.NoError(t, err)
	defer f.Close()
	cfg := ingest.DefaultConfig()
	cfg.Float64 = f64
	r := ingest.NewReader(f, cfg, mem)
	defer r.Release()
	rec, err := r.Next()
	require.NoError(t, err)
	defer rec.Release()
	require.Empty(t, r.Rejects())
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	require.NoError(t, err)
	out, err := op.Process(context.Background(), rec)
	require.NoError(t, err)
	require.Len(t, out, 1)
	return out[0]
}

func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name      string
		f64       bool
		tol       float64 // relative, on max(1, |want|)
		tolMoment float64
	}{
		{"float64", true, 1e-9, 1e-6},
		// trace.v1 on the wire stores float32: features move by ~5e-8.
		{"float32", false, 2e-7, 2e-6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			want, header := readExpected(t, "testdata/valid.expected.csv")
			got := scoreFixture(t, mem, tc.f64)
			defer got.Release()
			require.Equal(t, int64(len(want)), got.NumRows())
			ids := got.Column(schemas.MustIndex(schemas.Scored, schemas.ColTraceID)).(*array.String)
			status := got.Column(schemas.MustIndex(schemas.Scored, schemas.ColStatus)).(*array.String)
			ntok := got.Column(schemas.MustIndex(schemas.Scored, schemas.ColNTokens)).(*array.Int32)
			for i := range int(got.NumRows()) {
				w := want[ids.Value(i)]
				require.NotNil(t, w, "id %s not in expected", ids.Value(i))
				require.Equal(t, schemas.StatusOK, status.Value(i))
				require.Equal(t, w["n_tokens"], strconv.Itoa(int(ntok.Value(i))))
				for _, name := range header[5:] {
					wv, err := strconv.ParseFloat(w[name], 64)
					require.NoError(t, err)
					gv := got.Column(schemas.MustIndex(schemas.Scored, name)).(*array.Float64).Value(i)
					tol := tc.tol
					if name == "skew" || name == "kurt" {
						tol = tc.tolMoment
					}
					if math.Abs(gv-wv) > tol*math.Max(1, math.Abs(wv)) {
						t.Errorf("%s %s = %.17g, want %.17g (diff %.3g)", ids.Value(i), name, gv, wv, gv-wv)
					}
				}
			}
		})
	}
}

// trace builds a one-row float64 profile input from explicit steps.
func computeSteps(t *testing.T, chosen []float64, steps [][]float64) (profile.Profile, *profile.Reject) {
	t.Helper()
	offs := []int32{0}
	var vals []float64
	for _, s := range steps {
		vals = append(vals, s...)
		offs = append(offs, int32(len(vals)))
	}
	return profile.Compute(newCalc(t, profile.DefaultConfig()), chosen, offs, vals)
}

func TestEntropyProperties(t *testing.T) {
	t.Run("uniform k has entropy ln k", func(t *testing.T) {
		for _, k := range []int{1, 2, 5, 20, 21} {
			step := make([]float64, k)
			for i := range step {
				step[i] = -math.Log(float64(k))
			}
			p, rej := computeSteps(t, []float64{step[0]}, [][]float64{step})
			require.Nil(t, rej)
			require.InDelta(t, math.Log(float64(k)), p.Features[profile.FMean], 1e-14, "k=%d", k)
		}
	})
	t.Run("one-hot step has entropy 0", func(t *testing.T) {
		p, rej := computeSteps(t, []float64{0}, [][]float64{{0, -9999, -9999, math.Inf(-1)}})
		require.Nil(t, rej)
		require.Equal(t, 0.0, p.Features[profile.FMean])
		require.Equal(t, 1.0, p.Baselines[profile.BMarginMean])
	})
	t.Run("constant trajectory has std = skew = kurt = 0", func(t *testing.T) {
		step := []float64{-0.5, -1.2, -2.5}
		steps := [][]float64{step, step, step, step, step, step, step}
		chosen := []float64{-0.5, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5}
		p, rej := computeSteps(t, chosen, steps)
		require.Nil(t, rej)
		require.Equal(t, 0.0, p.Features[profile.FStd])
		require.Equal(t, 0.0, p.Features[profile.FSkew])
		require.Equal(t, 0.0, p.Features[profile.FKurt])
		require.Equal(t, p.Features[profile.FMean], p.Features[profile.FQ10])
		require.Equal(t, p.Features[profile.FMean], p.Features[profile.FQ90])
	})
	t.Run("one step has std = skew = kurt = 0", func(t *testing.T) {
		p, rej := computeSteps(t, []float64{-0.1}, [][]float64{{-0.1, -2.4}})
		require.Nil(t, rej)
		require.Equal(t, 1, p.N)
		require.Equal(t, [3]float64{}, [3]float64{p.Features[profile.FStd], p.Features[profile.FSkew], p.Features[profile.FKurt]})
		require.Equal(t, p.Features[profile.FMean], p.Baselines[profile.BHTop5])
	})
}

// TestQuantilesMatchSort checks selection-based quantiles and the top-5% mean
// against a full sort, and that quantiles are monotone, over random lengths
// around the sort/select switch.
func TestQuantilesMatchSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	calc := newCalc(t, profile.DefaultConfig())
	for trial := range 400 {
		n := 1 + rng.IntN(300)
		if trial%4 == 0 {
			n = 30 + rng.IntN(20)
		}
		var steps [][]float64
		var chosen []float64
		for range n {
			k := 1 + rng.IntN(20)
			s := make([]float64, k)
			for i := range s {
				s[i] = -rng.ExpFloat64() * 3
				if trial%5 == 0 {
					s[i] = -float64(rng.IntN(3)) // ties
				}
			}
			steps = append(steps, s)
			chosen = append(chosen, s[0])
		}
		offs := []int32{0}
		var vals []float64
		for _, s := range steps {
			vals = append(vals, s...)
			offs = append(offs, int32(len(vals)))
		}
		p, rej := profile.Compute(calc, chosen, offs, vals)
		require.Nil(t, rej)

		h := make([]float64, n)
		for i, s := range steps {
			for _, l := range s {
				h[i] -= math.Exp(l) * l
			}
		}
		sort.Float64s(h)
		q := func(x float64) float64 {
			pos := x * float64(n-1)
			lo := int(math.Floor(pos))
			if lo+1 >= n {
				return h[lo]
			}
			return h[lo] + (pos-float64(lo))*(h[lo+1]-h[lo])
		}
		for i, x := range []float64{0.1, 0.25, 0.5, 0.75, 0.9} {
			require.InDelta(t, q(x), p.Features[profile.FQ10+i], 1e-12, "n=%d q=%v", n, x)
			if i > 0 {
				require.GreaterOrEqual(t, p.Features[profile.FQ10+i], p.Features[profile.FQ10+i-1])
			}
		}
		m := max(1, int(math.Ceil(0.05*float64(n))))
		var top float64
		for _, v := range h[n-m:] {
			top += v
		}
		require.InDelta(t, top/float64(m), p.Baselines[profile.BHTop5], 1e-12)
		require.InDelta(t, h[n-1], p.Features[profile.FMax], 1e-12)
	}
}

func TestRejects(t *testing.T) {
	cfg := profile.DefaultConfig()
	cfg.MaxSteps = 3
	calc := newCalc(t, cfg)
	for _, tc := range []struct {
		name   string
		chosen []float64
		steps  [][]float64
		reason string
	}{
		{"empty", nil, nil, schemas.ReasonEmpty},
		{"too long", []float64{-1, -1, -1, -1}, [][]float64{{-1}, {-1}, {-1}, {-1}}, schemas.ReasonTooLong},
		{"positive alternative", []float64{-1}, [][]float64{{-1, 0.7}}, schemas.ReasonPositiveLogprob},
		{"positive chosen", []float64{0.5}, [][]float64{{-1}}, schemas.ReasonPositiveLogprob},
		{"NaN alternative", []float64{-1}, [][]float64{{math.NaN()}}, schemas.ReasonNaNLogprob},
		{"+Inf alternative", []float64{-1}, [][]float64{{math.Inf(1)}}, schemas.ReasonNaNLogprob},
		{"NaN chosen", []float64{math.NaN()}, [][]float64{{-1}}, schemas.ReasonNaNLogprob},
		{"-Inf chosen", []float64{math.Inf(-1)}, [][]float64{{-1}}, schemas.ReasonNaNLogprob},
		{"step without alternatives", []float64{-1, -1}, [][]float64{{-1}, {}}, schemas.ReasonNoLogprobs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offs := []int32{0}
			var vals []float64
			for _, s := range tc.steps {
				vals = append(vals, s...)
				offs = append(offs, int32(len(vals)))
			}
			_, rej := profile.Compute(calc, tc.chosen, offs, vals)
			require.NotNil(t, rej)
			require.Equal(t, tc.reason, rej.Reason, rej.Detail)
		})
	}
	t.Run("rounding noise above zero is accepted", func(t *testing.T) {
		_, rej := profile.Compute(calc, []float64{1e-7}, []int32{0, 2}, []float64{1e-7, -12})
		require.Nil(t, rej)
	})
	// More alternatives than the top 20 plus the sampled token: the entropy
	// of 50 alternatives was scored as if it were the profile's.
	alts := func(k int) []float64 {
		s := make([]float64, k)
		for i := range s {
			s[i] = -float64(i) - 0.5
		}
		return s
	}
	t.Run("21 alternatives are accepted", func(t *testing.T) {
		_, rej := computeSteps(t, []float64{-0.5, -0.5}, [][]float64{alts(20), alts(profile.MaxAlternatives)})
		require.Nil(t, rej)
	})
	t.Run("22 alternatives are too many", func(t *testing.T) {
		_, rej := computeSteps(t, []float64{-0.5, -0.5}, [][]float64{alts(20), alts(profile.MaxAlternatives + 1)})
		require.NotNil(t, rej)
		require.Equal(t, schemas.ReasonTooLong, rej.Reason)
		require.Equal(t, "step 2 has 22 alternatives, more than the 21 the profile is defined on (request top_logprobs=20)", rej.Detail)
	})
}

func TestOperatorRejectRowsAndPassThrough(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	in := profile.Synthetic(mem, profile.SynthConfig{Traces: 5, Steps: 10, K: 20, Seed: 3, Model: "m"})
	defer in.Release()
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	require.NoError(t, err)
	var rejected []int
	out, err := op.Score(in, func(row int, r *profile.Reject) { rejected = append(rejected, row) })
	require.NoError(t, err)
	defer out.Release()
	require.Empty(t, rejected)
	require.True(t, out.Schema().Equal(schemas.Scored))
	require.Equal(t, in.NumRows(), out.NumRows())
	// pass-through columns are the input's arrays, not copies
	ti := schemas.MustIndex(schemas.Trace, schemas.ColTraceID)
	require.Same(t, in.Column(ti).Data(), out.Column(schemas.MustIndex(schemas.Scored, schemas.ColTraceID)).Data())
	require.Equal(t, 5, out.Column(schemas.MustIndex(schemas.Scored, schemas.ColPCorrect)).NullN())

	// A batch from a foreign producer with only the required columns.
	minimal := arrow.NewSchema([]arrow.Field{
		schemas.Trace.Field(ti),
		schemas.Trace.Field(schemas.MustIndex(schemas.Trace, schemas.ColTokenLogprob)),
		schemas.Trace.Field(schemas.MustIndex(schemas.Trace, schemas.ColTopLogprobs)),
	}, nil)
	cols := []arrow.Array{in.Column(ti), in.Column(schemas.MustIndex(schemas.Trace, schemas.ColTokenLogprob)), in.Column(schemas.MustIndex(schemas.Trace, schemas.ColTopLogprobs))}
	small := array.NewRecordBatch(minimal, cols, in.NumRows())
	defer small.Release()
	out2, err := op.Score(small, nil)
	require.NoError(t, err)
	defer out2.Release()
	require.True(t, out2.Schema().Equal(schemas.Scored))
	for _, name := range schemas.ProfileFeatures {
		i := schemas.MustIndex(schemas.Scored, name)
		require.Equal(t, out.Column(i).(*array.Float64).Float64Values(), out2.Column(i).(*array.Float64).Float64Values())
	}
}

func TestZeroAllocationsPerTrace(t *testing.T) {
	mem := memory.NewGoAllocator()
	rec := profile.Synthetic(mem, profile.SynthConfig{Traces: 4, Steps: 400, K: 20, Seed: 1})
	defer rec.Release()
	tok := rec.Column(schemas.MustIndex(schemas.Trace, schemas.ColTokenLogprob)).(*array.List)
	top := rec.Column(schemas.MustIndex(schemas.Trace, schemas.ColTopLogprobs)).(*array.List)
	inner := top.ListValues().(*array.List)
	chosen := tok.ListValues().(*array.Float32).Float32Values()[:400]
	offs := inner.Offsets()[:401]
	vals := inner.ListValues().(*array.Float32).Float32Values()
	calc := newCalc(t, profile.DefaultConfig())
	calc.Trace(chosen, offs, vals) // warm the buffers
	allocs := testing.AllocsPerRun(50, func() {
		if _, rej := calc.Trace(chosen, offs, vals); rej != nil {
			t.Fatal(rej)
		}
	})
	require.Zero(t, allocs)
}

var sink profile.Profile

func BenchmarkProfile(b *testing.B) {
	for _, steps := range []int{64, 400, 2048} {
		b.Run("tokens="+strconv.Itoa(steps), func(b *testing.B) {
			mem := memory.NewGoAllocator()
			const traces = 64
			rec := profile.Synthetic(mem, profile.SynthConfig{Traces: traces, Steps: steps, K: 20, Seed: 1})
			defer rec.Release()
			tok := rec.Column(schemas.MustIndex(schemas.Trace, schemas.ColTokenLogprob)).(*array.List)
			top := rec.Column(schemas.MustIndex(schemas.Trace, schemas.ColTopLogprobs)).(*array.List)
			inner := top.ListValues().(*array.List)
			chosen := tok.ListValues().(*array.Float32).Float32Values()
			offs := inner.Offsets()
			vals := inner.ListValues().(*array.Float32).Float32Values()
			calc := newCalc(b, profile.DefaultConfig())
			b.SetBytes(int64(steps * 21 * 4))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				t := i % traces
				p, _ := calc.Trace(chosen[t*steps:(t+1)*steps], offs[t*steps:(t+1)*steps+1], vals)
				sink = p
				i++
			}
			b.ReportMetric(float64(i*steps)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

func BenchmarkOperator(b *testing.B) {
	mem := memory.NewGoAllocator()
	rec := profile.Synthetic(mem, profile.SynthConfig{Traces: 256, Steps: 400, K: 20, Seed: 1})
	defer rec.Release()
	op, _ := profile.New(profile.DefaultConfig(), mem, nil)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		out, err := op.Process(context.Background(), rec)
		if err != nil {
			b.Fatal(err)
		}
		out[0].Release()
		n++
	}
	b.ReportMetric(float64(n*256*400)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkCheck is HTTP ingest's validation of valid traces, beside
// BenchmarkOperator's scoring of the same batch.
func BenchmarkCheck(b *testing.B) {
	mem := memory.NewGoAllocator()
	rec := profile.Synthetic(mem, profile.SynthConfig{Traces: 256, Steps: 400, K: 20, Seed: 1})
	defer rec.Release()
	cfg := profile.DefaultConfig()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := profile.Check(cfg, rec, func(int, *profile.Reject) { b.Fatal("rejected a valid trace") }); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n*256*400)/b.Elapsed().Seconds(), "tokens/s")
}

// checkTrace is one row for TestCheckAgreesWithScore; nil chosen or steps is
// a null list, a nil step a null step.
type checkTrace struct {
	chosen []float64
	steps  [][]float64
}

// traceLists builds a trace.v1 batch with only the required columns, its
// logprobs as float32 or float64.
func traceLists(t *testing.T, mem memory.Allocator, f64 bool, rows []checkTrace) arrow.RecordBatch {
	t.Helper()
	s := schemas.Trace
	if f64 {
		s = schemas.Trace64
	}
	fields := []arrow.Field{
		s.Field(schemas.MustIndex(s, schemas.ColTraceID)),
		s.Field(schemas.MustIndex(s, schemas.ColTokenLogprob)),
		s.Field(schemas.MustIndex(s, schemas.ColTopLogprobs)),
	}
	b := array.NewRecordBuilder(mem, arrow.NewSchema(fields, nil))
	defer b.Release()
	ids := b.Field(0).(*array.StringBuilder)
	tok, top := b.Field(1).(*array.ListBuilder), b.Field(2).(*array.ListBuilder)
	inner := top.ValueBuilder().(*array.ListBuilder)
	appendF := func(vb array.Builder, v float64) {
		if f64 {
			vb.(*array.Float64Builder).Append(v)
		} else {
			vb.(*array.Float32Builder).Append(float32(v))
		}
	}
	for i, r := range rows {
		ids.Append("t" + strconv.Itoa(i))
		if r.chosen == nil {
			tok.AppendNull()
		} else {
			tok.Append(true)
			for _, v := range r.chosen {
				appendF(tok.ValueBuilder(), v)
			}
		}
		if r.steps == nil {
			top.AppendNull()
			continue
		}
		top.Append(true)
		for _, st := range r.steps {
			if st == nil {
				inner.AppendNull()
				continue
			}
			inner.Append(true)
			for _, v := range st {
				appendF(inner.ValueBuilder(), v)
			}
		}
	}
	return b.NewRecordBatch()
}

// alternatives is a step of k alternatives, -1, -2, ...
func alternatives(k int) []float64 {
	a := make([]float64, k)
	for i := range a {
		a[i] = -float64(i + 1)
	}
	return a
}

// Check (HTTP ingest's validation) rejects exactly the rows the operator
// rejects, with the same reason and detail.
func TestCheckAgreesWithScore(t *testing.T) {
	nan, inf, ninf := math.NaN(), math.Inf(1), math.Inf(-1)
	fixed := []checkTrace{
		{[]float64{-0.1, -0.3}, [][]float64{{-0.1, -2.5}, {-0.3, -1.5}}},
		{[]float64{}, [][]float64{}},
		{nil, [][]float64{{-1}}},
		{[]float64{-1}, nil},
		{[]float64{-1, -1, -1, -1, -1}, [][]float64{{-1}, {-1}, {-1}, {-1}, {-1}}},
		{[]float64{-1, -1}, [][]float64{{-1}}},
		{[]float64{-1, -1, -1, -1}, [][]float64{{-1}, {-1}, {-1}, {0.7, -1}}},
		{[]float64{-1, 0.5}, [][]float64{{-1}, {-1}}},
		{[]float64{nan}, [][]float64{{-1}}},
		{[]float64{-1}, [][]float64{{-1, nan}}},
		{[]float64{-1}, [][]float64{{inf}}},
		{[]float64{ninf, -1}, [][]float64{{-1}, {-1}}},
		{[]float64{-1, -1}, [][]float64{{-1}, {}}},
		{[]float64{-1, -1}, [][]float64{{-1}, nil}},
		{[]float64{1e-7}, [][]float64{{1e-7, ninf, -9999}}},
		{[]float64{-1, nan}, [][]float64{{0.9}, {-1}}},
		{[]float64{-1, -1}, [][]float64{{-1}, alternatives(profile.MaxAlternatives)}},     // the most a step may have
		{[]float64{-1, -1}, [][]float64{{-1}, alternatives(profile.MaxAlternatives + 1)}}, // too_long; Check let it through
	}
	rng := rand.New(rand.NewPCG(7, 7))
	bad := []float64{nan, inf, ninf, 0.5, 1e-7, -9999}
	random := make([]checkTrace, 300)
	for i := range random {
		n := rng.IntN(5)
		r := checkTrace{chosen: make([]float64, n), steps: make([][]float64, n)}
		for s := range n {
			r.chosen[s] = -rng.Float64() * 3
			r.steps[s] = make([]float64, rng.IntN(4))
			for k := range r.steps[s] {
				r.steps[s][k] = -rng.Float64() * 5
			}
		}
		for range rng.IntN(3) {
			if n == 0 {
				break
			}
			s := rng.IntN(n)
			if rng.IntN(2) == 0 {
				r.chosen[s] = bad[rng.IntN(len(bad))]
			} else if len(r.steps[s]) > 0 {
				r.steps[s][rng.IntN(len(r.steps[s]))] = bad[rng.IntN(len(bad))]
			}
		}
		random[i] = r
	}
	cfg := profile.DefaultConfig()
	cfg.MaxSteps = 4
	type rej struct {
		row            int
		reason, detail string
	}
	for _, f64 := range []bool{false, true} {
		for name, rows := range map[string][]checkTrace{"fixed": fixed, "random": random} {
			t.Run(name+"/f64="+strconv.FormatBool(f64), func(t *testing.T) {
				mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
				defer mem.AssertSize(t, 0)
				in := traceLists(t, mem, f64, rows)
				defer in.Release()
				var want, got []rej
				op, err := profile.New(cfg, mem, nil)
				require.NoError(t, err)
				out, err := op.Score(in, func(row int, r *profile.Reject) { want = append(want, rej{row, r.Reason, r.Detail}) })
				require.NoError(t, err)
				out.Release()
				require.NoError(t, profile.Check(cfg, in, func(row int, r *profile.Reject) { got = append(got, rej{row, r.Reason, r.Detail}) }))
				require.NotEmpty(t, want)
				require.Less(t, len(want), len(rows), "some rows are valid")
				require.Equal(t, want, got)
			})
		}
	}
	t.Run("wrong column types", func(t *testing.T) {
		s := arrow.NewSchema([]arrow.Field{{Name: schemas.ColTokenLogprob, Type: arrow.BinaryTypes.String},
			{Name: schemas.ColTopLogprobs, Type: arrow.BinaryTypes.String}}, nil)
		b := array.NewRecordBuilder(memory.NewGoAllocator(), s)
		defer b.Release()
		rec := b.NewRecordBatch()
		defer rec.Release()
		require.ErrorContains(t, profile.Check(cfg, rec, func(int, *profile.Reject) {}), "token_logprob")
	})
}
