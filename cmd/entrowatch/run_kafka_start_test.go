package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/entrowatch/entrowatch/streams/broker"
)

// kafkaRunConfig is a run config against the Kafka at brokers (create_topics
// as by default), a CSV file sink and short start retries.
func kafkaRunConfig(dir, brokers, metrics string) string {
	return fmt.Sprintf(`data_dir: %s
kafka:
  brokers: [%s]
sink: file
file:
  path: %s
metrics:
  listen: %s
stream:
  sink_backoff_min: 10ms
  sink_backoff_max: 50ms
`, dir, brokers, filepath.Join(dir, "out.csv"), metrics)
}

// TestRunWaitsForKafka: with Kafka unreachable at start and create_topics
// on (the default), run exited within milliseconds with "[8] Broker Not
// Available ... set create_topics: false" (a crash loop under compose's
// restart policy, and the wrong advice). Now it retries the topics like the
// ClickHouse connect, logging each attempt with the real cause; /healthz
// answers and /readyz says 503 and why; once the broker is there the
// topics are created and the stream runs.
func TestRunWaitsForKafka(t *testing.T) {
	dir := t.TempDir()
	kafkaAddr, metrics := freeAddr(t), freeAddr(t) // nothing listens on kafkaAddr yet
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, kafkaRunConfig(dir, kafkaAddr, metrics))
	waitLog(t, runErr, "attempt=3")
	logs := runErr.String()
	require.Contains(t, logs, "Kafka not reachable; retrying")
	require.Contains(t, logs, "connection refused", "the cause, not Kafka's error code 8")
	require.Contains(t, logs, "brokers="+kafkaAddr)
	require.NotContains(t, logs, "Broker Not Available")
	require.NotContains(t, logs, "create_topics: false", "no permission hint: no broker answered")
	select {
	case code := <-done:
		t.Fatalf("run exited (%d) while Kafka was unreachable:\n%s", code, runErr.String())
	default:
	}

	code, _ := get("http://" + metrics + "/healthz")
	require.Equal(t, http.StatusOK, code, "alive while waiting for Kafka")
	code, body := get("http://" + metrics + "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "creating the topics")
	require.Contains(t, body, "connection refused")
	_, body = get("http://" + metrics + "/metrics")
	require.Contains(t, body, `entrowatch_ready{component="stream"} 0`)

	bcfg := broker.DefaultConfig()
	bcfg.Listen = kafkaAddr
	brk, err := broker.Start(bcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer brk.Close(context.Background())
	waitLog(t, runErr, "stream running")
	require.Contains(t, runErr.String(), "Kafka reachable")
	waitStatus(t, "http://"+metrics+"/readyz", http.StatusOK, runErr)
	cancel()
	stopped(t, done, runErr)
}

// TestRunStopsWhileWaitingForKafka: SIGTERM while the topics wait for
// Kafka ends run cleanly, without waiting for Kafka.
func TestRunStopsWhileWaitingForKafka(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, kafkaRunConfig(dir, freeAddr(t), freeAddr(t)))
	waitLog(t, runErr, "attempt=2")
	cancel()
	stopped(t, done, runErr)
	require.Contains(t, runErr.String(), "stopped before the stream started")
	require.NotContains(t, runErr.String(), "stream running")
}

// TestRunKafkaRefusesTopics: brokers that answer and refuse to create the
// topics (this user may not) end run at once, with the hint to turn
// create_topics off; that is not retried.
func TestRunKafkaRefusesTopics(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "root"), kfake.User("PLAIN", "bob", "builder"))
	require.NoError(t, err)
	defer c.Close()
	t.Setenv("ENTROWATCH_TEST_KAFKA_PASSWORD", "builder")
	dir := t.TempDir()
	cfg := kafkaRunConfig(dir, strings.Join(c.ListenAddrs(), ","), freeAddr(t))
	cfg = strings.Replace(cfg, "sink: file\n", "  sasl:\n    mechanism: plain\n    username: bob\n    password_env: ENTROWATCH_TEST_KAFKA_PASSWORD\nsink: file\n", 1)
	_, errs, code := runCLI(t, "run", "--config", writeFile(t, dir, cfg))
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, "Topic Authorization Failed")
	require.Contains(t, errs, "set create_topics: false")
	require.NotContains(t, errs, "retrying")
}

