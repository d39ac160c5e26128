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
