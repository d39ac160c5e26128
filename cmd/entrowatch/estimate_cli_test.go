package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/estimate"
)

// labelled writes a small labelled CSV: two LLMs, three domains, feature
// "confidence" predicts correctness.
func labelled(t *testing.T) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	var b strings.Builder
	b.WriteString("model,domain,prompt,confidence,correct\n")
	for i := range 1200 {
		model := []string{"llm-a", "llm-b"}[i%2]
		dom := []string{"arc", "mmlu", "wino"}[(i/2)%3]
		c := rng.Float64()
		y := 0
		if rng.Float64() < c {
			y = 1
		}
		fmt.Fprintf(&b, "%s,%s,p,%.4f,%d\n", model, dom, c, y)
	}
	path := filepath.Join(t.TempDir(), "labelled.csv")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	return path
}

func TestTrainCLI(t *testing.T) {
	in := labelled(t)
	out := filepath.Join(t.TempDir(), "est.json")
	var stdout, stderr bytes.Buffer
	err := runTrain(context.Background(), []string{"--in", in, "--out", out, "--features", "confidence"}, &stdout, &stderr)
	require.NoError(t, err, stderr.String())
	set, err := estimate.Load(out)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"llm-a", "llm-b", estimate.FallbackKey}, keys(set.Models))
	require.Equal(t, estimate.FallbackKey, set.Fallback)
	require.Contains(t, stdout.String(), "AUROC")
	require.Contains(t, stdout.String(), "wino")
	require.Contains(t, stdout.String(), set.Version)
	// Leave-one-domain-out transfer error, per model, in the artifact and
	// the report.
	for k, m := range set.Models {
		tr := m.Metrics.Transfer
		require.NotNil(t, tr, k)
		require.Len(t, tr.Domains, 3, k)
		require.Contains(t, stdout.String(), fmt.Sprintf("expect an error of about %.3f", tr.AEE), k)
	}
	require.Contains(t, stdout.String(), "left out")

	stdout.Reset()
	err = runTrain(context.Background(), []string{"--in", in, "--out", out, "--features", "confidence", "--model", "llm-b", "--family", "forest", "--calibration", "platt"}, &stdout, &stderr)
	require.NoError(t, err)
	set, err = estimate.Load(out)
	require.NoError(t, err)
	require.Equal(t, []string{"llm-b"}, keys(set.Models))
	require.Equal(t, "", set.Fallback)

	stdout.Reset()
	err = runTrain(context.Background(), []string{"--in", in, "--out", out, "--features", "confidence", "--transfer=false"}, &stdout, &stderr)
	require.NoError(t, err)
	set, err = estimate.Load(out)
	require.NoError(t, err)
	require.Nil(t, set.Models["llm-a"].Metrics.Transfer)
	require.NotContains(t, stdout.String(), "left out")
}

