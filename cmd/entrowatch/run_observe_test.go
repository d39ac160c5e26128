package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/runner"
)

// TestRunReadyGauge: entrowatch_ready{component} says to Prometheus what
// /readyz and /readyz/ingest say (an alert rule cannot probe them), from
// the start: 1 for a consuming stream and an ingest endpoint that reaches
// Kafka. TestRunWaitsForClickHouse checks the 0 of a stream waiting for
// ClickHouse.
func TestRunReadyGauge(t *testing.T) {
	dir := t.TempDir()
	metrics, httpAddr := freeAddr(t), freeAddr(t)
	cfg := fileRunConfig(dir, freeAddr(t), filepath.Join(dir, "out.csv"), metrics, "traces") +
		"http:\n  listen: " + httpAddr + "\n  shutdown_delay: 0s\n"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, cfg)
	waitLog(t, runErr, "stream running")
	waitStatus(t, "http://"+metrics+"/readyz", http.StatusOK, runErr)
	waitStatus(t, "http://"+metrics+"/readyz/ingest", http.StatusOK, runErr)
	_, body := get("http://" + metrics + "/metrics")
	require.Contains(t, body, `entrowatch_ready{component="stream"} 1`)
	require.Contains(t, body, `entrowatch_ready{component="ingest"} 1`)
	// Known series exist at 0 before their first use.
	require.Contains(t, body, `entrowatch_stream_dead_letter_total{reason="corrupt_ipc",topic="traces"} 0`)
	require.Contains(t, body, `entrowatch_stream_dead_letter_messages_total{reason="wrong_schema",topic="traces"} 0`)
	require.Contains(t, body, `entrowatch_stream_stage_seconds_total{stage="profile",topic="traces"} 0`)
	require.Contains(t, body, `entrowatch_http_requests_total{code="503"} 0`)
	require.Contains(t, body, `entrowatch_http_rejects_total{reason="no_logprobs"} 0`)
	cancel()
	stopped(t, done, runErr)
}

// TestProgressLog: the "stream progress" line is skipped when nothing
// changed since the one before (an idle replica wrote the same line every
// 30 s, 2,880 a day), and with log_format json its dead-letter counts are an
// object, not the string "1280 (unknown_model 1280)".
func TestProgressLog(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			p := progressLog{log: slog.New(logHandler(&buf, format, slog.LevelInfo)), json: format == "json"}
			st := runner.Stats{Messages: 40, Rows: 7360, SinkRows: 7360, DeadLettered: map[string]int64{"corrupt_ipc": 10000, "unknown_model": 1280}}
			p.tick(runner.Stats{})
			p.tick(runner.Stats{}) // idle: skipped
			p.tick(st)
			p.tick(st) // idle: skipped
			st.DeadLettered = map[string]int64{"corrupt_ipc": 10001, "unknown_model": 1280}
			p.tick(st) // a dead letter more
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			require.Len(t, lines, 3, buf.String())
			if format == "text" {
				require.Contains(t, lines[0], `messages=0 rows=0 written=0 dead_lettered=0`)
				require.Contains(t, lines[1], `messages=40 rows=7360 written=7360 dead_lettered="11280 (corrupt_ipc 10000, unknown_model 1280)"`)
				return
			}
			type line struct {
				Msg          string `json:"msg"`
				Messages     int64  `json:"messages"`
				DeadLettered struct {
					Total    int64            `json:"total"`
					ByReason map[string]int64 `json:"by_reason"`
				} `json:"dead_lettered"`
			}
			got := make([]line, len(lines))
			for i, l := range lines {
				require.NoError(t, json.Unmarshal([]byte(l), &got[i]), l)
			}
			require.Equal(t, "stream progress", got[1].Msg)
			require.EqualValues(t, 40, got[1].Messages)
			require.EqualValues(t, 0, got[0].DeadLettered.Total)
			require.Empty(t, got[0].DeadLettered.ByReason)
			require.EqualValues(t, 11280, got[1].DeadLettered.Total)
			require.Equal(t, map[string]int64{"corrupt_ipc": 10000, "unknown_model": 1280}, got[1].DeadLettered.ByReason)
			require.EqualValues(t, 10001, got[2].DeadLettered.ByReason["corrupt_ipc"])
		})
	}
}

// TestUnknownModelWarnedOnce: "no estimator for model" is logged once per
// model, not once per worker (each worker has its own chain, and each
// chain's estimate operator warned once: twice in the audit's run).
func TestUnknownModelWarnedOnce(t *testing.T) {
	dir := t.TempDir()
	table := filepath.Join(dir, "fx.csv")
	_, errs, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", table, "--quiet")
	require.Equal(t, 0, code, errs)
	est := filepath.Join(dir, "only.json")
	_, errs, code = runCLI(t, "train", "--in", table, "--out", est, "--features", "mean,std", "--transfer=false", "--model", "fixture-model")
	require.Equal(t, 0, code, errs)

	cfg := defaultRunConfig()
	cfg.Estimator = est
	var logs bytes.Buffer
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	chain := runChain(cfg, mem, slog.New(slog.NewTextHandler(&logs, nil)))
	for _, model := range []string{"other-llm", "third-llm"} {
		for worker := range 3 {
			ops, err := chain()
			require.NoError(t, err)
			f, err := os.Open(renameModel(t, model))
			require.NoError(t, err)
			rd := ingest.NewReader(f, ingest.DefaultConfig(), mem)
			rec, err := rd.Next()
			require.NoError(t, err)
			for _, op := range ops {
				out, err := op.Process(context.Background(), rec)
				require.NoError(t, err, "worker %d", worker)
				rec.Release()
				require.Len(t, out, 1)
				rec = out[0]
			}
			rec.Release()
			rd.Release()
			f.Close()
			for _, op := range ops {
				if c, ok := op.(interface{ Close() }); ok {
					c.Close()
				}
			}
		}
	}
	for _, model := range []string{"other-llm", "third-llm"} {
		require.Equal(t, 1, strings.Count(logs.String(), fmt.Sprintf(`msg="no estimator for model; its rows get status unknown_model" model=%s`, model)), logs.String())
	}
}
