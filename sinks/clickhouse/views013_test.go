package clickhouse

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestQueueCountsEachResponseOnce: a response requested and then labelled
// was counted in n_labelled and in n_requested, so n_labelled + n_requested
// + n_open exceeded n and the priority was divided by sqrt(1 + 2 x labels)
// after a labeling round (migration 013).
func TestQueueCountsEachResponseOnce(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	var rows []row
	for i := range 100 {
		rows = append(rows, row{id: fmt.Sprintf("q-%03d", i), ts: t0.Add(time.Duration(i) * time.Second), domain: "D", p: 0.6, correct: -1, clusterID: 1, cluster: "c"})
	}
	write(t, cfg, rows)
	reqs, err := RequestLabels(ctx, conn, db, 1, 10, "b1", time.Now(), DefaultRequestExpiry)
	require.NoError(t, err)
	require.Len(t, reqs, 10)
	var labels []Label
	for _, r := range reqs[:6] {
		labels = append(labels, Label{TraceID: r.TraceID, Correct: true, Source: "t", TS: t0})
	}
	require.NoError(t, InsertLabels(ctx, conn, db, labels))

	var n, labelled, requested, open uint64
	var priority, accuracy, corrected float64
	require.NoError(t, conn.QueryRow(ctx, "SELECT n, n_labelled, n_requested, n_open, priority, accuracy, assumeNotNull(corrected) FROM "+db+".labeling_queue WHERE domain = 'D'").
		Scan(&n, &labelled, &requested, &open, &priority, &accuracy, &corrected))
	require.Equal(t, []uint64{100, 6, 4, 90}, []uint64{n, labelled, requested, open}, "n, labelled, requested and not labelled, open")
	var varSum float64
	require.NoError(t, conn.QueryRow(ctx, "SELECT sum(p_correct * (1 - p_correct)) FROM "+db+".scored_ok WHERE domain = 'D'").Scan(&varSum))
	require.InDelta(t, (1-corrected)*math.Sqrt(varSum)/math.Sqrt(1+6+4), priority, 1e-9, "divided by sqrt(1 + 10), not sqrt(1 + 16)")
}

// TestLabelRequestsExpire: a request kept its response out of the queue for
// good; it now holds it until expires_at (by default 7 days after
// requested_at, also for rows written before the column existed), then the
// response is open again and can be requested anew.
func TestLabelRequestsExpire(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	var rows []row
	for i := range 4 {
		rows = append(rows, row{id: fmt.Sprintf("e-%d", i), ts: t0.Add(time.Duration(i) * time.Second), domain: "D", p: 0.5, correct: -1, clusterID: 1, cluster: "c"})
	}
	write(t, cfg, rows)
	now := time.Now().UTC().Truncate(time.Second)
	// e-0: requested 8 days ago without expires_at (an old binary's row):
	// expired by the default. e-1: requested now, default expiry. e-2:
	// expires in a minute, e-3: expired a minute ago.
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".label_requests (trace_id, model, domain, requested_at, batch)")
	require.NoError(t, err)
	require.NoError(t, b.Append("e-0", "m1", "D", now.Add(-8*24*time.Hour), "old"))
	require.NoError(t, b.Append("e-1", "m1", "D", now, "new"))
	require.NoError(t, b.Send())
	b, err = conn.PrepareBatch(ctx, "INSERT INTO "+db+".label_requests (trace_id, model, domain, requested_at, batch, expires_at)")
	require.NoError(t, err)
	require.NoError(t, b.Append("e-2", "m1", "D", now.Add(-time.Hour), "x", now.Add(time.Minute)))
	require.NoError(t, b.Append("e-3", "m1", "D", now.Add(-time.Hour), "x", now.Add(-time.Minute)))
	require.NoError(t, b.Send())

	got := map[string]uint8{}
	r, err := conn.Query(ctx, "SELECT trace_id, requested FROM "+db+".label_status")
	require.NoError(t, err)
	for r.Next() {
		var id string
		var req uint8
		require.NoError(t, r.Scan(&id, &req))
		got[id] = req
	}
	require.NoError(t, r.Err())
	require.Equal(t, map[string]uint8{"e-0": 0, "e-1": 1, "e-2": 1, "e-3": 0}, got)

	var requested, open uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT n_requested, n_open FROM "+db+".labeling_queue WHERE domain = 'D'").Scan(&requested, &open))
	require.Equal(t, []uint64{2, 2}, []uint64{requested, open})
	var cands []string
	r, err = conn.Query(ctx, "SELECT trace_id FROM "+db+".labeling_candidates ORDER BY trace_id")
	require.NoError(t, err)
	for r.Next() {
		var id string
		require.NoError(t, r.Scan(&id))
		cands = append(cands, id)
	}
	require.NoError(t, r.Err())
	require.Equal(t, []string{"e-0", "e-3"}, cands, "expired requests are candidates again")
}

