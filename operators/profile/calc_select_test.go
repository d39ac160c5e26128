package profile

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/entrowatch/entrowatch/schemas"
)

// TestMultiSelect checks the order-statistic invariant of multiSelect against
// a sort, on distinct values, many ties and sorted input, including the
// depth-limited fallback to sorting.
func TestMultiSelect(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for trial := range 3000 {
		n := 1 + rng.IntN(700)
		a := make([]float64, n)
		for i := range a {
			switch trial % 4 {
			case 0:
				a[i] = rng.Float64()
			case 1:
				a[i] = float64(rng.IntN(4)) // ties
			case 2:
				a[i] = float64(i) // already sorted
			default:
				a[i] = float64(n - i) // reversed
			}
		}
		var ks []int
		for range 1 + rng.IntN(11) {
			ks = append(ks, rng.IntN(n))
		}
		slices.Sort(ks)
		ks = slices.Compact(ks)
		want := slices.Clone(a)
		slices.Sort(want)
		depth := rng.IntN(20) // small depths exercise the sort fallback
		multiSelect(a, 0, n-1, ks, depth)
		for _, k := range ks {
			if a[k] != want[k] {
				t.Fatalf("trial %d n=%d depth=%d: a[%d] = %v, want %v", trial, n, depth, k, a[k], want[k])
			}
			for i, v := range a {
				if i < k && v > a[k] || i > k && v < a[k] {
					t.Fatalf("trial %d n=%d: a[%d] = %v on the wrong side of a[%d] = %v", trial, n, i, v, k, a[k])
				}
			}
		}
	}
}

func BenchmarkQuantiles(b *testing.B) {
	for _, n := range []int{64, 400, 2048} {
		b.Run("n="+strconv.Itoa(n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			src := make([]float64, n)
			for i := range src {
				src[i] = rng.Float64() * 2
			}
			h := make([]float64, n)
			var f [schemas.NumProfile]float64
			for b.Loop() {
				copy(h, src)
				quantiles(h, &f)
			}
		})
	}
}
