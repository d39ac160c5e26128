package clickhouse

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/stretchr/testify/require"
)

// TestRecentViewsReadRecentRows: the alarms, the labeling queue and the
// rolling accuracy read all of scored, whatever period they cover, and
// slowed down as the table grew (alarm_checks 4.0 s at 974,000 rows). Since
// migration 015 they read from newest minus their longest period on: the
// rows of 40 days ago (another month's partition) are not read at all.
// Counted in rows read (system.query_log), not timed.
func TestRecentViewsReadRecentRows(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	now := time.Now().UTC().Truncate(time.Second)
	const old = 40000
	var rows []row
	for i := range old {
		rows = append(rows, row{id: fmt.Sprintf("old-%05d", i), ts: now.Add(-40*24*time.Hour + time.Duration(i)*time.Second), domain: "D", p: 0.7, correct: -1, clusterID: 1, cluster: "c"})
	}
	write(t, cfg, rows)
	rows = rows[:0]
	for i := range 300 {
		rows = append(rows, row{id: fmt.Sprintf("new-%03d", i), ts: now.Add(-time.Duration(i) * time.Minute), domain: "D", p: 0.7, correct: -1, clusterID: 1, cluster: "c"})
	}
	write(t, cfg, rows)

	for _, view := range []string{"alarm_checks", "labeling_queue", "labeling_candidates", "accuracy_rolling", "accuracy_corrected"} {
		id := fmt.Sprintf("bounded-%s-%d", view, time.Now().UnixNano())
		qctx := ch.Context(ctx, ch.WithQueryID(id), ch.WithSettings(ch.Settings{"log_queries": 1}))
		var n uint64
		require.NoError(t, conn.QueryRow(qctx, "SELECT count() FROM "+db+"."+view).Scan(&n), view)
		require.NotZero(t, n, view)
		// The server logs a query once it finished sending it: flush until
		// its entry is there.
		var read uint64
		for deadline := time.Now().Add(30 * time.Second); ; {
			require.NoError(t, conn.Exec(ctx, "SYSTEM FLUSH LOGS"))
			err := conn.QueryRow(ctx, "SELECT toUInt64(read_rows) FROM system.query_log WHERE query_id = ? AND type = 2", id).Scan(&read)
			if err == nil {
				break
			}
			require.ErrorIs(t, err, sql.ErrNoRows, view)
			require.True(t, time.Now().Before(deadline), "%s: no query_log entry for query %s", view, id)
			time.Sleep(100 * time.Millisecond)
		}
		// accuracy_rolling joins newest, which reads the ts and status
		// columns of every row once; the others read none of the old rows.
		limit := uint64(old / 2)
		if view == "accuracy_rolling" {
			limit = old + old/2
		}
		require.Less(t, read, limit, "%s read %d rows", view, read)
	}
	var before uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+db+".scored_ok_recent").Scan(&before))
	require.Equal(t, uint64(300), before, "scored_ok_recent starts at newest minus the longest period")
}