// TestRunChecksTopics: with create_topics false, a topic run uses that does
// not exist ends run at once, naming it. Before, nothing looked: a missing
// dead-letter topic held the partition of the first bad response (the good
// responses of its message too) until someone created it; a missing source
// topic was waited on quietly.
func TestRunChecksTopics(t *testing.T) {
	bcfg := broker.DefaultConfig()
	bcfg.Listen = "127.0.0.1:0"
	bcfg.Topics = []string{"traces", "labels"}
	brk, err := broker.Start(bcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer brk.Close(context.Background())
	dir := t.TempDir()
	cfg := "create_topics: false\n" + kafkaRunConfig(dir, brk.Addr(), freeAddr(t))
	_, errs, code := runCLI(t, "run", "--config", writeFile(t, dir, cfg))
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, "create_topics is false and a topic run uses does not exist on "+brk.Addr()+": the topic does not exist on the brokers: traces.dead; create it")
	require.NotContains(t, errs, "retrying")
	require.Contains(t, errs, `level=ERROR msg="run stopped on an error" err="create_topics is false`, "the cause in the log too, for log pipelines")
	// As one JSON line with log_format json.
	_, errs, code = runCLI(t, "run", "--config", writeFile(t, dir, "log_format: json\n"+cfg))
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, `"level":"ERROR","msg":"run stopped on an error","err":"create_topics is false`)
	// Two missing, the dead-letter topic not among them: both named, no
	// dead-letter hint.
	two := strings.Replace(cfg, "create_topics: false\n", "create_topics: false\nsource:\n  topic: in\ndead_letter:\n  topic: labels\nlabels_topic: out\n", 1)
	_, errs, code = runCLI(t, "run", "--config", writeFile(t, dir, two))
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, "create_topics is false and 2 topics run uses do not exist on "+brk.Addr()+": the topic does not exist on the brokers: in, out; create them with max.message.bytes of at least 1048588 (the producers' record batches, batch_bytes, plus a header), or set create_topics: true")

	// With the dead-letter topic there, it runs.
	bcfg.Listen = freeAddr(t)
	bcfg.Topics = []string{"traces", "traces.dead", "labels"}
	brk2, err := broker.Start(bcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer brk2.Close(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr, done := startRun(t, ctx, dir, "create_topics: false\n"+kafkaRunConfig(dir, brk2.Addr(), freeAddr(t)))
	waitLog(t, runErr, "stream running")
	cancel()
	stopped(t, done, runErr)
}

// TestRunResetsOffsetsPastEnd: a group whose committed offset lies past its
// partition's end (the embedded broker killed after retention emptied the
// partition restarts it at 0: only a clean stop keeps its offsets) resumes
// at the log start, so the messages produced since are read. They were
// never read, with lag 0 and /readyz 200 (an audit lost 60 of 60 rows over
// three crashes).
func TestRunResetsOffsetsPastEnd(t *testing.T) {
	bcfg := broker.DefaultConfig()
	bcfg.Listen = "127.0.0.1:0"
	bcfg.Partitions = 1
	bcfg.Topics = []string{"traces", "traces.dead", "labels"}
	brk, err := broker.Start(bcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer brk.Close(context.Background())
	// The group stands at 40 on an empty partition, as after the crash.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := &kafkago.Client{Addr: kafkago.TCP(brk.Addr())}
	res, err := cl.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: "entrowatch", GenerationID: -1,
		Topics: map[string][]kafkago.OffsetCommit{"traces": {{Partition: 0, Offset: 40}}}})
	require.NoError(t, err)
	require.NoError(t, res.Topics["traces"][0].Error)
	_, errs, code := runCLI(t, "ingest", "--in", fixtures+"valid.jsonl.gz", "--brokers", brk.Addr())
	require.Equal(t, 0, code, errs)

	dir := t.TempDir()
	rctx, stop := context.WithCancel(context.Background())
	defer stop()
	runErr, done := startRun(t, rctx, dir, kafkaRunConfig(dir, brk.Addr(), freeAddr(t)))
	waitLog(t, runErr, "the group resumes at the log start")
	require.Contains(t, runErr.String(), "partition=0 committed=40 end=1 resume_at=0 reset=true")
	out := filepath.Join(dir, "out.csv")
	deadline := time.Now().Add(30 * time.Second) // a guard against hanging, not a speed assertion
	rows := func() int {
		b, _ := os.ReadFile(out)
		return strings.Count(string(b), "\n") - 1
	}
	for rows() < 33 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, 33, rows(), "the responses produced after the loss are read\n%s", runErr.String())
	stop()
	stopped(t, done, runErr)
}
