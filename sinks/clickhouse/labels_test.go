package clickhouse

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// The calibration view against a hand-computed example (see the comments).
func TestCalibrationHandComputed(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	ts := t0
	rows := []row{
		{id: "a", ts: ts, domain: "X", p: 0.9, correct: 1},   // labelled by the trace: 1
		{id: "b", ts: ts, domain: "X", p: 0.9, correct: -1},  // label table: 0
		{id: "c", ts: ts, domain: "X", p: 0.7, correct: 0},   // label table overrides: 1
		{id: "d", ts: ts, domain: "X", p: 0.3, correct: -1},  // labelled 1, relabelled 0 later
		{id: "e", ts: ts, domain: "X", p: 0.25, correct: -1}, // unlabelled
		{id: "f", ts: ts, domain: "X", p: 0.2, correct: 0},
		{id: "g", ts: ts, domain: "Y", p: 0.6, correct: -1}, // unlabelled domain
	}
	write(t, cfg, rows)
	write(t, cfg, rows[:3]) // redelivery
	labels := []Label{
		{TraceID: "b", Correct: false, Source: "human", TS: t0.Add(time.Hour)},
		{TraceID: "c", Correct: true, Source: "human", TS: t0.Add(time.Hour)},
		{TraceID: "d", Correct: true, Source: "human", TS: t0.Add(time.Hour)},
		{TraceID: "d", Correct: false, Source: "review", TS: t0.Add(2 * time.Hour)},
	}
	require.NoError(t, InsertLabels(ctx, conn, cfg.Database, labels))
	require.NoError(t, InsertLabels(ctx, conn, cfg.Database, labels)) // re-import

	// Labelled: a(0.9,1) b(0.9,0) c(0.7,1) d(0.3,0) f(0.2,0); n = 5. Each
	// p_correct bin counts with its responses (migration 010): bin 9 holds
	// a, b (2 responses, 2 labels), bin 7 c, bin 3 d, bin 2 e and f (2
	// responses, 1 label: f stands for e too). N = 6, coverage 1.
	// estimated = (2*0.9 + 0.7 + 0.3 + 2*0.2)/6 = 3.2/6,
	// realised = (2*0.5 + 1 + 0 + 2*0)/6 = 2/6, aee = 0.2.
	// ece = (2*0.4 + 0.3 + 0.3 + 2*0.2)/6 = 0.3.
	// se = sqrt(sum_b N_b^2 v_b / n_b^2)/N, v_b = max(sum p(1-p), a(1-a)),
	// a = (sum p + 0.5)/(n_b + 1): bin 9: 4*max(.18, 2.3*.7/9)/4 = .18;
	// bins 7 and 3: max(.21, .24) = .24 each; bin 2: 4*max(.16, .7*1.3/4) = .91.
	var model, domain string
	var n uint64
	var est, real, aee, ece, se, cov float64
	require.NoError(t, conn.QueryRow(ctx, "SELECT model, domain, n, estimated, realised, aee, ece, se, coverage FROM "+cfg.Database+".calibration").
		Scan(&model, &domain, &n, &est, &real, &aee, &ece, &se, &cov))
	require.Equal(t, "X", domain)
	require.Equal(t, uint64(5), n)
	require.InDelta(t, 3.2/6, est, 1e-12)
	require.InDelta(t, 2.0/6, real, 1e-12)
	require.InDelta(t, 0.2, aee, 1e-12)
	require.InDelta(t, 0.3, ece, 1e-12)
	require.InDelta(t, math.Sqrt(0.18+0.24+0.24+0.91)/6, se, 1e-12)
	require.InDelta(t, 1, cov, 1e-12)

	var bins uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".calibration_bins WHERE domain = 'X' AND bin = 2 AND n = 1 AND population = 2").Scan(&bins))
	require.Equal(t, uint64(1), bins)

	// Pooled over the model's domains (Y has no labels): the same bins.
	var mAEE, mECE float64
	var doms uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT domains, mean_aee, ece FROM "+cfg.Database+".calibration_models WHERE model = 'm1'").Scan(&doms, &mAEE, &mECE))
	require.Equal(t, uint64(1), doms)
	require.InDelta(t, 0.2, mAEE, 1e-12)
	require.InDelta(t, 0.3, mECE, 1e-12)
}

func TestLabelingQueue(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	var rows []row
	add := func(dom string, n int, p func(i int) float64) {
		for i := range n {
			rows = append(rows, row{id: fmt.Sprintf("%s-%04d", dom, i), ts: t0.Add(time.Duration(i) * time.Second), domain: dom, p: p(i), correct: -1, clusterID: 1, cluster: "c"})
		}
	}
	add("good", 400, func(i int) float64 { return 0.85 + 0.1*float64(i%10)/10 })
	add("degraded", 400, func(i int) float64 { return 0.3 + 0.6*float64(i%20)/20 })
	add("tiny_bad", 10, func(i int) float64 { return 0.4 })
	add("ok", 400, func(i int) float64 { return 0.7 + 0.2*float64(i%5)/5 })
	write(t, cfg, rows)
	require.NoError(t, InsertLabels(ctx, conn, cfg.Database, []Label{{TraceID: "degraded-0010", Correct: true, Source: "t", TS: t0}})) // p = 0.6

	r, err := conn.Query(ctx, "SELECT domain FROM "+cfg.Database+".labeling_queue")
	require.NoError(t, err)
	var order []string
	for r.Next() {
		var d string
		require.NoError(t, r.Scan(&d))
		order = append(order, d)
	}
	require.NoError(t, r.Err())
	// priority = (1 - acc) * sqrt(sum p(1-p)) / sqrt(1 + labelled): degraded
	// 0.4*sqrt(400*.2)/sqrt(2) = 2.5, ok 0.22*sqrt(400*.17) = 1.8, tiny_bad
	// 0.6*sqrt(10*.24) = 0.93, good 0.105*sqrt(400*.094) = 0.64.
	require.Equal(t, []string{"degraded", "ok", "tiny_bad", "good"}, order)

	reqs, err := RequestLabels(ctx, conn, cfg.Database, 2, 10, "batch-1", time.Now(), DefaultRequestExpiry)
	require.NoError(t, err)
	require.Len(t, reqs, 20)
	for i, q := range reqs[:10] {
		require.Equal(t, "degraded", q.Domain, i)
		require.NotEqual(t, "degraded-0010", q.TraceID, "labelled responses are not requested")
	}
	// Stratified: the first five requests cover the five strata present
	// (p from 0.3 to 0.87: strata 1..4), each its first in the stratum's order.
	seen := map[uint8]bool{}
	for _, q := range reqs[:4] {
		require.Equal(t, uint64(1), q.StratumRank)
		seen[q.Stratum] = true
	}
	require.Len(t, seen, 4)
	require.Equal(t, "ok", reqs[10].Domain)

	// Requested responses are not requested again.
	again, err := RequestLabels(ctx, conn, cfg.Database, 2, 10, "batch-2", time.Now(), DefaultRequestExpiry)
	require.NoError(t, err)
	got := map[string]bool{}
	for _, q := range reqs {
		got[q.TraceID] = true
	}
	for _, q := range again {
		require.False(t, got[q.TraceID], "requested twice: %s", q.TraceID)
	}
}

