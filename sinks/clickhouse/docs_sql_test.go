package clickhouse

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// docFiles are the documents whose SQL TestDocumentedSQL runs, relative to
// this package.
var docFiles = []string{"../../README.md", "../../docs/clickhouse.md"}

// skipMarker, as a comment line among those just before a statement in a
// ```sql block, keeps the tests from running it (for statements with
// placeholders): "-- not run by the tests: <why>".
const skipMarker = "-- not run by the tests:"

// docQuery is one SQL statement quoted in a document.
type docQuery struct {
	where string // file:line of its first line
	title string // the comment lines before it
	sql   string
	skip  string // why it is not run, from skipMarker
}

// writes reports whether q changes data (INSERT and the like) rather than
// reading it.
func (q docQuery) writes() bool {
	first := strings.ToUpper(strings.Fields(q.sql)[0])
	return first != "SELECT" && first != "WITH"
}

var clientQuery = regexp.MustCompile(`clickhouse-client\b.*?(?:--query|-q)[ =]"((?:[^"\\]|\\.)*)"`)

// documentedQueries extracts the statements of every ```sql block (split at a
// ";" ending a line, as the migrations are) and the --query arguments of
// clickhouse-client command lines in any code block of path.
func documentedQueries(t *testing.T, path string) []docQuery {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	name := filepath.Base(path)
	if rest, ok := strings.CutPrefix(filepath.ToSlash(path), "../../"); ok {
		name = rest // relative to the repository root
	}
	var out []docQuery
	var (
		inBlock, isSQL bool
		comments       []string
		stmt           []string
		start          int
	)
	flush := func() {
		if s := strings.TrimSpace(strings.Join(stmt, "\n")); s != "" {
			q := docQuery{where: fmt.Sprintf("%s:%d", name, start), title: strings.Join(comments, " "), sql: s}
			for _, c := range comments {
				if strings.HasPrefix(c, skipMarker) {
					q.skip = strings.TrimSpace(strings.TrimPrefix(c, skipMarker))
				}
			}
			out = append(out, q)
		}
		comments, stmt = nil, nil
	}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		trimmed := strings.TrimSpace(text)
		if strings.HasPrefix(trimmed, "```") {
			if inBlock {
				require.Empty(t, stmt, "%s:%d: the SQL block ends inside a statement: end each with \";\"", name, line)
				flush()
			}
			inBlock = !inBlock
			isSQL = inBlock && strings.EqualFold(strings.Fields(strings.TrimPrefix(trimmed, "```") + " x")[0], "sql")
			continue
		}
		if !inBlock {
			continue
		}
		if !isSQL {
			if m := clientQuery.FindStringSubmatch(text); m != nil {
				out = append(out, docQuery{where: fmt.Sprintf("%s:%d", name, line), title: "clickhouse-client --query", sql: strings.ReplaceAll(m[1], `\"`, `"`)})
			}
			continue
		}
		switch {
		case strings.HasPrefix(trimmed, "--") && len(stmt) == 0:
			comments = append(comments, trimmed)
		case trimmed == "" && len(stmt) == 0:
			comments = nil
		default:
			if len(stmt) == 0 {
				start = line
			}
			stmt = append(stmt, text)
			if strings.HasSuffix(trimmed, ";") {
				stmt[len(stmt)-1] = strings.TrimSuffix(strings.TrimRight(text, " \t"), ";")
				flush()
			}
		}
	}
	require.NoError(t, sc.Err())
	return out
}

func TestDocumentedQueriesExtracted(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "doc.md")
	require.NoError(t, os.WriteFile(doc, []byte("text\n```sql\n-- First\nSELECT 1\nFROM t;\n\n-- Second\n"+skipMarker+" needs a trace id\nSELECT 2 WHERE trace_id = '<id>';\nSELECT 3;\n```\n"+
		"```sh\nclickhouse-client --port N --query \"SELECT \\\"x\\\"\"\nentrowatch migrate\n```\n```\nSELECT not_sql;\n```\n"), 0o644))
	qs := documentedQueries(t, doc)
	require.Len(t, qs, 4)
	require.Equal(t, docQuery{where: "doc.md:4", title: "-- First", sql: "SELECT 1\nFROM t"}, qs[0])
	require.Equal(t, "needs a trace id", qs[1].skip)
	require.Equal(t, "SELECT 3", qs[2].sql)
	require.Empty(t, qs[2].title, "a statement right after another has no title of its own")
	require.Equal(t, `SELECT "x"`, qs[3].sql)

	// The shipped documents hold queries (the extraction finds them).
	n := 0
	for _, f := range docFiles {
		n += len(documentedQueries(t, f))
	}
	require.GreaterOrEqual(t, n, 10)
}

