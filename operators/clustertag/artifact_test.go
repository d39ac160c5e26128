package clustertag

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
)

// fittedModels fits one small model per space: tfidf, lsa and embedding.
func fittedModels(t testing.TB) map[string]*Model {
	t.Helper()
	prompts, _ := synthPrompts(20, 4)
	out := map[string]*Model{}
	for space, lsa := range map[string]int{SpaceTFIDF: 0, SpaceLSA: 10} {
		cfg := quietConfig()
		cfg.K, cfg.LSA = 3, lsa
		m, err := Fit(context.Background(), prompts, cfg, nil)
		require.NoError(t, err)
		require.Equal(t, space, m.Space)
		out[space] = m
	}
	vecs, _ := blobs(3, 20, 6, 0.05, 4)
	cfg := quietConfig()
	cfg.K = 3
	m, err := FitEmbeddings(context.Background(), vecs, nil, cfg, nil)
	require.NoError(t, err)
	out[SpaceEmbedding] = m
	return out
}

// cloneModel deep-copies m through its JSON form (float vectors are exact).
func cloneModel(t *testing.T, m *Model) *Model {
	t.Helper()
	b, err := json.Marshal(m)
	require.NoError(t, err)
	var c Model
	require.NoError(t, json.Unmarshal(b, &c))
	return &c
}

