package clickhouse

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"
)

// traffic generates hourly traffic of model m1 over domains A and B: hours
// windows of perHour responses per domain, stationary unless shift changes
// a row of domain A in hour h (0-based).
type traffic struct {
	hours, perHour int
	seed           uint64
	shift          func(h int, r *row, rng *rand.Rand)
}

func (tr traffic) rows() []row {
	rng := rand.New(rand.NewPCG(tr.seed, 7))
	var out []row
	for h := range tr.hours {
		for _, dom := range []string{"A", "B"} {
			for j := range tr.perHour {
				r := row{
					id:        fmt.Sprintf("%s-%03d-%04d", dom, h, j),
					ts:        t0.Add(time.Duration(h)*time.Hour + time.Duration(j)*time.Hour/time.Duration(tr.perHour)),
					domain:    dom,
					p:         0.55 + 0.4*rng.Float64(),
					clusterID: int32(rng.IntN(8)),
					cluster:   "c",
					mean:      0.2 + 0.8*rng.Float64(),
					q50:       0.1 + 0.6*rng.Float64(),
					max:       1.5 + 1.5*rng.Float64(),
				}
				if rng.Float64() < 0.05 {
					r.clusterID = -1
				}
				r.correct = -1
				if dom == "A" && tr.shift != nil {
					tr.shift(h, &r, rng)
				}
				if r.correct == -2 { // label drawn from p (calibrated)
					r.correct = 0
					if rng.Float64() < r.p {
						r.correct = 1
					}
				}
				out = append(out, r)
			}
		}
	}
	return out
}

// firing returns "kind/domain/feature" of the firing alarms.
func firing(t *testing.T, conn driver.Conn, db string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT DISTINCT kind, domain, feature FROM "+db+".alarms")
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k, d, f string
		require.NoError(t, rows.Scan(&k, &d, &f))
		out = append(out, k+"/"+d+"/"+f)
	}
	require.NoError(t, rows.Err())
	sort.Strings(out)
	return out
}

func TestAlarms(t *testing.T) {
	labelled := func(h int, r *row, rng *rand.Rand) { r.correct = -2 }
	for _, tc := range []struct {
		name  string
		seed  uint64
		shift func(h int, r *row, rng *rand.Rand)
		want  []string
	}{
		{name: "stationary", want: nil},
		{name: "stationary_seed2", seed: 2, want: nil},
		{name: "stationary_seed3", seed: 3, want: nil},
		{name: "stationary_labelled", shift: labelled, want: nil},
		{name: "accuracy_drop", shift: func(h int, r *row, rng *rand.Rand) {
			if h >= 46 {
				r.p -= 0.3
			}
		}, want: []string{"accuracy_drop/A/", "cusum/A/"}},
		{name: "psi", shift: func(h int, r *row, rng *rand.Rand) {
			if h >= 47 {
				r.mean += 1
				r.max = 2.8 + 0.2*rng.Float64()
			}
		}, want: []string{"psi/A/max", "psi/A/mean"}},
		{name: "cusum", shift: func(h int, r *row, rng *rand.Rand) {
			if h >= 36 {
				r.p -= 0.045
			}
		}, want: []string{"cusum/A/"}},
		{name: "calibration_gap", shift: func(h int, r *row, rng *rand.Rand) {
			r.correct = 0
			if rng.Float64() < r.p-0.2 {
				r.correct = 1
			}
		}, want: []string{"calibration_gap/A/"}},
		{name: "unclustered_surge", shift: func(h int, r *row, rng *rand.Rand) {
			if h >= 47 && rng.Float64() < 0.6 {
				r.clusterID = -1
			}
		}, want: []string{"unclustered_surge//"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, conn := migrated(t)
			rows := traffic{hours: 48, perHour: 200, seed: max(tc.seed, 1), shift: tc.shift}.rows()
			write(t, cfg, rows)
			require.Equal(t, tc.want, firing(t, conn, cfg.Database))
		})
	}
}

// gammaDraw draws a Gamma(shape, scale) variate (integer shape): entropy-like.
func gammaDraw(rng *rand.Rand, shape int, scale float64) float64 {
	s := 0.0
	for range shape {
		s += rng.ExpFloat64()
	}
	return s * scale
}

