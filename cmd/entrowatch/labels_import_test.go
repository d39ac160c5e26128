package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// openServer opens a connection to the ClickHouse of dsn for t.
func openServer(t *testing.T, dsn string) driver.Conn {
	t.Helper()
	cfg := clickhouse.DefaultConfig()
	cfg.DSN = dsn
	conn, err := clickhouse.Open(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// latest is labels_latest: trace_id -> correct, source and when.
func latest(t *testing.T, conn driver.Conn) map[string]struct {
	Correct uint8
	Source  string
	At      time.Time
} {
	t.Helper()
	r, err := conn.Query(context.Background(), "SELECT trace_id, correct, source, labelled_at FROM default.labels_latest")
	require.NoError(t, err)
	defer r.Close()
	got := map[string]struct {
		Correct uint8
		Source  string
		At      time.Time
	}{}
	for r.Next() {
		var id string
		var v struct {
			Correct uint8
			Source  string
			At      time.Time
		}
		require.NoError(t, r.Scan(&id, &v.Correct, &v.Source, &v.At))
		got[id] = v
	}
	require.NoError(t, r.Err())
	return got
}

// The round trip the labels commands are for: labels requests exports a
// batch (CSV and JSON Lines), a labeler fills in correct, labels import
// brings it back, and the answers are dated to the import. The export names
// the response's time response_ts, which import ignores; before, it was ts,
// read as the label's time, so the new answers were dated to the responses
// and lost to any label in between (here a thumbs-up of the day after).
// Two exports in one second get two batch names (before, both were the
// time to the second), and importing a file again stores nothing.
func TestLabelsRequestsImportRoundTrip(t *testing.T) {
	dsn := migratedServer(t)
	ctx := context.Background()
	conn := openServer(t, dsn)
	require.NoError(t, conn.Exec(ctx, `INSERT INTO default.scored (trace_id, ts, model, domain, p_correct, status)
SELECT concat('r', toString(number)), toDateTime('2026-03-01 00:00:00', 'UTC') + number, 'm1', 'd', 0.5 + number / 100, 'ok' FROM system.numbers LIMIT 8`))
	dir := t.TempDir()
	batchRE := regexp.MustCompile(`4 responses from 1 domain \(batch ([^)]+)\)`)
	var batches []string
	for _, name := range []string{"batch.csv", "batch.jsonl"} {
		_, stderr, code := runCLI(t, "labels", "requests", "--clickhouse", dsn, "--out", filepath.Join(dir, name), "--per-domain", "4")
		require.Equal(t, 0, code, stderr)
		m := batchRE.FindStringSubmatch(stderr)
		require.NotNil(t, m, stderr)
		batches = append(batches, m[1])
	}
	require.NotEqual(t, batches[0], batches[1], "two exports, two batch names")
	var stored uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT uniqExact(batch) FROM default.label_requests").Scan(&stored))
	require.EqualValues(t, 2, stored)

	// Meanwhile every exported response got a thumbs-up dated the day after it.
	var thumbs []clickhouse.Label
	for i := range 8 {
		thumbs = append(thumbs, clickhouse.Label{TraceID: "r" + string(rune('0'+i)), Correct: true, Source: "thumbs", TS: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)})
	}
	require.NoError(t, clickhouse.InsertLabels(ctx, conn, "default", thumbs))

	// The labeler answers 0 everywhere: a correct column in the CSV, a
	// correct key in each JSON line; the rest of the file is left as it is.
	csvPath := filepath.Join(dir, "batch.csv")
	f, err := os.Open(csvPath)
	require.NoError(t, err)
	recs, err := csv.NewReader(f).ReadAll()
	f.Close()
	require.NoError(t, err)
	csvHeader := recs[0]
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	for i, r := range recs {
		if i == 0 {
			require.NoError(t, cw.Write(append(r, "correct")))
		} else {
			require.NoError(t, cw.Write(append(r, "0")))
		}
	}
	cw.Flush()
	require.NoError(t, os.WriteFile(csvPath, buf.Bytes(), 0o644))

	jsonPath := filepath.Join(dir, "batch.jsonl")
	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	buf.Reset()
	var jsonKeys []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		if jsonKeys == nil {
			for k := range m {
				jsonKeys = append(jsonKeys, k)
			}
		}
		m["correct"] = false
		line, err := json.Marshal(m)
		require.NoError(t, err)
		buf.Write(append(line, '\n'))
	}
	require.NoError(t, os.WriteFile(jsonPath, buf.Bytes(), 0o644))

	before := time.Now().Add(-time.Second)
	for _, p := range []string{csvPath, jsonPath} {
		_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", p)
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stderr, "labels import: 4 labels stored\n", p)
	}
	after := time.Now().Add(time.Second)
	got := latest(t, conn)
	require.Len(t, got, 8)
	for id, l := range got {
		require.Equal(t, uint8(0), l.Correct, "%s: the labeler's answer must win over the older thumbs-up", id)
		require.Equal(t, "import", l.Source, id)
		require.WithinRange(t, l.At, before.Truncate(time.Second), after, id)
	}
	for _, keys := range [][]string{csvHeader, jsonKeys} {
		require.Contains(t, keys, "response_ts")
		require.NotContains(t, keys, "ts", "the response's time must not be read as the label's")
	}

	_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", csvPath)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "labels import: 0 labels stored; 4 skipped: they have no ts and their trace_id, correct and source are stored already "+
		"(importing a file again changes nothing; give a ts to store a label again as the newest)")
	require.NotContains(t, stderr, "warning", "a plain re-import")
}

