package estimate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEvaluateCalibrated: the first feature is the true probability of
// correctness, so raw_mean and every calibrated method estimate each held-out
// domain's accuracy up to sampling noise.
func TestEvaluateCalibrated(t *testing.T) {
	tbl := synthetic(8000, []string{"p", "noise"}, 4)
	for i := range tbl.N() {
		tbl.X[i*2] = sigmoid(tbl.X[i*2]) // logit -> probability
	}
	var progress strings.Builder
	rep, err := Evaluate(context.Background(), tbl, EvalConfig{Ks: []int{1, 2, 3},
		Methods: []string{"raw_mean", "sk_platt", "sk_isotonic", "logreg_platt", "atc", DefaultName}, Workers: 2, Progress: &progress})
	require.NoError(t, err)
	require.Len(t, rep.Results, (4+6+4)*6)
	require.Contains(t, progress.String(), "14/14 training sets")
	med := Medians(rep, nil)
	require.Less(t, med["raw_mean"][0], 0.02, "raw probabilities are calibrated")
	for _, m := range []string{"sk_platt", "logreg_platt", DefaultName} {
		// Domain shift moves the feature; a calibrated map of it transfers.
		require.Less(t, med[m][0], 0.04, m)
		require.InDelta(t, 1, med[m][1], 1e-9, "%s ranks the domains right", m)
	}
	require.InDelta(t, 0.5, rep.True["m"]["d2"], 0.1)

	dir := t.TempDir()
	require.NoError(t, WriteReport(dir, rep))
	b, err := os.ReadFile(filepath.Join(dir, "results.csv"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Equal(t, "model,k,train_domains,method,aee,rho", lines[0])
	require.Len(t, lines, 1+len(rep.Results))
	require.Contains(t, string(b), "\nm,2,d0+d1,default,")
	sum, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	require.NoError(t, err)
	require.Contains(t, string(sum), "| default |")
	require.Contains(t, string(sum), "Feature AUROC")
	for _, f := range []string{"estimates.svg", "reliability.svg", "feature_auroc.csv"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		require.NoError(t, err)
		require.NotEmpty(t, b)
	}
}

func TestEvaluateErrors(t *testing.T) {
	tbl := synthetic(400, []string{"a"}, 3)
	_, err := Evaluate(context.Background(), tbl, EvalConfig{Methods: []string{"nope"}})
	require.ErrorContains(t, err, `method "nope"`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Evaluate(ctx, tbl, EvalConfig{Methods: []string{"sk_platt"}})
	require.ErrorIs(t, err, context.Canceled)

	// k must leave a domain to estimate: with 3 domains, k = 3 and 4 are not
	// silently skipped into an empty report.
	_, err = Evaluate(context.Background(), tbl, EvalConfig{Methods: []string{"sk_platt"}, Ks: []int{3, 4}})
	require.ErrorContains(t, err, "the most domains a model has here is 3 (use k from 1 to 2)")
	// A k usable by no model but asked beside a usable one is listed, not an error.
	rep, err := Evaluate(context.Background(), tbl, EvalConfig{Methods: []string{"sk_platt"}, Ks: []int{2, 3}})
	require.NoError(t, err)
	require.Equal(t, []string{"m: k=3 (3 domains)"}, rep.SkippedK)
	require.Len(t, rep.Results, 3)
}

func TestCombinations(t *testing.T) {
	require.Equal(t, [][]string{{"a", "b"}, {"a", "c"}, {"b", "c"}}, slices.Collect(combinations([]string{"a", "b", "c"}, 2)))
	require.Len(t, slices.Collect(combinations([]string{"a", "b", "c", "d", "e"}, 2)), 10)
	require.Equal(t, [][]string{{"a", "b", "c"}}, slices.Collect(combinations([]string{"a", "b", "c"}, 3)))
	require.Empty(t, slices.Collect(combinations([]string{"a", "b"}, 3)))
	// Lazy: the first of C(40, 20) = 1.4e11 subsets comes at once.
	v := make([]string, 40)
	for i := range v {
		v[i] = fmt.Sprint(i)
	}
	for c := range combinations(v, 20) {
		require.Equal(t, v[:20], c)
		break
	}
}

func TestMetrics(t *testing.T) {
	require.InDelta(t, 1, AUROC([]float64{1, 2, 3, 4}, []float64{0, 0, 1, 1}), 0)
	require.InDelta(t, 0.5, AUROC([]float64{1, 1, 1, 1}, []float64{0, 1, 0, 1}), 0)
	require.InDelta(t, 0.75, AUROC([]float64{1, 2, 3, 4}, []float64{0, 1, 0, 1}), 1e-12)
	require.InDelta(t, 1, Spearman([]float64{1, 2, 3}, []float64{10, 20, 30}), 1e-12)
	require.InDelta(t, -1, Spearman([]float64{1, 2, 3}, []float64{3, 2, 1}), 1e-12)
	require.InDelta(t, 0.25, Brier([]float64{0.5, 0.5}, []float64{0, 1}), 1e-12)
	require.InDelta(t, 0, ECE([]float64{0.25, 0.25, 0.25, 0.25}, []float64{0, 0, 0, 1}), 1e-12)
}
