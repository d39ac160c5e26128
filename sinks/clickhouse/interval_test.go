package clickhouse

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestIntervalsClipped: the 95% intervals of every view that has lo/hi lie
// in [0, 1] (migration 008), for a domain estimated at 0.996, where
// accuracy + 1.96 se is 1.001, and for one near 0; accuracy_corrected also
// when labels push the corrected estimate past 1. Inside [0, 1] the bounds
// are accuracy -/+ 1.96 se as before.
func TestIntervalsClipped(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	var rows []row
	for i := range 500 {
		ts := t0.Add(time.Duration(i) * 7 * time.Second)
		attrs := map[string]string{"tenant": "t1"}
		// sure: p 0.99 and 1 alternating (accuracy 0.995). The trace labels
		// ten of its p = 0.99 responses correct: in accuracy_corrected, bin 9
		// gains 0.01 and the correction brings it to 1.
		sure := row{id: fmt.Sprintf("sure-%03d", i), ts: ts, domain: "sure", attrs: attrs, p: 0.99 + 0.01*float64(i%2), correct: -1, clusterID: 1, cluster: "c"}
		if i%2 == 0 && i < 20 {
			sure.correct = 1
		}
		hopeless := row{id: fmt.Sprintf("hopeless-%03d", i), ts: ts, domain: "hopeless", attrs: attrs, p: 0.01 * float64(i%2), correct: -1, clusterID: 1, cluster: "c"}
		middle := row{id: fmt.Sprintf("middle-%03d", i), ts: ts, domain: "middle", attrs: attrs, p: 0.5 + 0.2*float64(i%3-1), correct: -1, clusterID: 1, cluster: "c"}
		rows = append(rows, sure, hopeless, middle)
	}
	write(t, cfg, rows)

	db := cfg.Database
	for _, v := range []struct{ view, est, where string }{
		{"accuracy", "accuracy", "window_s = 86400"},
		{"accuracy_by_attribute", "accuracy", "window_s = 86400"},
		{"accuracy_rolling", "accuracy", "window_s = 86400"},
		{"labeling_queue", "accuracy", "1"},
		{"accuracy_corrected", "corrected", "1"},
	} {
		t.Run(v.view, func(t *testing.T) {
			r, err := conn.Query(ctx, fmt.Sprintf("SELECT domain, toFloat64(%s), se, lo, hi FROM %s.%s WHERE %s ORDER BY domain", v.est, db, v.view, v.where))
			require.NoError(t, err)
			defer r.Close()
			got := map[string][4]float64{}
			for r.Next() {
				var dom string
				var est, se, lo, hi float64
				require.NoError(t, r.Scan(&dom, &est, &se, &lo, &hi))
				require.True(t, 0 <= lo && lo <= est && est <= hi && hi <= 1, "%s: lo %v, estimate %v, hi %v: want 0 <= lo <= estimate <= hi <= 1", dom, lo, est, hi)
				got[dom] = [4]float64{est, se, lo, hi}
			}
			require.NoError(t, r.Err())
			require.Len(t, got, 3)

			sure, hopeless, middle := got["sure"], got["hopeless"], got["middle"]
			if v.view == "accuracy_corrected" {
				require.Equal(t, 1.0, sure[0], "0.995 corrected by +0.01 in bin 9, 1.005, is clipped to 1")
			} else {
				require.InDelta(t, 0.995, sure[0], 1e-9)
				require.Greater(t, sure[0]+1.96*sure[1], 1.0, "the data must need the clip")
			}
			require.Equal(t, 1.0, sure[3])
			require.InDelta(t, 0.005, hopeless[0], 1e-9)
			require.Less(t, hopeless[0]-1.96*hopeless[1], 0.0, "the data must need the clip")
			require.Equal(t, 0.0, hopeless[2])
			// Unclipped where the interval fits.
			require.InDelta(t, middle[0]-1.96*middle[1], middle[2], 1e-12)
			require.InDelta(t, middle[0]+1.96*middle[1], middle[3], 1e-12)
		})
	}
}

// TestIntervalFloor: no view claims certainty it cannot have (migration
// 010). Four responses at p = 1 (isotonic estimators give exactly 1) had
// se 0, [1, 1]; the variance sum is now at least a(1-a), a = (sum p + 0.5) /
// (n + 1) = 0.9: se = 0.3 / 4. 1000 responses at p = 0.004 whose 30 labels
// are all 0 had a correction with no spread, [0, 0.004] around a truth of
// about 0.028; the labels' variance is now at least y(1-y), y = 0.5 / 31.
func TestIntervalFloor(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	var rows []row
	var labels []Label
	for i := range 4 {
		rows = append(rows, row{id: fmt.Sprintf("sure-%d", i), ts: t0.Add(time.Duration(i) * time.Minute), domain: "sure", attrs: map[string]string{"tenant": "t1"}, p: 1, correct: -1, clusterID: 1, cluster: "c"})
	}
	for i := range 1000 {
		id := fmt.Sprintf("rare-%04d", i)
		rows = append(rows, row{id: id, ts: t0.Add(time.Duration(i) * 3 * time.Second), domain: "rare", p: 0.004, correct: -1, clusterID: 1, cluster: "c"})
		if i%33 == 0 && len(labels) < 30 {
			labels = append(labels, Label{TraceID: id, Correct: false, Source: "human", TS: t0.Add(time.Hour)})
		}
	}
	write(t, cfg, rows)
	require.NoError(t, InsertLabels(ctx, conn, db, labels))
	require.Len(t, labels, 30)

	for _, v := range []struct{ view, where string }{
		{"accuracy", "window_s = 3600"},
		{"accuracy_by_attribute", "window_s = 3600"},
		{"accuracy_rolling", "window_s = 86400"},
		{"labeling_queue", "1"},
	} {
		var n uint64
		var se, lo, hi float64
		require.NoError(t, conn.QueryRow(ctx, fmt.Sprintf("SELECT toUInt64(n), se, lo, hi FROM %s.%s WHERE domain = 'sure' AND %s", db, v.view, v.where)).Scan(&n, &se, &lo, &hi), v.view)
		require.Equal(t, uint64(4), n, v.view)
		require.InDelta(t, 0.3/4, se, 1e-12, v.view)
		require.InDelta(t, 1-1.96*0.3/4, lo, 1e-12, v.view)
		require.Equal(t, 1.0, hi, v.view)
	}

	var corrected, se, lo, hi float64
	require.NoError(t, conn.QueryRow(ctx, "SELECT corrected, se, lo, hi FROM "+db+".accuracy_corrected WHERE domain = 'rare'").Scan(&corrected, &se, &lo, &hi))
	y := 0.5 / 31
	require.InDelta(t, 0, corrected, 1e-12)
	require.InDelta(t, math.Sqrt(y*(1-y)/30), se, 1e-12)
	require.Equal(t, 0.0, lo)
	require.Greater(t, hi, 0.028, "the interval holds what 30 zeros cannot rule out")
}