// Importing a file again changes nothing: A (b1 correct), then B (b1 wrong,
// by review), then A again leaves b1 wrong; before, A's label without ts got
// the new import time and b1 went back to correct. The import says how many
// labels it skipped and how many match no response in scored yet (stored
// all the same), and refuses a ts outside 2000..2100 with its line.
func TestLabelsImportAgain(t *testing.T) {
	dsn := migratedServer(t)
	ctx := context.Background()
	conn := openServer(t, dsn)
	require.NoError(t, conn.Exec(ctx, `INSERT INTO default.scored (trace_id, ts, model, domain, p_correct, status)
SELECT 'b1', toDateTime('2026-03-01 00:00:00', 'UTC'), 'm1', 'd', 0.5, 'ok'`))
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	a := file("a.csv", "trace_id,correct\nb1,1\nx9,0\n")
	b := file("b.jsonl", `{"trace_id":"b1","correct":false,"source":"review"}`+"\n")
	importFile := func(p string) string {
		t.Helper()
		_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", p)
		require.Equal(t, 0, code, stderr)
		return stderr
	}

	require.Contains(t, importFile(a), "labels import: 2 labels stored (1 matches no response in scored yet: it applies when the response arrives)\n")
	require.Contains(t, importFile(b), "labels import: 1 label stored\n")
	require.Equal(t, uint8(0), latest(t, conn)["b1"].Correct)
	again := importFile(a)
	got := latest(t, conn)
	require.Equal(t, uint8(0), got["b1"].Correct, "importing A again must not undo B")
	require.Equal(t, "review", got["b1"].Source)
	require.Contains(t, again, "labels import: 0 labels stored; 2 skipped: they have no ts")
	// b1's skipped label differs from its current one (B's): said apart
	// from x9's, a plain re-import (retrain audit F3: a reviewer's
	// flip-back 1 -> 0 -> 1 was skipped with the re-import's message).
	require.Contains(t, again, "labels import: warning: 1 label was skipped although it differs from its trace's current label, which is newer")
	require.Contains(t, again, "give it a ts column with the time of the review: b1\n")
	// The same verdict from another source, skipped: nothing to warn of.
	c := file("c.csv", "trace_id,correct\nc1,0\n")
	importFile(c)
	importFile(file("c2.jsonl", `{"trace_id":"c1","correct":false,"source":"review"}`+"\n"))
	require.NotContains(t, importFile(c), "warning")

	for _, tc := range []struct{ body, err string }{
		{"trace_id,correct,ts\nb1,1,2026-03-05T00:00:00Z\nz1,1,2200-01-01T00:00:00Z\n", "line 3: trace z1: ts 2200-01-01T00:00:00Z is out of range: want RFC 3339"},
		{`{"trace_id":"z2","correct":0,"ts":-1000}` + "\n", "line 1: trace z2: ts -1000 is out of range"},
	} {
		_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", file("bad.csv", tc.body))
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, tc.err)
	}
	got = latest(t, conn)
	require.NotContains(t, got, "z1")
	require.NotContains(t, got, "z2")
	require.Equal(t, uint8(0), got["b1"].Correct, "a file with a bad line stores nothing")

	// Unix seconds are seconds (before, milliseconds: 1970, older than any
	// label): one a minute ahead (clock skew is taken) is the newest.
	ahead := time.Now().Add(time.Minute).Truncate(time.Second)
	s := fmt.Sprintf("trace_id,correct,ts\nb1,1,%d\n", ahead.Unix())
	require.Contains(t, importFile(file("s.csv", s)), "labels import: 1 label stored\n")
	got = latest(t, conn)
	require.Equal(t, uint8(1), got["b1"].Correct, "a label dated a minute ahead is the newest")
	require.Equal(t, ahead.UTC(), got["b1"].At.UTC())
	require.NotContains(t, importFile(file("s2.csv", s)), "skipped", "labels with ts are stored again (same version)")
	// One dated 2099 would be the newest for ever: refused.
	_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", file("s3.csv", "trace_id,correct,ts\nb1,0,4070908800\n"))
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "line 2: trace b1: ts 4070908800 is in the future")
}

