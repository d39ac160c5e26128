package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// waitMetric polls /metrics at addr until it matches re, and returns the body.
func waitMetric(t *testing.T, addr string, re *regexp.Regexp, runErr *syncWriter) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // a guard against hanging, not a speed assertion
	for {
		_, body := get("http://" + addr + "/metrics")
		if re.MatchString(body) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never matched %s:\n%s\n%s", re, body, runErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRunEstimatorInfo: a replica running another estimator than the
// others mixed the estimates silently: no metric named the estimator, and
// the "estimator loaded" line gave the artifact's version, not the
// per-model versions rows carry in estimator_version. Now
// entrowatch_estimator_info{version} says which artifact each replica
// scores with ("none" without one), and the log line lists each model's
// version, the value its rows carry. The replica also says how many
// partitions it consumes (entrowatch_stream_assigned_partitions).
func TestRunEstimatorInfo(t *testing.T) {
	dir := t.TempDir()
	metrics := freeAddr(t)
	withLag := func(cfg string) string { return cfg + "  lag_interval: 100ms\n" } // stream: is the last section
	assigned := regexp.MustCompile(`entrowatch_stream_assigned_partitions\{topic="traces"\} 4\n`)

	// No estimator: "none".
	ctx, cancel := context.WithCancel(context.Background())
	runErr, done := startRun(t, ctx, dir, withLag(fileRunConfig(dir, freeAddr(t), filepath.Join(dir, "a.csv"), metrics, "traces")))
	waitLog(t, runErr, "stream running")
	body := waitMetric(t, metrics, assigned, runErr)
	require.Contains(t, body, `entrowatch_estimator_info{version="none"} 1`)
	cancel()
	stopped(t, done, runErr)

	// An estimator: its version, and each model's in the log.
	table := filepath.Join(dir, "fx.csv")
	_, errs, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", table, "--quiet")
	require.Equal(t, 0, code, errs)
	est := filepath.Join(dir, "est.json")
	_, errs, code = runCLI(t, "train", "--in", table, "--out", est, "--features", "mean,std", "--transfer=false", "--model", "fixture-model")
	require.Equal(t, 0, code, errs)
	b, err := os.ReadFile(est)
	require.NoError(t, err)
	var set struct {
		Version string `json:"version"`
		Models  map[string]struct {
			Version string `json:"version"`
		} `json:"models"`
	}
	require.NoError(t, json.Unmarshal(b, &set))
	require.Len(t, set.Models, 1)
	modelVersion := set.Models["fixture-model"].Version
	require.NotEmpty(t, modelVersion)
	require.NotEqual(t, set.Version, modelVersion)

	out := filepath.Join(dir, "scored.arrow")
	brokerAddr := freeAddr(t)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	runErr, done = startRun(t, ctx, dir, withLag(fileRunConfig(dir, brokerAddr, out, metrics, "traces"))+"estimator: "+est+"\n")
	waitLog(t, runErr, "stream running")
	require.Contains(t, runErr.String(), `msg="estimator loaded" file=`+est+` version=`+set.Version+` models=fixture-model fallback="" model_versions="fixture-model=`+modelVersion+"\"\n")
	body = waitMetric(t, metrics, assigned, runErr)
	require.Contains(t, body, `entrowatch_estimator_info{version="`+set.Version+`"} 1`)
	require.NotContains(t, body, `version="none"`)

	// The rows carry the model's version the log names.
	_, errs, code = runCLI(t, "ingest", "--in", fixtures+"valid.jsonl.gz", "--brokers", brokerAddr)
	require.Equal(t, 0, code, errs)
	waitMetric(t, metrics, regexp.MustCompile(`entrowatch_stream_sink_rows_total\{topic="traces"\} 3[3-9]\n`), runErr)
	cancel()
	stopped(t, done, runErr)
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	r, err := ipc.NewReader(f)
	require.NoError(t, err)
	defer r.Release()
	versions := map[string]int{}
	for r.Next() {
		rec := r.RecordBatch()
		ver := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColEstimatorVersion)).(*array.String)
		status := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColStatus)).(*array.String)
		for i := 0; i < ver.Len(); i++ {
			if status.Value(i) == "ok" {
				versions[ver.Value(i)]++
			}
		}
	}
	require.NoError(t, r.Err())
	require.Equal(t, map[string]int{modelVersion: 33}, versions)
}
