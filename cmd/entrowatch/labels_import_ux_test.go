package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/internal/testutil"
)

// gzipFile writes body gzip-compressed to dir/name and returns its path.
func gzipFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, testutil.Gzip(t, []byte(body)), 0o644))
	return p
}

// Audit newuser F2, F8, F9, what needs no server: labels import --in reads
// and checks the whole file before it connects, so each of these fails
// with what is wrong with the file, exit 1, against a closed port. An
// empty file (F8) was "0 labels stored", exit 0. A truncated gzip file
// (F2) says how many labels it read before the cut and that none was
// stored. A file of responses (F9) says so once, not "empty trace_id" per
// line. No message carries binary bytes.
func TestLabelsImportFileErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "clickhouse://" + l.Addr().String() + "/default"
	l.Close()
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
		return p
	}
	var big strings.Builder
	big.WriteString("trace_id,correct\n")
	for i := range 30000 {
		fmt.Fprintf(&big, "t-%05d,%d\n", i, i%2)
	}
	whole, err := os.ReadFile(gzipFile(t, dir, "big.csv.gz", big.String()))
	require.NoError(t, err)
	truncated := file("cut.csv.gz", string(whole[:len(whole)/2]))
	var responses strings.Builder
	for i := range 24 {
		fmt.Fprintf(&responses, `{"id":"fx-%d","object":"chat.completion","choices":[{"index":0}],"correct":true}`+"\n", i)
	}

	for _, tc := range []struct {
		name, path string
		want       []string
		not        []string
	}{
		{"empty", file("empty.jsonl", ""), []string{"reading labels from " + filepath.Join(dir, "empty.jsonl") + ": the file is empty (or only blank lines): it holds no labels; want CSV with a header trace_id,correct[,source,ts]", "; nothing was stored\n"}, nil},
		{"blank_lines", file("blank.csv", "\n\n\n"), []string{"the file is empty (or only blank lines)"}, nil},
		{"header_only", file("header.csv", "trace_id,correct\n"), []string{"no rows after the header: the file holds no labels; nothing was stored\n"}, nil},
		{"empty_gzip", gzipFile(t, dir, "empty.csv.gz", ""), []string{"the file is empty"}, nil},
		{"truncated_gzip", truncated, []string{": the gzip data ends abruptly (a truncated file, e.g. an interrupted copy or download): unexpected EOF; nothing was stored, not even the ",
			" labels read before it: get a complete, intact copy of the file and import that\n"}, []string{"header", "\\x1f"}},
		{"responses", file("valid.jsonl", responses.String()), []string{"line 1 and 23 more lines like it: no trace_id, but id and choices: these look like responses, not labels; labels need trace_id,correct",
			"; nothing was stored\n"}, []string{"empty trace_id", "fix the file"}},
		{"responses_gzip", gzipFile(t, dir, "valid.jsonl.gz", responses.String()), []string{"line 1 and 23 more lines like it: no trace_id, but id and choices"}, nil},
		{"bad_row", file("bad.csv", "trace_id,correct\na,1\nb,maybe\n"), []string{`line 3: trace b: correct is "maybe"`, "nothing was stored: fix the file (or delete the rows that are wrong) and import it again"}, nil},
		{"zip", file("labels.zip", "PK\x03\x04\x14\x00\x00\x00\x08\x00labels.csv"), []string{"line 1: the input is a zip archive: extract the label file from it first"}, []string{"PK"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", closed, "--in", tc.path)
			require.Equal(t, 1, code, stderr)
			for _, w := range tc.want {
				require.Contains(t, stderr, w)
			}
			for _, n := range tc.not {
				require.NotContains(t, stderr, n)
			}
			require.NotContains(t, stderr, "is the server running", "the file is checked before the server is needed")
			require.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %s", stderr)
			for _, r := range strings.TrimSuffix(stderr, "\n") {
				require.True(t, unicode.IsPrint(r), "%q in %q", r, stderr)
			}
		})
	}
	// The count is of whole labels before the cut.
	_, stderr, _ := runCLI(t, "labels", "import", "--clickhouse", closed, "--in", truncated)
	var line, n int
	_, err = fmt.Sscanf(stderr[strings.Index(stderr, ": line ")+2:], "line %d:", &line)
	require.NoError(t, err, stderr)
	_, err = fmt.Sscanf(stderr[strings.Index(stderr, "not even the ")+len("not even the "):], "%d labels", &n)
	require.NoError(t, err, stderr)
	require.Equal(t, line-2, n, "labels on lines 2..%d: %s", line-1, stderr)
}

// Audit newuser F2 and F8 against a server: gzip-compressed CSV and JSON
// Lines import as the plain files do (detected by content: one without .gz
// in its name too), and the summary counts in the singular when there is
// one ("1 labels stored" before), as the requests summary does.
func TestLabelsImportGzipAndCounts(t *testing.T) {
	dsn := migratedServer(t)
	ctx := context.Background()
	conn := openServer(t, dsn)
	require.NoError(t, conn.Exec(ctx, `INSERT INTO default.scored (trace_id, ts, model, domain, p_correct, status)
SELECT arrayJoin(['b1', 'q1']), toDateTime('2026-03-01 00:00:00', 'UTC'), 'm1', 'd', 0.5, 'ok'`))
	dir := t.TempDir()
	importFile := func(p string) string {
		t.Helper()
		_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", p)
		require.Equal(t, 0, code, stderr)
		return stderr
	}

	require.Equal(t, "labels import: 2 labels stored (1 matches no response in scored yet: it applies when the response arrives)\n",
		importFile(gzipFile(t, dir, "lab.csv.gz", "trace_id,correct\nb1,1\nx9,0\n")))
	require.Equal(t, "labels import: 1 label stored (1 matches no response in scored yet: it applies when the response arrives); "+
		"1 row without correct skipped (unlabelled); 1 duplicate collapsed (a trace labelled more than once in a file keeps its last label, or its newest by ts)\n",
		importFile(gzipFile(t, dir, "lab.jsonl.gz", `{"trace_id":"j1","correct":true}`+"\n"+`{"trace_id":"j1","correct":false}`+"\n"+`{"trace_id":"j2"}`+"\n")))
	require.Equal(t, "labels import: 1 label stored\n", importFile(gzipFile(t, dir, "named.csv", "trace_id,correct,source\nb1,0,review\n")))
	require.Equal(t, "labels import: 0 labels stored; 1 skipped: it has no ts and its trace_id, correct and source are stored already "+
		"(importing a file again changes nothing; give a ts to store a label again as the newest)\n", importFile(filepath.Join(dir, "named.csv")))
	got := latest(t, conn)
	require.Len(t, got, 3)
	require.Equal(t, uint8(0), got["b1"].Correct)
	require.Equal(t, "review", got["b1"].Source)
	require.Equal(t, uint8(0), got["j1"].Correct)
	require.Equal(t, uint8(0), got["x9"].Correct)

	_, stderr, code := runCLI(t, "labels", "requests", "--clickhouse", dsn, "--out", filepath.Join(dir, "r.jsonl"), "--per-domain", "1", "--batch", "one")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "labels requests: 1 response from 1 domain (batch one)\n")
	_, stderr, code = runCLI(t, "labels", "requests", "--clickhouse", dsn, "--out", filepath.Join(dir, "r2.jsonl"), "--batch", "one")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "holds a batch of that name already (1 request);")
}
