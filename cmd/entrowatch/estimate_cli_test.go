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

	"github.com/entrowatch/entrowatch/internal/testutil"
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
		{"default features missing", []string{"--in", in, "--out", out}, `feature columns "mean", "std", "max"`},
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
		{"bad k", []string{"--in", in, "--report", dir, "--features", "confidence", "--k", "one"}, `--k "one": want positive integers`},
		{"bad k range", []string{"--in", in, "--report", dir, "--features", "confidence", "--k", "3..1"}, `--k "3..1": want positive integers`},
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
		require.Contains(t, stderr, `feature columns "mean", "std", "max"`, args[0])
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
	require.NoDirExists(t, filepath.Join(dir, "r2"), "a failed run leaves no empty report directory it made")
	// One that existed stays.
	require.NoError(t, os.Mkdir(filepath.Join(dir, "mine"), 0o755))
	_, stderr, code = runCLI(t, "eval", "--in", in, "--report", filepath.Join(dir, "mine"), "--features", "confidence", "--k", "9223372036854775807")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "no k leaves a domain to estimate")
	require.DirExists(t, filepath.Join(dir, "mine"))

	_, stderr, code = runCLI(t, "eval", "--in", in, "--report", filepath.Join(dir, "r3"), "--features", "confidence", "--max-training-sets", "0")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "--max-training-sets 0: want a positive number")
}

// TestTrainInterrupted: Ctrl-C says so, as eval and score do (it printed
// "context canceled"), and leaves no file, partial or not.
func TestTrainInterrupted(t *testing.T) {
	in := labelled(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "est.json")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	err := runTrain(ctx, []string{"--in", in, "--out", out, "--features", "confidence"}, &stdout, &stderr)
	require.EqualError(t, err, "interrupted; no estimator written to "+out)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "no estimator and no partial file")
}

// TestTrainReportEdgeCases: a model whose folds cannot hold both classes
// prints n/a, not AUROC 0.000; a model short of one class only names
// --min-class.
func TestTrainReportEdgeCases(t *testing.T) {
	dir := t.TempDir()
	three := filepath.Join(dir, "three.csv")
	require.NoError(t, os.WriteFile(three, []byte("model,domain,confidence,correct\nm,a,0.9,1\nm,a,0.8,1\nm,b,0.2,0\n"), 0o644))
	stdout, stderr, code := runCLI(t, "train", "--in", three, "--out", filepath.Join(dir, "e.json"), "--features", "confidence")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "  out-of-fold: AUROC n/a  Brier n/a  ECE n/a (2 correct and 1 incorrect rows: too few for each of the 3 folds to hold both classes)\n")
	require.Contains(t, stdout, "  a                         2*       n/a  1.000\n")
	require.NotContains(t, stdout, "AUROC 0.000")

	b, err := os.ReadFile(labelled(t))
	require.NoError(t, err)
	var extra strings.Builder
	for i := range 60 {
		y := 1
		if i < 5 {
			y = 0
		}
		fmt.Fprintf(&extra, "few,arc,p,0.%d,%d\n", i%10, y)
	}
	in := filepath.Join(dir, "few.csv")
	require.NoError(t, os.WriteFile(in, append(b, extra.String()...), 0o644))
	stdout, stderr, code = runCLI(t, "train", "--in", in, "--out", filepath.Join(dir, "e.json"), "--features", "confidence", "--transfer=false")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "too few labelled rows: 60 rows (55 correct, 5 incorrect), under the minimum of 10 incorrect;")
	require.Contains(t, stdout, "model few: no model of its own: too few labelled rows: 60 rows (55 correct, 5 incorrect), "+
		"under the minimum of 10 incorrect (--min-class); its rows are estimated with the pooled model (*)\n")
}

// TestEvalUsageAndWorkers: the usage line names every flag, as the docs'
// does; --workers is capped, saying so, and a negative one refused.
func TestEvalUsageAndWorkers(t *testing.T) {
	stdout, stderr, code := runCLI(t, "eval", "-h")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout+stderr, "entrowatch eval --in LABELED --report DIR [--features a,b,..] [--k 1,2,3] [--methods m1,m2,..|all] [--workers N] [--max-training-sets N]\n")

	in := labelled(t)
	_, stderr, code = runCLI(t, "eval", "--in", in, "--report", filepath.Join(t.TempDir(), "r"), "--features", "confidence", "--k", "1", "--methods", "sk_platt", "--workers", "1000")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "eval: 6 training sets x 1 method = 6 fits, 6 workers (1000 asked for: at most one per training set)\n")

	_, stderr, code = runCLI(t, "eval", "--in", in, "--report", filepath.Join(t.TempDir(), "r"), "--workers", "-2")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "--workers -2: want a positive number (0 = GOMAXPROCS)")
}

