package clustertag

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
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
		require.NoError(t, os.WriteFile(other, []byte(replaceOnce(string(raw(t, path)), Format, "entrowatch.clusters.v9")), 0o644))
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
		lin, err := m2.Carry(got, DefaultMinSimilarity, false)
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
		lin, err := m3.Carry(m1, DefaultMinSimilarity, false)
		require.NoError(t, err)
		var fresh []int
		kept := map[int]bool{}
		for _, mt := range lin.Matches {
			// Every new cluster knows its nearest old one, paired or not
			// (the third, paired with none, has Similarity 0).
			require.Contains(t, []int{0, 1}, mt.Nearest)
			require.GreaterOrEqual(t, mt.NearestSimilarity, mt.Similarity)
			if mt.Old < 0 {
				fresh = append(fresh, mt.ID)
				require.Zero(t, mt.Similarity, "unpaired")
			} else {
				kept[mt.ID] = true
				require.Equal(t, mt.Old, mt.Nearest)
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

// TestCarryKeepsLabels: a refit with --previous keeps each matched cluster's
// label (domains, collected labels, baselines and queue counts are keyed by
// it); the new top terms are still recorded; relabel names them afresh; a
// new cluster whose label would repeat a kept one gets "#id".
func TestCarryKeepsLabels(t *testing.T) {
	prompts, _ := synthPrompts(30, 4)
	cfg := quietConfig()
	cfg.K = 3
	fit := func(p []string, k int, seed uint64) *Model {
		c := cfg
		c.K, c.Seed = k, seed
		m, err := Fit(context.Background(), p, c, nil)
		require.NoError(t, err)
		return m
	}
	old := fit(prompts[:60], 2, 1) // the first two topics
	for c := range old.Clusters {
		old.Clusters[c].Label = fmt.Sprintf("topic %d of the old fit", old.Clusters[c].ID)
	}
	require.NoError(t, old.Seal())
	p2, _ := synthPrompts(30, 5)

	m := fit(p2, 3, 9)
	lin, err := m.Carry(old, DefaultMinSimilarity, false)
	require.NoError(t, err)
	require.False(t, lin.Relabel)
	oldLabel := map[int]string{}
	for _, c := range old.Clusters {
		oldLabel[c.ID] = c.Label
	}
	fresh := 0
	for i, mt := range lin.Matches {
		c := m.Clusters[i]
		require.Len(t, c.TopTerms, 3)
		if mt.Old < 0 {
			fresh++
			require.Equal(t, strings.Join(c.TopTerms, "/"), strings.TrimSuffix(c.Label, fmt.Sprintf("#%d", c.ID)))
			continue
		}
		require.Equal(t, oldLabel[mt.Old], c.Label, "cluster %d keeps its label", c.ID)
		require.Equal(t, oldLabel[mt.Old], mt.OldLabel)
	}
	require.Equal(t, 1, fresh)

	m = fit(p2, 3, 9)
	lin, err = m.Carry(old, DefaultMinSimilarity, true)
	require.NoError(t, err)
	require.True(t, lin.Relabel)
	for _, c := range m.Clusters {
		require.Equal(t, strings.Join(c.TopTerms, "/"), c.Label, "relabel: named from the new fit's terms")
	}
}

// TestNameClustersKeep: a new label equal to a kept one yields ("#id"); the
// kept label never changes.
func TestNameClustersKeep(t *testing.T) {
	cl := []Cluster{{ID: 4, TopTerms: []string{"a", "b"}}, {ID: 7, TopTerms: []string{"c"}}, {ID: 9, TopTerms: []string{"d"}}}
	nameClusters(cl, map[int]string{1: "a/b"})
	require.Equal(t, []string{"a/b#4", "a/b", "d"}, []string{cl[0].Label, cl[1].Label, cl[2].Label})
}

// TestKChoiceWarning: --k auto warns when the stability of the chosen k is
// not clearly above that of a non-adjacent k (flat scores); a clear peak,
// or a tie with a neighbouring k only, does not.
func TestKChoiceWarning(t *testing.T) {
	flat := map[int]float64{3: 0.26, 4: 0.33, 5: 0.36, 6: 0.36, 7: 0.34, 18: 0.386, 19: 0.37, 20: 0.389}
	w := kChoiceWarning(Selection{Method: CriterionStability, K: 20, Scores: flat})
	require.Contains(t, w, "--k auto picked k=20 with stability 0.389, not clearly above k=18's 0.386")
	require.Contains(t, w, "every k from 3 to 20 scored 0.260-0.389")
	require.Contains(t, w, "unreliable")
	require.Contains(t, w, "e.g. --k 5, the smallest k within 0.05 of the best")

	peak := map[int]float64{3: 0.36, 4: 0.65, 5: 0.63, 6: 0.45, 20: 0.46}
	require.Empty(t, kChoiceWarning(Selection{Method: CriterionStability, K: 4, Scores: peak}), "a tie with k=5 only")
	require.Empty(t, kChoiceWarning(Selection{Method: "fixed", K: 4}))

	// End to end: prompts from one pool of words have no topics; the
	// restarts agree about equally little at every k.
	var prompts []string
	words := strings.Fields("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu amber basil cedar dune ember fern grove heath iris jade kelp lotus moss")
	rng := rand.New(rand.NewPCG(3, 3))
	for i := 0; i < 200; i++ {
		var p []string
		for j := 0; j < 6; j++ {
			p = append(p, words[rng.IntN(len(words))])
		}
		prompts = append(prompts, strings.Join(p, " "))
	}
	cfg := quietConfig()
	cfg.KMax = 10
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	require.Len(t, m.Selection.Scores, 8)
	require.Contains(t, strings.Join(m.Warnings, "\n"), "the choice of k is unreliable", "scores: %v", m.Selection.Scores)

	topics, _ := synthPrompts(40, 1)
	m, err = Fit(context.Background(), topics, cfg, nil)
	require.NoError(t, err)
	require.Empty(t, m.Warnings, "three clear topics: scores %v", m.Selection.Scores)
}

// TestArtifactWithoutVersion: deleting "version" bypassed the content
// check, so a hand-edited label and threshold were loaded.
func TestArtifactWithoutVersion(t *testing.T) {
	prompts, _ := synthPrompts(20, 4)
	cfg := quietConfig()
	cfg.K = 3
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	dir := t.TempDir()
	path := filepath.Join(dir, "clusters.json")
	require.NoError(t, m.Save(path))
	var doc map[string]any
	require.NoError(t, json.Unmarshal(raw(t, path), &doc))
	cl := doc["clusters"].([]any)[0].(map[string]any)
	cl["label"], cl["threshold"] = "edited", 0.99
	for name, version := range map[string]any{"missing": nil, "empty": "", "wrong": "sha256:0123456789abcdef", "not a hash": "v1"} {
		t.Run(name, func(t *testing.T) {
			if version == nil {
				delete(doc, "version")
			} else {
				doc["version"] = version
			}
			b, err := json.Marshal(doc)
			require.NoError(t, err)
			bad := filepath.Join(dir, "edited.json")
			require.NoError(t, os.WriteFile(bad, b, 0o644))
			_, err = Load(bad)
			require.ErrorIs(t, err, ErrArtifact)
			if version == nil || version == "" {
				require.ErrorContains(t, err, `no "version"`)
			} else {
				require.ErrorContains(t, err, "does not match version")
			}
			_, err = LoadPrevious(bad)
			require.ErrorIs(t, err, ErrArtifact)
		})
	}
}

// TestArtifactV1: a v1 artifact measured its thresholds on another scale: it
// is refused for tagging with a message saying how to refit, and read as a
// --previous artifact so that the refit keeps its ids and labels.
func TestArtifactV1(t *testing.T) {
	prompts, _ := synthPrompts(20, 4)
	cfg := quietConfig()
	cfg.K = 3
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	m.Format, m.OOVIDF, m.Fit.Thresholds = formatV1, 0, ""
	require.NoError(t, m.Seal())
	path := filepath.Join(t.TempDir(), "v1.json")
	require.NoError(t, m.Save(path))
	_, err = Load(path)
	require.ErrorIs(t, err, ErrArtifact)
	require.ErrorContains(t, err, "format entrowatch.clusters.v1 was written by an older entrowatch")
	require.ErrorContains(t, err, "--previous "+path)
	prev, err := LoadPrevious(path)
	require.NoError(t, err)
	m2, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	lin, err := m2.Carry(prev, DefaultMinSimilarity, false)
	require.NoError(t, err)
	for i, mt := range lin.Matches {
		require.GreaterOrEqual(t, mt.Old, 0)
		require.Equal(t, mt.OldLabel, m2.Clusters[i].Label)
	}
}