// TestLabelingQueueDiminishingReturns: labels lower a domain's priority as
// 1 / sqrt(1 + labelled + requested), so a large domain gives way to a small
// one of the same error rate after tens of labels, not after most of its
// traffic (with the share of open responses, 30 labels of 1,000 lowered it
// by 3% and it stayed first); a domain with nothing open is not queued.
func TestLabelingQueueDiminishingReturns(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	var rows []row
	add := func(dom string, n int) {
		for i := range n {
			rows = append(rows, row{id: fmt.Sprintf("%s-%04d", dom, i), ts: t0.Add(time.Duration(i) * time.Second), domain: dom, p: 0.5, correct: -1, clusterID: 1, cluster: "c"})
		}
	}
	add("big", 1000)
	add("small", 100)
	add("done", 4)
	write(t, cfg, rows)
	queue := func() (order []string, prio map[string]float64) {
		prio = map[string]float64{}
		r, err := conn.Query(ctx, "SELECT domain, priority FROM "+cfg.Database+".labeling_queue")
		require.NoError(t, err)
		for r.Next() {
			var d string
			var p float64
			require.NoError(t, r.Scan(&d, &p))
			order = append(order, d)
			prio[d] = p
		}
		require.NoError(t, r.Err())
		return order, prio
	}
	order, prio := queue()
	require.Equal(t, []string{"big", "small", "done"}, order)
	require.InDelta(t, 0.5*math.Sqrt(1000*0.25), prio["big"], 1e-9)
	require.InDelta(t, 0.5*math.Sqrt(100*0.25), prio["small"], 1e-9)

	var labels []Label
	for i := range 30 {
		labels = append(labels, Label{TraceID: fmt.Sprintf("big-%04d", i), Correct: i%2 == 0, Source: "t", TS: t0})
	}
	for i := range 4 {
		labels = append(labels, Label{TraceID: fmt.Sprintf("done-%04d", i), Correct: true, Source: "t", TS: t0})
	}
	require.NoError(t, InsertLabels(ctx, conn, cfg.Database, labels))
	order, prio = queue()
	require.Equal(t, []string{"small", "big", "done"}, order)
	require.InDelta(t, 0.5*math.Sqrt(1000*0.25)/math.Sqrt(31), prio["big"], 1e-9)
	require.Zero(t, prio["done"], "nothing left to label")
}

// TestLabelingQueueReadsLabels: where labels exist, the queue's error rate
// is the label-corrected one: two domains estimated alike, one whose labels
// say it is mostly wrong, rank apart (with the estimate's error rate they
// tied, and the one whose labels agreed came first by name).
func TestLabelingQueueReadsLabels(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	var rows []row
	var labels []Label
	for _, dom := range []string{"a-agrees", "b-wrong"} {
		for i := range 200 {
			id := fmt.Sprintf("%s-%03d", dom, i)
			rows = append(rows, row{id: id, ts: t0.Add(time.Duration(i) * time.Second), domain: dom, p: 0.5, correct: -1, clusterID: 1, cluster: "c"})
			if i < 20 {
				labels = append(labels, Label{TraceID: id, Correct: dom == "a-agrees" && i%2 == 0, Source: "t", TS: t0})
			}
		}
	}
	write(t, cfg, rows)
	require.NoError(t, InsertLabels(ctx, conn, cfg.Database, labels))
	r, err := conn.Query(ctx, "SELECT domain, priority, corrected FROM "+cfg.Database+".labeling_queue")
	require.NoError(t, err)
	var order []string
	prio, corr := map[string]float64{}, map[string]*float64{}
	for r.Next() {
		var d string
		var p float64
		var c *float64
		require.NoError(t, r.Scan(&d, &p, &c))
		order, prio[d], corr[d] = append(order, d), p, c
	}
	require.NoError(t, r.Err())
	require.Equal(t, []string{"b-wrong", "a-agrees"}, order)
	require.NotNil(t, corr["b-wrong"])
	require.InDelta(t, 0, *corr["b-wrong"], 1e-9) // 0.5 + (0 - 0.5): every label wrong
	require.InDelta(t, 0.5, *corr["a-agrees"], 1e-9)
	base := math.Sqrt(200*0.25) / math.Sqrt(21) // sqrt(var) / sqrt(1 + labelled)
	require.InDelta(t, 1.0*base, prio["b-wrong"], 1e-9)
	require.InDelta(t, 0.5*base, prio["a-agrees"], 1e-9)
}

// TestCandidatesRandomWithinStratum: the responses requested from a stratum
// are a random sample of it (what accuracy_corrected assumes of a bin's
// labels), not its most uncertain ones: from one stratum with p spread evenly
// over 0.2-0.4, 100 of 1,000 requests have a mean p near the stratum's 0.30
// (most uncertain first gave 0.39), and the same list comes on every read.
func TestCandidatesRandomWithinStratum(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	var rows []row
	for i := range 1000 {
		rows = append(rows, row{id: fmt.Sprintf("s-%04d", i), ts: t0.Add(time.Duration(i) * time.Second), domain: "S",
			p: 0.2 + 0.2*float64(i)/1000, correct: -1, clusterID: 1, cluster: "c"})
	}
	write(t, cfg, rows)
	var mean float64
	var n int
	first := func() []string {
		r, err := conn.Query(ctx, "SELECT trace_id, p_correct FROM "+cfg.Database+".labeling_candidates ORDER BY stratum_rank LIMIT 100")
		require.NoError(t, err)
		var ids []string
		mean, n = 0, 0
		for r.Next() {
			var id string
			var p float64
			require.NoError(t, r.Scan(&id, &p))
			ids = append(ids, id)
			mean += p
			n++
		}
		require.NoError(t, r.Err())
		return ids
	}
	ids := first()
	require.Equal(t, 100, n)
	mean /= float64(n)
	require.InDelta(t, 0.30, mean, 0.03, "mean p of the first 100 candidates")
	require.Equal(t, ids, first(), "the order is fixed")
}

