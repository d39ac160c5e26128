package profile_test

import (
	"context"
	"math"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
)

// newCalc is profile.NewCalc for a configuration the test knows is valid.
func newCalc(tb testing.TB, cfg profile.Config) *profile.Calc {
	tb.Helper()
	c, err := profile.NewCalc(cfg)
	require.NoError(tb, err)
	return c
}

// TestInvalidConfigIsAnError: NewCalc and Check validate like New, instead
// of rejecting every trace as too_long against a maximum of 0.
func TestInvalidConfigIsAnError(t *testing.T) {
	_, err := profile.NewCalc(profile.Config{})
	require.ErrorContains(t, err, "profile.max_steps must be at least 1, got 0")
	require.ErrorContains(t, err, "profile.DefaultConfig()")
	bad := profile.DefaultConfig()
	bad.MaxLogprob = math.NaN()
	_, err = profile.NewCalc(bad)
	require.ErrorContains(t, err, "profile.max_logprob")

	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	in := profile.Synthetic(mem, profile.SynthConfig{Traces: 2, Steps: 3, K: 4, Seed: 1, Model: "m"})
	defer in.Release()
	err = profile.Check(profile.Config{}, in, func(int, *profile.Reject) { t.Fatal("no row is checked with an invalid config") })
	require.ErrorContains(t, err, "profile.max_steps")
}

// TestOffsetsOutsideValues: Compute and Calc.Trace check their offsets
// against values and reject, rather than panic.
func TestOffsetsOutsideValues(t *testing.T) {
	calc := newCalc(t, profile.DefaultConfig())
	for _, tc := range []struct {
		name string
		offs []int32
	}{
		{"past the end", []int32{0, 2, 5}},
		{"a middle step past the end", []int32{0, 100, 3}},
		{"negative", []int32{-1, 1, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NotPanics(t, func() {
				_, rej := calc.Trace([]float32{-0.1, -0.2}, tc.offs, []float32{-0.1, -2, -0.2})
				require.NotNil(t, rej)
				require.Equal(t, schemas.ReasonMismatch, rej.Reason)
				require.Contains(t, rej.Detail, "outside the 3 values")
				_, rej = profile.Compute(calc, []float64{-0.1, -0.2}, tc.offs, []float64{-0.1, -2, -0.2})
				require.NotNil(t, rej)
				require.Equal(t, schemas.ReasonMismatch, rej.Reason)
			})
		})
	}
	// Offsets into a larger buffer, not starting at 0, are fine.
	p, rej := calc.Trace([]float32{-0.1}, []int32{2, 4}, []float32{-5, -5, -0.1, -2.4})
	require.Nil(t, rej)
	require.Equal(t, 1, p.N)
}

// TestNilAllocator: New and Synthetic with a nil allocator use
// memory.DefaultAllocator instead of panicking later.
func TestNilAllocator(t *testing.T) {
	in := profile.Synthetic(nil, profile.SynthConfig{Traces: 3, Steps: 5, K: 4, Seed: 2, Model: "m"})
	defer in.Release()
	op, err := profile.New(profile.DefaultConfig(), nil, nil)
	require.NoError(t, err)
	require.NotPanics(t, func() {
		out, err := op.Process(context.Background(), in)
		require.NoError(t, err)
		defer out[0].Release()
		status := out[0].Column(schemas.MustIndex(schemas.Scored, schemas.ColStatus)).(*array.String)
		for i := range status.Len() {
			require.Equal(t, schemas.StatusOK, status.Value(i))
		}
	})
}

// TestMeanWithinValues: the entropies of a long trace whose steps are all
// alike sum with rounding error; the mean was 1e-12 above the max (or
// below the min) on 50,000 steps. It is never outside the entropies, and
// the spread is 0.
func TestMeanWithinValues(t *testing.T) {
	cfg := profile.DefaultConfig()
	cfg.MaxSteps = 60000
	calc := newCalc(t, cfg)
	for _, tc := range []struct {
		n    int
		alts []float64
	}{
		{3, []float64{-0.1, -2.4, -3.3, -4.7}},
		{50000, []float64{-0.1, -2.4, -3.3, -4.7}}, // the mean was above the max
		{50000, []float64{-0.05, -3.2, -3.9, -5.1, -6}},
		{50000, []float64{-0.7, -0.9, -2.2}},
	} {
		n, alts := tc.n, tc.alts
		chosen := make([]float64, n)
		offs := make([]int32, n+1)
		var values []float64
		for i := range n {
			chosen[i] = alts[0]
			values = append(values, alts...)
			offs[i+1] = int32(len(values))
		}
		p, rej := profile.Compute(calc, chosen, offs, values)
		require.Nil(t, rej)
		f := p.Features
		require.LessOrEqual(t, f[profile.FMean], f[profile.FMax], "n=%d", n)
		require.Equal(t, f[profile.FMax], f[profile.FMean], "n=%d: every step has the same entropy", n)
		require.Zero(t, f[profile.FStd], "n=%d", n)
	}
}
