package clustertag

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// blobs returns n unit vectors around each of k orthogonal directions in dim
// dimensions (dim >= k), topic-major.
func blobs(k, n, dim int, noise float64, seed uint64) ([][]float32, []int) {
	rng := rand.New(rand.NewPCG(seed, 3))
	var out [][]float32
	var lab []int
	for c := 0; c < k; c++ {
		for i := 0; i < n; i++ {
			v := make([]float32, dim)
			for j := range v {
				v[j] = float32(rng.NormFloat64() * noise)
			}
			v[c] += 1
			out = append(out, v)
			lab = append(lab, c)
		}
	}
	return out, lab
}

func quietConfig() FitConfig {
	cfg := DefaultFitConfig()
	cfg.Restarts = 3
	cfg.KMax = 8
	return cfg
}

func TestKMeansRecoversSeparatedClusters(t *testing.T) {
	vecs, truth := blobs(4, 60, 12, 0.1, 1)
	for _, tc := range []struct {
		name string
		k    int
	}{{"fixed k", 4}, {"auto k", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := quietConfig()
			cfg.K = tc.k
			m, err := FitEmbeddings(context.Background(), vecs, nil, cfg, nil)
			require.NoError(t, err)
			require.Len(t, m.Clusters, 4)
			tg := m.NewTagger()
			pred := make([]int, len(vecs))
			for i, v := range vecs {
				c, _, err := tg.TagVector(v)
				require.NoError(t, err)
				pred[i] = tg.nearestIndex()
				_ = c
			}
			require.Equal(t, 1.0, ARI(truth, pred))
		})
	}
}

func TestFitTextTopics(t *testing.T) {
	prompts, truth := synthPrompts(40, 1)
	for _, lsa := range []int{0, 10} {
		cfg := quietConfig()
		cfg.LSA = lsa
		m, err := Fit(context.Background(), prompts, cfg, nil)
		require.NoError(t, err)
		require.Len(t, m.Clusters, 3, "lsa=%d", lsa)
		require.Equal(t, 1.0, ARI(truth, fitAssign(m, prompts)), "lsa=%d", lsa)
		for _, c := range m.Clusters {
			require.Len(t, c.TopTerms, 3)
			require.NotEmpty(t, c.Label)
		}
	}
}

func TestUnclusteredThreshold(t *testing.T) {
	vecs, _ := blobs(3, 50, 8, 0.05, 2)
	cfg := quietConfig()
	cfg.K = 3
	cfg.ThresholdQuantile = 1 // every training point within its cluster
	m, err := FitEmbeddings(context.Background(), vecs, nil, cfg, nil)
	require.NoError(t, err)
	tg := m.NewTagger()
	for _, v := range vecs {
		c, _, err := tg.TagVector(v)
		require.NoError(t, err)
		require.NotEqual(t, Unclustered, c)
	}
	// A direction none of the clusters covers.
	far := make([]float32, 8)
	far[6] = 1
	c, d, err := tg.TagVector(far)
	require.NoError(t, err)
	require.Equal(t, Unclustered, c)
	require.Greater(t, d, float32(0.5))
	// A prompt without any known term is unclustered at distance 1.
	prompts, _ := synthPrompts(20, 3)
	mt, err := Fit(context.Background(), prompts, quietConfig(), nil)
	require.NoError(t, err)
	c, d = mt.NewTagger().Tag("zyx qwv")
	require.Equal(t, Unclustered, c)
	require.Equal(t, float32(1), d)
}

