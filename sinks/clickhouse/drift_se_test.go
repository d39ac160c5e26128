package clickhouse

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// binomialSE is the drift tests' standard error of a window of n responses
// whose p_correct sum to sumP and p(1-p) to sumVar (migration 016).
func binomialSE(n, sumP, sumVar float64) float64 {
	a := (sumP + 0.5) / (n + 1)
	return math.Sqrt(math.Max(sumVar, n*a*(1-a))) / n
}

// TestDriftSEBinomial: with a sharp estimator (p_correct 0.02 or 0.95, as
// an isotonic map gives), a window whose share of confident-right responses
// falls from 20% to 12%, two binomial standard deviations of a 100-response
// sample, does not fire accuracy_drop; with the interval's se, sqrt(sum
// p(1-p))/n, it did (statistic 0.074 against a threshold of 0.05). A window
// where every response is confidently wrong still fires. The statistic,
// threshold, CUSUM step and the queue's drop_z are the binomial formulas.
func TestDriftSEBinomial(t *testing.T) {
	for _, tc := range []struct {
		name     string
		positive int // of the last window's 100 responses, those at p = 0.95
		fires    bool
	}{
		{name: "sampling", positive: 12, fires: false},
		{name: "drop", positive: 0, fires: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, conn := migrated(t)
			ctx := context.Background()
			var rows []row
			for h := range 7 {
				pos := 20
				if h == 6 {
					pos = tc.positive
				}
				for i := range 100 {
					p := 0.02
					if i < pos {
						p = 0.95
					}
					rows = append(rows, row{id: fmt.Sprintf("h%d-%d", h, i), ts: t0.Add(time.Duration(h)*time.Hour + time.Duration(i)*time.Second*30),
						domain: "A", p: p, correct: -1, clusterID: -2})
				}
			}
			write(t, cfg, rows)
			db := cfg.Database
			target := "toDateTime('2026-03-01 06:00:00', 'UTC')"

			n, sumP := 100.0, 0.95*float64(tc.positive)+0.02*float64(100-tc.positive)
			sumVar := float64(tc.positive)*0.95*0.05 + float64(100-tc.positive)*0.02*0.98
			nb, sumPb, sumVarb := 600.0, 6*(0.95*20+0.02*80), 6*(20*0.95*0.05+80*0.02*0.98)
			se, seb := binomialSE(n, sumP, sumVar), binomialSE(nb, sumPb, sumVarb)
			wantStat := sumPb/nb - sumP/n
			wantThr := math.Max(3*math.Sqrt(se*se+seb*seb), 0.05)
			require.Greater(t, wantStat, 0.05, "beyond min_drop: only the standard error decides")

			var stat, thr float64
			var firing uint8
			require.NoError(t, conn.QueryRow(ctx, "SELECT statistic, threshold, firing FROM "+db+".alarm_checks WHERE kind = 'accuracy_drop' AND window_start = "+target).
				Scan(&stat, &thr, &firing))
			require.InDelta(t, wantStat, stat, 1e-12)
			require.InDelta(t, wantThr, thr, 1e-12)
			require.Equal(t, tc.fires, firing == 1, "statistic %.4f, threshold %.4f", stat, thr)
			if !tc.fires {
				old := math.Max(3*math.Sqrt(math.Pow(math.Sqrt(sumVar)/n, 2)+math.Pow(math.Sqrt(sumVarb)/nb, 2)), 0.05)
				require.Greater(t, stat, old, "the interval's se would have fired here")
			}

			// CUSUM: the windows after the 6 reference ones; the target is the first.
			require.NoError(t, conn.QueryRow(ctx, "SELECT statistic FROM "+db+".alarm_checks WHERE kind = 'cusum' AND window_start = "+target).Scan(&stat))
			require.InDelta(t, math.Max(0, wantStat/se-0.5), stat, 1e-9)

			// The queue: the newest window is the recent period (100 >= min_n).
			var dropZ float64
			require.NoError(t, conn.QueryRow(ctx, "SELECT drop_z FROM "+db+".labeling_queue WHERE domain = 'A'").Scan(&dropZ))
			require.InDelta(t, wantStat/math.Sqrt(se*se+seb*seb), dropZ, 1e-9)
		})
	}
}