// TestEvalTiesAndNaN: stdout lists tied methods in summary.md's order and
// writes an undefined rho as n/a, as summary.md does (it printed NaN).
func TestEvalTiesAndNaN(t *testing.T) {
	var b strings.Builder
	b.WriteString("model,domain,confidence,correct\n")
	for i := range 600 {
		fmt.Fprintf(&b, "m,%s,0.5,%d\n", []string{"arc", "mmlu", "wino"}[i%3], (i/3)%2)
	}
	in := filepath.Join(t.TempDir(), "flat.csv")
	require.NoError(t, os.WriteFile(in, []byte(b.String()), 0o644))
	dir := filepath.Join(t.TempDir(), "r")
	stdout, stderr, code := runCLI(t, "eval", "--in", in, "--report", dir, "--features", "confidence", "--k", "1", "--methods", "sk_isotonic,default,sk_platt")
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout, " NaN")
	var order []string
	for _, l := range strings.Split(stdout, "\n")[2:] {
		if f := strings.Fields(l); len(f) == 3 {
			require.Equal(t, "n/a", f[2], l)
			order = append(order, f[0])
		}
	}
	require.Equal(t, []string{"default", "sk_isotonic", "sk_platt"}, order)
	sum, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	require.NoError(t, err)
	s := string(sum)
	require.Less(t, strings.Index(s, "| default | "), strings.Index(s, "| sk_isotonic | "))
	require.Less(t, strings.Index(s, "| sk_isotonic | "), strings.Index(s, "| sk_platt | "))
}

// TestEvalNumberedMethods: screenN and ensembleN work for N beyond the
// few that "all" runs.
func TestEvalNumberedMethods(t *testing.T) {
	in := labelled(t)
	stdout, stderr, code := runCLI(t, "eval", "--in", in, "--report", filepath.Join(t.TempDir(), "r"), "--features", "confidence,confidence2", "--k", "1", "--methods", "ensemble1")
	require.Equal(t, 1, code, stdout)
	require.Contains(t, stderr, `column "confidence2" missing`)
	stdout, stderr, code = runCLI(t, "eval", "--in", in, "--report", filepath.Join(t.TempDir(), "r"), "--features", "confidence", "--k", "1", "--methods", "ensemble1,screen0_isotonic_oof")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "ensemble1 ")
	_, stderr, code = runCLI(t, "eval", "--in", in, "--report", filepath.Join(t.TempDir(), "r"), "--features", "confidence", "--k", "1", "--methods", "ensemble4")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `method "ensemble4" does not apply to these features: an ensemble of 4 single-feature models needs as many features (have 1; ensemble1 uses them all)`)
}

// TestEvalSingleClassSets: training sets whose rows are all correct or all
// wrong were left out of the medians without a word (stderr said 8 training
// sets, the medians were over 6). They are named on stderr and in
// summary.md; a domain name is text there, not HTML.
func TestEvalSingleClassSets(t *testing.T) {
	var b strings.Builder
	b.WriteString("model,domain,confidence,correct\n")
	for i := range 900 {
		dom := []string{"arc", "all-right", "<b>mixed</b>"}[i%3]
		correct := (i / 3) % 2
		if dom == "all-right" {
			correct = 1
		}
		fmt.Fprintf(&b, "m,%s,%.3f,%d\n", dom, 0.3+0.4*float64(correct)+0.001*float64(i%50), correct)
	}
	in := filepath.Join(t.TempDir(), "one-class.csv")
	require.NoError(t, os.WriteFile(in, []byte(b.String()), 0o644))
	dir := filepath.Join(t.TempDir(), "r")
	_, stderr, code := runCLI(t, "eval", "--in", in, "--report", dir, "--features", "confidence", "--k", "1", "--methods", "default")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "eval: 1 training set left out, their rows all correct or all wrong (nothing to fit): m: all-right")
	sum, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	require.NoError(t, err)
	require.Contains(t, string(sum), "Training sets left out, their rows all correct or all wrong")
	require.Contains(t, string(sum), "- m: all-right\n")
	require.Contains(t, string(sum), "&lt;b&gt;mixed&lt;/b&gt;")
	require.NotContains(t, string(sum), "<b>")
}

