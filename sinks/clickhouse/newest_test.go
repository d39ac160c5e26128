package clickhouse

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// currentViews are the views that describe "now": the windows ending at the
// newest response. A response dated in the future must not move them.
var currentViews = []struct{ name, q string }{
	{"newest", "SELECT * FROM {db}.newest"},
	{"accuracy_rolling", "SELECT * FROM {db}.accuracy_rolling ORDER BY model, domain, window_s"},
	{"alarm_checks", "SELECT * FROM {db}.alarm_checks ORDER BY kind, model, domain, feature, window_start"},
	{"labeling_queue", "SELECT * FROM {db}.labeling_queue ORDER BY model, domain"},
	{"labeling_candidates", "SELECT * FROM {db}.labeling_candidates ORDER BY model, domain, stratum, stratum_rank"},
	{"accuracy_corrected", "SELECT * FROM {db}.accuracy_corrected ORDER BY model, domain"},
}

// TestNewestIgnoresFutureRows: newest is the newest valid response not
// later than now() + 5 min (migration 010). A rejected response dated three
// days after the newest, and a valid one three days after now, change no
// current view, and the dispatcher resolves nothing. Before, max(ts) over
// all of scored took the rejected row as "now", every current view came
// back empty and every open alarm was resolved.
func TestNewestIgnoresFutureRows(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	rows := dropTraffic(48)
	write(t, cfg, rows)
	newest := rows[len(rows)-1].ts
	require.NoError(t, InsertLabels(ctx, conn, db, []Label{{TraceID: rows[len(rows)-1].id, Correct: true, Source: "t", TS: newest}}))

	before := map[string]string{}
	for _, v := range currentViews {
		out := httpQuery(t, Expand(v.q, db)+" FORMAT TabSeparated")
		require.NotEmpty(t, strings.TrimSpace(out), v.name)
		before[v.name] = out
	}
	require.Equal(t, fmt.Sprint(newest.Unix()), strings.TrimSpace(before["newest"]))

	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer hook.Close()
	dcfg := DefaultDispatchConfig()
	dcfg.WebhookURL = hook.URL
	d, err := NewDispatcher(ctx, cfg, dcfg, nil)
	require.NoError(t, err)
	defer d.Close()
	evs, err := d.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"accuracy_drop/m1/A/#1:firing", "cusum/m1/A/#1:firing"}, ids(evs))

	write(t, cfg, []row{
		{id: "rejected-future", ts: newest.Add(72 * time.Hour), domain: "A", p: -1, correct: -1, clusterID: -2, status: schemas.ReasonPositiveLogprob},
		{id: "ok-future", ts: time.Now().Add(72 * time.Hour), domain: "A", p: 0.1, correct: -1, clusterID: 1, cluster: "c"},
	})
	for _, v := range currentViews {
		require.Equal(t, before[v.name], httpQuery(t, Expand(v.q, db)+" FORMAT TabSeparated"), v.name)
	}
	evs, err = d.Poll(ctx)
	require.NoError(t, err)
	require.Empty(t, evs, "nothing recovered: no alarm may resolve")

	// A valid response a minute ahead of the server's clock is within the
	// tolerance: it is the newest.
	soon := time.Now().Add(time.Minute).Truncate(time.Second)
	write(t, cfg, []row{{id: "ok-soon", ts: soon, domain: "A", p: 0.5, correct: -1, clusterID: 1, cluster: "c"}})
	require.Equal(t, fmt.Sprint(soon.Unix()), strings.TrimSpace(httpQuery(t, "SELECT newest_ts FROM "+db+".newest")))
}

// TestStatusCounts: status_counts shows, per model x domain x status, the
// rows of the trailing day the accuracy views leave out (rejected, not
// estimated) next to the valid ones, and the rows dated in the future apart
// (after the newest row of any status within the server clock's tolerance).
func TestStatusCounts(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	counts := func() map[string][2]uint64 {
		r, err := conn.Query(ctx, "SELECT domain, status, n, future FROM "+cfg.Database+".status_counts")
		require.NoError(t, err)
		got := map[string][2]uint64{}
		for r.Next() {
			var d, s string
			var n, f uint64
			require.NoError(t, r.Scan(&d, &s, &n, &f))
			got[d+"/"+s] = [2]uint64{n, f}
		}
		require.NoError(t, r.Err())
		return got
	}
	now := time.Now().UTC().Truncate(time.Second)
	write(t, cfg, []row{
		{id: "r1", ts: now.Add(-time.Hour), domain: "A", p: -1, correct: -1, clusterID: -2, status: schemas.ReasonPositiveLogprob},
		{id: "r2", ts: now.Add(72 * time.Hour), domain: "A", p: -1, correct: -1, clusterID: -2, status: schemas.ReasonPositiveLogprob},
	})
	require.Equal(t, map[string][2]uint64{"A/positive_logprob": {1, 1}}, counts())

	write(t, cfg, []row{
		{id: "ok1", ts: now.Add(-2 * time.Hour), domain: "A", p: 0.7, correct: -1, clusterID: 1, cluster: "c"},
		{id: "ok2", ts: now.Add(-30 * time.Hour), domain: "A", p: 0.7, correct: -1, clusterID: 1, cluster: "c"}, // over a day before newest
		{id: "u1", ts: now.Add(-3 * time.Hour), domain: "B", p: -1, correct: -1, clusterID: -2, status: schemas.ReasonUnknownModel},
		{id: "u2", ts: now.Add(-4 * time.Hour), domain: "B", p: -1, correct: -1, clusterID: -2, status: schemas.ReasonUnknownModel},
	})
	// The day ends at r1 (1 h ago), the newest row not in the future, though
	// newest (valid rows only) is ok1, 2 h ago: traffic that is all rejected
	// is current, not future. ok2 is over a day before.
	require.Equal(t, map[string][2]uint64{
		"A/positive_logprob": {1, 1},
		"A/ok":               {1, 0},
		"B/unknown_model":    {2, 0},
	}, counts())
}