// TestAlarmRowsEndAtNewest: rows dated after newest (a client clock ahead)
// were evaluated by the alarms with the rows of their window, which every
// other view leaves out: 30 rows at p 0.8 and 30 future rows at p 0 gave
// n 60, accuracy 0.4 (migration 013).
func TestAlarmRowsEndAtNewest(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	now := time.Now().UTC().Truncate(time.Second)
	var rows []row
	for i := range 30 {
		rows = append(rows,
			row{id: fmt.Sprintf("now-%02d", i), ts: now.Add(-time.Duration(30-i) * time.Minute), domain: "D", p: 0.8, correct: -1, clusterID: 1, cluster: "c"},
			row{id: fmt.Sprintf("future-%02d", i), ts: now.Add(8 * time.Minute), domain: "D", p: 0, correct: -1, clusterID: 1, cluster: "c"})
	}
	write(t, cfg, rows)
	var n uint64
	var sumP float64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(), sum(p_correct) FROM "+db+".alarm_rows").Scan(&n, &sumP))
	require.Equal(t, uint64(30), n, "the future rows are left out")
	require.InDelta(t, 24, sumP, 1e-9)
	require.NoError(t, conn.QueryRow(ctx, "SELECT toUInt64(sum(rows)) FROM "+db+".alarm_buckets").Scan(&n))
	require.Equal(t, uint64(30), n)
	var rolling uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT n FROM "+db+".accuracy_rolling WHERE domain = 'D' AND window_s = 3600").Scan(&rolling))
	require.Equal(t, n, rolling, "alarms and accuracy_rolling see the same rows")
}

// TestEmptyDomainIsMissing: a caller's "domain": "" was a domain of its own:
// such traffic never took its topic cluster's label and all of it shared one
// slice ” (migration 013). status_counts follows the same rule and counts
// the responses no estimator scored.
func TestEmptyDomainIsMissing(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	write(t, cfg, []row{
		{id: "a", ts: t0, emptyDomain: true, p: 0.7, correct: -1, clusterID: 3, cluster: "topicA"},
		{id: "b", ts: t0.Add(time.Second), emptyDomain: true, p: 0.9, correct: -1, clusterID: 4, cluster: "topicB"},
		{id: "c", ts: t0.Add(2 * time.Second), emptyDomain: true, p: 0.5, correct: -1, clusterID: -1, cluster: ""},
		{id: "d", ts: t0.Add(3 * time.Second), domain: "given", p: 0.6, correct: -1, clusterID: 3, cluster: "topicA"},
		{id: "e", ts: t0.Add(4 * time.Second), domain: "given", p: -1, correct: -1, clusterID: 3, cluster: "topicA"},
	})
	got := map[string]string{}
	r, err := conn.Query(ctx, "SELECT trace_id, domain FROM "+db+".scored_ok")
	require.NoError(t, err)
	for r.Next() {
		var id, d string
		require.NoError(t, r.Scan(&id, &d))
		got[id] = d
	}
	require.NoError(t, r.Err())
	require.Equal(t, map[string]string{"a": "topicA", "b": "topicB", "c": "", "d": "given"}, got)

	counts := map[string][2]uint64{}
	r, err = conn.Query(ctx, "SELECT domain, n, unestimated FROM "+db+".status_counts")
	require.NoError(t, err)
	for r.Next() {
		var d string
		var n, u uint64
		require.NoError(t, r.Scan(&d, &n, &u))
		counts[d] = [2]uint64{n, u}
	}
	require.NoError(t, r.Err())
	require.Equal(t, map[string][2]uint64{"topicA": {1, 0}, "topicB": {1, 0}, "": {1, 0}, "given": {2, 1}}, counts)
}

