package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunConfigClustersDomainFrom: clusters_domain_from is read, defaults to
// caller_else_cluster (printed as such) and an unknown value is refused
// while the config is read, naming the key, its line and the values it
// takes. run always built the operator with the default.
func TestRunConfigClustersDomainFrom(t *testing.T) {
	dir := t.TempDir()
	env := func(string) string { return "" }
	for _, tc := range []struct {
		yaml, want, err string
	}{
		{yaml: "", want: ""},
		{yaml: "clusters_domain_from: cluster\n", want: "cluster"},
		{yaml: "clusters_domain_from: caller\n", want: "caller"},
		{yaml: "clusters_domain_from: caller_else_cluster\n", want: "caller_else_cluster"},
		{yaml: "clusters_domain_from: guess\n", err: `line 2, clusters_domain_from "guess": want caller`},
		{yaml: "clusters_domain_from: \"\"\n", err: `clusters_domain_from "": want caller`},
	} {
		t.Run(strings.TrimSpace(tc.yaml), func(t *testing.T) {
			cfg, err := loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\n"+tc.yaml), env)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.ErrorContains(t, err, "cluster (the cluster label on every row)")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, string(cfg.ClustersDomainFrom))
		})
	}
	out, stderr, code := runCLI(t, "run", "--config", writeFile(t, dir, "data_dir: "+dir+"\n"), "--print-config")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "clusters_domain_from: caller_else_cluster\n")
}

// TestRunClustersDomainFrom runs the stream with clusters and
// clusters_domain_from: cluster: every scored row's domain is its cluster
// label, also where the caller sent one ("math", "code", "chat").
func TestRunClustersDomainFrom(t *testing.T) {
	dir := t.TempDir()
	csvPath, _ := clusterPrompts(t, dir)
	clusters := filepath.Join(dir, "clusters.json")
	_, stderr, code := runCLI(t, "cluster", "fit", "--in", csvPath, "--out", clusters, "--k", "3", "--restarts", "2", "--quiet")
	require.Equal(t, 0, code, stderr)

	broker := freeAddr(t)
	out := filepath.Join(dir, "scored.csv")
	cfg := fmt.Sprintf(`data_dir: %s
broker:
  listen: %s
sink: file
file:
  path: %s
  csv_clusters: true
metrics:
  listen: %s
stream:
  commit_interval: 0s
clusters: %s
clusters_domain_from: cluster
`, dir, broker, out, freeAddr(t), clusters)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, cfg)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, stderr, code = runCLI(t, "ingest", "--in", fixtures+"valid.jsonl.gz", "--brokers", broker)
		if code == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, 0, code, stderr)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(out)
		if strings.Count(string(b), "\n")-1 >= 33 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	stopped(t, done, runErr)
	rows := readCSV(t, out)
	require.Len(t, rows, 33)
	for _, r := range rows {
		require.NotEmpty(t, r["cluster_label"], "row %s", r["id"])
		require.Equal(t, r["cluster_label"], r["domain"], "row %s: domain_from cluster puts the cluster label in domain", r["id"])
	}
}
