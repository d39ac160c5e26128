package profile_test

// Tests for the numerics audit (notes/audit-numerics.md): F2, float64 chunk
// rows were narrowed to float32 when reassembled (-1e39 became -Inf and the
// response was rejected nan_logprob; features moved ~1e-8); F3, nll_max and
// min_token_prob were clamped at 0 / 1 when every chosen logprob is positive
// (the accepted rounding noise up to 1e-4).

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/entropy"
	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
)

// numRow is one trace.v1 row: chosen logprob and alternatives per step.
type numRow struct {
	id    string
	seq   int32
	final bool
	tok   []float64
	alts  [][]float64
}

// numBatch builds the rows as schemas.Trace64 (wide) or schemas.Trace (the
// values rounded to float32).
func numBatch(t testing.TB, mem memory.Allocator, wide bool, rows ...numRow) arrow.RecordBatch {
	t.Helper()
	sc := schemas.Trace
	if wide {
		sc = schemas.Trace64
	}
	b := array.NewRecordBuilder(mem, sc)
	defer b.Release()
	appendF := func(fb array.Builder, v float64) {
		if wide {
			fb.(*array.Float64Builder).Append(v)
		} else {
			fb.(*array.Float32Builder).Append(float32(v))
		}
	}
	for _, r := range rows {
		require.Len(t, r.alts, len(r.tok))
		for i, f := range sc.Fields() {
			fb := b.Field(i)
			switch f.Name {
			case schemas.ColTraceID:
				fb.(*array.StringBuilder).Append(r.id)
			case schemas.ColTS:
				fb.(*array.TimestampBuilder).Append(arrow.Timestamp(1000 + r.seq))
			case schemas.ColModel:
				fb.(*array.StringBuilder).Append("m")
			case schemas.ColSeq:
				fb.(*array.Int32Builder).Append(r.seq)
			case schemas.ColFinal:
				fb.(*array.BooleanBuilder).Append(r.final)
			case schemas.ColAttributes:
				fb.(*array.MapBuilder).Append(true)
			case schemas.ColTokenLogprob:
				lb := fb.(*array.ListBuilder)
				lb.Append(true)
				for _, v := range r.tok {
					appendF(lb.ValueBuilder(), v)
				}
			case schemas.ColTopLogprobs:
				lb := fb.(*array.ListBuilder)
				lb.Append(true)
				sb := lb.ValueBuilder().(*array.ListBuilder)
				for _, step := range r.alts {
					sb.Append(true)
					for _, v := range step {
						appendF(sb.ValueBuilder(), v)
					}
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

// split cuts a whole response into chunk rows at the given step indices.
func split(r numRow, cuts ...int) []numRow {
	var out []numRow
	lo := 0
	for i, hi := range append(cuts, len(r.tok)) {
		out = append(out, numRow{id: r.id, seq: int32(i), final: hi == len(r.tok), tok: r.tok[lo:hi], alts: r.alts[lo:hi]})
		lo = hi
	}
	return out
}

// scoredRow is one scored row: status, then the 11 features and 7 baselines
// in schema order.
type scoredRow struct {
	status string
	vals   []float64
}

// scoreAll scores every batch and returns the rows by trace_id.
func scoreAll(t *testing.T, mem memory.Allocator, recs ...arrow.RecordBatch) map[string]scoredRow {
	t.Helper()
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	require.NoError(t, err)
	out := map[string]scoredRow{}
	for _, rec := range recs {
		sc, err := op.Score(rec, nil)
		require.NoError(t, err)
		ids := sc.Column(schemas.MustIndex(sc.Schema(), schemas.ColTraceID)).(*array.String)
		st := sc.Column(schemas.MustIndex(sc.Schema(), schemas.ColStatus)).(*array.String)
		for i := range int(sc.NumRows()) {
			r := scoredRow{status: st.Value(i)}
			for _, name := range append(append([]string{}, schemas.ProfileFeatures...), schemas.Baselines...) {
				r.vals = append(r.vals, sc.Column(schemas.MustIndex(sc.Schema(), name)).(*array.Float64).Value(i))
			}
			out[ids.Value(i)] = r
		}
		sc.Release()
	}
	return out
}

// assemble runs the batches through one Assembler and returns what it
// completed (the caller releases it).
func assemble(t *testing.T, mem memory.Allocator, ins ...arrow.RecordBatch) profile.Assembled {
	t.Helper()
	a, err := profile.NewAssembler(profile.DefaultAssemblerConfig(), mem)
	require.NoError(t, err)
	var all profile.Assembled
	for i, in := range ins {
		out, err := a.Add(in, int64(i), time.Unix(0, 0))
		require.NoError(t, err)
		require.Empty(t, out.Rejected)
		all.Complete = append(all.Complete, out.Complete...)
	}
	require.Zero(t, a.Open())
	return all
}

func requireBits(t *testing.T, want, got scoredRow, msg string) {
	t.Helper()
	require.Equal(t, want.status, got.status, msg)
	names := append(append([]string{}, schemas.ProfileFeatures...), schemas.Baselines...)
	for j, name := range names {
		require.Equal(t, math.Float64bits(want.vals[j]), math.Float64bits(got.vals[j]),
			"%s: %s whole row %v, chunks %v", msg, name, want.vals[j], got.vals[j])
	}
}

// c39 is the audit's F2 response: step 1's chosen logprob (and an
// alternative) is -1e39, beyond float32's range.
var c39 = numRow{id: "c39", seq: 0, final: true,
	tok:  []float64{-1e39, -0.25, -0.1},
	alts: [][]float64{{-0.5, -1e39}, {-0.25, -2}, {-0.1}},
}

// TestFloat64ChunksKeepFloat64 (F2): Trace64 chunk rows of c39 are scored as
// the whole Trace64 row is: ok, not nan_logprob, and bit for bit the same.
func TestFloat64ChunksKeepFloat64(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)

	whole := numBatch(t, mem, true, c39)
	defer whole.Release()
	chunks := numBatch(t, mem, true, split(c39, 1, 2)...)
	defer chunks.Release()
	asm := assemble(t, mem, chunks)
	defer asm.Release()
	require.Len(t, asm.Complete, 1)

	w := scoreAll(t, mem, whole)["c39"]
	g := scoreAll(t, mem, asm.Complete...)["c39"]
	require.Equal(t, schemas.StatusOK, g.status, "-1e39 is a probability of 0, not -Inf")
	requireBits(t, w, g, "c39")
	require.True(t, asm.Complete[0].Schema().Equal(schemas.Trace64), "float64 chunks give a Trace64 row, got %s", asm.Complete[0].Schema())

	// Independent values: -1e39 carries no probability; nll stays float64.
	at := func(name string) float64 {
		for j, n := range append(append([]string{}, schemas.ProfileFeatures...), schemas.Baselines...) {
			if n == name {
				return g.vals[j]
			}
		}
		t.Fatalf("no column %s", name)
		return 0
	}
	h := []float64{
		0.5 * math.Exp(-0.5),
		0.25*math.Exp(-0.25) + 2*math.Exp(-2),
		0.1 * math.Exp(-0.1),
	}
	near := func(name string, want float64) {
		t.Helper()
		require.InDelta(t, want, at(name), 1e-15*math.Max(1, math.Abs(want)), name)
	}
	near("mean", (h[0]+h[1]+h[2])/3)
	near("max", h[1])
	near("sea", h[0]+h[1]+h[2])
	near("margin_mean", (math.Exp(-0.5)+(math.Exp(-0.25)-math.Exp(-2))+math.Exp(-0.1))/3)
	require.Equal(t, 1e39, at("nll_max"))
	require.Equal(t, 1e39, at("nll_sum")) // 1e39 + 0.35 rounds to 1e39
	require.Equal(t, 1e39/3, at("nll_mean"))
	require.Equal(t, 0.0, at("min_token_prob"))
}

// TestFloat64ChunksExact (F2): a float64 response whose values float32
// cannot hold, split into chunks (two batches, out of order), scores bit
// for bit as the whole row; float32 chunks still give float32 rows.
func TestFloat64ChunksExact(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rng := rand.New(rand.NewPCG(11, 13))
	r := numRow{id: "r", seq: 0, final: true}
	for range 50 {
		k := 1 + rng.IntN(20)
		alts := make([]float64, k)
		for j := range alts {
			alts[j] = -rng.ExpFloat64() * 3
		}
		r.alts = append(r.alts, alts)
		r.tok = append(r.tok, alts[rng.IntN(k)])
	}
	for _, wide := range []bool{true, false} {
		whole := numBatch(t, mem, wide, r)
		parts := split(r, 17, 35)
		b1 := numBatch(t, mem, wide, parts[2], parts[0])
		b2 := numBatch(t, mem, wide, parts[1])
		asm := assemble(t, mem, b1, b2)
		require.Len(t, asm.Complete, 1)
		w := scoreAll(t, mem, whole)["r"]
		require.Equal(t, schemas.StatusOK, w.status)
		requireBits(t, w, scoreAll(t, mem, asm.Complete...)["r"], fmt.Sprintf("wide %v", wide))
		want := schemas.Trace
		if wide {
			want = schemas.Trace64
		}
		require.True(t, asm.Complete[0].Schema().Equal(want), "wide %v: %s", wide, asm.Complete[0].Schema())
		asm.Release()
		whole.Release()
		b1.Release()
		b2.Release()
	}
}

// TestMixedPrecisionChunks (F2): a trace whose chunks come as float32 and
// float64 is widened (exactly); traces completed in one Add keep their own
// precision, each run in its own batch, in completion order.
func TestMixedPrecisionChunks(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	a := numRow{id: "a", tok: []float64{-0.1, -0.2}, alts: [][]float64{{-0.1, -3}, {-0.2, -2}}}
	b := numRow{id: "b", tok: []float64{-0.3, -0.4}, alts: [][]float64{{-0.3, -1}, {-0.4}}}
	pa, pb := split(a, 1), split(b, 1)
	in1 := numBatch(t, mem, false, pa[0]) // a: float32 only
	in2 := numBatch(t, mem, true, pb[0])  // b: float64 ...
	in3 := numBatch(t, mem, false, pb[1], pa[1])
	defer in1.Release()
	defer in2.Release()
	defer in3.Release()
	asm := assemble(t, mem, in1, in2, in3)
	defer asm.Release()
	require.Len(t, asm.Complete, 2)
	require.True(t, asm.Complete[0].Schema().Equal(schemas.Trace64))
	require.True(t, asm.Complete[1].Schema().Equal(schemas.Trace))
	ids := func(rec arrow.RecordBatch) string {
		return rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String).Value(0)
	}
	require.Equal(t, "b", ids(asm.Complete[0]))
	require.Equal(t, "a", ids(asm.Complete[1]))
	// b: step 0 as given in float64, step 1 the float32 value widened.
	tok := asm.Complete[0].Column(schemas.MustIndex(schemas.Trace64, schemas.ColTokenLogprob)).(*array.List).ListValues().(*array.Float64)
	require.Equal(t, []float64{-0.3, float64(float32(-0.4))}, tok.Float64Values())
	got := scoreAll(t, mem, asm.Complete...)
	require.Equal(t, schemas.StatusOK, got["a"].status)
	require.Equal(t, schemas.StatusOK, got["b"].status)
}

// TestIncompleteFloat64Chunks (F2): a float64 trace emitted as incomplete
// (dead letter) carries its values unchanged, -1e39 included.
func TestIncompleteFloat64Chunks(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	a, err := profile.NewAssembler(profile.DefaultAssemblerConfig(), mem)
	require.NoError(t, err)
	in := numBatch(t, mem, true, split(c39, 1, 2)[:2]...)
	defer in.Release()
	out, err := a.Add(in, 0, time.Unix(0, 0))
	require.NoError(t, err)
	require.Empty(t, out.Complete)
	out, err = a.Expire(time.Unix(3600, 0))
	require.NoError(t, err)
	defer out.Release()
	require.Equal(t, []string{schemas.ReasonIncomplete}, out.Reasons)
	rec := out.Rejected[0]
	require.True(t, rec.Schema().Equal(schemas.Trace64))
	tok := rec.Column(schemas.MustIndex(schemas.Trace64, schemas.ColTokenLogprob)).(*array.List).ListValues().(*array.Float64)
	require.Equal(t, []float64{-1e39, -0.25}, tok.Float64Values())
}

// TestNLLMaxPositiveChosen (F3): when every chosen logprob is positive
// (rounding noise, accepted up to max_logprob 1e-4), nll_max = max_t(-l_t)
// is negative and min_token_prob = exp(-nll_max) above 1, not 0 and 1; in
// Compute for float32 and float64 and through the operator.
func TestNLLMaxPositiveChosen(t *testing.T) {
	calc, err := profile.NewCalc(profile.DefaultConfig())
	require.NoError(t, err)
	check := func(t *testing.T, p profile.Profile, lmin, lsum float64) {
		t.Helper()
		b := p.Baselines
		require.Equal(t, -lmin, b[profile.BNLLMax], "nll_max")
		require.Equal(t, math.Exp(lmin), b[profile.BMinTokenProb], "min_token_prob")
		require.Equal(t, -lsum, b[profile.BNLLSum], "nll_sum")
		require.LessOrEqual(t, b[profile.BNLLMean], b[profile.BNLLMax], "a mean is at most the max")
	}
	t.Run("one step 5e-05, float64", func(t *testing.T) {
		p, rej := profile.Compute(calc, []float64{5e-05}, []int32{0, 1}, []float64{5e-05})
		require.Nil(t, rej)
		require.Equal(t, -5e-05, p.Baselines[profile.BNLLMax])
		require.Equal(t, math.Exp(5e-05), p.Baselines[profile.BMinTokenProb]) // 1.0000500012500209
		require.Greater(t, p.Baselines[profile.BMinTokenProb], 1.0)
		check(t, p, 5e-05, 5e-05)
	})
	t.Run("one step 5e-05, float32", func(t *testing.T) {
		p, rej := calc.Trace([]float32{5e-05}, []int32{0, 1}, []float32{5e-05})
		require.Nil(t, rej)
		l := float64(float32(5e-05))
		check(t, p, l, l)
	})
	t.Run("several positive steps", func(t *testing.T) {
		chosen := []float64{1e-4, 5e-05, 7e-05}
		p, rej := profile.Compute(calc, chosen, []int32{0, 1, 2, 3}, []float64{1e-4, 5e-05, 7e-05})
		require.Nil(t, rej)
		check(t, p, 5e-05, 1e-4+5e-05+7e-05)
	})
	t.Run("a negative step", func(t *testing.T) {
		p, rej := profile.Compute(calc, []float64{5e-05, -0.3}, []int32{0, 1, 2}, []float64{5e-05, -0.3})
		require.Nil(t, rej)
		require.Equal(t, 0.3, p.Baselines[profile.BNLLMax])
		require.Equal(t, math.Exp(-0.3), p.Baselines[profile.BMinTokenProb])
	})
	t.Run("zero gives +0", func(t *testing.T) {
		for _, z := range []float64{0, math.Copysign(0, -1)} {
			p, rej := profile.Compute(calc, []float64{z, 5e-05}, []int32{0, 1, 2}, []float64{-0.1, -0.2})
			require.Nil(t, rej)
			require.Equal(t, math.Float64bits(0), math.Float64bits(p.Baselines[profile.BNLLMax]), "nll_max of %v", z)
			require.Equal(t, 1.0, p.Baselines[profile.BMinTokenProb])
		}
	})
	t.Run("operator, float32 and float64 ("+entropy.Kernel()+" kernel)", func(t *testing.T) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		pos := numRow{id: "pos", seq: 0, final: true, tok: []float64{5e-05}, alts: [][]float64{{5e-05}}}
		for _, wide := range []bool{true, false} {
			in := numBatch(t, mem, wide, pos)
			got := scoreAll(t, mem, in)["pos"]
			in.Release()
			l := 5e-05
			if !wide {
				l = float64(float32(l))
			}
			require.Equal(t, schemas.StatusOK, got.status)
			nb := len(schemas.ProfileFeatures)
			require.Equal(t, -l, got.vals[nb+profile.BNLLMax], "wide %v nll_max", wide)
			require.Equal(t, math.Exp(l), got.vals[nb+profile.BMinTokenProb], "wide %v min_token_prob", wide)
			require.Equal(t, -l, got.vals[nb+profile.BNLLMean], "wide %v nll_mean", wide)
		}
	})
}
