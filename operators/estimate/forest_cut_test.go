package estimate

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestForestStableToRounding: no training value sits on a split threshold,
// so a feature one rounding away (another summation order, FMA, float32 in
// the stream) gets the same score. Thresholds were training values: 22
// trees of a tinylm model split on `max` exactly at one row's value, and
// the last-bit difference between the AVX-512 and the portable build moved
// that row's p_correct from 0.96 to 0.57.
func TestForestStableToRounding(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 5))
	const n, d = 600, 3
	x := make([]float64, n*d)
	y := make([]float64, n)
	for i := range n {
		for j := range d {
			// few distinct values per feature, as quantised features have:
			// many rows share each quantile's value
			x[i*d+j] = math.Round(rng.NormFloat64()*4) / 4
		}
		if x[i*d]+0.5*x[i*d+1]+rng.NormFloat64()*0.5 > 0 {
			y[i] = 1
		}
	}
	f := fitForest(x, d, y, nil, defaultForestParams(3))
	onCut := 0
	for _, tr := range f.Trees {
		for nd, feat := range tr.Feature {
			if feat < 0 {
				continue
			}
			for i := range n {
				if x[i*d+feat] == tr.Thresh[nd] {
					onCut++
				}
			}
		}
	}
	require.Zero(t, onCut, "training values on a split threshold")
	z := make([]float64, d)
	for i := range n {
		copy(z, x[i*d:(i+1)*d])
		want := f.Score(z)
		for j := range d {
			for _, dir := range []float64{math.Inf(1), math.Inf(-1)} {
				copy(z, x[i*d:(i+1)*d])
				z[j] = math.Nextafter(z[j], dir)
				require.Equal(t, want, f.Score(z), "row %d: feature %d one ulp away changes the score", i, j)
			}
		}
	}
}
