package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/kafka"
	"github.com/entrowatch/entrowatch/streams/runner"
)

// fileRunConfig is a run config with the embedded broker at brokerAddr and
// a CSV file sink, consuming topic.
func fileRunConfig(dir, brokerAddr, out, metrics, topic string) string {
	return fmt.Sprintf(`data_dir: %s
broker:
  listen: %s
  topics: [traces]
sink: file
file:
  path: %s
metrics:
  listen: %s
source:
  topic: %s
stream:
  commit_interval: 0s
`, dir, brokerAddr, out, metrics, topic)
}

// waitLog waits until the run's stderr contains s.
func waitLog(t *testing.T, w *syncWriter, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(w.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("run never logged %q:\n%s", s, w.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRunOneProcessPerDataDir: a second run on the same data_dir, or on a
// metrics address in use, fails at once with what to change; the first
// keeps running and stops cleanly.
func TestRunOneProcessPerDataDir(t *testing.T) {
	dir := t.TempDir()
	metrics := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, fileRunConfig(dir, freeAddr(t), filepath.Join(dir, "a.csv"), metrics, "traces"))
	waitLog(t, runErr, "stream running")
	require.Contains(t, runErr.String(), "no estimator configured: p_correct stays null", "a run without an estimator says what that means")

	other := t.TempDir()
	_, errs, code := runCLI(t, "run", "--config", writeFile(t, other, fileRunConfig(dir, freeAddr(t), filepath.Join(other, "b.csv"), freeAddr(t), "traces")))
	require.Equal(t, 1, code)
	require.Contains(t, errs, "data_dir "+dir+" is in use by another entrowatch process (pid ")

	_, errs, code = runCLI(t, "run", "--config", writeFile(t, other, fileRunConfig(other, freeAddr(t), filepath.Join(other, "b.csv"), metrics, "traces")))
	require.Equal(t, 1, code)
	require.Contains(t, errs, "metrics server: listen "+metrics)
	require.Contains(t, errs, "set metrics.listen to a free address")
	require.NotContains(t, errs, "embedded broker started", "the port is checked before anything starts")

	cancel()
	stopped(t, done, runErr)
}

func writeFile(t *testing.T, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "entrowatch.yaml")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

// TestRunBrokerKeepsAcknowledged: what the embedded broker acknowledged is
// kept under data_dir/broker and consumed after a restart. The first run
// consumes another topic, so the responses wait in "traces".
func TestRunBrokerKeepsAcknowledged(t *testing.T) {
	dir := t.TempDir()
	brokerAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	runErr, done := startRun(t, ctx, dir, fileRunConfig(dir, brokerAddr, filepath.Join(dir, "first.csv"), freeAddr(t), "elsewhere"))
	waitLog(t, runErr, "stream running")
	_, errs, code := runCLI(t, "ingest", "--in", fixtures+"valid.jsonl.gz", "--brokers", brokerAddr)
	require.Equal(t, 0, code, errs)
	cancel()
	stopped(t, done, runErr)
	require.DirExists(t, filepath.Join(dir, "broker"))

	out := filepath.Join(dir, "second.csv")
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	runErr, done = startRun(t, ctx, dir, fileRunConfig(dir, brokerAddr, out, freeAddr(t), "traces"))
	deadline := time.Now().Add(30 * time.Second)
	rows := 0
	for rows < 33 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		b, _ := os.ReadFile(out)
		rows = strings.Count(string(b), "\n") - 1
	}
	cancel()
	stopped(t, done, runErr)
	require.Equal(t, 33, rows, "the 33 responses acknowledged before the restart were consumed after it")

	// in_memory keeps nothing.
	mem := t.TempDir()
	cfg := strings.Replace(fileRunConfig(mem, freeAddr(t), filepath.Join(mem, "x.csv"), "", "traces"), "  topics: [traces]\n", "  topics: [traces]\n  in_memory: true\n", 1)
	out2, errs, code := runCLI(t, "run", "--config", writeFile(t, mem, cfg), "--print-config")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out2, "in_memory: true")
	require.NotContains(t, out2, filepath.Join(mem, "broker"))
}

