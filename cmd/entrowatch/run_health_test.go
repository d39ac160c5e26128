package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// get returns the status code and body of GET url (0 when unreachable).
func get(url string) (int, string) {
	res, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// postResponses posts the golden responses (gzip) to HTTP ingest at addr.
func postResponses(t *testing.T, addr string) (int, string) {
	t.Helper()
	body, err := os.ReadFile(fixtures + "valid.jsonl.gz")
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/responses", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Encoding", "gzip")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// waitStatus polls url until it answers code.
func waitStatus(t *testing.T, url string, code int, runErr *syncWriter) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // a guard against hanging, not a speed assertion
	for {
		c, body := get(url)
		if c == code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %s, want %d\n%s", url, c, body, code, runErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRunWaitsForClickHouse: with ClickHouse unreachable at start, run used
// to exit within milliseconds (a crash loop in Kubernetes, and no HTTP
// ingest). Now it retries with a line per attempt, /healthz answers, /readyz
// says 503 while /readyz/ingest says 200 and ingest accepts responses (it
// needs only Kafka); a stop during the wait is clean. Ingest on 0.0.0.0
// without a token is warned about.
func TestRunWaitsForClickHouse(t *testing.T) {
	dir := t.TempDir()
	httpAddr, metrics := freeAddr(t), freeAddr(t)
	_, port, _ := strings.Cut(httpAddr, ":")
	cfg := fmt.Sprintf(`data_dir: %s
broker:
  listen: %s
sink: clickhouse
clickhouse:
  conn:
    dsn: clickhouse://%s/default
http:
  listen: 0.0.0.0:%s
  token_env: ENTROWATCH_TEST_NO_SUCH_TOKEN
  shutdown_delay: 0s
metrics:
  listen: %s
stream:
  sink_backoff_min: 10ms
  sink_backoff_max: 50ms
`, dir, freeAddr(t), freeAddr(t), port, metrics)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, cfg)
	waitLog(t, runErr, "attempt=3")
	require.Contains(t, runErr.String(), "clickhouse not reachable; retrying")
	require.Contains(t, runErr.String(), "HTTP ingest listens beyond this host without a bearer token")
	select {
	case code := <-done:
		t.Fatalf("run exited (%d) while ClickHouse was unreachable:\n%s", code, runErr.String())
	default:
	}

	code, _ := get("http://" + metrics + "/healthz")
	require.Equal(t, http.StatusOK, code, "alive while waiting for the sink")
	code, body := get("http://" + metrics + "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "starting")
	// The stream's metrics exist once the sink is reached; meanwhile the
	// failed attempts are counted, so an alert sees the outage.
	_, body = get("http://" + metrics + "/metrics")
	require.Regexp(t, `entrowatch_sink_connect_errors_total [1-9]`, body)
	// ... and so is readiness, which an alert rule sees only as a metric.
	require.Contains(t, body, `entrowatch_ready{component="stream"} 0`)
	waitStatus(t, "http://"+metrics+"/readyz/ingest", http.StatusOK, runErr)
	_, body = get("http://" + metrics + "/metrics")
	require.Contains(t, body, `entrowatch_ready{component="ingest"} 1`)
	code, body = postResponses(t, httpAddr)
	require.Equal(t, http.StatusAccepted, code, body)

	cancel()
	stopped(t, done, runErr)
	require.Contains(t, runErr.String(), "stopped before the stream started")
}

// TestRunClickHouseAnswerFailsFast: an error the server answers (here an
// unknown database) is not retried: run fails at once and says what to do.
func TestRunClickHouseAnswerFailsFast(t *testing.T) {
	if _, err := clickhouse.FindServerBinary(); err != nil {
		t.Skip("clickhouse-server is not installed (make deps installs it): ", err)
	}
	ctx := context.Background()
	lc := clickhouse.DefaultLocalConfig()
	lc.Dir = filepath.Join(t.TempDir(), "ch")
	srv, err := clickhouse.StartLocal(ctx, lc, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer srv.Stop()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`data_dir: %s
broker:
  listen: %s
sink: clickhouse
clickhouse:
  migrate: false
  conn:
    dsn: clickhouse://127.0.0.1:%d/nosuch
metrics:
  listen: ""
`, dir, freeAddr(t), srv.TCPPort())
	_, errs, code := runCLI(t, "run", "--config", writeFile(t, dir, cfg))
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, "nosuch")
	require.NotContains(t, errs, "retrying")

	// A database the migrate job has not migrated: with clickhouse.migrate
	// off, run started on it without a word and labels failed for ever
	// ("No such column version") while /readyz said ready.
	// The database an older build migrated (001-008): its tables are there.
	exec := func(q string) {
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/", srv.HTTPPort()), "text/plain", strings.NewReader(q))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", q, b)
	}
	ms, err := clickhouse.Migrations()
	require.NoError(t, err)
	exec("CREATE DATABASE old")
	exec("CREATE TABLE old.schema_migrations (version UInt32, name String, checksum String, applied_at DateTime('UTC') DEFAULT now()) ENGINE = MergeTree ORDER BY version")
	for _, m := range ms[:8] {
		for _, st := range m.Statements {
			exec(clickhouse.Expand(st, "old"))
		}
		exec(fmt.Sprintf("INSERT INTO old.schema_migrations (version, name, checksum) VALUES (%d, '%s', '%s')", m.Version, m.Name, m.Checksum))
	}
	_, errs, code = runCLI(t, "run", "--config", writeFile(t, t.TempDir(), strings.Replace(cfg, "/nosuch", "/old", 1)))
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, "database old is at migration 8 and this build needs")
	require.Contains(t, errs, "run entrowatch migrate")
	require.NotContains(t, errs, "retrying")
}