// TestLabelingQueueDrift: a domain that was always hard and one whose
// estimate fell in the newest hour have about the same error rate and
// interval over the day; the drift term must put the degraded one first,
// and leave stationary domains' priorities as they were.
func TestLabelingQueueDrift(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	var rows []row
	add := func(dom string, hours, perHour int, p func(h, i int) float64) {
		rows = append(rows, hourlyRows(dom, hours, perHour, p)...)
	}
	// 24 hours x 100 responses. chronic: p 0.45..0.55 all day (mean 0.5).
	// degraded: p 0.75..0.85 for 23 hours, 0.45..0.55 in the newest hour.
	add("chronic", 24, 100, func(h, i int) float64 { return 0.45 + 0.1*float64(i%10)/9 })
	add("degraded", 24, 100, func(h, i int) float64 {
		if h == 23 {
			return 0.45 + 0.1*float64(i%10)/9
		}
		return 0.75 + 0.1*float64(i%10)/9
	})
	write(t, cfg, rows)

	type q struct {
		n, nOpen, nRecent    uint64
		acc, se, prio, dropZ float64
		recentAcc, baseAcc   *float64
	}
	got := map[string]q{}
	var order []string
	r, err := conn.Query(ctx, "SELECT domain, n, n_open, n_recent, accuracy, se, priority, drop_z, recent_accuracy, baseline_accuracy FROM "+cfg.Database+".labeling_queue")
	require.NoError(t, err)
	for r.Next() {
		var d string
		var v q
		require.NoError(t, r.Scan(&d, &v.n, &v.nOpen, &v.nRecent, &v.acc, &v.se, &v.prio, &v.dropZ, &v.recentAcc, &v.baseAcc))
		got[d] = v
		order = append(order, d)
	}
	require.NoError(t, r.Err())
	require.Equal(t, []string{"degraded", "chronic"}, order)

	base := func(v q) float64 { // the priority without the drift term
		return (1 - v.acc) * v.se * float64(v.n) / math.Sqrt(float64(1+v.n-v.nOpen)) // nothing labelled or requested here
	}
	c, d := got["chronic"], got["degraded"]
	// Without drift the chronic domain would come first: error rate 0.5 vs
	// 0.21 over the day.
	require.Greater(t, base(c), 2*base(d))
	require.Equal(t, uint64(100), c.nRecent)
	require.InDelta(t, 0.5, *c.recentAcc, 1e-9)
	require.InDelta(t, 0.5, *c.baseAcc, 1e-9)
	require.InDelta(t, 0, c.dropZ, 1e-9)
	require.InDelta(t, base(c), c.prio, 1e-9*base(c))
	// degraded: drop 0.3 with se sqrt(100*0.249/100^2 + 2300*0.159/2300^2) = 0.0503.
	wantZ := 0.3 / math.Sqrt(24.9/1e4+0.1590/2300*1)
	require.InDelta(t, 0.5, *d.recentAcc, 1e-9)
	require.InDelta(t, 0.8, *d.baseAcc, 1e-9)
	require.InDelta(t, wantZ, d.dropZ, 0.02*wantZ)
	// Beyond drop_k = 3 the error rate is the newest hour's, 0.5.
	require.InDelta(t, base(d)/(1-d.acc)*0.5*d.dropZ/3, d.prio, 1e-9*d.prio)
}

// TestAccuracyCorrected: an estimator that overestimates a domain by 0.25
// is corrected by a 10% sample of labels to within the interval of the
// truth; a domain without labels keeps its estimate and sampling interval.
func TestAccuracyCorrected(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(21, 22))
	var rows []row
	var labels []Label
	type agg struct{ n, sp, spq, nl, sy, sd, sd2 float64 }
	want := map[string]*[10]agg{"shifted": {}, "unlabelled": {}}
	truth := map[string]float64{}
	for i := range 4000 {
		dom := []string{"shifted", "unlabelled"}[i%2]
		p := 0.3 + 0.6*rng.Float64()
		y := 0.0
		if rng.Float64() < p-0.25 {
			y = 1
		}
		id := fmt.Sprintf("%s-%04d", dom, i)
		rows = append(rows, row{id: id, ts: t0.Add(time.Duration(i) * time.Second), domain: dom, p: p, correct: -1, clusterID: 1, cluster: "c"})
		truth[dom] += y / 2000
		b := &want[dom][min(int(p*10), 9)]
		b.n++
		b.sp += p
		b.spq += p * (1 - p)
		if dom == "shifted" && rng.Float64() < 0.1 {
			labels = append(labels, Label{TraceID: id, Correct: y == 1, Source: "t", TS: t0})
			b.nl++
			b.sy += y
			b.sd += y - p
			b.sd2 += (y - p) * (y - p)
		}
	}
	write(t, cfg, rows)
	require.NoError(t, InsertLabels(ctx, conn, cfg.Database, labels))

	r, err := conn.Query(ctx, "SELECT domain, n, estimated, n_labelled, corrected, se, lo, hi, coverage FROM "+cfg.Database+".accuracy_corrected")
	require.NoError(t, err)
	seen := 0
	for r.Next() {
		var dom string
		var n, nl uint64
		var est, corr, se, lo, hi, cov float64
		require.NoError(t, r.Scan(&dom, &n, &est, &nl, &corr, &se, &lo, &hi, &cov))
		seen++
		// The formula by hand. A labelled bin's variance is at least that
		// of its label rate smoothed by half a label each way; the
		// unlabelled bins' sum p(1-p) at least a(1-a) of their smoothed
		// accuracy (migration 010).
		var N, sp, corrSum, v, covN, nLab, nU, spU, spqU float64
		for _, b := range want[dom] {
			N += b.n
			sp += b.sp
			nLab += b.nl
			floor := (b.sy + 0.5) * (b.nl + 0.5 - b.sy) / ((b.nl + 1) * (b.nl + 1))
			switch {
			case b.nl >= 2:
				corrSum += b.n * b.sd / b.nl
				v += b.n * b.n * math.Max((b.sd2-b.sd*b.sd/b.nl)/(b.nl-1), floor) / b.nl
				covN += b.n
			case b.nl == 1:
				corrSum += b.n * b.sd
				m := b.sp / b.n
				v += b.n * b.n * math.Max(m*(1-m), floor)
				covN += b.n
			default:
				nU += b.n
				spU += b.sp
				spqU += b.spq
			}
		}
		if nU > 0 {
			v += math.Max(spqU, (spU+0.5)*(nU+0.5-spU)/((nU+1)*(nU+1)))
		}
		require.Equal(t, uint64(N), n, dom)
		require.Equal(t, uint64(nLab), nl, dom)
		require.InDelta(t, sp/N, est, 1e-9, dom)
		require.InDelta(t, (sp+corrSum)/N, corr, 1e-9, dom)
		require.InDelta(t, math.Sqrt(v)/N, se, 1e-9, dom)
		require.InDelta(t, corr-1.96*se, lo, 1e-9, dom)
		require.InDelta(t, covN/N, cov, 1e-9, dom)
		// And what it is for: the shifted domain's truth is inside the
		// corrected interval, far outside the uncorrected one.
		require.InDelta(t, truth[dom]+0.25, est, 0.03, dom)
		if dom == "shifted" {
			require.Greater(t, nl, uint64(150))
			require.Equal(t, 1.0, cov)
			require.True(t, lo <= truth[dom] && truth[dom] <= hi, "truth %.3f outside [%.3f, %.3f]", truth[dom], lo, hi)
			require.Less(t, math.Abs(corr-truth[dom]), 0.06)
		} else {
			require.Zero(t, nl)
			require.Zero(t, cov)
			require.Equal(t, est, corr)
		}
	}
	require.NoError(t, r.Err())
	require.Equal(t, 2, seen)
}

