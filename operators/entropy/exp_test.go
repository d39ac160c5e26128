package entropy

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestExpMatchesMathExp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	worst := 0.0
	check := func(x float64) {
		if x < expMin {
			if got := prob(x); got != 0 {
				t.Fatalf("prob(%g) = %g, want 0 below %d", x, got, expMin)
			}
			return
		}
		got, want := Exp(x), math.Exp(x)
		rel := math.Abs(got-want) / want
		if rel > worst {
			worst = rel
		}
		if rel > 1e-15 {
			t.Fatalf("Exp(%.17g) = %.17g, math.Exp = %.17g, relative error %.3g", x, got, want, rel)
		}
	}
	for _, x := range []float64{0, math.Copysign(0, -1), 1e-300, -1e-300, 1e-4, 1, 0.9999, -1, -math.Ln2, -20, -100, -707.9, -708, -708.1, -9999, math.Inf(-1)} {
		check(x)
	}
	for range 200000 {
		check(-rng.Float64() * 30)
		check(-rng.ExpFloat64() * 50)
	}
	t.Logf("worst relative error %.3g", worst)
}

func BenchmarkExp(b *testing.B) {
	xs := make([]float64, 1024)
	for i := range xs {
		xs[i] = -float64(i%97) * 0.173
	}
	var s float64
	for b.Loop() {
		for _, x := range xs {
			s += Exp(x)
		}
	}
	sink = s
}

var sink float64
