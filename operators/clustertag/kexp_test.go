package clustertag

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestKCriteria prints, per k, several model-selection criteria beside the
// true ARI; it runs only with CLUSTERTAG_KEXP set.
func TestKCriteria(t *testing.T) {
	if os.Getenv("CLUSTERTAG_KEXP") == "" {
		t.Skip("set CLUSTERTAG_KEXP to print the k-selection criteria")
	}
	d, err := ReadFile(sharedData(t, "prompts-dev.csv.gz"))
	require.NoError(t, err)
	tp, td := split(d, false)
	hp, hd := split(d, true)
	var ap, ad []string
	for _, x := range d.Docs {
		ap, ad = append(ap, x.Prompt), append(ad, x.Domain)
	}
	for _, part := range []struct {
		name string
		p, d []string
	}{{"tune", tp, td}, {"held", hp, hd}, {"all", ap, ad}} {
		cfg := DefaultFitConfig()
		if v := os.Getenv("CLUSTERTAG_LSA"); v != "" {
			fmt.Sscan(v, &cfg.LSA)
		}
		cfg.Vector.Bigrams = os.Getenv("CLUSTERTAG_BIGRAMS") != "0"
		ts, err := buildTerms(part.p, cfg)
		require.NoError(t, err)
		rng := rand.New(rand.NewPCG(1, 2))
		pr := truncatedSVD(ts.x, cfg.LSA, cfg.PowerIters, rng)
		x := denseCSR(project(ts.x, pr, cfg.LSA), cfg.LSA)
		n := x.rows()
		sample := rng.Perm(n)[:min(n, 2000)]
		slices.Sort(sample)
		dl := pairwiseDistances(x, sample)
		dt := pairwiseDistances(ts.x, sample)
		truth := Codes(part.d)
		for k := 2; k <= 16; k++ {
			var runs []kmeansResult
			for r := 0; r < 8; r++ {
				res, err := sphericalKMeans(context.Background(), x, k, 100, rng)
				require.NoError(t, err)
				runs = append(runs, res)
			}
			slices.SortFunc(runs, func(a, b kmeansResult) int {
				if a.objective > b.objective {
					return -1
				}
				return 1
			})
			best := runs[0]
			var agree float64
			cnt := 0
			for i := 0; i < len(runs); i++ {
				for j := i + 1; j < len(runs); j++ {
					agree += ARI(runs[i].assign, runs[j].assign)
					cnt++
				}
			}
			// Stability on half samples: two fits on different random halves,
			// compared on the points both assign (by nearest centroid).
			fmt.Printf("%s k=%2d obj %.1f silLSA %.4f silTFIDF %.4f agree %.3f CH %.2f | ARI %.3f purity %.3f\n",
				part.name, k, best.objective, silhouette(sample, dl, best.assign, k), silhouette(sample, dt, best.assign, k),
				agree/float64(cnt), calinski(x, best.assign, k), ARI(truth, best.assign), Purity(truth, best.assign))
		}
	}
}

// calinski is the Calinski-Harabasz index of assign (Euclidean, on the rows).
func calinski(x *csr, assign []int, k int) float64 {
	n := x.rows()
	sums := make([]float64, k*x.dim)
	all := make([]float64, x.dim)
	cnt := make([]int, k)
	for i := 0; i < n; i++ {
		idx, val := x.row(i)
		c := assign[i]
		cnt[c]++
		for q, j := range idx {
			sums[c*x.dim+int(j)] += float64(val[q])
			all[j] += float64(val[q])
		}
	}
	sq := func(v []float64) float64 {
		var s float64
		for _, a := range v {
			s += a * a
		}
		return s
	}
	total := float64(n) - sq(all)/float64(n)
	var within float64
	for c := 0; c < k; c++ {
		if cnt[c] > 0 {
			within += float64(cnt[c]) - sq(sums[c*x.dim:(c+1)*x.dim])/float64(cnt[c])
		}
	}
	return ((total - within) / float64(k-1)) / (within / float64(n-k))
}
