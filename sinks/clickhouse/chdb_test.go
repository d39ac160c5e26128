package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/internal/chdb"
	"github.com/entrowatch/entrowatch/schemas"
)

// openChdb opens chDB (current ClickHouse as a library, see internal/chdb)
// with its data in a test directory, or skips the test when the library is
// not installed.
func openChdb(t *testing.T) *chdb.DB {
	t.Helper()
	db, err := chdb.Open(t.TempDir())
	if errors.Is(err, chdb.ErrNoLibrary) {
		t.Skip(err)
	}
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return db
}

// httpQuery runs q on the test server over HTTP and returns the body.
func httpQuery(t *testing.T, q string) string {
	t.Helper()
	u := fmt.Sprintf("http://127.0.0.1:%d/?%s", testServer.HTTPPort(), url.Values{"query": {q}}.Encode())
	resp, err := http.Post(u, "text/plain", nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", q, b)
	return string(b)
}

// TestSameAnswersOnChdb runs the migrations on chDB (current ClickHouse),
// loads the exact rows 18.16 holds, and requires every view query to give
// the same answer on both.
func TestSameAnswersOnChdb(t *testing.T) {
	cfg, conn := migrated(t)
	ch := openChdb(t)
	ctx := context.Background()
	db := cfg.Database

	// Traffic with every alarm kind, attributes, labels and requests.
	rows := traffic{hours: 48, perHour: 120, seed: 5, shift: func(h int, r *row, rng *rand.Rand) {
		r.correct = -2
		if h >= 46 {
			r.p -= 0.3
		}
		if h >= 47 {
			r.mean += 1
			if rng.Float64() < 0.6 {
				r.clusterID = -1
			}
		}
	}}.rows()
	for i := range rows {
		if i%3 == 0 {
			rows[i].attrs = map[string]string{"tenant": fmt.Sprintf("t%d", i%2), "route": "/chat"}
		}
		if i%17 == 0 {
			rows[i].domain = "" // falls back to the cluster label
		}
	}
	write(t, cfg, rows)
	write(t, cfg, rows[:500]) // redelivery
	// Rows after newest: a rejected one three days ahead, a valid one three
	// days after now. Neither may move newest (migration 010).
	write(t, cfg, []row{
		{id: "rejected-future", ts: rows[len(rows)-1].ts.Add(72 * time.Hour), domain: "A", p: -1, correct: -1, clusterID: -2, status: schemas.ReasonPositiveLogprob},
		{id: "ok-future", ts: time.Now().Add(72 * time.Hour), domain: "A", p: 0.2, correct: -1, clusterID: 1, cluster: "c"},
	})
	var labels []Label
	for i := 0; i < len(rows); i += 7 {
		labels = append(labels, Label{TraceID: rows[i].id, Correct: i%2 == 0, Source: "human", TS: rows[i].ts.Add(time.Hour)})
		if i%3 == 0 { // a second opinion at the same ts: the later one wins (migration 009)
			labels = append(labels, Label{TraceID: rows[i].id, Correct: i%2 != 0, Source: "review", TS: rows[i].ts.Add(time.Hour)})
		}
	}
	require.NoError(t, InsertLabels(ctx, conn, db, labels))
	var older []Label // labels older than those stored, inserted after them: they lose
	for i := 0; i < len(rows); i += 21 {
		older = append(older, Label{TraceID: rows[i].id, Correct: true, Source: "stale", TS: rows[i].ts})
	}
	require.NoError(t, InsertLabels(ctx, conn, db, older))
	_, err := RequestLabels(ctx, conn, db, 2, 25, "b1", time.Now(), DefaultRequestExpiry)
	require.NoError(t, err)

	// Same schema on chDB, through the same migration files.
	ms, err := Migrations()
	require.NoError(t, err)
	_, err = ch.Exec("CREATE DATABASE IF NOT EXISTS " + db)
	require.NoError(t, err)
	for _, m := range ms {
		for i, s := range m.Statements {
			_, err := ch.Exec(Expand(s, db))
			require.NoError(t, err, "chDB: %s statement %d:\n%s", m.Name, i+1, s)
		}
	}
	for _, table := range []string{"scored", "labels", "label_requests"} {
		data := httpQuery(t, "SELECT * FROM "+db+"."+table+" FORMAT Values")
		_, err := ch.Exec("INSERT INTO " + db + "." + table + " VALUES " + data)
		require.NoError(t, err, table)
		// Current ClickHouse collapses duplicates inside one insert
		// (optimize_on_insert); compare the deduplicated counts.
		require.Equal(t, strings.TrimSpace(httpQuery(t, "SELECT count() FROM "+db+"."+table+" FINAL")),
			strings.TrimSpace(must(ch.Exec("SELECT count() FROM "+db+"."+table+" FINAL"))), table)
	}

	queries := []struct{ name, q string }{
		{"newest", "SELECT * FROM {db}.newest"},
		{"labels_latest", "SELECT * FROM {db}.labels_latest ORDER BY trace_id"},
		{"status_counts", "SELECT model, domain, status, n, future FROM {db}.status_counts ORDER BY model, domain, status"},
		{"accuracy", "SELECT * FROM {db}.accuracy ORDER BY model, domain, window_s, window_start"},
		{"accuracy_by_attribute", "SELECT * FROM {db}.accuracy_by_attribute ORDER BY model, domain, attr_key, attr_value, window_s, window_start"},
		{"accuracy_rolling", "SELECT * FROM {db}.accuracy_rolling ORDER BY model, domain, window_s"},
		{"alarm_checks", "SELECT * FROM {db}.alarm_checks ORDER BY kind, model, domain, feature, window_start"},
		{"alarms", "SELECT kind, model, domain, feature, window_start FROM {db}.alarms ORDER BY kind, model, domain, feature, window_start"},
		{"labeling_queue", "SELECT * FROM {db}.labeling_queue ORDER BY model, domain"},
		{"labeling_candidates", "SELECT * FROM {db}.labeling_candidates ORDER BY model, domain, stratum, stratum_rank"},
		{"calibration", "SELECT * FROM {db}.calibration ORDER BY model, domain"},
		{"calibration_bins", "SELECT * FROM {db}.calibration_bins ORDER BY model, domain, bin"},
		{"calibration_models", "SELECT * FROM {db}.calibration_models ORDER BY model"},
		{"accuracy_corrected", "SELECT * FROM {db}.accuracy_corrected ORDER BY model, domain"},
		{"labels export", func() string { q, _ := exportSQL("{db}", ExportFilter{}); return q }()},
	}
	// The data fires every alarm kind, so the comparison covers them all.
	kinds := httpQuery(t, "SELECT DISTINCT kind FROM "+db+".alarms ORDER BY kind FORMAT TabSeparated")
	require.Equal(t, "accuracy_drop\ncalibration_gap\ncusum\npsi\nunclustered_surge\n", kinds)
	require.Equal(t, fmt.Sprint(rows[len(rows)-1].ts.Unix())+"\n", httpQuery(t, "SELECT newest_ts FROM "+db+".newest FORMAT TabSeparated"))
	compare := func(t *testing.T) {
		for _, q := range queries {
			t.Run(q.name, func(t *testing.T) {
				sql := Expand(q.q, db)
				old := httpQuery(t, sql+" FORMAT TabSeparated")
				cur, err := ch.Exec(sql)
				require.NoError(t, err, "chDB: %s", sql)
				require.NotEmpty(t, strings.TrimSpace(old), "the data must exercise %s", q.name)
				sameTSV(t, old, cur)
			})
		}
	}
	compare(t)
	// Merged labels answer as before, on both (migration 009).
	before := httpQuery(t, "SELECT * FROM "+db+".labels_latest ORDER BY trace_id FORMAT TabSeparated")
	httpQuery(t, "OPTIMIZE TABLE "+db+".labels FINAL")
	_, err = ch.Exec("OPTIMIZE TABLE " + db + ".labels FINAL")
	require.NoError(t, err)
	require.Equal(t, before, httpQuery(t, "SELECT * FROM "+db+".labels_latest ORDER BY trace_id FORMAT TabSeparated"))
	t.Run("merged", compare)
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// sameTSV compares two TabSeparated results cell by cell; numbers within
// 1e-9 relative (summation order differs between versions).
func sameTSV(t *testing.T, want, got string) {
	t.Helper()
	wl := strings.Split(strings.TrimRight(want, "\n"), "\n")
	gl := strings.Split(strings.TrimRight(got, "\n"), "\n")
	require.Equal(t, len(wl), len(gl), "row count: 18.16 vs chDB")
	for i := range wl {
		wc, gc := strings.Split(wl[i], "\t"), strings.Split(gl[i], "\t")
		require.Equal(t, len(wc), len(gc), "row %d columns:\n18.16: %s\nchDB:  %s", i, wl[i], gl[i])
		for j := range wc {
			if wc[j] == gc[j] {
				continue
			}
			a, errA := strconv.ParseFloat(wc[j], 64)
			b, errB := strconv.ParseFloat(gc[j], 64)
			require.True(t, errA == nil && errB == nil && math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(a)),
				"row %d column %d: 18.16 %q vs chDB %q\n18.16: %s\nchDB:  %s", i, j, wc[j], gc[j], wl[i], gl[i])
		}
	}
}