// TestQueueRecentWindowsNull: recent_windows was 4294967295 where the
// lookback holds fewer than min_n of the domain's responses; it is NULL.
func TestQueueRecentWindowsNull(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	write(t, cfg, []row{{id: "x", ts: t0, domain: "D", p: 0.5, correct: -1, clusterID: 1, cluster: "c"}})
	var w *uint32
	require.NoError(t, conn.QueryRow(ctx, "SELECT recent_windows FROM "+cfg.Database+".labeling_queue").Scan(&w))
	require.Nil(t, w)
}

// TestRequestLabelsExpireAfter: RequestLabels records when its requests
// lapse (expire-after); a lapsed request's responses are requested again.
func TestRequestLabelsExpireAfter(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	var rows []row
	for i := range 5 {
		rows = append(rows, row{id: fmt.Sprintf("x-%d", i), ts: t0.Add(time.Duration(i) * time.Second), domain: "D", p: 0.5, correct: -1, clusterID: 1, cluster: "c"})
	}
	write(t, cfg, rows)
	_, err := RequestLabels(ctx, conn, db, 1, 5, "b", time.Now(), 0)
	require.ErrorContains(t, err, "expire-after 0s must be positive")

	then := time.Now().Add(-2 * time.Hour)
	first, err := RequestLabels(ctx, conn, db, 1, 5, "lapsed", then, time.Hour)
	require.NoError(t, err)
	require.Len(t, first, 5)
	require.Equal(t, then.Add(time.Hour).UTC().Truncate(time.Second), first[0].ExpiresAt)
	again, err := RequestLabels(ctx, conn, db, 1, 5, "current", time.Now(), DefaultRequestExpiry)
	require.NoError(t, err)
	require.Len(t, again, 5, "the lapsed requests' responses are open again")
	none, err := RequestLabels(ctx, conn, db, 1, 5, "too-soon", time.Now(), DefaultRequestExpiry)
	require.NoError(t, err)
	require.Empty(t, none, "the current requests hold them")
}

// TestLabelSeenBackfill: migration 014 fills label_seen from the labels
// stored before it, and its materialized view from every insert after.
func TestLabelSeenBackfill(t *testing.T) {
	ctx := context.Background()
	conn, db, ms := migratedTo(t, 13)
	require.Equal(t, "014_label_seen.sql", ms[13].Name)
	require.NoError(t, InsertLabels(ctx, conn, db, []Label{
		{TraceID: "a", Correct: true, Source: "import", TS: t0},
		{TraceID: "a", Correct: false, Source: "review", TS: t0.Add(time.Minute)},
	}))
	require.NoError(t, conn.Exec(ctx, "OPTIMIZE TABLE "+db+".labels FINAL"))
	_, err := migrate(ctx, conn, db, ms, nil)
	require.NoError(t, err)
	require.NoError(t, InsertLabels(ctx, conn, db, []Label{{TraceID: "b", Correct: true, Source: "thumbs", TS: t0}}))

	var seen []string
	r, err := conn.Query(ctx, "SELECT DISTINCT concat(trace_id, ' ', source, ' ', toString(correct)) AS s FROM "+db+".label_seen ORDER BY s")
	require.NoError(t, err)
	for r.Next() {
		var s string
		require.NoError(t, r.Scan(&s))
		seen = append(seen, s)
	}
	require.NoError(t, r.Err())
	// a's first label was merged away in labels before 014: only what was
	// stored then is known.
	require.Equal(t, []string{"a review 0", "b thumbs 1"}, seen)
}