// TestPrintConfigHidesSecrets: neither a password key nor one inside the DSN
// is printed; the embedded broker's default data directory is shown.
func TestPrintConfigHidesSecrets(t *testing.T) {
	dir := t.TempDir()
	cfg := fmt.Sprintf("data_dir: %s\nsink: clickhouse\nclickhouse:\n  conn:\n    dsn: clickhouse://bob:s3cret@127.0.0.1:9000/db\n    password: hunter2\n", dir)
	out, errs, code := runCLI(t, "run", "--config", writeFile(t, dir, cfg), "--print-config")
	require.Equal(t, 0, code, errs)
	require.NotContains(t, out, "s3cret")
	require.NotContains(t, out, "hunter2")
	require.Contains(t, out, "bob:xxxxx@127.0.0.1:9000/db")
	require.Contains(t, out, "data_dir: "+filepath.Join(dir, "broker"))
}

// TestDeadlettersCommand: entrowatch deadletters lists what the stream
// dead-lettered with reason, detail and trace id, filters by reason, stops
// at --max, and requeues the records' bytes to another topic.
func TestDeadlettersCommand(t *testing.T) {
	dir := t.TempDir()
	table := filepath.Join(dir, "fx.csv")
	_, errs, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", table, "--quiet")
	require.Equal(t, 0, code, errs)
	est := filepath.Join(dir, "only.json")
	_, errs, code = runCLI(t, "train", "--in", table, "--out", est, "--features", "mean,std", "--transfer=false", "--model", "fixture-model")
	require.Equal(t, 0, code, errs)

	brokerAddr := freeAddr(t)
	cfg := strings.Replace(fileRunConfig(dir, brokerAddr, filepath.Join(dir, "out.csv"), freeAddr(t), "traces"),
		"  topics: [traces]\n", "  topics: [traces, requeued]\n", 1) + "estimator: " + est + "\n"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, cfg)
	waitLog(t, runErr, "stream running")
	require.Contains(t, runErr.String(), "estimator loaded")
	require.Contains(t, runErr.String(), "models=fixture-model fallback=\"\"")
	require.NotContains(t, runErr.String(), "no estimator configured")
	_, errs, code = runCLI(t, "ingest", "--in", fixtures+"invalid.jsonl", "--brokers", brokerAddr)
	require.Equal(t, 1, code, errs) // refused up front: nothing sent
	_, errs, code = runCLI(t, "ingest", "--in", fixtures+"invalid.jsonl", "--brokers", brokerAddr, "--check=false")
	require.Equal(t, 0, code, errs)
	_, errs, code = runCLI(t, "ingest", "--in", renameModel(t, "other-llm"), "--brokers", brokerAddr)
	require.Equal(t, 0, code, errs)

	// 4 invalid responses + 33 of a model the estimator does not know.
	var out string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, errs, code = runCLI(t, "deadletters", "--brokers", brokerAddr)
		if code == 0 && strings.Count(out, "\n") >= 37 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Equal(t, 37, strings.Count(out, "\n"), errs)
	require.Contains(t, errs, "37 records from traces.dead (empty 1, nan_logprob 1, no_logprobs 1, positive_logprob 1, unknown_model 33)")

	// A message processed again (redelivered after a restart or a failed
	// sink write) dead-letters its rows again: a copy of an unknown_model
	// record, as the stream would write it, is counted, not listed or
	// requeued (the list said 38 records for 37 responses).
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{brokerAddr}
	var first *kafka.Message
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	require.NoError(t, kafka.ReadTopic(rctx, conn, "traces.dead", false, func(m kafka.Message) error {
		for _, h := range m.Headers {
			if h.Key == runner.HeaderReason && string(h.Value) == "unknown_model" && first == nil {
				first = &m
			}
		}
		return nil
	}))
	rcancel()
	require.NotNil(t, first)
	pc := kafka.DefaultProducerConfig()
	pc.Topic, pc.BatchTimeout = "traces.dead", time.Millisecond
	dp, err := kafka.NewProducer(conn, pc, nil)
	require.NoError(t, err)
	require.NoError(t, dp.Produce(ctx, kafka.Message{Key: first.Key, Value: first.Value, Headers: first.Headers}))
	require.NoError(t, dp.Close())
	out, errs, code = runCLI(t, "deadletters", "--brokers", brokerAddr)
	require.Equal(t, 0, code, errs)
	require.Equal(t, 37, strings.Count(out, "\n"), errs)
	require.Contains(t, errs, "37 records from traces.dead (empty 1, nan_logprob 1, no_logprobs 1, positive_logprob 1, unknown_model 33); 1 copy of records listed above left out")

	out, errs, code = runCLI(t, "deadletters", "--brokers", brokerAddr, "--reason", "positive_logprob")
	require.Equal(t, 0, code, errs)
	var d deadLetter
	require.NoError(t, json.Unmarshal([]byte(out), &d))
	require.Equal(t, "positive_logprob", d.Reason)
	require.Equal(t, "fx-200", d.TraceID)
	require.Contains(t, d.Detail, "is positive")
	require.Contains(t, d.Source, "traces/")
	require.NotNil(t, d.Row)
	require.Greater(t, d.Bytes, 0)

	out, _, code = runCLI(t, "deadletters", "--brokers", brokerAddr, "--max", "2")
	require.Equal(t, 0, code)
	require.Equal(t, 2, strings.Count(out, "\n"))

	_, errs, code = runCLI(t, "deadletters", "--brokers", brokerAddr, "--reason", "unknown_model", "--requeue", "requeued")
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "33 requeued to requeued")
	out, errs, code = runCLI(t, "deadletters", "--brokers", brokerAddr, "--topic", "requeued")
	require.Equal(t, 0, code, errs)
	require.Equal(t, 33, strings.Count(out, "\n"))
	require.NotContains(t, out, `"reason":"unknown_model"`, "the dead-letter headers are not requeued")

	_, errs, code = runCLI(t, "deadletters", "--brokers", brokerAddr, "--topic", "nosuch")
	require.Equal(t, 1, code)
	require.Contains(t, errs, "nosuch")
	cancel()
	stopped(t, done, runErr)
}