// reseal sets the version the way the writer does (Seal: the content hash
// with version empty) and returns the artifact's bytes.
func reseal(t *testing.T, m *Model) []byte {
	t.Helper()
	m.Version = ""
	require.NoError(t, m.Seal())
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

// TestArtifactCheck: an artifact resealed after an edit (its content hash
// recomputed, as any writer can) was loaded with NaN or +Inf in centroids,
// idf or projection and then tagged everything unclustered, or half the
// prompts; an empty label, a cluster labelled "unclustered" (merged with
// the unclustered prompts downstream), a repeated label, a negative size
// were accepted too. Decode must refuse them, naming the cluster and field.
func TestArtifactCheck(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	models := fittedModels(t)
	text := []string{SpaceTFIDF, SpaceLSA}
	all := []string{SpaceTFIDF, SpaceLSA, SpaceEmbedding}
	for _, tc := range []struct {
		name   string
		spaces []string
		edit   func(m *Model)
		want   string
	}{
		{"centroid NaN", all, func(m *Model) { m.Clusters[1].Centroid[2] = nan }, "cluster 1: centroid value 2 is NaN"},
		{"centroid +Inf", all, func(m *Model) { m.Clusters[0].Centroid[0] = inf }, "cluster 0: centroid value 0 is +Inf"},
		{"centroid -Inf", all, func(m *Model) { m.Clusters[2].Centroid[1] = -inf }, "cluster 2: centroid value 1 is -Inf"},
		{"centroid not unit", all, func(m *Model) { m.Clusters[0].Centroid[0] = 1e30 }, "cluster 0: centroid norm 1e+30, want a unit vector"},
		{"centroid short", all, func(m *Model) { m.Clusters[0].Centroid = m.Clusters[0].Centroid[1:] }, "cluster 0: centroid has"},
		{"idf NaN", text, func(m *Model) { m.IDF[3] = nan }, "idf value 3 (bucket"},
		{"idf +Inf", text, func(m *Model) { m.IDF[0] = inf }, "is +Inf, want a weight in (0, 64]"},
		{"idf huge", text, func(m *Model) { m.IDF[0] = 3e38 }, "is 3e+38, want a weight in (0, 64]"},
		{"idf zero", text, func(m *Model) { m.IDF[0] = 0 }, "is 0, want a weight in (0, 64]"},
		{"idf negative", text, func(m *Model) { m.IDF[0] = -1 }, "is -1, want a weight in (0, 64]"},
		{"idf short", text, func(m *Model) { m.IDF = m.IDF[1:] }, "idf values"},
		{"oov_idf negative", text, func(m *Model) { m.OOVIDF = -1 }, "oov_idf -1: want a weight in (0, 64]"},
		{"oov_idf huge", text, func(m *Model) { m.OOVIDF = 1e30 }, "oov_idf 1e+30: want a weight in (0, 64]"},
		{"projection NaN", []string{SpaceLSA}, func(m *Model) { m.Projection[m.Dim+1] = nan }, "lsa space: projection value 11 (term 1, dimension 1) is NaN"},
		{"projection +Inf", []string{SpaceLSA}, func(m *Model) { m.Projection[0] = inf }, "projection value 0 (term 0, dimension 0) is +Inf"},
		{"projection huge", []string{SpaceLSA}, func(m *Model) { m.Projection[0] = -3e38 }, "projection value 0 (term 0, dimension 0) is -3e+38, want one in [-16, 16]"},
		{"projection short", []string{SpaceLSA}, func(m *Model) { m.Projection = m.Projection[1:] }, "lsa space: projection has"},
		{"projection in tfidf", []string{SpaceTFIDF}, func(m *Model) { m.Projection = make(floats, len(m.Buckets)) }, "tfidf space: "},
		{"buckets repeated", text, func(m *Model) { m.Buckets[1] = m.Buckets[0] }, "buckets not strictly increasing"},
		{"buckets unsorted", text, func(m *Model) { m.Buckets[0], m.Buckets[1] = m.Buckets[1], m.Buckets[0] }, "buckets not strictly increasing"},
		{"vocabulary in embedding space", []string{SpaceEmbedding}, func(m *Model) { m.Buckets, m.IDF = []uint32{1}, floats{1} }, "embedding space: 1 buckets, 1 idf values"},
		{"label empty", all, func(m *Model) { m.Clusters[1].Label = "" }, `cluster 1: label "" is blank`},
		{"label blank", all, func(m *Model) { m.Clusters[1].Label = " \t" }, `cluster 1: label " \t" is blank`},
		{"label unclustered", all, func(m *Model) { m.Clusters[2].Label = UnclusteredLabel }, `cluster 2: label "unclustered" is reserved`},
		{"label Unclustered", all, func(m *Model) { m.Clusters[2].Label = " Unclustered" }, `cluster 2: label " Unclustered" is reserved`},
		{"label repeated", all, func(m *Model) { m.Clusters[2].Label = m.Clusters[0].Label }, "cluster 2: label " /* repeats cluster 0's */},
		{"id repeated", all, func(m *Model) { m.Clusters[2].ID = m.Clusters[0].ID }, "cluster 0: id repeated (clusters 1 and 3 of the list)"},
		{"id negative", all, func(m *Model) { m.Clusters[1].ID = -1 }, "cluster -1: id out of range [0, next_id 3)"},
		{"id beyond int32", all, func(m *Model) { m.Clusters[1].ID, m.NextID = math.MaxInt32+1, math.MaxInt32+2 }, "next_id 2147483649 out of range [0, 2147483647]"},
		{"size negative", all, func(m *Model) { m.Clusters[0].Size = -5 }, "cluster 0: size -5 is negative"},
		{"threshold above 2", all, func(m *Model) { m.Clusters[0].Threshold = 3 }, "cluster 0: threshold 3 outside [0, 2]"},
	} {
		for _, space := range tc.spaces {
			t.Run(tc.name+"/"+space, func(t *testing.T) {
				m := cloneModel(t, models[space])
				if tc.name == "label repeated" {
					tc.want = "cluster 2: label " + `"` + m.Clusters[0].Label + `" repeats cluster 0's`
				}
				tc.edit(m)
				_, err := Decode(reseal(t, m))
				require.ErrorIs(t, err, ErrArtifact)
				require.ErrorContains(t, err, tc.want)
			})
		}
	}
	for _, space := range all {
		// The unedited artifact loads, and tags as the fitted model.
		got, err := Decode(reseal(t, cloneModel(t, models[space])))
		require.NoError(t, err, space)
		require.Equal(t, models[space].Clusters, got.Clusters)
	}

	t.Run("threshold NaN in memory", func(t *testing.T) {
		// JSON cannot hold NaN thresholds; a Model handed to New can.
		m := cloneModel(t, models[SpaceTFIDF])
		m.Clusters[1].Threshold = nan
		_, err := New(Config{Model: m}, memory.DefaultAllocator, nil)
		require.ErrorContains(t, err, "cluster 1: threshold NaN outside [0, 2]")
		m = cloneModel(t, models[SpaceLSA])
		m.OOVIDF = inf
		_, err = New(Config{Model: m}, memory.DefaultAllocator, nil)
		require.ErrorContains(t, err, "oov_idf +Inf: want a weight in (0, 64]")
	})
}

// TestSaveRefusesInvalid: Save wrote what Load then refused.
func TestSaveRefusesInvalid(t *testing.T) {
	m := cloneModel(t, fittedModels(t)[SpaceTFIDF])
	m.Clusters[0].Centroid[0] = float32(math.NaN())
	m.Version = ""
	path := filepath.Join(t.TempDir(), "c.json")
	err := m.Save(path)
	require.ErrorIs(t, err, ErrArtifact)
	require.ErrorContains(t, err, "cluster 0: centroid value 0 is NaN")
	require.NoFileExists(t, path)
}

// TestNameClustersReserved: a cluster whose only top term is "unclustered"
// was labelled so, and merged downstream with the prompts in no cluster.
func TestNameClustersReserved(t *testing.T) {
	cl := []Cluster{{ID: 2, TopTerms: []string{"unclustered"}}, {ID: 5, TopTerms: []string{"court"}}}
	nameClusters(cl, nil)
	require.Equal(t, []string{"unclustered#2", "court"}, []string{cl[0].Label, cl[1].Label})
}

// TestNonFiniteEmbeddings: a NaN embedding (a CSV "NaN" parses) was fitted
// into NaN centroids, and tagged into the first cluster at distance NaN.
func TestNonFiniteEmbeddings(t *testing.T) {
	vecs, _ := blobs(3, 20, 6, 0.05, 4)
	cfg := quietConfig()
	cfg.K = 3
	bad := append([][]float32{}, vecs...)
	bad[1] = append([]float32{}, vecs[1]...)
	bad[1][2] = float32(math.NaN())
	_, err := FitEmbeddings(context.Background(), bad, nil, cfg, nil)
	require.ErrorContains(t, err, "embedding 2: value 3 is NaN: want finite numbers")

	m, err := FitEmbeddings(context.Background(), vecs, nil, cfg, nil)
	require.NoError(t, err)
	tg := m.NewTagger()
	for _, v := range [][]float32{
		{float32(math.NaN()), 0, 0, 0, 0, 0},
		{float32(math.Inf(1)), 1, 0, 0, 0, 0},
		{0, 0, 0, 0, 0, 0},
	} {
		c, d, err := tg.TagVector(v)
		require.NoError(t, err)
		require.Equal(t, Unclustered, c, "%v", v)
		require.Equal(t, float32(1), d, "%v", v)
	}
	// Large finite values are a direction like any other.
	c, d, err := tg.TagVector(vecs[0])
	require.NoError(t, err)
	big := make([]float32, len(vecs[0]))
	for i, x := range vecs[0] {
		big[i] = x * 3e37
	}
	cb, db, err := tg.TagVector(big)
	require.NoError(t, err)
	require.Equal(t, c, cb)
	require.InDelta(t, d, db, 1e-5)
}

// FuzzDecode: whatever Decode accepts can be tagged without a panic.
func FuzzDecode(f *testing.F) {
	for _, m := range fittedModels(f) {
		b, err := json.Marshal(m)
		require.NoError(f, err)
		require.NoError(f, m.Seal())
		sealed, err := json.Marshal(m)
		require.NoError(f, err)
		f.Add(b)
		f.Add(sealed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		tg := m.NewTagger()
		for _, p := range []string{"Which of the following court judge appeal", "planet orbit comet", "zyx", ""} {
			c, d := tg.Tag(p)
			if c != Unclustered && (c < 0 || c >= len(m.Clusters)) || math.IsNaN(float64(d)) {
				t.Fatalf("Tag(%q) = %d, %g", p, c, d)
			}
		}
		if m.Space == SpaceEmbedding {
			if _, _, err := tg.TagVector(make([]float32, m.Dim)); err != nil {
				t.Fatal(err)
			}
		}
	})
}