func TestReadLabels(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name, in string
		want     []Label
		err      string
	}{
		{"csv", "trace_id,correct,source,ts\na,true,human,2026-01-01T00:00:00Z\nb,0,,1767225600000\n", []Label{
			{TraceID: "a", Correct: true, Source: "human", TS: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
			{TraceID: "b", Correct: false, Source: "import", TS: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		}, ""},
		{"csv_minimal", "correct,trace_id\n1,x\n", []Label{{TraceID: "x", Correct: true, Source: "import", TS: now}}, ""},
		// A trace_id longer than any response id failed a whole import with
		// ClickHouse's "Max query size exceeded".
		{"id_longest", "trace_id,correct\n" + strings.Repeat("i", 1024) + ",1\n", []Label{{TraceID: strings.Repeat("i", 1024), Correct: true, Source: "import", TS: now}}, ""},
		{"id_too_long", "trace_id,correct\n" + strings.Repeat("i", 200000) + ",1\n", nil, "bytes, more than the 1024 a response id may have"},
		{"source_too_long", "trace_id,correct,source\na,1," + strings.Repeat("s", 300) + "\n", nil, "source of 300 bytes, more than 256"},
		{"jsonl", `{"trace_id":"a","correct":true,"source":"s","ts":"2026-01-01T00:00:00Z"}` + "\n\n" + `{"trace_id":"b","correct":0}` + "\n", []Label{
			{TraceID: "a", Correct: true, Source: "s", TS: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
			{TraceID: "b", Correct: false, Source: "import", TS: now},
		}, ""},
		{"yes_no", "trace_id,correct\na,Yes\nb,NO\n", []Label{
			{TraceID: "a", Correct: true, Source: "import", TS: now},
			{TraceID: "b", Correct: false, Source: "import", TS: now},
		}, ""},
		{"t_f_decimal", "trace_id,correct\na,T\nb,f\nc,1.0\nd,0.0\n", []Label{
			{TraceID: "a", Correct: true, Source: "import", TS: now},
			{TraceID: "b", Correct: false, Source: "import", TS: now},
			{TraceID: "c", Correct: true, Source: "import", TS: now},
			{TraceID: "d", Correct: false, Source: "import", TS: now},
		}, ""},
		{"json_strings", `{"trace_id":"a","correct":" yes "}` + "\n" + `{"trace_id":"b","correct":"y\u0065s"}` + "\n" + `{"trace_id":"c","correct":"F","ts":"2026-01-01T00:00:00Z"}`, []Label{
			{TraceID: "a", Correct: true, Source: "import", TS: now},
			{TraceID: "b", Correct: true, Source: "import", TS: now},
			{TraceID: "c", Correct: false, Source: "import", TS: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		}, ""},
		{"csv_duplicate_header", "trace_id,correct,correct\nz1,1,0\n", nil, `line 1: column "correct" appears twice in the header (columns 2 and 3)`},
		{"csv_multiline_line_numbers", "trace_id,correct,source\na,1,\"x\ny\nz\"\nb,maybe,s\n", nil, `line 5: trace b: correct is "maybe"`},
		{"bad_correct", "trace_id,correct\na,maybe\n", nil, "line 2: trace a: correct is \"maybe\"; want true/false, t/f, yes/no or 1/0"},
		{"json_bad_correct", `{"trace_id":"a","correct":2}`, nil, "line 1: trace a: correct is \"2\"; want true"},
		{"no_header", "a,1\n", nil, "lacks trace_id"},
		{"bad_json", "{\"trace_id\":\n", nil, "line 1: not valid JSON"},
		{"empty_id", `{"trace_id":"","correct":true}`, nil, "line 1: empty trace_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := ReadLabels(strings.NewReader(tc.in), "import", now)
			if err == nil {
				err = rd.Err()
			}
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, rd.Labels)
		})
	}
}

// LabelQueueState says why labels requests finds nothing: no rows, no
// estimated rows, or every response of the lookback labelled or requested.
func TestLabelQueueState(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	state := func() QueueState {
		t.Helper()
		s, err := LabelQueueState(ctx, conn, db)
		require.NoError(t, err)
		return s
	}
	s := state()
	require.Equal(t, QueueState{LookbackS: 86400}, s)
	require.Equal(t, db+".scored holds no responses yet", s.Reason(db))

	write(t, cfg, []row{{id: "nop", ts: t0, domain: "X", p: -1, correct: -1, clusterID: 1}})
	s = state()
	require.Equal(t, uint64(1), s.Rows)
	require.Zero(t, s.Scored)
	require.Contains(t, s.Reason(db), "the one response in "+db+".scored is not valid with a p_correct")

	var rows []row
	for i := range 6 {
		rows = append(rows, row{id: fmt.Sprintf("r%d", i), ts: t0.Add(time.Duration(i) * time.Second), domain: "X", p: 0.5, correct: -1, clusterID: 1})
	}
	rows[0].correct = 1 // labelled by the trace
	write(t, cfg, rows)
	require.Equal(t, uint64(5), state().Open())
	reqs, err := RequestLabels(ctx, conn, db, 5, 50, "b1", time.Now(), DefaultRequestExpiry)
	require.NoError(t, err)
	require.Len(t, reqs, 5)
	again, err := RequestLabels(ctx, conn, db, 5, 50, "b2", time.Now(), DefaultRequestExpiry)
	require.NoError(t, err)
	require.Empty(t, again)
	s = state()
	require.Equal(t, QueueState{Rows: 7, Scored: 6, Lookback: 6, Labelled: 1, Requested: 5, LookbackS: 86400}, s)
	require.Equal(t, "every one of the 6 responses in the queue lookback (the 86400 s before the newest response, alarm_settings.queue_lookback_s) is already labelled (1) or requested (5); import labels, or wait for new traffic", s.Reason(db))
}

// TestLabelVersions: a merge keeps the label labels_latest shows (migration
// 009). A label inserted after a newer one (by ts) does not win, before or
// after OPTIMIZE ... FINAL; two labels of one POST body without ts (one
// receipt time) resolve to the later one, before and after the merge.
// Before, merges kept the last inserted row: 1 became 0.
func TestLabelVersions(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	require.NoError(t, InsertLabels(ctx, conn, db, []Label{{TraceID: "late", Correct: true, Source: "a", TS: at(5)}}))
	require.NoError(t, InsertLabels(ctx, conn, db, []Label{{TraceID: "late", Correct: false, Source: "b", TS: at(4)}}))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	for _, body := range []string{
		`{"trace_id":"body","correct":true}` + "\n" + `{"trace_id":"body","correct":false}`,
		`{"trace_id":"body2","correct":false}` + "\n" + `{"trace_id":"body2","correct":true}`,
	} {
		rd, err := DecodeLabels([]byte(body), "api", mem)
		require.NoError(t, err)
		require.Len(t, rd.Labels, 1, "one label per trace: the message's last")
		require.Equal(t, 1, rd.Duplicates)
		require.NoError(t, InsertLabels(ctx, conn, db, rd.Labels))
	}
	// Two labels of one insert with one ts: the later one wins.
	require.NoError(t, InsertLabels(ctx, conn, db, []Label{{TraceID: "seq", Correct: true, Source: "api", TS: at(6)}, {TraceID: "seq", Correct: false, Source: "api", TS: at(6)}}))
	want := map[string]string{"late": "1 a", "body": "0 api", "body2": "1 api", "seq": "0 api"}
	latest := func() map[string]string {
		t.Helper()
		r, err := conn.Query(ctx, "SELECT trace_id, correct, source FROM "+db+".labels_latest")
		require.NoError(t, err)
		defer r.Close()
		got := map[string]string{}
		for r.Next() {
			var id, src string
			var c uint8
			require.NoError(t, r.Scan(&id, &c, &src))
			got[id] = fmt.Sprintf("%d %s", c, src)
		}
		require.NoError(t, r.Err())
		return got
	}
	require.Equal(t, want, latest())
	require.NoError(t, conn.Exec(ctx, "OPTIMIZE TABLE "+db+".labels FINAL"))
	require.Equal(t, want, latest(), "a merge must not change a label")
	var rows uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+db+".labels").Scan(&rows))
	require.Equal(t, uint64(4), rows, "the merge kept one row per trace")

	// The version orders by ts, then position in the insert, then correct.
	require.Less(t, LabelVersion(at(4), 9, true), LabelVersion(at(5), 0, false))
	require.Less(t, LabelVersion(at(4), 0, true), LabelVersion(at(4), 1, false))
	require.Less(t, LabelVersion(at(4), 1, false), LabelVersion(at(4), 1, true))
	require.Equal(t, LabelVersion(at(4), 1<<20-1, true), LabelVersion(at(4), 1<<30, true))
}

