package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

// syncWriter is a strings.Builder safe for the log lines of run's goroutines.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// startRun writes cfg to dir and starts `entrowatch run` with it until ctx
// ends; it returns run's stderr and where its exit code arrives.
func startRun(t *testing.T, ctx context.Context, dir, cfg string) (*syncWriter, chan int) {
	t.Helper()
	cfgPath := filepath.Join(dir, "entrowatch.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))
	runErr := &syncWriter{b: &strings.Builder{}}
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"run", "--config", cfgPath}, &syncWriter{b: &strings.Builder{}}, runErr)
	}()
	return runErr, done
}

// stopped waits for run to exit 0 after its context was cancelled.
func stopped(t *testing.T, done chan int, runErr *syncWriter) {
	t.Helper()
	select {
	case c := <-done:
		require.Equal(t, 0, c, runErr.String())
	case <-time.After(60 * time.Second):
		t.Fatal("run did not stop after cancellation")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		l.Close()
		// The kernel may give a port it gave before once that was closed:
		// two addresses of one test (a broker and a metrics listener)
		// would then clash.
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr
		}
	}
}

// handedOut is every address freeAddr returned in this test process.
var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// TestRunAndIngest runs the binary's two halves as a user would on one
// machine: `entrowatch run` (embedded broker, CSV file sink) and `entrowatch
// ingest` of the golden responses plus the invalid ones, then SIGTERM-like
// cancellation. Every valid response reaches the sink exactly once, every
// invalid one is reported with its reason, and run exits cleanly.
func TestRunAndIngest(t *testing.T) {
	dir := t.TempDir()
	broker := freeAddr(t)
	out := filepath.Join(dir, "scored.csv")
	cfg := fmt.Sprintf(`data_dir: %s
broker:
  listen: %s
sink: file
file:
  path: %s
metrics:
  listen: %s
stream:
  commit_interval: 0s
`, dir, broker, out, freeAddr(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, cfg)

	// ingest retries until the broker listens.
	var stderr string
	var code int
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, stderr, code = runCLI(t, "ingest", "--in", fixtures+"valid.jsonl.gz", "--brokers", broker)
		if code == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, 0, code, stderr)
	// What the stream would dead-letter is refused up front, by its checks.
	_, stderr, code = runCLI(t, "ingest", "--in", fixtures+"invalid.jsonl", "--brokers", broker)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "malformed_json", "ingest reports the line it cannot read")
	require.Contains(t, stderr, "line 1 (fx-200): positive_logprob: step 4, alternative 1: logprob 0.7 is positive; not sent, the stream would dead-letter it (if the stream's profile.max_logprob is higher, give ingest the same --max-logprob)")
	require.Contains(t, stderr, "line 2 (fx-201): nan_logprob:")
	require.Contains(t, stderr, "none of the 5 responses could be sent")
	// As the stream's profile.max_logprob says: fx-200 goes (and this
	// stream, on the default, dead-letters it).
	var stdout string
	stdout, stderr, code = runCLI(t, "ingest", "--in", fixtures+"invalid.jsonl", "--brokers", broker, "--max-logprob", "0.9")
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stderr, "positive_logprob")
	require.Contains(t, stdout, "produced 1 response in 1 message")
	require.Contains(t, stdout, "4 lines rejected (empty 1, malformed_json 1, nan_logprob 1, no_logprobs 1)")
	_, stderr, code = runCLI(t, "ingest", "--in", fixtures+"invalid.jsonl", "--brokers", broker, "--max-logprob", "1")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "--max-logprob must be in [0, 1), got 1")

	// The 33 valid responses; fx-200 is dead-lettered and (CSV having no
	// status column) not written.
	var rows int
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(out)
		rows = strings.Count(string(b), "\n") - 1
		if rows >= 33 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // anything beyond 33 would show now
	b, _ := os.ReadFile(out)
	require.Equal(t, 33, strings.Count(string(b), "\n")-1)
	cancel()
	stopped(t, done, runErr)
	got := readCSV(t, out)
	seen := map[string]int{}
	for _, r := range got {
		seen[r["id"]]++
	}
	for _, id := range []string{"fx-0", "fx-23", "fx-legacy-2", "fx-105"} {
		require.Equal(t, 1, seen[id], id)
	}
	require.Contains(t, runErr.String(), "stream stopped")
}

// TestRunStoresHTTPLabels: on one machine with the managed ClickHouse,
// labels posted to POST /v1/labels travel through the labels topic and land
// in the labels table, with no other command to run.
func TestRunStoresHTTPLabels(t *testing.T) {
	if _, err := clickhouse.FindServerBinary(); err != nil {
		t.Skip("clickhouse-server is not installed (make deps installs it): ", err)
	}
	dir := t.TempDir()
	httpAddr, metrics := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`data_dir: %s
broker:
  listen: %s
sink: clickhouse
http:
  listen: %s
metrics:
  listen: %s
`, dir, freeAddr(t), httpAddr, metrics)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, cfg)

	post := func(body string) (int, string) {
		res, err := http.Post("http://"+httpAddr+"/v1/labels", "application/json", strings.NewReader(body))
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	deadline := time.Now().Add(60 * time.Second)
	code, reply := 0, ""
	for time.Now().Before(deadline) {
		if code, reply = post(`[{"trace_id": "L1", "correct": true}, {"trace_id": "L2", "correct": false, "source": "review"}]`); code != 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, http.StatusAccepted, code, reply+"\n"+runErr.String())
	code, reply = post(`{"trace_id": "L3", "correct": "perhaps"}`)
	require.Equal(t, http.StatusBadRequest, code, reply)

	// HTTP ingest serves before the sink is connected (it needs only Kafka).
	waitLog(t, runErr, "stream running")
	// A crash loop of the managed server, and which build runs, are metrics.
	_, body := get("http://" + metrics + "/metrics")
	require.Contains(t, body, "entrowatch_clickhouse_managed_exits_total 0")
	require.Regexp(t, `entrowatch_build_info\{goversion="go[^"]+",schema="\d{3}",version="[^"]+"\} 1`, body)
	dsn := regexp.MustCompile(`sink=(clickhouse://\S+)`).FindStringSubmatch(runErr.String())
	require.NotNil(t, dsn, runErr.String())
	conn, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn[1]})
	require.NoError(t, err)
	defer conn.Close()
	var got []string
	for time.Now().Before(deadline) {
		got = got[:0]
		rows, err := conn.Query(ctx, "SELECT trace_id, correct, source FROM labels_latest ORDER BY trace_id")
		require.NoError(t, err)
		for rows.Next() {
			var id, source string
			var correct uint8
			require.NoError(t, rows.Scan(&id, &correct, &source))
			got = append(got, fmt.Sprintf("%s/%d/%s", id, correct, source))
		}
		require.NoError(t, rows.Close())
		if len(got) >= 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, []string{"L1/1/http", "L2/0/review"}, got, runErr.String())
	// The labels consumer's lag is a metric: 0 once the labels are stored
	// and committed (refreshed every stream.lag_interval, 5 s).
	for time.Now().Before(deadline.Add(30 * time.Second)) {
		if _, body = get("http://" + metrics + "/metrics"); strings.Contains(body, "entrowatch_labels_lag_messages 0") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Contains(t, body, "entrowatch_labels_lag_messages 0")
	cancel()
	stopped(t, done, runErr)
	require.Contains(t, runErr.String(), "storing labels")
	require.NotContains(t, runErr.String(), "labels topic not usable", "run created the topic before checking it")
}
