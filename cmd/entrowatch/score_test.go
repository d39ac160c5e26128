package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	arrowipc "github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// fixtures are the golden responses and the numpy reference values
// (copied from shared/data/fixtures).
const fixtures = "../../operators/profile/testdata/"

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func readCSV(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	var out []map[string]string
	for _, r := range rows[1:] {
		m := map[string]string{}
		for i, h := range rows[0] {
			m[h] = r[i]
		}
		out = append(out, m)
	}
	return out
}

func TestScoreGoldenCSV(t *testing.T) {
	out := filepath.Join(t.TempDir(), "profiles.csv")
	_, stderr, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "scored 33 responses")
	require.Contains(t, stderr, "33 written, 0 rejected")

	want := readCSV(t, fixtures+"valid.expected.csv")
	got := readCSV(t, out)
	require.Len(t, got, len(want))
	header, err := os.ReadFile(out)
	require.NoError(t, err)
	wantHeader, err := os.ReadFile(fixtures + "valid.expected.csv")
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(strings.SplitN(string(wantHeader), "\n", 2)[0]), strings.SplitN(string(header), "\n", 2)[0])
	for i, w := range want {
		g := got[i]
		for _, k := range []string{"id", "model", "domain", "correct", "n_tokens"} {
			require.Equal(t, w[k], g[k], "%s %s", w["id"], k)
		}
		for _, k := range append(append([]string{}, schemas.ProfileFeatures...), schemas.Baselines...) {
			wv, _ := strconv.ParseFloat(w[k], 64)
			gv, err := strconv.ParseFloat(g[k], 64)
			require.NoError(t, err)
			tol := 1e-9
			if k == "skew" || k == "kurt" {
				tol = 1e-6
			}
			require.LessOrEqual(t, math.Abs(gv-wv), tol*math.Max(1, math.Abs(wv)), "%s %s got %v want %v", w["id"], k, gv, wv)
		}
	}
}

func TestScoreInvalidReasons(t *testing.T) {
	dir := t.TempDir()
	rejects := filepath.Join(dir, "rejects.jsonl")
	_, stderr, code := runCLI(t, "score", "--in", fixtures+"invalid.jsonl", "--out", filepath.Join(dir, "x.csv"), "--rejects", rejects)
	require.Equal(t, 0, code, stderr)
	want := readCSV(t, fixtures+"invalid.expected.csv")
	for _, w := range want {
		require.Contains(t, stderr, "reject line "+w["line"]+" ")
		require.Regexp(t, "reject line "+w["line"]+` id="[^"]*" reason=`+w["reason"]+":", stderr)
	}
	require.Contains(t, stderr, "0 written, 5 rejected")
	b, err := os.ReadFile(rejects)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, len(want))
	for i, w := range want {
		require.Contains(t, lines[i], `"line":`+w["line"]+",")
		require.Contains(t, lines[i], `"reason":"`+w["reason"]+`"`)
	}

	_, stderr, code = runCLI(t, "score", "--strict", "--in", fixtures+"invalid.jsonl", "--out", filepath.Join(dir, "y.csv"))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "line 1:")
	require.Contains(t, stderr, "positive_logprob")
}

func TestScoreMaxSteps(t *testing.T) {
	dir := t.TempDir()
	_, stderr, code := runCLI(t, "score", "--max-steps", "50", "--in", fixtures+"valid.jsonl.gz", "--out", filepath.Join(dir, "x.csv"), "--quiet")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `too_long \d+`, stderr)
	require.NotContains(t, stderr, "reject line", "--quiet prints the summary only")
}

