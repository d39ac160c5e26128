package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
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
	batchRE := regexp.MustCompile(`4 responses from 1 domains \(batch ([^)]+)\)`)
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

	require.Contains(t, importFile(a), "labels import: 2 labels stored (1 match no response in scored yet: they apply when it arrives)\n")
	require.Contains(t, importFile(b), "labels import: 1 labels stored\n")
	require.Equal(t, uint8(0), latest(t, conn)["b1"].Correct)
	again := importFile(a)
	got := latest(t, conn)
	require.Equal(t, uint8(0), got["b1"].Correct, "importing A again must not undo B")
	require.Equal(t, "review", got["b1"].Source)
	require.Contains(t, again, "labels import: 0 labels stored; 2 skipped: they have no ts")

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

	// Unix seconds are seconds (before, milliseconds: 1970, older than any label).
	require.Contains(t, importFile(file("s.csv", "trace_id,correct,ts\nb1,1,4070908800\n")), "labels import: 1 labels stored\n")
	got = latest(t, conn)
	require.Equal(t, uint8(1), got["b1"].Correct, "a label dated 2099 is the newest")
	require.Equal(t, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), got["b1"].At.UTC())
	require.NotContains(t, importFile(file("s2.csv", "trace_id,correct,ts\nb1,1,4070908800\n")), "skipped", "labels with ts are stored again (same version)")
}