// TestPSILowVolume: at the smallest volume evaluated (min_n = 50 responses
// a window against a 300-response baseline), stationary traffic over 40
// domains rarely fires psi, and a 0.3-nat shift of the entropies in single
// windows is still caught. The entropies are gamma-distributed over many
// 0.25-nat bins, as real ones are (mean about 7-10 bins, max about 21).
func TestPSILowVolume(t *testing.T) {
	for _, shift := range []float64{0, 0.3} {
		t.Run(fmt.Sprintf("shift=%.1f", shift), func(t *testing.T) {
			cfg, conn := migrated(t)
			rng := rand.New(rand.NewPCG(42, 7))
			shifted := func(h int) bool { return h%12 == 0 && h >= 12 || h == 47 }
			var rows []row
			for d := range 40 {
				for h := range 48 {
					for j := range 50 {
						r := row{id: fmt.Sprintf("d%02d-%02d-%02d", d, h, j), ts: t0.Add(time.Duration(h)*time.Hour + time.Duration(j)*time.Minute),
							domain: fmt.Sprintf("d%02d", d), p: 0.7, correct: -1, clusterID: 1, cluster: "c",
							mean: gammaDraw(rng, 2, 0.3), q50: gammaDraw(rng, 2, 0.2), max: gammaDraw(rng, 4, 0.5)}
						if shifted(h) {
							r.mean += shift
							r.q50 += shift
							r.max += shift
						}
						rows = append(rows, r)
					}
				}
			}
			write(t, cfg, rows)
			q := "SELECT feature, count(), sum(firing) FROM " + cfg.Database + ".alarm_psi WHERE n >= 50"
			if shift > 0 {
				q += " AND (toHour(window_start) % 12 = 0 AND window_start >= toDateTime('2026-03-01 12:00:00', 'UTC') OR window_start = toDateTime('2026-03-02 23:00:00', 'UTC'))"
			}
			res, err := conn.Query(context.Background(), q+" GROUP BY feature ORDER BY feature")
			require.NoError(t, err)
			defer res.Close()
			rate := map[string]float64{}
			for res.Next() {
				var f string
				var n, fired uint64
				require.NoError(t, res.Scan(&f, &n, &fired))
				rate[f] = float64(fired) / float64(n)
				t.Logf("%s: %d of %d windows fire (%.2f%%)", f, fired, n, 100*rate[f])
			}
			require.NoError(t, res.Err())
			require.Len(t, rate, 3)
			if shift == 0 {
				for f, r := range rate {
					require.LessOrEqual(t, r, 0.002, "false psi alarms on %s", f) // 003's rule: 0.5-0.9%
				}
				return
			}
			require.GreaterOrEqual(t, rate["mean"], 0.95)
			require.GreaterOrEqual(t, rate["q50"], 0.95)
		})
	}
}

// TestAlarmChecksWithoutBaseline: in the first window of the traffic there
// is no baseline to compare with (migration 010): accuracy_drop's and
// unclustered_surge's baseline and statistic are NULL (they were 0, which
// reads as a baseline accuracy of 0), psi's baseline, statistic and
// threshold are NULL (the threshold was nan or inf, baseline 0 until
// migration 012), and none of them is evaluated (cusum's reference period is this
// window: it has a baseline, but is not evaluated in it). No threshold
// anywhere is nan or inf.
func TestAlarmChecksWithoutBaseline(t *testing.T) {
	cfg, _ := migrated(t)
	write(t, cfg, traffic{hours: 3, perHour: 200, seed: 1}.rows())
	q := "SELECT kind, isNull(baseline), isNull(statistic), isNull(threshold), evaluated FROM " + cfg.Database +
		".alarm_checks WHERE window_start = toDateTime('2026-03-01 00:00:00', 'UTC') AND domain IN ('A', '') AND feature IN ('', 'mean') ORDER BY kind FORMAT TabSeparated"
	require.Equal(t, "accuracy_drop\t1\t1\t0\t0\ncusum\t0\t0\t0\t0\npsi\t1\t1\t1\t0\nunclustered_surge\t1\t1\t0\t0\n", httpQuery(t, q))
	require.Equal(t, "0\n", httpQuery(t, "SELECT count() FROM "+cfg.Database+".alarm_checks WHERE isNaN(threshold) OR isInfinite(threshold)"))
	// The second window has one of 200 responses: evaluated.
	require.Equal(t, "1\n", httpQuery(t, "SELECT min(evaluated) FROM "+cfg.Database+".alarm_checks WHERE kind = 'accuracy_drop' AND window_start = toDateTime('2026-03-01 01:00:00', 'UTC')"))
}