// labels import --in of a request batch labelled in part failed on the
// first row without correct; such rows are skipped and counted now, as
// train's CSV skips them. A JSON array file (what POST /v1/labels takes)
// failed with a CSV parse error; it imports. A file that labels a trace
// twice keeps its last label and says how many it collapsed. One invalid
// label still fails the file, and nothing of it is stored.
func TestLabelsImportFileForms(t *testing.T) {
	dsn := migratedServer(t)
	conn := openServer(t, dsn)
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	importFile := func(p string) (string, int) {
		t.Helper()
		_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", p)
		return stderr, code
	}

	stderr, code := importFile(file("partial.csv", "trace_id,model,correct\np1,m,yes\np2,m,\np3,m,\np4,m,no\n"))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "labels import: 2 labels stored (2 match no response in scored yet: they apply when it arrives); 2 rows without correct skipped (unlabelled)\n")

	stderr, code = importFile(file("array.json", `[{"trace_id":"j1","correct":true},`+"\n"+`{"trace_id":"j2","correct":false,"source":"review"}]`+"\n"))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "labels import: 2 labels stored")
	stderr, code = importFile(file("pretty.json", "{\n  \"trace_id\": \"j3\",\n  \"correct\": true\n}\n"))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "labels import: 1 label stored")

	stderr, code = importFile(file("dup.csv", "trace_id,correct\nd1,yes\nd1,no\n"))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "; 1 duplicate collapsed (a trace labelled more than once in a file keeps its last label, or its newest by ts)")

	stderr, code = importFile(file("bad.jsonl", `{"trace_id":"z1","correct":true}`+"\n"+`{"trace_id":5,"correct":true}`+"\n"))
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "line 2: trace_id is 5; want a string; nothing was stored")
	require.NotContains(t, stderr, "not a JSON object")

	got := latest(t, conn)
	require.Len(t, got, 6)
	for id, want := range map[string]uint8{"p1": 1, "p4": 0, "j1": 1, "j2": 0, "j3": 1, "d1": 0} {
		require.Equal(t, want, got[id].Correct, id)
	}
	require.Equal(t, "review", got["j2"].Source)
}

// labels import --topic without --follow stopped at the first message with
// an invalid label, every time, and stored none of its valid labels. It
// stores them now, goes on, and at the end lists what it refused and exits
// 1. A topic that cannot be reached says so without "0 labels stored" first.
func TestLabelsImportTopicRefused(t *testing.T) {
	dsn := migratedServer(t)
	ctx := context.Background()
	conn := openServer(t, dsn)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "labels"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	defer cluster.Close()
	kc := kafka.DefaultConfig()
	kc.Brokers = cluster.ListenAddrs()
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = "labels"
	p, err := kafka.NewProducer(kc, pcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, p.Produce(ctx,
		kafka.Message{Value: []byte(`{"trace_id":"t1","correct":true}` + "\n" + `{"trace_id":"t2","correct":false}` + "\n" + `{"trace_id":"t3","correct":1}` + "\n" + `{"trace_id":"bad","correct":"maybe"}`)},
		kafka.Message{Value: []byte(`[{"trace_id":"t4","correct":true},{"trace_id":"t5"}]`)},
	))
	require.NoError(t, p.Close())
	brokers := strings.Join(cluster.ListenAddrs(), ",")

	_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", dsn, "--topic", "labels", "--brokers", brokers, "--idle", "1s")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "labels import: 4 labels stored from topic labels; 1 row without correct skipped (unlabelled)\n")
	require.Contains(t, stderr, `1 invalid label refused (correct 1), not stored: partition 0 offset 0 line 4: trace bad: correct is "maybe"`)
	got := latest(t, conn)
	require.Len(t, got, 4)
	for _, id := range []string{"t1", "t2", "t3", "t4"} {
		require.Contains(t, got, id)
	}

	// Committed after storing: the next import finds nothing, and succeeds.
	_, stderr, code = runCLI(t, "labels", "import", "--clickhouse", dsn, "--topic", "labels", "--brokers", brokers, "--idle", "1s")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "labels import: 0 labels stored from topic labels\n")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := l.Addr().String()
	l.Close()
	_, stderr, code = runCLI(t, "labels", "import", "--clickhouse", dsn, "--topic", "nosuch", "--brokers", closed, "--idle", "1s")
	require.Equal(t, 1, code, stderr)
	require.NotContains(t, stderr, "labels stored")
}