// TestCalibrationWeighted: labels requested stratum by stratum (16, 17, 17)
// from a domain whose responses are 1240, 168 and 32 in those strata. The
// estimator is miscalibrated only in the small high stratum. Weighted by
// the responses of each p_correct bin (migration 010), calibration and
// calibration_gap compare the domain's accuracy (gap 0.012, no alarm);
// unweighted, the 17 labels of 32 responses counted as much as the 16 of
// 1240 (gap 0.21, a false calibration_gap alarm).
func TestCalibrationWeighted(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	strata := []struct {
		responses, labels, correct int
		p                          float64
	}{{1240, 16, 2, 0.12}, {168, 17, 8, 0.5}, {32, 17, 5, 0.88}}
	var rows []row
	var labels []Label
	i := 0
	type bin struct{ N, n, sp, sy, sv float64 }
	var bins []bin
	for _, s := range strata {
		b := bin{N: float64(s.responses), n: float64(s.labels)}
		for j := range s.responses {
			id := fmt.Sprintf("r%04d", i)
			rows = append(rows, row{id: id, ts: t0.Add(time.Duration(i) * time.Minute), domain: "strat", p: s.p, correct: -1, clusterID: 1, cluster: "c"})
			if j < s.labels {
				labels = append(labels, Label{TraceID: id, Correct: j < s.correct, Source: "human", TS: t0.Add(48 * time.Hour)})
				b.sp += s.p
				b.sv += s.p * (1 - s.p)
				if j < s.correct {
					b.sy++
				}
			}
			i++
		}
		bins = append(bins, b)
	}
	write(t, cfg, rows)
	require.NoError(t, InsertLabels(ctx, conn, db, labels))

	var N, est, rea, v, nl, sp, sy, sv float64
	for _, b := range bins {
		N += b.N
		est += b.N * b.sp / b.n
		rea += b.N * b.sy / b.n
		v += b.N * b.N * math.Max(b.sv, (b.sp+0.5)*(b.n+0.5-b.sp)/((b.n+1)*(b.n+1))) / (b.n * b.n)
		nl, sp, sy, sv = nl+b.n, sp+b.sp, sy+b.sy, sv+b.sv
	}
	est, rea = est/N, rea/N
	se := math.Sqrt(v) / N
	// Unweighted, the old views' answer, fires.
	require.Greater(t, math.Abs(sp-sy)/nl, math.Max(3*math.Sqrt(sv)/nl, 0.05))

	var n uint64
	var gotEst, gotRea, aee, gotSE, cov float64
	require.NoError(t, conn.QueryRow(ctx, "SELECT n, estimated, realised, aee, se, coverage FROM "+db+".calibration").Scan(&n, &gotEst, &gotRea, &aee, &gotSE, &cov))
	require.Equal(t, uint64(50), n)
	require.InDelta(t, est, gotEst, 1e-12)
	require.InDelta(t, rea, gotRea, 1e-12)
	require.InDelta(t, 0.012, aee, 0.001)
	require.InDelta(t, se, gotSE, 1e-12)
	require.InDelta(t, 1, cov, 1e-12)

	var value, baseline, threshold float64
	var evaluated, fires uint8
	require.NoError(t, conn.QueryRow(ctx, "SELECT n, value, baseline, assumeNotNull(threshold), evaluated, firing FROM "+db+".alarm_checks WHERE kind = 'calibration_gap'").
		Scan(&n, &value, &baseline, &threshold, &evaluated, &fires))
	require.Equal(t, uint64(50), n)
	require.InDelta(t, est, value, 1e-12)
	require.InDelta(t, rea, baseline, 1e-12)
	require.InDelta(t, math.Max(3*se, 0.05), threshold, 1e-12)
	require.Equal(t, uint8(1), evaluated)
	require.Zero(t, fires, "no calibration_gap alarm: the estimator is off only where few responses are")
}

