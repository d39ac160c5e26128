package profile_test

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/entropy"
	"github.com/entrowatch/entrowatch/operators/profile"
)

// reference computes a profile the plain way: StepOf per step, two-pass
// moments, a full sort for the quantiles and the top-5% mean.
func reference(chosen []float64, steps [][]float64) profile.Profile {
	n := len(chosen)
	fn := float64(n)
	h := make([]float64, n)
	var p profile.Profile
	var margins, nllSum, nllMax float64
	for t, s := range steps {
		st, bad := entropy.StepOf(s, profile.DefaultConfig().MaxLogprob)
		if bad != entropy.OK {
			panic("invalid reference input")
		}
		h[t] = st.H
		margins += st.Margin
		nllSum -= chosen[t]
		nllMax = math.Max(nllMax, -chosen[t])
	}
	var sum float64
	for _, v := range h {
		sum += v
	}
	mean := sum / fn
	var m2, m3, m4 float64
	for _, v := range h {
		d := v - mean
		m2 += d * d
		m3 += d * d * d
		m4 += d * d * d * d
	}
	sort.Float64s(h)
	f := &p.Features
	f[profile.FMean], f[profile.FMax], f[profile.FSea] = mean, h[n-1], sum
	if n > 1 {
		s := math.Sqrt(m2 / (fn - 1))
		f[profile.FStd] = s
		f[profile.FSkew] = (m3 / fn) / (s*s*s + 1e-8)
		f[profile.FKurt] = (m4 / fn) / (s*s*s*s + 1e-8)
	}
	for i, q := range []float64{0.1, 0.25, 0.5, 0.75, 0.9} {
		pos := q * float64(n-1)
		lo := int(pos)
		v := h[lo]
		if lo+1 < n {
			v += (pos - float64(lo)) * (h[lo+1] - h[lo])
		}
		f[profile.FQ10+i] = v
	}
	m := max(1, int(math.Ceil(0.05*fn)))
	var top float64
	for _, v := range h[n-m:] {
		top += v
	}
	b := &p.Baselines
	b[profile.BNLLMean], b[profile.BNLLMax], b[profile.BNLLSum] = nllSum/fn, nllMax, nllSum
	b[profile.BPerplexity] = math.Exp(nllSum / fn)
	b[profile.BMinTokenProb] = math.Exp(-nllMax)
	b[profile.BMarginMean] = margins / fn
	b[profile.BHTop5] = top / float64(m)
	p.N = n
	return p
}

// TestComputeMatchesReference checks the tuned Compute (vectorised kernel and
// multi-select when the build has them) against the plain computation to 1e-12
// (relative, on max(1, |want|)), on random traces with -9999, -Inf, ties,
// short and long trajectories and k from 1 to 21, in float64 and float32.
func TestComputeMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	calc := newCalc(t, profile.DefaultConfig())
	for trial := range 300 {
		n := 1 + rng.IntN(600)
		k := 1 + rng.IntN(21)
		chosen := make([]float64, n)
		steps := make([][]float64, n)
		offs := []int32{0}
		var vals []float64
		for t := range steps {
			s := make([]float64, k)
			for i := range s {
				switch r := rng.IntN(30); {
				case r == 0:
					s[i] = entropy.NoProb
				case r == 1:
					s[i] = math.Inf(-1)
				case trial%6 == 0:
					s[i] = -float64(rng.IntN(3)) // many equal entropies
				default:
					s[i] = -rng.ExpFloat64() * 3
				}
			}
			steps[t] = s
			chosen[t] = -rng.ExpFloat64()
			vals = append(vals, s...)
			offs = append(offs, int32(len(vals)))
		}
		check := func(what string, got profile.Profile, want profile.Profile) {
			t.Helper()
			require.Equal(t, want.N, got.N)
			for i, w := range want.Features {
				g := got.Features[i]
				require.LessOrEqual(t, math.Abs(g-w), 1e-12*math.Max(1, math.Abs(w)),
					"%s trial %d n=%d k=%d feature %d: %.17g, want %.17g", what, trial, n, k, i, g, w)
			}
			for i, w := range want.Baselines {
				g := got.Baselines[i]
				require.LessOrEqual(t, math.Abs(g-w), 1e-12*math.Max(1, math.Abs(w)),
					"%s trial %d n=%d k=%d baseline %d: %.17g, want %.17g", what, trial, n, k, i, g, w)
			}
		}
		got, rej := profile.Compute(calc, chosen, offs, vals)
		require.Nil(t, rej)
		check("float64", got, reference(chosen, steps))

		// float32: the reference reads the same rounded values.
		c32, v32 := make([]float32, n), make([]float32, len(vals))
		for i, v := range chosen {
			c32[i] = float32(v)
			chosen[i] = float64(c32[i])
		}
		for i, v := range vals {
			v32[i] = float32(v)
		}
		for _, s := range steps {
			for i, v := range s {
				s[i] = float64(float32(v))
			}
		}
		got, rej = calc.Trace(c32, offs, v32)
		require.Nil(t, rej)
		check("float32", got, reference(chosen, steps))
	}
}