// TestRunShutdownKeepsServing: on SIGTERM /readyz and /readyz/ingest answer
// 503 at once while HTTP ingest and /metrics keep serving for
// http.shutdown_delay (they used to close at once: connection refused on
// every rollout); a response accepted then is still consumed and written;
// the drain is logged before "stream stopped".
func TestRunShutdownKeepsServing(t *testing.T) {
	dir := t.TempDir()
	httpAddr, metrics := freeAddr(t), freeAddr(t)
	out := filepath.Join(dir, "scored.csv")
	cfg := fmt.Sprintf(`data_dir: %s
broker:
  listen: %s
sink: file
file:
  path: %s
http:
  listen: %s
  shutdown_delay: 3s
metrics:
  listen: %s
stream:
  commit_interval: 0s
`, dir, freeAddr(t), out, httpAddr, metrics)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, cfg)
	waitLog(t, runErr, "stream running")
	waitStatus(t, "http://"+metrics+"/readyz", http.StatusOK, runErr)
	waitStatus(t, "http://"+metrics+"/readyz/ingest", http.StatusOK, runErr)
	require.NotContains(t, runErr.String(), "without a bearer token", "127.0.0.1 is not exposed")

	cancel()
	waitLog(t, runErr, "shutting down")
	code, body := get("http://" + metrics + "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "draining")
	code, _ = get("http://" + metrics + "/readyz/ingest")
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, body = postResponses(t, httpAddr)
	require.Equal(t, http.StatusAccepted, code, "ingest keeps serving during http.shutdown_delay: %s", body)
	code, _ = get("http://" + metrics + "/metrics")
	require.Equal(t, http.StatusOK, code)

	stopped(t, done, runErr)
	logs := runErr.String()
	require.Contains(t, logs, "draining")
	require.Less(t, strings.Index(logs, "draining"), strings.Index(logs, "stream stopped"))
	require.Len(t, readCSV(t, out), 33, "the responses accepted during the delay were consumed and written")
}

