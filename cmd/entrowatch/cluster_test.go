package main

import (
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/clustertag"
)

// clusterPrompts writes 60 prompts on three topics, with their domains.
func clusterPrompts(t *testing.T, dir string) (csvPath, jsonlPath string) {
	t.Helper()
	topics := [][]string{
		strings.Fields("court judge contract plaintiff defendant statute appeal jury verdict"),
		strings.Fields("planet galaxy telescope orbit comet nebula asteroid stellar supernova"),
		strings.Fields("recipe flour butter oven simmer garlic onion pastry dough"),
	}
	names := []string{"law", "astronomy", "cooking"}
	var c, j strings.Builder
	c.WriteString("domain,prompt\n")
	for i := 0; i < 60; i++ {
		tp := i % 3
		var p []string
		for w := 0; w < 7; w++ {
			p = append(p, topics[tp][(i*7+w*5)%len(topics[tp])])
		}
		prompt := "Which of the following " + strings.Join(p, " ") + "?"
		fmt.Fprintf(&c, "%s,%q\n", names[tp], prompt)
		fmt.Fprintf(&j, "{\"id\":\"r%d\",\"domain\":%q,\"prompt\":%q,\"choices\":[]}\n", i, names[tp], prompt)
	}
	csvPath = filepath.Join(dir, "prompts.csv")
	require.NoError(t, os.WriteFile(csvPath, []byte(c.String()), 0o644))
	jsonlPath = filepath.Join(dir, "prompts.jsonl.gz")
	f, err := os.Create(jsonlPath)
	require.NoError(t, err)
	gz := gzip.NewWriter(f)
	_, err = gz.Write([]byte(j.String()))
	require.NoError(t, err)
	require.NoError(t, gz.Close())
	require.NoError(t, f.Close())
	return csvPath, jsonlPath
}

func TestClusterFitReport(t *testing.T) {
	dir := t.TempDir()
	csvPath, jsonlPath := clusterPrompts(t, dir)
	out := filepath.Join(dir, "clusters.json")
	stdout, stderr, code := runCLI(t, "cluster", "fit", "--in", jsonlPath, "--out", out, "--k", "auto", "--k-max", "6", "--restarts", "3")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "3 clusters")
	require.Contains(t, stderr, "picked k=3 (highest stability", "progress on stderr")
	m, err := clustertag.Load(out)
	require.NoError(t, err)
	require.Len(t, m.Clusters, 3)

	stdout, stderr, code = runCLI(t, "cluster", "report", "--in", csvPath, "--clusters", out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "ARI 1.000, purity 1.000")
	require.Contains(t, stdout, "unclustered: 0 (0.0%)")

	// Refit with --previous: ids are carried over and the mapping is shown.
	out2 := filepath.Join(dir, "clusters2.json")
	_, stderr, code = runCLI(t, "cluster", "fit", "--in", csvPath, "--out", out2, "--k", "3", "--seed", "7", "--previous", out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "keeps id")
	m2, err := clustertag.Load(out2)
	require.NoError(t, err)
	require.Equal(t, m.Version, m2.Previous.Version)
}

func TestClusterErrors(t *testing.T) {
	dir := t.TempDir()
	noPrompt := filepath.Join(dir, "noprompt.csv")
	require.NoError(t, os.WriteFile(noPrompt, []byte("domain,text\nlaw,hello\n"), 0o644))
	noField := filepath.Join(dir, "noprompt.jsonl")
	require.NoError(t, os.WriteFile(noField, []byte("{\"id\":\"a\"}\n{\"id\":\"b\"}\n"), 0o644))
	out := filepath.Join(dir, "c.json")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no subcommand", []string{"cluster"}, 2, "fit|report"},
		{"unknown subcommand", []string{"cluster", "draw"}, 2, "unknown subcommand"},
		{"missing flags", []string{"cluster", "fit", "--in", noPrompt}, 2, "--in and --out are required"},
		{"missing file", []string{"cluster", "fit", "--in", filepath.Join(dir, "nope.csv"), "--out", out}, 1, "no such file"},
		{"no prompt column", []string{"cluster", "fit", "--in", noPrompt, "--out", out}, 1, "no prompt column"},
		{"no prompt field", []string{"cluster", "fit", "--in", noField, "--out", out}, 1, "no line has a \"prompt\""},
		{"bad k", []string{"cluster", "fit", "--in", noPrompt, "--out", out, "--k", "one"}, 1, "--k \"one\""},
		{"report without artifact", []string{"cluster", "report", "--in", noPrompt, "--clusters", filepath.Join(dir, "none.json")}, 1, "entrowatch cluster fit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, tc.args...)
			require.Equal(t, tc.code, code, stderr)
			require.Contains(t, stderr, tc.want)
		})
	}
}