// TestRunFileSinkKeepsRows: `entrowatch run` with a fixed file.path, stopped
// and started again, keeps the rows of the first run (their offsets are
// committed, so they would never come back) and adds the second run's, in
// CSV and in Arrow. Before, each start truncated the file.
func TestRunFileSinkKeepsRows(t *testing.T) {
	produced := regexp.MustCompile(`produced (\d+) responses`)
	for _, name := range []string{"scored.csv", "scored.arrow"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, name)
			broker, metrics := freeAddr(t), freeAddr(t)
			cfg := fileRunConfig(dir, broker, out, metrics, "traces")
			ids := func() []string {
				if strings.HasSuffix(name, ".arrow") {
					f, err := os.Open(out)
					require.NoError(t, err)
					defer f.Close()
					r, err := ipc.NewReader(f)
					require.NoError(t, err, "one Arrow stream")
					defer r.Release()
					var ids []string
					for r.Next() {
						rec := r.RecordBatch()
						id := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
						model := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColModel)).(*array.String)
						for j := 0; j < id.Len(); j++ {
							ids = append(ids, id.Value(j), model.Value(j))
						}
					}
					require.NoError(t, r.Err(), "the file reads to its end")
					return ids
				}
				b, err := os.ReadFile(out)
				require.NoError(t, err)
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				require.True(t, strings.HasPrefix(lines[0], "id,model,"), "one header, first")
				var ids []string
				for _, l := range lines[1:] {
					require.False(t, strings.HasPrefix(l, "id,model,"), "one header only")
					ids = append(ids, strings.SplitN(l, ",", 3)[:2]...)
				}
				return ids
			}
			var first []string
			for i, in := range []string{fixtures + "valid.jsonl.gz", renameModel(t, "other-llm")} {
				ctx, cancel := context.WithCancel(context.Background())
				runErr, done := startRun(t, ctx, dir, cfg)
				waitLog(t, runErr, "stream running")
				stdout, errs, code := runCLI(t, "ingest", "--in", in, "--brokers", broker)
				require.Equal(t, 0, code, errs)
				m := produced.FindStringSubmatch(stdout)
				require.NotNil(t, m, stdout)
				want := regexp.MustCompile(`entrowatch_stream_sink_rows_total\{[^}]*\} ` + m[1] + `\n`)
				deadline := time.Now().Add(60 * time.Second) // a guard against hanging, not a speed assertion
				for {
					_, body := get("http://" + metrics + "/metrics")
					if want.MatchString(body) {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the sink never took the %s rows:\n%s", m[1], runErr.String())
					}
					time.Sleep(50 * time.Millisecond)
				}
				cancel()
				stopped(t, done, runErr)
				got := ids()
				if i == 0 {
					first = got
					require.NotEmpty(t, first)
					continue
				}
				require.Len(t, got, 2*len(first), "the second run adds as many rows as the first:\n%s", runErr.String())
				require.Equal(t, first, got[:len(first)], "the first run's rows are kept, first")
				require.Contains(t, got, "other-llm")
			}
		})
	}
}