// TestRunShutdownLeavesGroupFirst: with an external Kafka the stream leaves
// the group at SIGTERM, beside http.shutdown_delay rather than after it (a
// rebalance in the delay handed partitions to the replica about to go: sre
// F8), while HTTP ingest keeps serving; what it accepts then stays in the
// topic for the other replicas: a second run writes it.
func TestRunShutdownLeavesGroupFirst(t *testing.T) {
	_, conn, _ := tracesBroker(t)
	brokers := conn.Brokers[0]
	dir := t.TempDir()
	httpAddr, metrics := freeAddr(t), freeAddr(t)
	cfg := kafkaRunConfig(dir, brokers, metrics) + "  commit_interval: 0s\nhttp:\n  listen: " + httpAddr + "\n  shutdown_delay: 3s\n"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, cfg)
	waitLog(t, runErr, "stream running")
	waitLog(t, runErr, "partitions assigned")
	waitStatus(t, "http://"+metrics+"/readyz", http.StatusOK, runErr)

	cancel()
	waitLog(t, runErr, "shutting down")
	waitLog(t, runErr, "draining")
	code, body := postResponses(t, httpAddr)
	require.Equal(t, http.StatusAccepted, code, "ingest keeps serving during http.shutdown_delay: %s", body)
	stopped(t, done, runErr)
	logs := runErr.String()
	require.Less(t, strings.Index(logs, "draining"), strings.Index(logs, "HTTP ingest stops accepting"),
		"the stream drained before the delay was over")
	rows, err := os.ReadFile(filepath.Join(dir, "out.csv"))
	if err == nil {
		require.NotContains(t, string(rows), "fixture-model", "the stream had left: the responses accepted in the delay are for the others")
	}

	dir2 := t.TempDir()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	runErr2, done2 := startRun(t, ctx2, dir2, kafkaRunConfig(dir2, brokers, freeAddr(t)))
	out := filepath.Join(dir2, "out.csv")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(out); err == nil && strings.Count(string(b), "\n") == 34 { // a header and 33 rows
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the next replica never wrote the 33 responses accepted during the delay:\n%s", runErr2.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel2()
	stopped(t, done2, runErr2)
}