// TestLabelingQueueSparseDrift: a domain with fewer than min_n (50)
// responses an hour gets the drift boost too: its recent period widens to the
// newest windows that hold min_n responses. Without that, drop_z was 0 for
// it and the drop did not move it up the queue.
func TestLabelingQueueSparseDrift(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	var rows []row
	add := func(dom string, hours, perHour int, p func(h, i int) float64) {
		rows = append(rows, hourlyRows(dom, hours, perHour, p)...)
	}
	// busy: 100 an hour, p 0.45..0.55 all day. sparse: 20 an hour, p
	// 0.75..0.85 for 21 hours, 0.15..0.25 in the newest three.
	add("busy", 24, 100, func(h, i int) float64 { return 0.45 + 0.1*float64(i%10)/9 })
	add("sparse", 24, 20, func(h, i int) float64 {
		if h >= 21 {
			return 0.15 + 0.1*float64(i%10)/9
		}
		return 0.75 + 0.1*float64(i%10)/9
	})
	write(t, cfg, rows)

	type q struct {
		n, nRecent, windows uint64
		acc, prio, dropZ    float64
		recentAcc, baseAcc  *float64
	}
	got := map[string]q{}
	var order []string
	r, err := conn.Query(ctx, "SELECT domain, n, n_recent, toUInt64(recent_windows), accuracy, priority, drop_z, recent_accuracy, baseline_accuracy FROM "+cfg.Database+".labeling_queue")
	require.NoError(t, err)
	for r.Next() {
		var d string
		var v q
		require.NoError(t, r.Scan(&d, &v.n, &v.nRecent, &v.windows, &v.acc, &v.prio, &v.dropZ, &v.recentAcc, &v.baseAcc))
		got[d] = v
		order = append(order, d)
	}
	require.NoError(t, r.Err())
	b, s := got["busy"], got["sparse"]
	// busy holds min_n in the newest hour: its recent period stays one window.
	require.Equal(t, uint64(1), b.windows)
	require.Equal(t, uint64(100), b.nRecent)
	require.InDelta(t, 0, b.dropZ, 1e-9)
	// sparse needs three hours for 50 responses (20, 40, 60).
	require.Equal(t, uint64(3), s.windows)
	require.Equal(t, uint64(60), s.nRecent)
	require.InDelta(t, 0.2, *s.recentAcc, 1e-9)
	require.InDelta(t, 0.8, *s.baseAcc, 1e-9)
	// drop 0.6 with se about sqrt(60*0.16/60^2 + 420*0.159/420^2) = 0.055.
	require.InDelta(t, 0.6/math.Sqrt(60*0.16/3600+0.159/420), s.dropZ, 0.05*s.dropZ)
	// The boost puts the sparse domain first although busy has the higher
	// error rate over the day (0.5 vs 0.275) and five times the responses.
	require.Equal(t, []string{"sparse", "busy"}, order)
}

// hourlyRows is perHour unlabelled responses of domain dom an hour, spread
// evenly over each of hours hours from t0, with p_correct p(hour, i).
func hourlyRows(dom string, hours, perHour int, p func(h, i int) float64) []row {
	var rows []row
	for h := range hours {
		for i := range perHour {
			rows = append(rows, row{id: fmt.Sprintf("%s-%02d-%03d", dom, h, i), ts: t0.Add(time.Duration(h)*time.Hour + time.Duration(i)*time.Hour/time.Duration(perHour)),
				domain: dom, p: p(h, i), correct: -1, clusterID: 1, cluster: "c"})
		}
	}
	return rows
}

// A label's ts is RFC 3339 or Unix seconds or milliseconds (told apart by
// their range, as a response's created is), from 2000 to 2100. Before, a
// whole number was always milliseconds (seconds landed in 1970) and nothing
// was checked: 2200 was stored wrapped as 2063 and beat every later label.
func TestReadLabelsTS(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	jan1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, in string
		want     time.Time
		err      string
	}{
		{"csv_seconds", "trace_id,correct,ts\na,1,1767225600\n", jan1, ""},
		{"csv_milliseconds", "trace_id,correct,ts\na,1,1767225600000\n", jan1, ""},
		{"csv_fractional_seconds", "trace_id,correct,ts\na,1,1767225600.5\n", jan1.Add(500 * time.Millisecond), ""},
		{"json_seconds", `{"trace_id":"a","correct":1,"ts":1767225600}`, jan1, ""},
		{"json_seconds_string", `{"trace_id":"a","correct":1,"ts":"1767225600"}`, jan1, ""},
		{"rfc3339_offset", "trace_id,correct,ts\na,1,2026-01-01T01:00:00+01:00\n", jan1, ""},
		{"first_instant", "trace_id,correct,ts\na,1,2000-01-01T00:00:00Z\n", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), ""},
		{"rfc3339_2200", "trace_id,correct,ts\na,1,2026-01-01T00:00:00Z\nz,1,2200-01-01T00:00:00Z\n", time.Time{},
			"line 3: trace z: ts 2200-01-01T00:00:00Z is out of range: want RFC 3339 (e.g. 2026-03-01T12:00:00Z) or Unix seconds or milliseconds, between 2000-01-01 and 2100-01-01"},
		{"rfc3339_2100", "trace_id,correct,ts\nz,1,2100-01-01T00:00:00Z\n", time.Time{}, "line 2: trace z: ts 2100-01-01T00:00:00Z is out of range"},
		{"rfc3339_1999", `{"trace_id":"z","correct":1,"ts":"1999-12-31T23:59:59Z"}`, time.Time{}, "line 1: trace z: ts 1999-12-31T23:59:59Z is out of range"},
		{"negative", "trace_id,correct,ts\nz,0,-1000\n", time.Time{}, "line 2: trace z: ts -1000 is out of range: want RFC 3339"},
		{"zero", `{"trace_id":"z","correct":1,"ts":0}`, time.Time{}, "line 1: trace z: ts 0 is out of range"},
		{"milliseconds_2200", `{"trace_id":"z","correct":1,"ts":7258118400000}`, time.Time{}, "line 1: trace z: ts 7258118400000 is out of range"},
		{"between_ranges", `{"trace_id":"z","correct":1,"ts":5000000000}`, time.Time{}, "line 1: trace z: ts 5000000000 is out of range"},
		{"not_a_time", `{"trace_id":"z","correct":1,"ts":"yesterday"}`, time.Time{}, `line 1: trace z: ts "yesterday" is not a time: want RFC 3339`},
		// The newest label wins: one dated in 2099 won over every later
		// correction, each reported stored (retrain audit F1). Clock skew
		// up to 5 minutes is taken.
		{"future_2099", "trace_id,correct,ts\nz,1,2099-01-01T00:00:00Z\n", time.Time{},
			"line 2: trace z: ts 2099-01-01T00:00:00Z is in the future (now is 2026-01-02T03:04:05Z): the newest label of a trace wins"},
		{"future_seconds", `{"trace_id":"z","correct":1,"ts":4070908800}`, time.Time{}, "line 1: trace z: ts 4070908800 is in the future"},
		{"skew_4min", "trace_id,correct,ts\na,1,2026-01-02T03:08:05Z\n", now.Add(4 * time.Minute), ""},
		{"skew_6min", "trace_id,correct,ts\nz,1,2026-01-02T03:10:05Z\n", time.Time{}, "line 2: trace z: ts 2026-01-02T03:10:05Z is in the future"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := ReadLabels(strings.NewReader(tc.in), "import", now)
			require.NoError(t, err)
			if tc.err != "" {
				require.ErrorContains(t, rd.Err(), tc.err)
				return
			}
			require.NoError(t, rd.Err())
			require.Len(t, rd.Labels, 1)
			require.Equal(t, tc.want, rd.Labels[0].TS)
		})
	}
}

