package clustertag

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReportExamples: a cluster's examples are the prompts nearest its
// centroid (they were the first in file order, often atypical ones), and a
// few unclustered prompts are shown with their nearest cluster.
func TestReportExamples(t *testing.T) {
	prompts, _ := synthPrompts(30, 4)
	cfg := quietConfig()
	cfg.K = 3
	cfg.ThresholdQuantile = 1 // only the off-topic prompts are unclustered
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	require.NoError(t, m.Seal())

	// File order: farthest from the centroid first.
	tg := m.NewTagger()
	dist := map[string]float32{}
	for _, p := range prompts {
		_, dist[p] = tg.Tag(p)
	}
	order := slices.Clone(prompts)
	slices.SortStableFunc(order, func(a, b string) int { return -compareF(dist[a], dist[b]) })
	docs := &Docs{}
	for _, p := range order {
		docs.Docs = append(docs.Docs, Doc{Prompt: p})
	}
	off := []string{"Write a haiku about autumn leaves", "court gardening knitting pottery sewing weaving", "Translate good morning into French"}
	for _, p := range off {
		docs.Docs = append(docs.Docs, Doc{Prompt: p})
	}
	r, err := Summarize(m, docs, 3)
	require.NoError(t, err)
	for c, cr := range r.Clusters {
		require.Len(t, cr.Examples, 3)
		var mine []float32
		for _, p := range prompts {
			if k, _ := tg.Tag(p); k == c {
				mine = append(mine, dist[p])
			}
		}
		slices.Sort(mine)
		for i, e := range cr.Examples {
			require.Equal(t, mine[i], dist[e], "cluster %d example %d is the %d-th nearest", c, i, i+1)
		}
	}
	require.Equal(t, 3, r.Unclustered)
	require.Len(t, r.UnclusteredExamples, 3)
	require.Equal(t, off[0], r.UnclusteredExamples[0].Prompt)
	require.Empty(t, r.UnclusteredExamples[0].Nearest, "no term the model knows")
	require.NotEmpty(t, r.UnclusteredExamples[1].Nearest, "court is known")
	var b strings.Builder
	require.NoError(t, r.WriteText(&b))
	require.Contains(t, b.String(), "unclustered, for example:\n  - Write a haiku about autumn leaves  (no term the model knows)\n")
	require.Contains(t, b.String(), "  - court gardening knitting pottery sewing weaving  (nearest \"")
}

func compareF(a, b float32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestGenericLabelWords: words common to questions of every topic do not
// name clusters.
func TestGenericLabelWords(t *testing.T) {
	for _, w := range strings.Fields("based found name feature features ago suppose point common") {
		require.True(t, generic(w), w)
	}
	require.False(t, generic("court"))
}