// TestScoreArrowRoundTrip: JSON -> trace.v1 Arrow file -> score -> scored.v1
// Arrow, and the features equal those of the CSV path (float64 input).
func TestScoreArrowRoundTrip(t *testing.T) {
	dir := t.TempDir()
	mem := memory.NewGoAllocator()
	f, err := ingest.Open(fixtures + "valid.jsonl.gz")
	require.NoError(t, err)
	cfg := ingest.DefaultConfig()
	cfg.Float64 = true
	r := ingest.NewReader(f, cfg, mem)
	traces := filepath.Join(dir, "traces.arrow")
	tf, err := os.Create(traces)
	require.NoError(t, err)
	w := arrowipc.NewWriter(tf, arrowipc.WithSchema(schemas.Trace64))
	for {
		rec, err := r.Next()
		if err != nil {
			break
		}
		require.NoError(t, w.Write(rec))
		rec.Release()
	}
	require.NoError(t, w.Close())
	require.NoError(t, tf.Close())
	r.Release()
	f.Close()

	scored := filepath.Join(dir, "scored.arrow")
	_, stderr, code := runCLI(t, "score", "--in", traces, "--out", scored)
	require.Equal(t, 0, code, stderr)
	csvOut := filepath.Join(dir, "scored.csv")
	_, stderr, code = runCLI(t, "score", "--in", traces, "--out", csvOut)
	require.Equal(t, 0, code, stderr)

	sf, err := os.Open(scored)
	require.NoError(t, err)
	defer sf.Close()
	rd, err := arrowipc.NewReader(sf)
	require.NoError(t, err)
	defer rd.Release()
	require.True(t, rd.Schema().Equal(schemas.Scored))
	rows := readCSV(t, csvOut)
	n := 0
	for rd.Next() {
		rec := rd.RecordBatch()
		mean := rec.Column(schemas.MustIndex(schemas.Scored, "mean")).(*array.Float64)
		for i := range mean.Len() {
			want, _ := strconv.ParseFloat(rows[n]["mean"], 64)
			require.Equal(t, want, mean.Value(i))
			n++
		}
	}
	require.Equal(t, 33, n)
}

func TestScoreUsageErrors(t *testing.T) {
	_, stderr, code := runCLI(t, "score", "--in", "x.jsonl")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "score needs --in and --out")
	_, stderr, code = runCLI(t, "score", "--in", "/nonexistent.jsonl", "--out", filepath.Join(t.TempDir(), "o.csv"))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "no such file")
	_, stderr, code = runCLI(t, "score", "--bogus")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "flag provided but not defined")
	_, stderr, code = runCLI(t, "nonsense")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, `unknown command "nonsense"`)
}

// TestScoreWithEstimatorAndClusters: train on the golden features, fit
// clusters on generated prompts, then score with both artifacts.
func TestScoreWithEstimatorAndClusters(t *testing.T) {
	dir := t.TempDir()
	est := filepath.Join(dir, "estimator.json")
	_, stderr, code := runCLI(t, "train", "--in", fixtures+"valid.expected.csv", "--out", est)
	require.Equal(t, 0, code, stderr)

	var prompts strings.Builder
	for i := range 40 {
		if i%2 == 0 {
			prompts.WriteString("solve the quadratic equation for x and simplify the integral\n")
		} else {
			prompts.WriteString("write a python function that sorts a list and returns the result\n")
		}
	}
	ptxt := filepath.Join(dir, "prompts.txt")
	require.NoError(t, os.WriteFile(ptxt, []byte(prompts.String()), 0o644))
	clusters := filepath.Join(dir, "clusters.json")
	_, stderr, code = runCLI(t, "cluster", "fit", "--in", ptxt, "--out", clusters, "--k", "2")
	require.Equal(t, 0, code, stderr)

	out := filepath.Join(dir, "scored.csv")
	_, stderr, code = runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", out, "--estimator", est, "--clusters", clusters)
	require.Equal(t, 0, code, stderr)
	rows := readCSV(t, out)
	require.Len(t, rows, 33)
	for _, r := range rows {
		p, err := strconv.ParseFloat(r["p_correct"], 64)
		require.NoError(t, err, "p_correct %q", r["p_correct"])
		require.True(t, p >= 0 && p <= 1, "p_correct %v", p)
		_, err = strconv.Atoi(r["cluster_id"])
		require.NoError(t, err)
		require.NotEmpty(t, r["cluster_label"])
	}
}
