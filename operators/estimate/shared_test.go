package estimate

import (
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// sharedData returns ../shared/data next to the repository root, or skips.
func sharedData(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("uses the shared real data; skipped with -short")
	}
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("repository root (go.mod) not found")
		}
		dir = parent
	}
	data := filepath.Join(dir, "..", "shared", "data")
	if _, err := os.Stat(filepath.Join(data, "plaut-dev.csv.gz")); err != nil {
		t.Skipf("shared data not found at %s: %v", data, err)
	}
	return data
}

// TestReferenceProtocol runs the protocol on the Mistral rows of plaut-dev and
// compares every training set's AEE and rho with the scikit-learn reference
// (testdata/ref_protocol_mistral.csv, from gen_ref_protocol.py).
func TestReferenceProtocol(t *testing.T) {
	data := sharedData(t)
	tbl, err := ReadTable(filepath.Join(data, "plaut-dev.csv.gz"), []string{"confidence"})
	require.NoError(t, err)
	tbl = tbl.Subset(tbl.Where(func(i int) bool { return tbl.Model[i] == "Mistral" }))
	rep, err := Evaluate(context.Background(), tbl, EvalConfig{Ks: []int{1, 2},
		Methods: []string{"sk_platt", "sk_platt_balanced", "sk_isotonic", "atc", "raw_mean"}})
	require.NoError(t, err)
	got := map[string][]Result{}
	for _, r := range rep.Results {
		got[r.Method] = append(got[r.Method], r)
	}
	f, err := os.Open("testdata/ref_protocol_mistral.csv")
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	name := map[string]string{"platt": "sk_platt", "platt_balanced": "sk_platt_balanced", "isotonic": "sk_isotonic", "atc": "atc", "raw_mean": "raw_mean"}
	seen := map[string]int{}
	for _, row := range rows[1:] {
		m := name[row[2]]
		i := seen[m]
		seen[m]++
		require.Less(t, i, len(got[m]), m)
		r := got[m][i]
		k, _ := strconv.Atoi(row[1])
		aee, _ := strconv.ParseFloat(row[3], 64)
		rho, _ := strconv.ParseFloat(row[4], 64)
		require.Equal(t, k, r.K)
		require.InDelta(t, aee, r.AEE, 2e-4, "%s k=%d %v", m, k, r.TrainDomains)
		require.InDelta(t, rho, r.Rho, 1e-9, "%s k=%d %v", m, k, r.TrainDomains)
	}
	for m, n := range seen {
		require.Equal(t, n, len(got[m]), m)
	}
}
