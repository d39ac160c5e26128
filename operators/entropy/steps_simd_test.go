//go:build goexperiment.simd && amd64

package entropy

import (
	"math"
	"math/rand/v2"
	"simd/archsimd"
	"testing"
)

func TestExp8MatchesMathExp(t *testing.T) {
	if !useVector {
		t.Skip("CPU without AVX-512: the vector kernel does not run here")
	}
	rng := rand.New(rand.NewPCG(9, 9))
	worst := 0.0
	var xs [8]float64
	check := func() {
		var got [8]float64
		exp8(archsimd.LoadFloat64x8(&xs)).Store(&got)
		for i, x := range xs {
			want := math.Exp(x)
			rel := math.Abs(got[i]-want) / want
			worst = max(worst, rel)
			if rel > 1e-15 {
				t.Fatalf("exp8(%.17g) = %.17g, math.Exp = %.17g, relative error %.3g", x, got[i], want, rel)
			}
		}
	}
	xs = [8]float64{0, -0.0, 1e-4, 1, -1, -math.Ln2, -707.9, -708}
	check()
	for range 50000 {
		for i := range xs {
			if i%2 == 0 {
				xs[i] = -rng.Float64() * 30
			} else {
				xs[i] = -rng.ExpFloat64() * 50
			}
			xs[i] = max(xs[i], expMin)
		}
		check()
	}
	t.Logf("worst relative error %.3g", worst)
}
