package clustertag

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFitConfigBounds: every count or size that drives an allocation or a
// loop of a fit has an upper bound, refused with a range error naming the
// setting. --restarts 1000000000 ran out of memory (make of a billion
// k-means results); --k-max 9223372036854775807 was accepted.
func TestFitConfigBounds(t *testing.T) {
	require.NoError(t, DefaultFitConfig().Validate())
	for _, tc := range []struct {
		name string
		edit func(*FitConfig)
		want string
	}{
		{"restarts", func(c *FitConfig) { c.Restarts = 1000000000 }, "restarts 1000000000 out of range [1, 100]"},
		{"restarts at the bound", func(c *FitConfig) { c.Restarts = maxRestarts }, ""},
		{"restarts zero", func(c *FitConfig) { c.Restarts = 0 }, "restarts 0 out of range [1, 100]"},
		{"k_max", func(c *FitConfig) { c.KMax = math.MaxInt }, fmt.Sprintf("k_max %d out of range: --k auto tries at most k=1000", math.MaxInt)},
		{"k_max with a fixed k", func(c *FitConfig) { c.K, c.KMax = 5, math.MaxInt }, "k_max"},
		{"k_max at the bound", func(c *FitConfig) { c.KMax = maxClusters }, ""},
		{"k", func(c *FitConfig) { c.K = 100000 }, "k 100000 out of range: want 0 (auto) or a number of clusters in [2, 1000]"},
		{"k at the bound", func(c *FitConfig) { c.K = maxClusters }, ""},
		{"lsa", func(c *FitConfig) { c.LSA = 1 << 40 }, "lsa 1099511627776 out of range [0, 1000]"},
		{"power_iters", func(c *FitConfig) { c.PowerIters = 1 << 30 }, "power_iters 1073741824 out of range [0, 20]"},
		{"power_iters negative", func(c *FitConfig) { c.PowerIters = -1 }, "power_iters -1 out of range [0, 20]"},
		{"max_iter", func(c *FitConfig) { c.MaxIter = 1 << 40 }, "max_iter 1099511627776 out of range [1, 10000]"},
		{"silhouette_sample", func(c *FitConfig) { c.SilhouetteSample = 1 << 20 }, "silhouette_sample 1048576 out of range [10, 5000]"},
		{"max_prompts", func(c *FitConfig) { c.MaxPrompts = math.MaxInt }, fmt.Sprintf("max_prompts %d out of range [2, 100000]", math.MaxInt)},
		{"top_terms", func(c *FitConfig) { c.TopTerms = 1 << 30 }, "top_terms 1073741824 out of range [1, 10]"},
		{"top_terms zero", func(c *FitConfig) { c.TopTerms = 0 }, "top_terms 0 out of range [1, 10]"},
		{"hash_bits", func(c *FitConfig) { c.Vector.HashBits = 62 }, "hash_bits 62 out of range [8, 24]"},
		{"max_df NaN", func(c *FitConfig) { c.MaxDF = math.NaN() }, "max_df NaN must be in (0, 1]"},
		{"threshold_quantile NaN", func(c *FitConfig) { c.ThresholdQuantile = math.NaN() }, "threshold_quantile NaN must be in (0, 1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultFitConfig()
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}

	// Fit and FitEmbeddings refuse before fitting anything. (Not shown with
	// restarts 1000000000: without the bound that runs the test out of memory.)
	cfg := DefaultFitConfig()
	cfg.KMax = math.MaxInt
	prompts, _ := synthPrompts(20, 1)
	_, err := Fit(context.Background(), prompts, cfg, nil)
	require.ErrorContains(t, err, "k_max 9223372036854775807 out of range")
	cfg = DefaultFitConfig()
	cfg.TopTerms = 1 << 30
	vecs, _ := blobs(3, 20, 6, 0.05, 1)
	_, err = FitEmbeddings(context.Background(), vecs, nil, cfg, nil)
	require.ErrorContains(t, err, "top_terms 1073741824 out of range")
}

// TestAutoKRange: --k auto tried every k up to the distinct points less one
// (400 prompts became 391 clusters of one prompt each, in 41 s) while a fixed
// k above distinct/5 is warned about and one above the points refused. The
// automatic range is clamped to distinct/minPerCluster, never below k_min,
// and the progress says so.
func TestAutoKRange(t *testing.T) {
	fit := func(t *testing.T, prompts []string, kmax int) (*Model, string) {
		t.Helper()
		cfg := quietConfig()
		cfg.KMax = kmax
		var log strings.Builder
		m, err := Fit(context.Background(), prompts, cfg, func(format string, args ...any) {
			fmt.Fprintf(&log, format+"\n", args...)
		})
		require.NoError(t, err)
		return m, log.String()
	}

	t.Run("clamped to distinct/5", func(t *testing.T) {
		prompts, _ := synthPrompts(20, 1) // 60 distinct prompts: k at most 12
		m, log := fit(t, prompts, maxClusters)
		require.Equal(t, 60, m.Fit.Prompts)
		require.Equal(t, 3, minKey(m.Selection.Scores))
		require.Equal(t, 60/minPerCluster, maxKey(m.Selection.Scores), "k tried: %v", m.Selection.Scores)
		require.Contains(t, log, "k range [3, 1000] clamped to [3, 12]: a larger k would leave fewer than 5 of the 60 distinct points per cluster")
		require.LessOrEqual(t, len(m.Clusters), 12)

		// A k_max within what the data supports is not clamped.
		m, log = fit(t, prompts, 8)
		require.Equal(t, 8, maxKey(m.Selection.Scores))
		require.NotContains(t, log, "clamped")
	})

	t.Run("too few for 5 per cluster: k_min only", func(t *testing.T) {
		nine, _ := synthPrompts(3, 2) // 9 distinct prompts, 5 copies each
		var prompts []string
		for range 5 {
			prompts = append(prompts, nine...)
		}
		m, log := fit(t, prompts, 6)
		require.Equal(t, map[int]bool{3: true}, keys(m.Selection.Scores))
		require.Len(t, m.Clusters, 3)
		require.Contains(t, log, "k range [3, 6] clamped to k=3 (k_min): the 9 distinct points leave fewer than 5 per cluster at every k in it")
		// The fit warns as it does for a fixed k of 3.
		require.Contains(t, strings.Join(m.Warnings, "\n"), "k=3 for 9 distinct prompts is 3.0 per cluster on average")
	})

	t.Run("a fixed k above the points suggests the clamped range", func(t *testing.T) {
		cfg := DefaultFitConfig()
		cfg.K, cfg.KMax = 100, maxClusters
		require.ErrorContains(t, checkK(cfg, 60, "prompts", ""), "k=100 is more than the 60 distinct prompts: give --k auto (k in [3, 12] by stability), or a k of at most 12 (5 distinct per cluster)")
		cfg.K = 10
		require.ErrorContains(t, checkK(cfg, 9, "prompts", ""), "give --k auto (here only k=3, k_min), or a k of at most 2")
	})
}

func keys(m map[int]float64) map[int]bool {
	out := map[int]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}