// TestRunShutdownHandsOverPartitions: two replicas on an external Kafka;
// one is stopped with a long http.shutdown_delay. It leaves the group when
// its stream has drained, not when the process ends, so the other replica
// takes its partitions and writes what arrives for them during the delay
// (recheck10 F1: they waited, unread, until the stopping replica exited).
func TestRunShutdownHandsOverPartitions(t *testing.T) {
	bcfg := broker.DefaultConfig()
	bcfg.Partitions = 2
	bcfg.Topics = []string{"traces"}
	bcfg.MinSessionTimeout = 100 * time.Millisecond
	b, err := broker.Start(bcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer b.Close(context.Background())
	fast := "  heartbeat_interval: 200ms\n  session_timeout: 2s\n  rebalance_timeout: 2s\n"
	start := func(delay string) (*syncWriter, chan int, context.CancelFunc, string, string) {
		dir, metrics := t.TempDir(), freeAddr(t)
		cfg := kafkaRunConfig(dir, b.Addr(), metrics) + "  commit_interval: 0s\nsource:\n" + fast +
			"http:\n  listen: " + freeAddr(t) + "\n  shutdown_delay: " + delay + "\n"
		ctx, cancel := context.WithCancel(context.Background())
		logs, done := startRun(t, ctx, dir, cfg)
		waitLog(t, logs, "stream running")
		return logs, done, cancel, filepath.Join(dir, "out.csv"), metrics
	}
	aLogs, aDone, stopA, _, aMetrics := start("20s")
	defer stopA()
	bLogs, bDone, stopB, bOut, bMetrics := start("0s")
	defer stopB()
	deadline := time.Now().Add(30 * time.Second)
	one := func(addr string) bool {
		_, body := get("http://" + addr + "/metrics")
		return strings.Contains(body, `entrowatch_stream_assigned_partitions{topic="traces"} 1`)
	}
	for !one(aMetrics) || !one(bMetrics) {
		if time.Now().After(deadline) {
			t.Fatalf("the two replicas never shared the partitions:\nA:\n%s\nB:\n%s", aLogs.String(), bLogs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	stopA()
	waitLog(t, aLogs, "draining")
	_, errs, code := runCLI(t, "ingest", "--in", fixtures+"valid.jsonl.gz", "--brokers", b.Addr(), "--batch-rows", "1")
	require.Equal(t, 0, code, errs)
	distinct := func() int { // a rebalance may deliver a message twice (at least once)
		out, err := os.ReadFile(bOut)
		if err != nil || strings.Count(string(out), "\n") < 2 {
			return 0
		}
		ids := map[string]bool{}
		for _, r := range readCSV(t, bOut) {
			ids[r["id"]] = true
		}
		return len(ids)
	}
	for {
		if distinct() == 33 {
			break
		}
		select {
		case <-aDone:
			t.Fatalf("the stopping replica exited before the other wrote what it was sent during the delay (%d of 33):\nA:\n%s\nB:\n%s", distinct(), aLogs.String(), bLogs.String())
		default:
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("the other replica never took over:\nB:\n%s", bLogs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopped(t, aDone, aLogs)
	stopB()
	stopped(t, bDone, bLogs)
}

// TestRunConfigDeadLetterTopic: a dead-letter topic equal to the source
// topic fed every bad message back to the stream, for ever.
func TestRunConfigDeadLetterTopic(t *testing.T) {
	for name, c := range map[string]struct{ yaml, want string }{
		"dead letters": {"dead_letter:\n  topic: traces\n", "dead_letter.topic must differ from source.topic"},
		"moved source": {"source:\n  topic: in\ndead_letter:\n  topic: in\n", "dead_letter.topic must differ from source.topic"},
		"labels":       {"labels_topic: traces\n", "labels_topic \"traces\" must differ"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\n"+c.yaml), func(string) string { return "" })
			require.ErrorContains(t, err, c.want)
		})
	}
	dir := t.TempDir()
	c, err := loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\n"), func(string) string { return "" })
	require.NoError(t, err)
	require.Equal(t, "traces.dead", c.DeadLetter.Topic)
	require.Equal(t, 5*time.Second, c.HTTP.ShutdownDelay)
}

// TestRunLogDurations: JSON log lines carried durations as nanoseconds
// ("retention":86400000000000).
func TestRunLogDurations(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		slog.New(logHandler(&b, format, slog.LevelInfo)).Info("broker", "retention", 24*time.Hour)
		require.Contains(t, b.String(), "24h0m0s", format)
		require.NotContains(t, b.String(), "86400000000000", format)
	}
}

// TestRunSinkRetryLogDebug: the sink's inner retries of one write were
// logged at WARN under each WARN of the stream's own retry (5 lines per
// attempt); they go to DEBUG, other levels stay.
func TestRunSinkRetryLogDebug(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(retryDebug{logHandler(&b, "text", slog.LevelInfo)}).With("sink", "clickhouse")
	log.Warn("clickhouse insert failed; retrying")
	log.Error("broken")
	require.NotContains(t, b.String(), "retrying")
	require.Contains(t, b.String(), "level=ERROR")
	b.Reset()
	log = slog.New(retryDebug{logHandler(&b, "text", slog.LevelDebug)})
	log.Warn("clickhouse insert failed; retrying")
	require.Contains(t, b.String(), "level=DEBUG")
}

func TestHTTPExposedWithoutToken(t *testing.T) {
	for addr, want := range map[string]bool{
		"0.0.0.0:8080": true, ":8080": true, "[::]:8080": true, "10.0.0.5:8080": true, "ingest.local:8080": true,
		"127.0.0.1:8080": false, "localhost:8080": false, "[::1]:8080": false, "": false,
	} {
		require.Equal(t, want, exposedWithoutToken(addr, ""), addr)
	}
	require.False(t, exposedWithoutToken("0.0.0.0:8080", kafka.Secret("t")))
}