func TestTrainCLIErrors(t *testing.T) {
	in := labelled(t)
	out := filepath.Join(t.TempDir(), "est.json")
	for _, tc := range []struct {
		name string
		args []string
		want string // "" = usage error
	}{
		{"no flags", nil, ""},
		{"no out", []string{"--in", in}, ""},
		{"positional", []string{"--in", in, "--out", out, "extra"}, ""},
		{"bad family", []string{"--in", in, "--out", out, "--family", "svm"}, `family "svm"`},
		{"bad calibration", []string{"--in", in, "--out", out, "--calibration", "beta"}, `calibration "beta"`},
		{"default features missing", []string{"--in", in, "--out", out}, `column "mean" missing`},
		{"unknown feature", []string{"--in", in, "--out", out, "--features", "confidence,nope"}, `column "nope" missing`},
		{"unknown model", []string{"--in", in, "--out", out, "--features", "confidence", "--model", "gpt"}, `--model "gpt"`},
		{"missing file", []string{"--in", in + ".missing", "--out", out}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runTrain(context.Background(), tc.args, &stdout, &stderr)
			require.Error(t, err)
			if tc.want == "" {
				require.ErrorIs(t, err, errUsage)
				require.Contains(t, stderr.String(), "Run 'entrowatch train -h' for its flags.")
				require.NotContains(t, stderr.String(), "Flags:", "a usage error points at -h instead of burying its reason")
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestEvalCLI(t *testing.T) {
	in := labelled(t)
	dir := filepath.Join(t.TempDir(), "report")
	var stdout, stderr bytes.Buffer
	err := runEval(context.Background(), []string{"--in", in, "--report", dir, "--features", "confidence", "--k", "1,2"}, &stdout, &stderr)
	require.NoError(t, err, stderr.String())
	for _, f := range []string{"results.csv", "summary.md", "feature_auroc.csv", "estimates.svg", "reliability.svg"} {
		_, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err, f)
	}
	require.Contains(t, stdout.String(), "default")
	require.Contains(t, stdout.String(), "raw_mean")
	require.Contains(t, stderr.String(), "training sets")

	stdout.Reset()
	stderr.Reset()
	err = runEval(context.Background(), []string{"--in", in, "--report", dir, "--features", "confidence", "--k", "2,3", "--methods", "sk_platt"}, &stdout, &stderr)
	require.NoError(t, err, stderr.String())
	require.Contains(t, stderr.String(), "skipped, k not below the model's domain count: llm-a: k=3 (3 domains); llm-b: k=3 (3 domains)")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no report", []string{"--in", in}, ""},
		{"bad k", []string{"--in", in, "--report", dir, "--features", "confidence", "--k", "one"}, ""},
		{"bad k range", []string{"--in", in, "--report", dir, "--features", "confidence", "--k", "3..1"}, ""},
		{"unknown method", []string{"--in", in, "--report", dir, "--features", "confidence", "--methods", "magic"}, `method "magic"`},
		{"k too large", []string{"--in", in, "--report", dir, "--features", "confidence", "--k", "3"}, "use k from 1 to 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runEval(context.Background(), tc.args, &stdout, &stderr)
			require.Error(t, err)
			if tc.want == "" {
				require.ErrorIs(t, err, errUsage)
				require.Contains(t, stderr.String(), "Run 'entrowatch eval -h'")
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Both commands that read a labelled table say which flag picks the features
// when the table lacks one (the library error names no flags).
func TestMissingFeatureNamesTheFlag(t *testing.T) {
	in := labelled(t) // has confidence, not the profile features
	dir := t.TempDir()
	for _, args := range [][]string{
		{"train", "--in", in, "--out", filepath.Join(dir, "e.json")},
		{"eval", "--in", in, "--report", filepath.Join(dir, "r")},
	} {
		_, stderr, code := runCLI(t, args...)
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, `column "mean" missing`, args[0])
		require.Contains(t, stderr, "choose features with --features", args[0])
	}
}

// TestTrainCLITooFewRows: an LLM with a handful of labelled rows gets no
// model of its own; stderr warns, the report says so and names the flags
// that lower the minimum. With the minimum lowered, the report says why the
// left-out column is missing.
func TestTrainCLITooFewRows(t *testing.T) {
	b, err := os.ReadFile(labelled(t))
	require.NoError(t, err)
	in := filepath.Join(t.TempDir(), "tiny.csv")
	extra := "tiny3,arc,p,0.9,1\ntiny3,arc,p,0.8,1\ntiny3,mmlu,p,0.2,0\none,arc,p,0.9,1\none,arc,p,0.1,0\n"
	require.NoError(t, os.WriteFile(in, append(b, extra...), 0o644))
	out := filepath.Join(t.TempDir(), "est.json")

	stdout, stderr, code := runCLI(t, "train", "--in", in, "--out", out, "--features", "confidence")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "train: warning: tiny3 gets no model of its own: too few labelled rows: 3 rows (2 correct, 1 incorrect), "+
		"under the minimum of 50 rows and 10 of each class; its rows will be scored by the pooled fallback (*)")
	require.Contains(t, stdout, "model tiny3: no model of its own: too few labelled rows: 3 rows (2 correct, 1 incorrect), "+
		"under the minimum of 50 rows and 10 of each class (--min-rows, --min-class); its rows are estimated with the pooled model (*)")
	require.Contains(t, stdout, "model one: no model of its own: too few labelled rows: 2 rows")
	set, err := estimate.Load(out)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"llm-a", "llm-b", estimate.FallbackKey}, keys(set.Models))

	stdout, stderr, code = runCLI(t, "train", "--in", in, "--out", out, "--features", "confidence", "--min-rows", "1", "--min-class", "1")
	require.Equal(t, 0, code, stderr)
	set, err = estimate.Load(out)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"llm-a", "llm-b", "one", "tiny3", estimate.FallbackKey}, keys(set.Models))
	report := func(model string) string {
		_, rest, ok := strings.Cut(stdout, "model "+model+":")
		require.True(t, ok, model)
		next, _, _ := strings.Cut(rest, "\nmodel ")
		return next
	}
	require.Contains(t, report("tiny3"), "no error to expect on a domain not trained on: leaving out any one domain leaves rows of one class only")
	require.Contains(t, report("one"), "no error to expect on a domain not trained on: it was trained on one domain")
	require.Contains(t, report("llm-a"), "expect an error of about")

	_, stderr, code = runCLI(t, "train", "--in", in, "--out", out, "--features", "confidence", "--min-rows", "0")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "--min-rows 0, --min-class 10: want at least 1 (1 = no minimum)")
}