// TestTrainReportSettings: the report's first line said "ensemble of 3"
// whatever --balance said, and "ensemble of 6" for --ensemble 20 without
// saying why.
func TestTrainReportSettings(t *testing.T) {
	dir := t.TempDir()
	table := filepath.Join(dir, "fx.csv")
	_, errs, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", table, "--quiet")
	require.Equal(t, 0, code, errs)
	out, errs, code := runCLI(t, "train", "--in", table, "--out", filepath.Join(dir, "b.json"), "--balance", "--transfer=false", "--min-rows", "10", "--min-class", "2")
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `logreg\+isotonic ensemble of \d+(?: \(of \d+ candidates: [^)]*\))?, C=1 each(?:, average recalibrated)?, classes balanced, features `, out)
	out, errs, code = runCLI(t, "train", "--in", table, "--out", filepath.Join(dir, "h.json"), "--ensemble", "0", "--hyper", "0.01", "--transfer=false", "--min-rows", "10", "--min-class", "2")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "logreg+isotonic C=0.01, features ")
	require.NotContains(t, out, "balanced")
}

// TestTrainReportFewRows: a 3-row domain's error was the report's headline
// maximum with no warning; long domain names pushed the numbers out of
// their columns.
func TestTrainReportFewRows(t *testing.T) {
	var b strings.Builder
	b.WriteString("model,domain,correct,mean\n")
	long := "a_domain_name_of_thirty_chars"
	for i := range 400 {
		dom := []string{"alpha", long}[i%2]
		c := (i / 2) % 3 % 2
		fmt.Fprintf(&b, "m,%s,%d,%.3f\n", dom, c, 1.5-float64(c)+0.01*float64(i%17))
	}
	b.WriteString("m,tiny,1,1.4\nm,tiny,1,1.45\nm,tiny,0,0.5\n")
	in := filepath.Join(t.TempDir(), "few.csv")
	require.NoError(t, os.WriteFile(in, []byte(b.String()), 0o644))
	out, errs, code := runCLI(t, "train", "--in", in, "--out", filepath.Join(t.TempDir(), "e.json"), "--features", "mean")
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `\n  tiny +3\* `, out)
	require.Contains(t, out, "* fewer than 30 rows: the true accuracy itself is uncertain by up to +-0.57 (95%)")
	// Every row of the table has its rows column at the same place.
	var at []int
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 4 && (f[0] == "alpha" || f[0] == long || f[0] == "tiny") {
			at = append(at, strings.Index(l, f[1])+len(f[1]))
		}
	}
	require.Len(t, at, 3, out)
	require.Equal(t, at[0], at[1], out)
}

// TestEvalTableAligned: method names longer than 22 characters pushed their
// numbers out of the AEE and rho columns.
func TestEvalTableAligned(t *testing.T) {
	in := labelled(t)
	out, errs, code := runCLI(t, "eval", "--in", in, "--report", filepath.Join(t.TempDir(), "r"), "--features", "confidence", "--k", "1",
		"--methods", "default,screen0_isotonic_train_offset")
	require.Equal(t, 0, code, errs)
	var ends []int
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "default ") || strings.HasPrefix(l, "screen0_isotonic_train_offset ") || strings.HasPrefix(l, "method ") {
			ends = append(ends, len(l))
		}
	}
	require.Len(t, ends, 3, out)
	require.Equal(t, ends[0], ends[1], out)
	require.Equal(t, ends[1], ends[2], out)
}

// TestEvalPlusInDomain: results.csv joins a training set's domains with +,
// so a domain named "x+y" is warned about.
func TestEvalPlusInDomain(t *testing.T) {
	var b strings.Builder
	b.WriteString("model,domain,confidence,correct\n")
	for i := range 300 {
		fmt.Fprintf(&b, "m,%s,%.2f,%d\n", []string{"x+y", "z", "w"}[i%3], 0.3+0.4*float64((i/3)%2), (i/3)%2)
	}
	in := filepath.Join(t.TempDir(), "plus.csv")
	require.NoError(t, os.WriteFile(in, []byte(b.String()), 0o644))
	_, errs, code := runCLI(t, "eval", "--in", in, "--report", filepath.Join(t.TempDir(), "r"), "--features", "confidence", "--k", "1", "--methods", "default")
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, `eval: warning: domain names with a + ("x+y") make results.csv's train_domains ambiguous`)
}

