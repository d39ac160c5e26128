package main

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/entrowatch/entrowatch/operators/estimate"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams/runner"
)

// sliceRow is estimated vs true accuracy of one model x domain.
type sliceRow struct {
	Model, Domain string
	N             uint64
	Est, SE       float64
	True          float64 // NaN when no response carries a label
}

// alarmKey identifies one alarm series.
type alarmKey struct{ Kind, Model, Domain, Feature string }

// alarmRow is one firing row of the alarms view.
type alarmRow struct {
	alarmKey
	Window                           time.Time
	Value, Baseline, Stat, Threshold float64
	N                                uint64
}

// queueRow is one domain of the labeling queue.
type queueRow struct {
	Model, Domain string
	Est, SE       float64
	N             uint64
	Priority      float64
}

// demoView polls ClickHouse and draws the live table.
type demoView struct {
	db       driver.Conn
	database string
	sc       scenario
	models   []string
	plain    bool
	out      io.Writer
	speed    float64

	firstSeen  map[alarmKey]time.Time // simulated time an alarm was first seen firing
	firstWin   map[alarmKey]time.Time // its window then
	lastHour   int64                  // plain mode: the simulated hour last printed
	lastSlices []sliceRow
}

// newest returns the newest event time in ClickHouse (zero when empty).
func (v *demoView) newest(ctx context.Context) (time.Time, error) {
	var ts uint32
	var n uint64
	if err := v.db.QueryRow(ctx, "SELECT toUInt32(max(ts)), count() FROM "+v.database+".scored").Scan(&ts, &n); err != nil {
		return time.Time{}, fmt.Errorf("newest response: %w", err)
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return time.Unix(int64(ts), 0).UTC(), nil
}

// slices returns estimated vs true accuracy per model x domain over the last
// `window` seconds before the newest response (0: everything), restricted to
// [from, to) when to is after from.
func (v *demoView) slices(ctx context.Context, window int, from, to time.Time) ([]sliceRow, error) {
	where := "1"
	switch {
	case window > 0:
		where = fmt.Sprintf("toUInt32(ts) > (SELECT toUInt32(max(ts)) FROM %s.scored) - %d", v.database, window)
	case to.After(from):
		where = fmt.Sprintf("ts >= toDateTime(%d, 'UTC') AND ts < toDateTime(%d, 'UTC')", from.Unix(), to.Unix())
	}
	q := `SELECT model, domain, count() AS n, avg(p_correct) AS est,
    sqrt(sum(p_correct * (1 - p_correct))) / n AS se,
    if(sum(known) = 0, nan, sum(truth_correct) / sum(known)) AS truth
FROM
(
    SELECT trace_id, ts, model, domain, p_correct FROM ` + v.database + `.scored_ok WHERE ` + where + `
) ANY LEFT JOIN (SELECT trace_id, toFloat64(correct) AS truth_correct, 1 AS known FROM ` + v.database + `.demo_truth) USING trace_id
GROUP BY model, domain
ORDER BY model, domain`
	rows, err := v.db.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("accuracy per domain: %w", err)
	}
	defer rows.Close()
	var out []sliceRow
	for rows.Next() {
		var s sliceRow
		if err := rows.Scan(&s.Model, &s.Domain, &s.N, &s.Est, &s.SE, &s.True); err != nil {
			return nil, fmt.Errorf("accuracy per domain: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// alarms returns the rows of the alarms view (the firing checks of the
// lookback), oldest window first.
func (v *demoView) alarms(ctx context.Context) ([]alarmRow, error) {
	rows, err := v.db.Query(ctx, `SELECT kind, model, domain, feature, toUInt32(window_start), n, value, baseline, statistic, threshold
FROM `+v.database+`.alarms ORDER BY window_start, kind, model, domain, feature`)
	if err != nil {
		return nil, fmt.Errorf("alarms: %w", err)
	}
	defer rows.Close()
	var out []alarmRow
	for rows.Next() {
		var a alarmRow
		var ws uint32
		if err := rows.Scan(&a.Kind, &a.Model, &a.Domain, &a.Feature, &ws, &a.N, &a.Value, &a.Baseline, &a.Stat, &a.Threshold); err != nil {
			return nil, fmt.Errorf("alarms: %w", err)
		}
		a.Window = time.Unix(int64(ws), 0).UTC()
		out = append(out, a)
	}
	return out, rows.Err()
}

// queue returns the labeling queue's domains, most useful to label first.
func (v *demoView) queue(ctx context.Context) ([]queueRow, error) {
	rows, err := v.db.Query(ctx, `SELECT model, domain, accuracy, se, n, priority
FROM `+v.database+`.labeling_queue ORDER BY priority DESC, model, domain LIMIT 5`)
	if err != nil {
		return nil, fmt.Errorf("labeling queue: %w", err)
	}
	defer rows.Close()
	var out []queueRow
	for rows.Next() {
		var q queueRow
		if err := rows.Scan(&q.Model, &q.Domain, &q.Est, &q.SE, &q.N, &q.Priority); err != nil {
			return nil, fmt.Errorf("labeling queue: %w", err)
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

// refresh polls ClickHouse, records newly firing alarms and draws a frame
// (in place on a terminal; once per simulated hour otherwise).
func (v *demoView) refresh(ctx context.Context, produced, written int64) error {
	now, err := v.newest(ctx)
	if err != nil || now.IsZero() {
		return err
	}
	sl, err := v.slices(ctx, 3600, time.Time{}, time.Time{})
	if err != nil {
		return err
	}
	v.lastSlices = sl
	al, err := v.alarms(ctx)
	if err != nil {
		return err
	}
	// The stream goes on while the views are read: an alarm is seen at the
	// newest response after the alarms were read, not at now, which is older
	// than the data the alarm may already reflect (under load an alarm on the
	// 12:00 window was reported as seen at 11:43).
	seen, err := v.newest(ctx)
	if err != nil {
		return err
	}
	if v.firstWin == nil {
		v.firstWin = map[alarmKey]time.Time{}
	}
	firing := map[string][]string{} // by model/domain: the kinds firing in the newest two windows
	for _, a := range al {
		if _, ok := v.firstSeen[a.alarmKey]; !ok {
			v.firstSeen[a.alarmKey] = seen
			v.firstWin[a.alarmKey] = a.Window
		}
		k := a.Model + "/" + a.Domain
		if now.Sub(a.Window) < 2*time.Hour && !slices.Contains(firing[k], a.Kind) {
			firing[k] = append(firing[k], a.Kind)
		}
	}
	q, err := v.queue(ctx)
	if err != nil {
		return err
	}
	hour := now.Unix() / 3600
	if v.plain && hour == v.lastHour {
		return nil
	}
	v.lastHour = hour
	var b strings.Builder
	if !v.plain {
		b.WriteString("\x1b[H\x1b[2J")
	}
	v.frame(&b, now, produced, written, sl, al, firing, q)
	_, err = io.WriteString(v.out, b.String())
	return err
}

func (v *demoView) frame(b *strings.Builder, now time.Time, produced, written int64, sl []sliceRow, al []alarmRow, firing map[string][]string, q []queueRow) {
	elapsed := now.Sub(v.sc.Start)
	frac := math.Min(1, math.Max(0, float64(elapsed)/float64(v.sc.Day)))
	fmt.Fprintf(b, "entrowatch demo · simulated %s UTC [%s] %3.0f%% · %s\n",
		now.Format("2006-01-02 15:04"), bar(frac, 24), 100*frac, speedText(v.speed))
	fmt.Fprintf(b, "responses: %d produced, %d scored into ClickHouse\n", produced, written)
	deg := v.sc.Start.Add(v.sc.At)
	if now.Before(deg) {
		fmt.Fprintf(b, "scenario: at %s a new tenant (%s) starts sending %gx %s's traffic as %s prompts (harder) under the name %s\n",
			deg.Format("15:04"), newTenant, v.sc.Surge-1, v.sc.Degrade, v.sc.Into, v.sc.Degrade)
	} else {
		fmt.Fprintf(b, "scenario: since %s a new tenant (%s) sends %gx %s's traffic as %s prompts (harder) under the name %s\n",
			deg.Format("15:04"), newTenant, v.sc.Surge-1, v.sc.Degrade, v.sc.Into, v.sc.Degrade)
	}
	fmt.Fprintf(b, "\nlast hour                    n  estimated [95%% interval]  true   0 ··· E=estimate T=true ··· 1\n")
	for _, s := range sl {
		name := s.Domain
		if len(v.models) > 1 {
			name = s.Model + "/" + s.Domain
		}
		lo, hi := max(0, s.Est-1.96*s.SE), min(1, s.Est+1.96*s.SE)
		fmt.Fprintf(b, "%-24s %6d  %5.3f [%5.3f, %5.3f]  %s  %s", name, s.N, s.Est, lo, hi, f3nan(s.True), scale(s.Est, lo, hi, s.True, 25))
		if kinds := firing[s.Model+"/"+s.Domain]; len(kinds) > 0 {
			sort.Strings(kinds)
			fmt.Fprintf(b, "  ALARM %s", strings.Join(kinds, ","))
		}
		b.WriteByte('\n')
	}
	var cur []alarmRow // firing in the newest two windows
	for _, a := range al {
		if now.Sub(a.Window) < 2*time.Hour {
			cur = append(cur, a)
		}
	}
	fmt.Fprintf(b, "\nalarms firing now (alarms view, windows of 1 h):\n")
	if len(cur) == 0 {
		b.WriteString("  none\n")
	}
	for _, a := range cur {
		fmt.Fprintf(b, "  %-15s %s/%s%s window %s: %s\n", a.Kind, a.Model, a.Domain, featureSuffix(a.Feature),
			a.Window.Format("15:04"), alarmText(a))
	}
	b.WriteString("\nlabeling queue (labeling_queue view: the last 3 hours, top 5):\n")
	if len(q) == 0 {
		b.WriteString("  empty\n")
	}
	for i, r := range q {
		fmt.Fprintf(b, "  %d. %s/%s  estimated %.3f ± %.3f over %d responses (priority %.3g)\n", i+1, r.Model, r.Domain, r.Est, 1.96*r.SE, r.N, r.Priority)
	}
	b.WriteByte('\n')
}

func featureSuffix(f string) string {
	if f == "" {
		return ""
	}
	return " (" + f + ")"
}

func alarmText(a alarmRow) string {
	switch a.Kind {
	case "accuracy_drop":
		return fmt.Sprintf("estimated %.3f vs baseline %.3f, drop %.3f > %.3f (n=%d)", a.Value, a.Baseline, a.Stat, a.Threshold, a.N)
	case "psi":
		return fmt.Sprintf("PSI %.3f > %.3f (n=%d)", a.Stat, a.Threshold, a.N)
	case "cusum":
		return fmt.Sprintf("CUSUM %.2f > %.2f, estimated %.3f vs reference %.3f", a.Stat, a.Threshold, a.Value, a.Baseline)
	}
	return fmt.Sprintf("value %.3f baseline %.3f statistic %.3f > %.3f (n=%d)", a.Value, a.Baseline, a.Stat, a.Threshold, a.N)
}

func f3nan(v float64) string {
	if math.IsNaN(v) {
		return "  -  "
	}
	return fmt.Sprintf("%5.3f", v)
}

// bar is a progress bar of width w.
func bar(frac float64, w int) string {
	n := int(math.Round(frac * float64(w)))
	return strings.Repeat("#", n) + strings.Repeat("·", w-n)
}

// scale draws [lo, hi] as '-', the estimate as E and the truth as T (X when
// they share a cell) on a 0..1 axis of w cells.
func scale(est, lo, hi, truth float64, w int) string {
	cell := func(x float64) int { return int(math.Round(math.Min(1, math.Max(0, x)) * float64(w-1))) }
	c := []rune(strings.Repeat("·", w))
	for i := cell(lo); i <= cell(hi); i++ {
		c[i] = '-'
	}
	e := cell(est)
	c[e] = 'E'
	if !math.IsNaN(truth) {
		if t := cell(truth); t == e {
			c[t] = 'X'
		} else {
			c[t] = 'T'
		}
	}
	return "|" + string(c) + "|"
}

// demoSummary is what the demo reports at the end.
type demoSummary struct {
	Day             []sliceRow // whole day per model x domain
	Before, After   []sliceRow // the degrading domain before / after the start
	AEEMean, AEEMed float64
	Rho             float64
	Degrade, Into   string
	DegradeAt       time.Time
	Alarm           *alarmRow // first alarm seen on the degraded domain after the start
	AlarmSeen       time.Time // simulated time it was first seen
	AlarmLatency    time.Duration
	AlarmKinds      []string // kinds that fired on the degraded domain
	Other           []string // alarms on other slices (false alarms in this scenario)
	Early           []string // alarms on the degraded domain before the degradation
	Queue           []queueRow
	Round           *labelRound // the labeling round after the day, nil if nothing was queued
	Speed           float64     // 0: unpaced, the latency is not measured
	Wall            time.Duration
	Rows            int64 // responses replayed
	Redelivered     int64 // rows the sink wrote more than once (at-least-once; the views deduplicate)
	Tokens          int64
	DeadLettered    int64
	Rejected        int64
	Stages          map[string]time.Duration
}

func (v *demoView) summary(ctx context.Context, wall time.Duration, st runner.Stats, produced, rejected int64) (*demoSummary, error) {
	s := &demoSummary{Degrade: v.sc.Degrade, Into: v.sc.Into, DegradeAt: v.sc.Start.Add(v.sc.At), Wall: wall, Speed: v.speed,
		Rows: produced, Redelivered: max(0, st.SinkRows-produced), Rejected: rejected, Stages: st.Stages}
	for _, n := range st.DeadLettered {
		s.DeadLettered += n
	}
	var err error
	if s.Day, err = v.slices(ctx, 0, time.Time{}, time.Time{}); err != nil {
		return nil, err
	}
	if s.Before, err = v.slices(ctx, 0, v.sc.Start, s.DegradeAt); err != nil {
		return nil, err
	}
	if s.After, err = v.slices(ctx, 0, s.DegradeAt, v.sc.Start.Add(v.sc.Day+time.Hour)); err != nil {
		return nil, err
	}
	var est, tru, aee []float64
	for _, r := range s.Day {
		if math.IsNaN(r.True) {
			continue
		}
		est = append(est, r.Est)
		tru = append(tru, r.True)
		aee = append(aee, math.Abs(r.Est-r.True))
	}
	if len(aee) > 0 {
		s.AEEMean, s.AEEMed = mean(aee), medianOf(aee)
		s.Rho = estimate.Spearman(est, tru)
	}
	if err := v.db.QueryRow(ctx, "SELECT sum(n_tokens) FROM (SELECT n_tokens FROM "+v.database+".scored FINAL)").Scan(&s.Tokens); err != nil {
		return nil, fmt.Errorf("token count: %w", err)
	}
	// Alarms: those seen live, plus what the view shows now (fast replays
	// may have finished between two polls).
	al, err := v.alarms(ctx)
	if err != nil {
		return nil, err
	}
	now, err := v.newest(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range al {
		if _, ok := v.firstSeen[a.alarmKey]; !ok {
			v.firstSeen[a.alarmKey] = now
			v.firstWin[a.alarmKey] = a.Window
		}
	}
	keys := make([]alarmKey, 0, len(v.firstSeen))
	for k := range v.firstSeen {
		keys = append(keys, k)
	}
	rank := map[string]int{"accuracy_drop": 0, "cusum": 1, "psi": 2} // ties (seen in one poll): the plainest kind first
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if sa, sb := v.firstSeen[a], v.firstSeen[b]; !sa.Equal(sb) {
			return sa.Before(sb)
		}
		ra, oka := rank[a.Kind]
		rb, okb := rank[b.Kind]
		if !oka {
			ra = len(rank)
		}
		if !okb {
			rb = len(rank)
		}
		if ra != rb {
			return ra < rb
		}
		return fmt.Sprint(a) < fmt.Sprint(b)
	})
	kinds := map[string]bool{}
	for _, k := range keys {
		seen, win := v.firstSeen[k], v.firstWin[k]
		desc := fmt.Sprintf("%s %s/%s%s (window %s, seen %s)", k.Kind, k.Model, k.Domain, featureSuffix(k.Feature), win.Format("15:04"), seen.Format("15:04"))
		switch {
		case k.Domain != v.sc.Degrade:
			s.Other = append(s.Other, desc)
		case win.Add(time.Hour).Before(s.DegradeAt) || !win.Add(time.Hour).After(s.DegradeAt):
			s.Early = append(s.Early, desc)
		default:
			if !kinds[k.Kind] {
				kinds[k.Kind] = true
				s.AlarmKinds = append(s.AlarmKinds, k.Kind)
			}
			if s.Alarm == nil {
				a := alarmRow{alarmKey: k, Window: win}
				s.Alarm, s.AlarmSeen = &a, seen
				s.AlarmLatency = seen.Sub(s.DegradeAt)
			}
		}
	}
	if s.Queue, err = v.queue(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// labelRound is the labeling team's work after the day: label the queue's
// candidates of the top domain, then compare estimate and truth on them.
type labelRound struct {
	Model, Domain      string
	Requested          int
	N                  uint64
	Est, Realised, AEE float64
	ECE                float64
	QueueAfter         []queueRow
	// The accuracy_corrected view for the domain over the queue lookback,
	// and the truth of the same responses.
	Lookback                           time.Duration
	CorrN, CorrLabelled                uint64
	CorrEst, Corrected, CorrLo, CorrHi float64
	CorrTrue                           float64
}

// label plays the labeling team: it requests perDomain responses of the
// queue's top domain (entrowatch labels requests), answers them from the
// truth the demo kept aside (entrowatch labels import) and reads the
// calibration view for that domain.
func (v *demoView) label(ctx context.Context, truth map[string]bool, perDomain int, now time.Time) (*labelRound, error) {
	reqs, err := clickhouse.RequestLabels(ctx, v.db, v.database, 1, perDomain, "demo", now, clickhouse.DefaultRequestExpiry)
	if err != nil {
		return nil, err
	}
	if len(reqs) == 0 {
		return nil, nil
	}
	labels := make([]clickhouse.Label, 0, len(reqs))
	for _, r := range reqs {
		y, ok := truth[r.TraceID]
		if !ok {
			return nil, fmt.Errorf("labeling: no truth for requested trace %s", r.TraceID)
		}
		labels = append(labels, clickhouse.Label{TraceID: r.TraceID, Correct: y, Source: "demo-labeler", TS: now})
	}
	if err := clickhouse.InsertLabels(ctx, v.db, v.database, labels); err != nil {
		return nil, err
	}
	lr := &labelRound{Model: reqs[0].Model, Domain: reqs[0].Domain, Requested: len(reqs)}
	err = v.db.QueryRow(ctx, `SELECT n, estimated, realised, aee, ece FROM `+v.database+`.calibration WHERE model = ? AND domain = ?`,
		lr.Model, lr.Domain).Scan(&lr.N, &lr.Est, &lr.Realised, &lr.AEE, &lr.ECE)
	if err != nil {
		return nil, fmt.Errorf("calibration of %s/%s: %w", lr.Model, lr.Domain, err)
	}
	var lookback uint32
	err = v.db.QueryRow(ctx, `SELECT n, estimated, n_labelled, corrected, lo, hi,
    (SELECT argMax(queue_lookback_s, updated_at) FROM `+v.database+`.alarm_settings) AS lookback,
    (SELECT avg(toFloat64(t.correct)) FROM `+v.database+`.scored_ok AS s ANY INNER JOIN `+v.database+`.demo_truth AS t USING trace_id
     WHERE s.model = ? AND s.domain = ? AND toUInt32(s.ts) + (SELECT argMax(queue_lookback_s, updated_at) FROM `+v.database+`.alarm_settings) > (SELECT toUInt32(max(ts)) FROM `+v.database+`.scored)) AS truth
FROM `+v.database+`.accuracy_corrected WHERE model = ? AND domain = ?`, lr.Model, lr.Domain, lr.Model, lr.Domain).Scan(
		&lr.CorrN, &lr.CorrEst, &lr.CorrLabelled, &lr.Corrected, &lr.CorrLo, &lr.CorrHi, &lookback, &lr.CorrTrue)
	if err != nil {
		return nil, fmt.Errorf("accuracy_corrected of %s/%s: %w", lr.Model, lr.Domain, err)
	}
	lr.Lookback = time.Duration(lookback) * time.Second
	if lr.QueueAfter, err = v.queue(ctx); err != nil {
		return nil, err
	}
	return lr, nil
}

func (s *demoSummary) write(w io.Writer, port int, db string) {
	fmt.Fprintf(w, "\n== summary ==\n")
	fmt.Fprintf(w, "whole day, per domain            n  estimated   true   |error|\n")
	for _, r := range s.Day {
		fmt.Fprintf(w, "  %-26s %6d  %8.3f  %s  %s\n", r.Model+"/"+r.Domain, r.N, r.Est, f3nan(r.True), f3nan(math.Abs(r.Est-r.True)))
	}
	for _, ph := range []struct {
		name string
		rows []sliceRow
	}{{"before " + s.DegradeAt.Format("15:04"), s.Before}, {"after " + s.DegradeAt.Format("15:04"), s.After}} {
		for _, r := range ph.rows {
			if r.Domain == s.Degrade {
				fmt.Fprintf(w, "  %-26s %6d  %8.3f  %s  %s   (%s)\n", r.Model+"/"+r.Domain, r.N, r.Est, f3nan(r.True), f3nan(math.Abs(r.Est-r.True)), ph.name)
			}
		}
	}
	fmt.Fprintf(w, "AEE over %d domains: mean %.3f, median %.3f; Spearman rho %.3f\n", len(s.Day), s.AEEMean, s.AEEMed, s.Rho)
	if s.Alarm != nil && s.Speed == 0 {
		fmt.Fprintf(w, "alarm: %s on %s/%s, first firing window %s (kinds fired: %s); latency not measured at --speed 0 (the day passes between two polls)\n",
			s.Alarm.Kind, s.Alarm.Model, s.Alarm.Domain, s.Alarm.Window.Format("15:04"), strings.Join(s.AlarmKinds, ","))
	} else if s.Alarm != nil {
		fmt.Fprintf(w, "alarm: %s on %s/%s first seen at simulated %s, %s after the degradation began at %s (window %s; kinds fired: %s)\n",
			s.Alarm.Kind, s.Alarm.Model, s.Alarm.Domain, s.AlarmSeen.Format("15:04"), fmtDur(s.AlarmLatency), s.DegradeAt.Format("15:04"),
			s.Alarm.Window.Format("15:04"), strings.Join(s.AlarmKinds, ","))
	} else {
		fmt.Fprintf(w, "alarm: none fired on %s after the degradation began at %s\n", s.Degrade, s.DegradeAt.Format("15:04"))
	}
	fmt.Fprintf(w, "other alarms (false in this scenario): %d%s\n", len(s.Other)+len(s.Early), listTail(append(append([]string(nil), s.Early...), s.Other...)))
	if len(s.Queue) > 0 {
		fmt.Fprintf(w, "labeling queue: first %s/%s (estimated %.3f)", s.Queue[0].Model, s.Queue[0].Domain, s.Queue[0].Est)
		oneModel := true
		for _, q := range s.Queue {
			oneModel = oneModel && q.Model == s.Queue[0].Model
		}
		for i, q := range s.Queue[1:] {
			if oneModel {
				fmt.Fprintf(w, ", %d. %s", i+2, q.Domain)
			} else { // traces of several LLMs (demo --traces): say whose domain
				fmt.Fprintf(w, ", %d. %s/%s", i+2, q.Model, q.Domain)
			}
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "labeling queue: empty")
	}
	if r := s.Round; r != nil {
		fmt.Fprintf(w, "labeling round: labelled the %d responses the queue requested from %s/%s (labeling_candidates, stratified by p); calibration view on them: estimated %.3f vs realised %.3f (AEE %.3f, ECE %.3f, n=%d)",
			r.Requested, r.Model, r.Domain, r.Est, r.Realised, r.AEE, r.ECE, r.N)
		fmt.Fprintf(w, "; accuracy_corrected over the last %s: estimated %.3f, corrected by %d labels %.3f [%.3f, %.3f], true %.3f (n=%d)",
			r.Lookback, r.CorrEst, r.CorrLabelled, r.Corrected, r.CorrLo, r.CorrHi, r.CorrTrue, r.CorrN)
		if len(r.QueueAfter) > 0 {
			fmt.Fprintf(w, "; queue now starts with %s/%s", r.QueueAfter[0].Model, r.QueueAfter[0].Domain)
		}
		fmt.Fprintln(w)
	}
	secs := s.Wall.Seconds()
	pace := "paced by --speed; --speed 0 or entrowatch bench pipeline measure capacity"
	if s.Speed == 0 {
		pace = "unpaced: the end-to-end capacity of one replica here"
	}
	fmt.Fprintf(w, "throughput: %d responses (%d tokens) through broker -> profile -> estimate -> ClickHouse in %.1fs: %.0f traces/s, %.0f tokens/s (%s)\n",
		s.Rows, s.Tokens, secs, float64(s.Rows)/secs, float64(s.Tokens)/secs, pace)
	if len(s.Stages) > 0 {
		names := make([]string, 0, len(s.Stages))
		var total time.Duration
		for n, d := range s.Stages {
			names = append(names, n)
			total += d
		}
		sort.Slice(names, func(i, j int) bool { return s.Stages[names[i]] > s.Stages[names[j]] })
		fmt.Fprintf(w, "stream worker time %.1fs by stage:", total.Seconds())
		for _, n := range names {
			fmt.Fprintf(w, " %s %.0f%%", n, 100*float64(s.Stages[n])/float64(total))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "dead-lettered: %d, rejected at ingest: %d, written twice after a redelivery: %d (the views count each trace once)\n", s.DeadLettered, s.Rejected, s.Redelivered)
	fmt.Fprintf(w, "\nexplore (while ClickHouse runs; entrowatch demo --keep keeps it up):\n")
	cl := fmt.Sprintf("clickhouse-client --port %d --query", port)
	for _, q := range []string{
		"SELECT domain, window_start, n, round(accuracy, 3) AS est, round(lo, 3) AS lo, round(hi, 3) AS hi FROM " + db + ".accuracy WHERE window_s = 3600 AND domain = '" + s.Degrade + "' ORDER BY window_start",
		"SELECT kind, domain, feature, window_start, round(value, 3) AS value, round(baseline, 3) AS baseline FROM " + db + ".alarms ORDER BY window_start",
		"SELECT model, domain, n, round(accuracy, 3) AS est, n_labelled, round(priority, 2) AS priority FROM " + db + ".labeling_queue",
		"SELECT model, domain, n, round(estimated, 3) AS estimated, round(realised, 3) AS realised, round(aee, 3) AS aee FROM " + db + ".calibration",
		"SELECT domain, stratum, trace_id, round(p_correct, 3) AS p FROM " + db + ".labeling_candidates LIMIT 10",
		"SELECT domain, count() AS n, round(avg(p_correct), 3) AS estimated, round(avg(truth), 3) AS realised FROM " + db + ".scored_ok ANY LEFT JOIN (SELECT trace_id, correct AS truth FROM " + db + ".demo_truth) USING trace_id GROUP BY domain ORDER BY domain",
		"SELECT attr_value AS tenant, round(avg(accuracy), 3) AS est FROM " + db + ".accuracy_by_attribute WHERE attr_key = 'tenant' AND domain = '" + s.Degrade + "' AND window_s = 86400 GROUP BY tenant ORDER BY est",
		"SELECT trace_id, ts, domain, round(p_correct, 3) AS p, n_tokens, round(mean, 4) AS mean_entropy FROM " + db + ".scored ORDER BY ts DESC LIMIT 10",
	} {
		fmt.Fprintf(w, "  %s \"%s\"\n", cl, q)
	}
}

func listTail(v []string) string {
	if len(v) == 0 {
		return ""
	}
	if len(v) > 5 {
		return ": " + strings.Join(v[:5], "; ") + fmt.Sprintf("; ... (%d more)", len(v)-5)
	}
	return ": " + strings.Join(v, "; ")
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-" + fmtDur(-d)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func medianOf(v []float64) float64 {
	c := append([]float64(nil), v...)
	sort.Float64s(c)
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

// gzipReader opens gzip data.
func gzipReader(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }

// dsnPort returns the port of a clickhouse:// DSN.
func dsnPort(dsn string) (int, bool) {
	u, err := url.Parse(dsn)
	if err != nil || u.Port() == "" {
		return 0, false
	}
	p, err := strconv.Atoi(u.Port())
	return p, err == nil
}
