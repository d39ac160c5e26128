package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTrainRefusesIgnoredSettings: settings that were silently ignored or
// silently broke the model are refused, naming what to do (an estuser audit:
// --hyper 0.5 with a forest wrote trees of depth 0, one probability for
// every row; --screen with the default ensemble changed nothing), and train
// notes what a user would not expect of the file it wrote.
func TestTrainRefusesIgnoredSettings(t *testing.T) {
	dir := t.TempDir()
	table := filepath.Join(dir, "t.csv")
	var b strings.Builder
	b.WriteString("model,domain,correct,f1,mean,max\n")
	for i := range 200 {
		c := i%3 != 0
		v := "0.2"
		if c {
			v = "0.9"
		}
		b.WriteString("m,d" + string(rune('a'+i%2)) + "," + map[bool]string{true: "1", false: "0"}[c] + "," + v + "," + v + ",1" + v + "\n")
	}
	require.NoError(t, os.WriteFile(table, []byte(b.String()), 0o644))
	out := filepath.Join(dir, "e.json")

	_, stderr, code := runCLI(t, "train", "--in", table, "--out", out, "--features", "mean", "--family", "forest", "--hyper", "0.5", "--transfer=false")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "a forest's hyper-parameter is its tree depth, a whole number from 1 to 16")
	_, stderr, code = runCLI(t, "train", "--in", table, "--out", out, "--features", "mean", "--screen", "1", "--transfer=false")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "--screen 1 applies to one model (--ensemble 0)")
	_, err := os.Stat(out)
	require.True(t, os.IsNotExist(err), "nothing written")

	_, stderr, code = runCLI(t, "train", "--in", table, "--out", out, "--features", "f1", "--offset", "--transfer=false")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "note: features f1 are not columns of scored responses")
	require.NotContains(t, stderr, "--offset applied to no model", "f1 is a probability of being right: the offset applies")
	_, stderr, code = runCLI(t, "train", "--in", table, "--out", out, "--features", "mean", "--offset", "--transfer=false")
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stderr, "not columns of scored responses")
	require.NotContains(t, stderr, "--offset applied to no model")
	_, stderr, code = runCLI(t, "train", "--in", table, "--out", out, "--features", "max", "--offset", "--transfer=false")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "note: --offset applied to no model: no kept feature is a probability of being right")
	_, stderr, code = runCLI(t, "train", "--in", table, "--out", out, "--features", "mean", "--screen", "1", "--ensemble", "0", "--transfer=false")
	require.Equal(t, 0, code, stderr)
}

// TestTrainReportWideDomains: domain names in CJK or with emoji keep the
// report's columns aligned (padding counted runes, so each wide character
// shifted the row by one column).
func TestTrainReportWideDomains(t *testing.T) {
	require.Equal(t, 4, displayWidth("数学"))
	require.Equal(t, 8, displayWidth("emoji 🚀"))
	require.Equal(t, 1, displayWidth("é")) // e + combining acute
	require.Equal(t, 8, displayWidth("ελληνικά"))

	dir := t.TempDir()
	table := filepath.Join(dir, "t.csv")
	var b strings.Builder
	b.WriteString("model,domain,correct,mean\n")
	domains := []string{"数学", "emoji 🚀", "plain", "ελληνικά"}
	for i := range 400 {
		c := i%3 != 0
		v := "0.2"
		if c {
			v = "0.9"
		}
		b.WriteString("m," + domains[i%4] + "," + map[bool]string{true: "1", false: "0"}[c] + "," + v + "\n")
	}
	require.NoError(t, os.WriteFile(table, []byte(b.String()), 0o644))
	out, stderr, code := runCLI(t, "train", "--in", table, "--out", filepath.Join(dir, "e.json"), "--features", "mean")
	require.Equal(t, 0, code, stderr)
	col := -1
	for _, line := range strings.Split(out, "\n") {
		for _, d := range append(domains, "domain") {
			if strings.HasPrefix(line, "  "+d+" ") {
				rest := strings.TrimLeft(line[len("  "+d):], " ")
				at := displayWidth(line) - displayWidth(rest) // where the rows column starts
				if col < 0 {
					col = at
				}
				require.Equal(t, col, at, "row %q", line)
			}
		}
	}
	require.Greater(t, col, 0, out)
}

// TestTrainNotesLargeECE: a model whose out-of-fold ECE is large gets a
// note (an estuser audit: the plain ensemble average printed ECE 0.135 and
// nothing else); the default, recalibrated, does not.
func TestTrainNotesLargeECE(t *testing.T) {
	dir := t.TempDir()
	table := filepath.Join(dir, "two.csv")
	rng := rand.New(rand.NewPCG(3, 4))
	var b strings.Builder
	b.WriteString("model,domain,correct,mean,std\n")
	shifts := [][2]float64{{0, 0}, {1, 0}, {-1, 0.5}, {0.5, -1}, {-1.5, 1}, {2, -0.5}}
	for d, sh := range shifts {
		for range 1000 {
			x1, x2 := sh[0]+rng.NormFloat64(), sh[1]+rng.NormFloat64()
			y := 0
			if rng.Float64() < 1/(1+math.Exp(-(1.5*x1-x2-0.2))) {
				y = 1
			}
			fmt.Fprintf(&b, "m,d%d,%d,%g,%g\n", d, y, x1, x2)
		}
	}
	require.NoError(t, os.WriteFile(table, []byte(b.String()), 0o644))
	out := filepath.Join(dir, "e.json")
	_, stderr, code := runCLI(t, "train", "--in", table, "--out", out, "--features", "mean,std", "--transfer=false", "--recalibrate=false")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `note: model m: out-of-fold ECE 0\.1\d\d: its p_correct is off`, stderr)
	_, stderr, code = runCLI(t, "train", "--in", table, "--out", out, "--features", "mean,std", "--transfer=false")
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stderr, "out-of-fold ECE")
}