// TestTrainSeveralInputs: --in a,b (or --in a --in b) reads the tables as
// one, so that production labels are added to the first training table
// instead of replacing it: the estimator is the one of the whole table, to
// its content hash.
func TestTrainSeveralInputs(t *testing.T) {
	dir := t.TempDir()
	whole := labelled(t)
	b, err := os.ReadFile(whole)
	require.NoError(t, err)
	lines := strings.SplitAfter(string(b), "\n")
	first, second := filepath.Join(dir, "first.csv"), filepath.Join(dir, "prod.csv.gz")
	require.NoError(t, os.WriteFile(first, []byte(strings.Join(lines[:700], "")), 0o644))
	// The export's columns in another order, gzip: read by name.
	var rest strings.Builder
	rest.WriteString("correct,confidence,domain,model\n")
	for _, l := range lines[700:] {
		if f := strings.Split(strings.TrimSpace(l), ","); len(f) == 5 {
			fmt.Fprintf(&rest, "%s,%s,%s,%s\n", f[4], f[3], f[1], f[0])
		}
	}
	require.NoError(t, os.WriteFile(second, testutil.Gzip(t, []byte(rest.String())), 0o644))

	version := func(args ...string) string {
		out := filepath.Join(dir, "est.json")
		_, errs, code := runCLI(t, append([]string{"train", "--out", out, "--features", "confidence", "--transfer=false"}, args...)...)
		require.Equal(t, 0, code, errs)
		require.Contains(t, errs, "train: 1200 rows, 2 models")
		set, err := estimate.Load(out)
		require.NoError(t, err)
		return set.Version
	}
	want := version("--in", whole)
	require.Equal(t, want, version("--in", first+","+second))
	require.Equal(t, want, version("--in", first, "--in", second))

	// A file given twice is refused; rows with the id of an earlier row
	// (an export that overlaps the first table) are said.
	_, errs, code := runCLI(t, "train", "--in", first+","+first, "--out", filepath.Join(dir, "x.json"), "--features", "confidence")
	require.Equal(t, 2, code, errs)
	require.Contains(t, errs, "--in: "+first+" is given twice")
	withIDs := func(name string, from, to int) string {
		var b strings.Builder
		b.WriteString("id,model,domain,prompt,confidence,correct\n")
		for i := from; i < to; i++ {
			fmt.Fprintf(&b, "r%d,%s", i, lines[1+i])
		}
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
		return path
	}
	_, errs, code = runCLI(t, "train", "--in", withIDs("a.csv", 0, 800)+","+withIDs("b.csv", 700, 1200), "--out", filepath.Join(dir, "x.json"), "--features", "confidence", "--transfer=false")
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "train: 1300 rows")
	require.Contains(t, errs, "train: note: 100 rows repeat the model and id of an earlier row")

	// A table without the features asked for names itself.
	_, errs, code = runCLI(t, "train", "--in", first+","+second, "--out", filepath.Join(dir, "x.json"), "--features", "mean")
	require.Equal(t, 1, code)
	require.Contains(t, errs, first+": column \"mean\" missing")
	_, errs, code = runCLI(t, "eval", "--in", first+","+second, "--report", filepath.Join(dir, "rep"), "--features", "confidence", "--k", "1")
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "eval: 1200 rows, 2 models")
}

// TestTrainTableNotes: rows without a domain or model, names with blanks
// around them and a constant feature are said, not silently trained on.
func TestTrainTableNotes(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile(labelled(t))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var in strings.Builder
	in.WriteString("model,domain,prompt,confidence,n_tokens,correct\n")
	for i, l := range lines[1:] {
		f := strings.Split(l, ",")
		switch {
		case i < 30:
			f[1] = "" // no domain
		case i < 40:
			f[0] += " " // "llm-a "
		case i < 42:
			f[0] = ""
		}
		fmt.Fprintf(&in, "%s,%s,%s,%s,7,%s\n", f[0], f[1], f[2], f[3], f[4])
	}
	path := filepath.Join(dir, "t.csv")
	require.NoError(t, os.WriteFile(path, []byte(in.String()), 0o644))
	_, errs, code := runCLI(t, "train", "--in", path, "--out", filepath.Join(dir, "e.json"), "--features", "confidence,n_tokens", "--transfer=false", "--min-rows", "1", "--min-class", "1")
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "train: note: 30 rows have no domain: put in one domain named (none)")
	require.Contains(t, errs, "(skipped: 2 no model)")
	require.Contains(t, errs, "train: note: 10 rows have blanks around their model or domain: taken off")
	require.Contains(t, errs, `train: note: model "llm-a": feature n_tokens (7) is the same in every row: it tells nothing about correctness`)
	set, err := estimate.Load(filepath.Join(dir, "e.json"))
	require.NoError(t, err)
	require.NotContains(t, set.Models, "llm-a ", "the blank is taken off")

	_, errs, code = runCLI(t, "train", "--in", path, "--out", filepath.Join(dir, "e.json"), "--features", "confidence,n_tokens", "--transfer=false", "--ensemble", "0", "--screen", "5")
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "train: note: --screen 5 is not below the 2 candidate features: all are kept, none is screened out")
}