// With a zero now (ImportLabels stamps the labels without ts later) a ts
// is checked against the wall clock.
func TestReadLabelsFutureWallClock(t *testing.T) {
	rd, err := ReadLabels(strings.NewReader("trace_id,correct,ts\nz,1,2099-01-01T00:00:00Z\na,0,2026-01-01T00:00:00Z\n"), "import", time.Time{})
	require.NoError(t, err)
	require.ErrorContains(t, rd.Err(), "line 2: trace z: ts 2099-01-01T00:00:00Z is in the future")
	require.Len(t, rd.Labels, 1, "the other label is read")
}

// A file made by labels requests, with correct filled in, imports: the
// other columns are ignored, and response_ts is not read as the label's ts.
// With a zero now, labels without ts keep a zero TS for ImportLabels.
func TestReadLabelsRequestsFile(t *testing.T) {
	csvIn := "trace_id,model,domain,p_correct,uncertainty,stratum,stratum_rank,priority,response_ts,prompt,batch,correct\n" +
		"r1,m1,d,0.5,0,2,1,0.3,2026-03-01T00:00:00Z,\"2+2?\",b1,yes\n"
	jsonIn := `{"trace_id":"r1","model":"m1","domain":"d","p_correct":0.5,"uncertainty":0,"stratum":2,"stratum_rank":1,"priority":0.3,"response_ts":"2026-03-01T00:00:00Z","prompt":"2+2?","batch":"b1","correct":true}`
	for _, in := range []string{csvIn, jsonIn} {
		rd, err := ReadLabels(strings.NewReader(in), "import", time.Time{})
		require.NoError(t, err)
		require.Equal(t, LabelsRead{Labels: []Label{{TraceID: "r1", Correct: true, Source: "import"}}}, rd)
	}
}

// labelBatch is a label.v1 Arrow IPC message of one label at ts (ms).
func labelBatch(t testing.TB, mem memory.Allocator, id string, ms int64) []byte {
	t.Helper()
	b := array.NewRecordBuilder(mem, schemas.Label)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append(id)
	b.Field(1).(*array.BooleanBuilder).Append(true)
	b.Field(2).(*array.StringBuilder).Append("annotator")
	b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(ms))
	rec := b.NewRecordBatch()
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schemas.Label), ipc.WithAllocator(mem))
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// feed is a LabelFeed of msgs, then nothing.
type feed struct {
	msgs []kafka.Message
}

func (f *feed) Fetch(ctx context.Context) (kafka.Message, error) {
	if len(f.msgs) > 0 {
		m := f.msgs[0]
		f.msgs = f.msgs[1:]
		return m, nil
	}
	<-ctx.Done()
	return kafka.Message{}, ctx.Err()
}

func (f *feed) Commit(context.Context, ...kafka.Message) error { return nil }