// TestTrainScoreIntegerFeature: train accepts n_tokens (an integer column)
// and score --estimator scores with it (before: "not a float64 feature").
func TestTrainScoreIntegerFeature(t *testing.T) {
	dir := t.TempDir()
	table := filepath.Join(dir, "fx.csv")
	_, errs, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", table, "--quiet")
	require.Equal(t, 0, code, errs)
	est := filepath.Join(dir, "est.json")
	_, errs, code = runCLI(t, "train", "--in", table, "--out", est, "--features", "n_tokens,mean", "--ensemble", "0", "--transfer=false")
	require.Equal(t, 0, code, errs)
	set, err := estimate.Load(est)
	require.NoError(t, err)
	require.Contains(t, set.Models["fixture-model"].Features, "n_tokens")

	scored := filepath.Join(dir, "scored.csv")
	_, errs, code = runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", scored, "--estimator", est)
	require.Equal(t, 0, code, errs)
	rows := readCSV(t, scored)
	require.Len(t, rows, 33)
	for _, r := range rows {
		require.NotEmpty(t, r["p_correct"], r["id"])
	}
}

// TestTrainHelpLabels: the help names every label spelling a CSV may use,
// and what the default ensemble is.
func TestTrainHelpLabels(t *testing.T) {
	stdout, stderr, code := runCLI(t, "train", "-h")
	require.Equal(t, 0, code, stderr)
	help := stdout + stderr
	require.Contains(t, help, "correct (1/0, true/false,\nt/f or yes/no; empty = unlabelled, skipped)")
	require.Contains(t, help, "--ensemble 0 fits one model of the family on all kept features")
}

// TestEvalCLILimits: the eval command's bounds reach the user as messages:
// a huge --k range is cut to what the domains allow, said once; too many
// training sets are refused naming the count and the flags.
func TestEvalCLILimits(t *testing.T) {
	in := labelled(t) // 2 models x 3 domains
	dir := t.TempDir()
	_, stderr, code := runCLI(t, "eval", "--in", in, "--report", filepath.Join(dir, "r1"), "--features", "confidence", "--k=1..100000000")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "k from 3 up left out")
	require.Equal(t, 1, strings.Count(stderr, "k from"), stderr)

	_, stderr, code = runCLI(t, "eval", "--in", in, "--report", filepath.Join(dir, "r2"), "--features", "confidence", "--max-training-sets", "2")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "has 6 training sets (k = 1,2 of its 3 domains), more than --max-training-sets 2 allows; pass a smaller --k or raise --max-training-sets")

	_, stderr, code = runCLI(t, "eval", "--in", in, "--report", filepath.Join(dir, "r3"), "--features", "confidence", "--max-training-sets", "0")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "--max-training-sets 0: want a positive number")
}