func TestArtifactRoundTripAndCarry(t *testing.T) {
	prompts, _ := synthPrompts(30, 4)
	cfg := quietConfig()
	cfg.K = 3
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	dir := t.TempDir()
	path := filepath.Join(dir, "clusters.json")
	require.NoError(t, m.Save(path))
	got, err := Load(path)
	require.NoError(t, err)
	require.Equal(t, m, got)
	require.Regexp(t, `^sha256:[0-9a-f]{16}$`, got.Version)
	a, b := m.NewTagger(), got.NewTagger()
	for _, p := range prompts {
		ca, da := a.Tag(p)
		cb, db := b.Tag(p)
		require.Equal(t, ca, cb)
		require.Equal(t, da, db)
	}

	t.Run("edited artifact is refused", func(t *testing.T) {
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		bad := filepath.Join(dir, "bad.json")
		require.NoError(t, os.WriteFile(bad, []byte(replaceOnce(string(raw), `"size": `, `"size": 1`)), 0o644))
		_, err = Load(bad)
		require.ErrorIs(t, err, ErrArtifact)
		require.ErrorContains(t, err, "content hash")
	})

	t.Run("estimator artifact is named", func(t *testing.T) {
		est := filepath.Join(dir, "estimator.json")
		require.NoError(t, os.WriteFile(est, []byte(`{"format":"entrowatch.estimator.v1","version":"sha256:0123456789abcdef","fallback":"*","models":{"*":{"model":"*"}}}`), 0o644))
		_, err := Load(est)
		require.ErrorIs(t, err, ErrArtifact)
		require.ErrorContains(t, err, est+" is an estimator artifact (entrowatch train); pass it with --estimator")
		other := filepath.Join(dir, "v2.json")
		require.NoError(t, os.WriteFile(other, []byte(replaceOnce(string(raw(t, path)), Format, "entrowatch.clusters.v2")), 0o644))
		_, err = Load(other)
		require.ErrorContains(t, err, "written by another version of entrowatch")
	})

	t.Run("refit keeps ids", func(t *testing.T) {
		// Same topics, another sample and seed: k-means numbers them anew,
		// Carry must give each topic its old id back.
		p2, truth2 := synthPrompts(30, 5)
		cfg2 := cfg
		cfg2.Seed = 99
		m2, err := Fit(context.Background(), p2, cfg2, nil)
		require.NoError(t, err)
		lin, err := m2.Carry(got, DefaultMinSimilarity)
		require.NoError(t, err)
		require.Equal(t, got.Version, lin.Version)
		require.NoError(t, m2.Seal())
		oldT, newT := got.NewTagger(), m2.NewTagger()
		for i, p := range p2 {
			co, _ := oldT.Tag(p)
			cn, _ := newT.Tag(p)
			if co == Unclustered || cn == Unclustered {
				continue
			}
			require.Equal(t, got.Clusters[co].ID, m2.Clusters[cn].ID, "prompt %d (topic %d)", i, truth2[i])
		}
		for _, mt := range lin.Matches {
			require.GreaterOrEqual(t, mt.Old, 0)
			require.Greater(t, mt.Similarity, 0.8)
		}
		require.Equal(t, 3, m2.NextID)
	})

	t.Run("new topic gets a fresh id", func(t *testing.T) {
		two, _ := synthPrompts(30, 6)
		two = two[:60] // topics 0 and 1 only
		cfg2 := cfg
		cfg2.K = 2
		m1, err := Fit(context.Background(), two, cfg2, nil)
		require.NoError(t, err)
		require.NoError(t, m1.Seal())
		m3, err := Fit(context.Background(), prompts, cfg, nil)
		require.NoError(t, err)
		lin, err := m3.Carry(m1, DefaultMinSimilarity)
		require.NoError(t, err)
		var fresh []int
		kept := map[int]bool{}
		for _, mt := range lin.Matches {
			if mt.Old < 0 {
				fresh = append(fresh, mt.ID)
			} else {
				kept[mt.ID] = true
			}
		}
		require.Equal(t, []int{2}, fresh)
		require.Equal(t, map[int]bool{0: true, 1: true}, kept)
		require.Equal(t, 3, m3.NextID)
	})
}

func replaceOnce(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	return s
}

func TestHungarian(t *testing.T) {
	// Greedy would take 0.9 (row 0 -> col 0) and then 0.1; the optimum pairs
	// 0->1 and 1->0 for 0.8 + 0.85.
	require.Equal(t, []int{1, 0}, hungarian([][]float64{{0.9, 0.8}, {0.85, 0.1}}))
	require.Equal(t, []int{-1, 0, 1}, hungarian([][]float64{{0, 0}, {1, 0}, {0, 1}}))
	require.Equal(t, []int{2}, hungarian([][]float64{{0.1, 0.2, 0.9}}))
}

// TestIdenticalPrompts: clusters of identical prompts have threshold 0; the
// same prompt must still be tagged with its cluster.
func TestIdenticalPrompts(t *testing.T) {
	var prompts []string
	for i := 0; i < 20; i++ {
		prompts = append(prompts, "solve the quadratic equation for x", "write a python function that sorts a list")
	}
	cfg := quietConfig()
	cfg.K = 2
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	tg := m.NewTagger()
	a, _ := tg.Tag(prompts[0])
	b, _ := tg.Tag(prompts[1])
	require.NotEqual(t, Unclustered, a)
	require.NotEqual(t, Unclustered, b)
	require.NotEqual(t, a, b)
}

// TestPromptsWithoutTerms: prompts without any vocabulary term are left out
// of the fit instead of piling into one cluster.
func TestPromptsWithoutTerms(t *testing.T) {
	prompts, _ := synthPrompts(20, 10)
	prompts = append(prompts, "!!", "a b", "Which of the following?")
	cfg := quietConfig()
	cfg.K = 3
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	require.Equal(t, 60, m.Fit.Prompts)
	total := 0
	for _, c := range m.Clusters {
		total += c.Size
		require.Equal(t, 20, c.Size)
	}
	require.Equal(t, 60, total)
}

func raw(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// TestClusterWarnings: empty clusters and few prompts per cluster are reported,
// a healthy fit has no warnings.
func TestClusterWarnings(t *testing.T) {
	m := &Model{Selection: Selection{Method: "fixed"}, Clusters: []Cluster{{ID: 0, Size: 40, Threshold: 0.3}, {ID: 1, Size: 0}}}
	w := fitWarnings(m, 40, "prompts", nil, 2, "")
	require.Len(t, w, 1)
	require.Contains(t, w[0], "1 of the 2 clusters have no training prompts")
	m.Clusters[1].Size = 2
	w = fitWarnings(m, 8, "prompts", nil, 2, "")
	require.Len(t, w, 1)
	require.Contains(t, w[0], "k=2 for 8 distinct prompts is 4.0 per cluster on average")
	require.Contains(t, w[0], "1 of them have an unclustered threshold of 0")
	require.Contains(t, w[0], "use --k auto, or a k of at most 2")

	prompts, _ := synthPrompts(30, 4)
	cfg := quietConfig()
	cfg.K = 3
	fit, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	require.Empty(t, fit.Warnings)
}