// docTraffic is ten hours of traffic up to a minute ago, one response every
// 30 s per domain, of model Qwen3-8B (the model the examples name): domains A
// and B, a tenant attribute on every row, every fourth response labelled in
// the trace, domain A's estimate falling by 0.3 in the last 90 minutes (so
// alarms fire) and domain B almost always right (intervals near 1).
func docTraffic(now time.Time) []row {
	end := now.Add(-time.Minute).Truncate(time.Second)
	var out []row
	for i := range 1200 {
		ts := end.Add(-time.Duration(i) * 30 * time.Second)
		for _, dom := range []string{"A", "B"} {
			r := row{
				id: fmt.Sprintf("doc-%s-%04d", dom, i), ts: ts, model: "Qwen3-8B", domain: dom,
				attrs:   map[string]string{"tenant": fmt.Sprintf("t%d", i%3), "route": "/chat"},
				p:       0.6 + 0.3*float64(i%10)/9,
				correct: -1, clusterID: int32(i % 4), cluster: "c",
				mean: 0.3 + 0.5*float64(i%7)/6, q50: 0.2 + 0.4*float64(i%5)/4, max: 2 + float64(i%3)/2,
			}
			if dom == "B" {
				r.p = 0.995 + 0.004*float64(i%5)/4
			}
			if dom == "A" && ts.After(end.Add(-90*time.Minute)) {
				r.p -= 0.3
				r.mean += 1
			}
			if i%4 == 0 {
				r.correct = i / 4 % 2
			}
			out = append(out, r)
		}
	}
	// A few responses the stream rejected or could not estimate (status_counts).
	for i, status := range []string{schemas.ReasonPositiveLogprob, schemas.ReasonTooLong, schemas.ReasonUnknownModel} {
		out = append(out, row{id: fmt.Sprintf("doc-bad-%d", i), ts: end.Add(-time.Duration(i) * time.Minute), model: "Qwen3-8B", domain: "A",
			p: -1, correct: -1, clusterID: -2, status: status})
	}
	return out
}

// TestDocumentedSQL runs every query of README.md and docs/clickhouse.md
// (documentedQueries) against a migrated database holding docTraffic, on
// the 18.16 test server and on chDB (current ClickHouse; skipped without
// libchdb.so). Each read must succeed and return rows; the writes (the
// alarm_settings example) run after all reads, so they cannot change what the
// reads see. A statement marked with skipMarker is not run, and said so.
func TestDocumentedSQL(t *testing.T) {
	var queries []docQuery
	for _, f := range docFiles {
		queries = append(queries, documentedQueries(t, f)...)
	}
	var reads, writes []docQuery
	for _, q := range queries {
		switch {
		case q.skip != "":
			t.Logf("%s: not run (%s)", q.where, q.skip)
		case q.writes():
			writes = append(writes, q)
		default:
			reads = append(reads, q)
		}
	}
	ordered := append(append([]docQuery{}, reads...), writes...)

	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	write(t, cfg, docTraffic(time.Now().UTC()))
	_, err := RequestLabels(ctx, conn, db, 1, 10, "docs", time.Now().UTC(), DefaultRequestExpiry)
	require.NoError(t, err)
	// Labels given now, for the examples that read the labels table.
	var labels []Label
	for i := range 20 {
		labels = append(labels, Label{TraceID: fmt.Sprintf("doc-A-%04d", i), Correct: i%3 != 0, Source: "docs", TS: time.Now().UTC()})
	}
	// One dated a year ahead, as an entrowatch from before such labels
	// were refused stored them (InsertLabels does not check).
	labels = append(labels, Label{TraceID: "doc-A-0001", Correct: true, Source: "old", TS: time.Now().UTC().AddDate(1, 0, 0)})
	require.NoError(t, InsertLabels(ctx, conn, db, labels))
	firing, err := dbQuery(db, "SELECT count() FROM alarms")
	require.NoError(t, err)
	require.NotEqual(t, "0\n", firing, "the traffic must fire an alarm, or the alarm examples return nothing")

	// The traffic as it is before the documented writes run on 18.16 (a
	// delete among them), for chDB.
	snapshot := map[string]string{}
	for _, table := range []string{"scored", "labels", "label_requests"} {
		snapshot[table] = httpQuery(t, "SELECT * FROM "+db+"."+table+" FORMAT Values")
	}

	t.Run("18.16", func(t *testing.T) {
		for _, q := range ordered {
			out, err := dbQuery(db, q.sql)
			require.NoError(t, err, "%s %s: fails on ClickHouse 18.16:\n%s", q.where, q.title, q.sql)
			if !q.writes() {
				require.NotEmpty(t, out, "%s %s: no rows on the test traffic:\n%s", q.where, q.title, q.sql)
			}
		}
	})

	t.Run("chDB", func(t *testing.T) {
		ch := openChdb(t)
		ms, err := Migrations()
		require.NoError(t, err)
		_, err = ch.Exec("CREATE DATABASE " + db)
		require.NoError(t, err)
		for _, m := range ms {
			for i, s := range m.Statements {
				_, err := ch.Exec(Expand(s, db))
				require.NoError(t, err, "chDB: %s statement %d", m.Name, i+1)
			}
		}
		for _, table := range []string{"scored", "labels", "label_requests"} {
			data := snapshot[table]
			if strings.TrimSpace(data) == "" {
				continue
			}
			_, err := ch.Exec("INSERT INTO " + db + "." + table + " VALUES " + data)
			require.NoError(t, err, table)
		}
		_, err = ch.Exec("USE " + db)
		require.NoError(t, err)
		for _, q := range ordered {
			out, err := ch.Exec(q.sql)
			require.NoError(t, err, "%s %s: fails on current ClickHouse (chDB):\n%s", q.where, q.title, q.sql)
			if !q.writes() {
				require.NotEmpty(t, out, "%s %s: no rows on the test traffic (chDB):\n%s", q.where, q.title, q.sql)
			}
		}
	})
}

// dbQuery runs q over HTTP on the test server with db as the current
// database and returns the TabSeparated result.
func dbQuery(db, q string) (string, error) {
	u := fmt.Sprintf("http://127.0.0.1:%d/?%s", testServer.HTTPPort(), url.Values{"database": {db}, "default_format": {"TabSeparated"}}.Encode())
	resp, err := http.Post(u, "text/plain", strings.NewReader(q))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}