// An Arrow label whose ts lies outside 2000..2100 is refused, as one with an
// empty trace_id is: DecodeLabels names the row, FollowLabels logs, counts
// and skips it (the topic goes on), and nothing is stored wrapped. Before,
// 2200-01-01 was stored as 2063.
func TestLabelBatchTSRange(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	for _, at := range []time.Time{time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(-1, 0), time.Unix(1767225600, 0)} {
		ms := at.UnixMilli()
		if at.Year() == 2026 {
			ms = at.Unix() // seconds in a millisecond column: 1970
		}
		rd, err := DecodeLabels(labelBatch(t, mem, "w", ms), "kafka", mem)
		require.NoError(t, err)
		require.Empty(t, rd.Labels)
		require.Equal(t, map[string]int{RefusedTS: 1}, rd.Reasons)
		require.ErrorContains(t, rd.Err(), "label batch row 0: trace w: ts ", at)
		require.ErrorContains(t, rd.Err(), "is not between 2000-01-01 and 2100-01-01", at)
	}
	ok, err := DecodeLabels(labelBatch(t, mem, "ok", t0.UnixMilli()), "kafka", mem)
	require.NoError(t, err)
	require.Equal(t, []Label{{TraceID: "ok", Correct: true, Source: "annotator", TS: t0}}, ok.Labels)

	f := &feed{msgs: []kafka.Message{
		{Offset: 0, Value: labelBatch(t, mem, "w", time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())},
		{Offset: 1, Value: labelBatch(t, mem, "w", t0.UnixMilli())},
	}}
	var stored, dropped atomic.Int64
	var log bytes.Buffer
	var mu sync.Mutex
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- FollowLabels(fctx, f, conn, cfg.Database, "kafka", mem, slog.New(slog.NewTextHandler(lockedWriter{&mu, &log}, nil)),
			FollowCounters{Stored: func(n int) { stored.Add(int64(n)) }, Dropped: func() { dropped.Add(1) }})
	}()
	require.Eventually(t, func() bool { return stored.Load() == 1 }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.EqualValues(t, 1, dropped.Load())
	mu.Lock()
	require.Contains(t, log.String(), "ts 2200-01-01T00:00:00Z is not between 2000-01-01 and 2100-01-01")
	mu.Unlock()
	var n uint64
	var ts time.Time
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(), max(ts) FROM "+cfg.Database+".labels").Scan(&n, &ts))
	require.EqualValues(t, 1, n, "only the label in range is stored")
	require.Equal(t, t0, ts.UTC())
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// latestLabels is labels_latest of db: trace_id -> "correct source".
func latestLabels(t *testing.T, conn driver.Conn, db string) map[string]string {
	t.Helper()
	r, err := conn.Query(context.Background(), "SELECT trace_id, correct, source FROM "+db+".labels_latest")
	require.NoError(t, err)
	defer r.Close()
	got := map[string]string{}
	for r.Next() {
		var id, src string
		var c uint8
		require.NoError(t, r.Scan(&id, &c, &src))
		got[id] = fmt.Sprintf("%d %s", c, src)
	}
	require.NoError(t, r.Err())
	return got
}

// Importing a file again changes nothing: a label without ts whose
// trace_id, correct and source are stored already is skipped (file A
// (b1, 1), then B (b1, 0, review), then A again: b1 stays 0; before, A's
// label got the new import time and b1 went back to 1). Labels with a ts
// are stored again with their version, which changes nothing either; a
// label without ts that differs (another source) is stored as the newest.
// Labels of traces that match no response in scored are stored and counted.
func TestImportLabelsAgain(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	write(t, cfg, []row{{id: "b1", ts: t0, domain: "X", p: 0.5, correct: -1}, {id: "b2", ts: t0, domain: "X", p: 0.5, correct: -1}})
	read := func(in string) []Label {
		t.Helper()
		rd, err := ReadLabels(strings.NewReader(in), "import", time.Time{})
		require.NoError(t, err)
		require.NoError(t, rd.Err())
		return rd.Labels
	}
	fileA := read("trace_id,correct,ts\nb1,1,\nb2,1,2026-03-01T01:00:00Z\nx9,0,\n")
	fileB := read("trace_id,correct,source\nb1,0,review\n")
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }

	res, err := ImportLabels(ctx, conn, db, fileA, at(120))
	require.NoError(t, err)
	require.Equal(t, Imported{Stored: 3, Unscored: 1}, res, "x9 matches no response")
	res, err = ImportLabels(ctx, conn, db, fileB, at(130))
	require.NoError(t, err)
	require.Equal(t, Imported{Stored: 1}, res)
	want := map[string]string{"b1": "0 review", "b2": "1 import", "x9": "0 import"}
	require.Equal(t, want, latestLabels(t, conn, db))

	res, err = ImportLabels(ctx, conn, db, fileA, at(140))
	require.NoError(t, err)
	require.Equal(t, want, latestLabels(t, conn, db), "importing A again must not undo B")
	// b1's skipped label (1) differs from its current one (B's 0): named.
	require.Equal(t, Imported{Stored: 1, Skipped: 2, Reverting: []string{"b1"}}, res, "b1 and x9 skipped, b2 (with its ts) stored again")

	// Also after ClickHouse merged labels down to each trace's newest row
	// (before migration 014 the skip looked there, and A undid B again).
	require.NoError(t, conn.Exec(ctx, "OPTIMIZE TABLE "+db+".labels FINAL"))
	res, err = ImportLabels(ctx, conn, db, fileA, at(145))
	require.NoError(t, err)
	require.Equal(t, want, latestLabels(t, conn, db), "importing A again after a merge must not undo B")
	require.Equal(t, Imported{Stored: 1, Skipped: 2, Reverting: []string{"b1"}}, res)

	// A new answer without ts (another source) is stored as the newest.
	res, err = ImportLabels(ctx, conn, db, read("trace_id,correct,source\nb1,1,second-review\n"), at(150))
	require.NoError(t, err)
	require.Equal(t, Imported{Stored: 1}, res)
	require.Equal(t, "1 second-review", latestLabels(t, conn, db)["b1"])
}

// ImportLabels reads the stored labels and responses in bounded chunks: a
// file of 4,500 labels (more than two chunks, ids long enough for the byte
// bound to split them too) imports, and importing it again skips them all.
func TestImportLabelsChunks(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	long := strings.Repeat("x", 100)
	var in strings.Builder
	in.WriteString("trace_id,correct\n")
	for i := range 4500 {
		fmt.Fprintf(&in, "%s'%d,%d\n", long, i, i%2)
	}
	write(t, cfg, []row{{id: long + "'7", ts: t0, domain: "X", p: 0.5, correct: -1}})
	rd, err := ReadLabels(strings.NewReader(in.String()), "import", time.Time{})
	require.NoError(t, err)
	ls := rd.Labels
	require.Len(t, ls, 4500)
	res, err := ImportLabels(ctx, conn, cfg.Database, ls, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, Imported{Stored: 4500, Unscored: 4499}, res)
	res, err = ImportLabels(ctx, conn, cfg.Database, ls, t0.Add(2*time.Hour))
	require.NoError(t, err)
	require.Equal(t, Imported{Skipped: 4500}, res)

	var chunks [][]any
	ids := []string{"a", "b", "a", strings.Repeat("y", idChunkBytes), "c"}
	for i := range idChunkIDs + 1 {
		ids = append(ids, fmt.Sprint(i))
	}
	require.NoError(t, forIDChunks(ids, func(c ch.GroupSet) error { chunks = append(chunks, c.Value); return nil }))
	var n int
	for _, c := range chunks {
		require.LessOrEqual(t, len(c), idChunkIDs)
		n += len(c)
	}
	require.Equal(t, len(ids)-1, n, "every distinct id once")
	require.Equal(t, []any{"a", "b"}, chunks[0], "the long id starts a chunk of its own")
	require.Len(t, chunks[1], 1)
}

// Two request batches made in one second (one millisecond, even) get
// different names. Before, the name was the time to the second: two runs of
// labels requests in one second wrote one batch name.
func TestBatchName(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	var rows []row
	for i := range 4 {
		rows = append(rows, row{id: fmt.Sprintf("n%d", i), ts: t0.Add(time.Duration(i) * time.Second), domain: "X", p: 0.5, correct: -1, clusterID: 1})
	}
	write(t, cfg, rows)
	now := time.Date(2026, 11, 25, 10, 35, 11, 123e6, time.UTC)
	var names []string
	for range 3 {
		name, err := BatchName(ctx, conn, db, now)
		require.NoError(t, err)
		reqs, err := RequestLabels(ctx, conn, db, 1, 1, name, now, DefaultRequestExpiry)
		require.NoError(t, err)
		require.Len(t, reqs, 1)
		names = append(names, name)
	}
	require.Equal(t, []string{"20261125T103511.123Z", "20261125T103511.123Z-2", "20261125T103511.123Z-3"}, names)
	var batches uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT uniqExact(batch) FROM "+db+".label_requests").Scan(&batches))
	require.EqualValues(t, 3, batches)
}
