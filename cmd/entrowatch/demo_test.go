package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	demodata "github.com/entrowatch/entrowatch/deploy/demo"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

func bundledPool(t *testing.T) *demoPool {
	t.Helper()
	rc, err := gzipReader(bytes.NewReader(demodata.Traces))
	require.NoError(t, err)
	defer rc.Close()
	p, err := loadDemoPool(rc, 0.4)
	require.NoError(t, err)
	return p
}

func TestDemoPoolSplitsByPrompt(t *testing.T) {
	p := bundledPool(t)
	require.Equal(t, []string{"add2", "add4", "count_char", "mod7", "mul1x3", "parity", "reverse8", "sub3"}, p.Domains)
	require.Equal(t, []string{"tinylm-large"}, p.Models)
	require.Len(t, p.Train, 8*64) // 40% of 160 per domain
	train := map[string]bool{}
	perDomain := map[string]int{}
	for _, r := range p.Train {
		train[r.ID] = true
		perDomain[r.Domain]++
	}
	for _, d := range p.Domains {
		require.Equal(t, 64, perDomain[d], d)
		require.Len(t, p.Replay[d], 96, d)
		for _, r := range p.Replay[d] {
			require.False(t, train[r.ID], "%s is in both parts", r.ID)
			require.Equal(t, d, r.Domain)
		}
	}
}

func TestDemoPoolRejectsUnusableInput(t *testing.T) {
	line := func(id, model, domain, correct string) string {
		s := `{"id":"` + id + `","model":"` + model + `","domain":"` + domain + `"`
		if correct != "" {
			s += `,"correct":` + correct
		}
		return s + `,"choices":[]}`
	}
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "no responses"},
		{"not json", "{oops\n", "line 1: not a JSON response"},
		{"no domain", line("a", "m", "", "true"), `no "domain"`},
		{"no label", line("a", "m", "d", ""), `no "correct"`},
		{"one per slice", line("a", "m", "d", "true"), "cannot be split"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadDemoPool(strings.NewReader(tc.in), 0.4)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestScenarioEvents(t *testing.T) {
	p := bundledPool(t)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sc := scenario{Start: start, Day: 24 * time.Hour, Events: 16000, Degrade: "add2", Into: "add4", At: 12 * time.Hour,
		Surge: 4, Tenants: []string{"a", "b"}, Seed: 7}
	require.NoError(t, sc.validate(p))
	evs := sc.events(p)
	require.Len(t, evs, sc.Events)
	require.Equal(t, evs, sc.events(p), "same seed, same day")

	before, after := map[string]int{}, map[string]int{}
	degradedAfter := 0
	for i, e := range evs {
		require.False(t, e.At.Before(start) || !e.At.Before(start.Add(sc.Day)), "event %d at %v", i, e.At)
		if i > 0 {
			require.False(t, e.At.Before(evs[i-1].At), "events out of order at %d", i)
		}
		isAfter := !e.At.Before(start.Add(sc.At))
		if e.Degraded {
			require.True(t, isAfter, "degraded before the start: %v", e.At)
			require.Equal(t, "add2", e.Domain)
			require.Equal(t, "add4", e.Src.Domain)
			require.Equal(t, newTenant, e.Tenant)
			degradedAfter++
		} else {
			require.Equal(t, e.Domain, e.Src.Domain)
			require.Contains(t, sc.Tenants, e.Tenant)
		}
		if isAfter {
			after[e.Domain]++
		} else {
			before[e.Domain]++
		}
	}
	// Before: all domains alike. After: add2 has about Surge times the
	// traffic of another domain, 3/4 of it from add4.
	for _, d := range p.Domains {
		require.InDelta(t, 1000, before[d], 150, "before, %s", d)
	}
	require.InDelta(t, 4.0, float64(after["add2"])/float64(after["sub3"]), 0.6)
	require.InDelta(t, 0.75, float64(degradedAfter)/float64(after["add2"]), 0.05)

	bad := sc
	bad.Into = "nope"
	require.ErrorContains(t, bad.validate(p), `--into "nope": not a domain`)
	bad = sc
	bad.Surge = 1
	require.ErrorContains(t, bad.validate(p), "--surge 1")
	bad = sc
	bad.At = 25 * time.Hour
	require.ErrorContains(t, bad.validate(p), "--degrade-at")
}

// The replayed JSON is read by the real ingest adapter: new id, event time
// and domain, no label.
func TestDemoEventJSON(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	p := bundledPool(t)
	at := time.Date(2026, 1, 1, 13, 14, 15, 678e6, time.UTC)
	ev := demoEvent{At: at, Domain: "add2", Tenant: newTenant, Src: p.Replay["add4"][0], Degraded: true}
	line := ev.appendJSON(nil, 42)
	var m map[string]any
	require.NoError(t, json.Unmarshal(line, &m))
	require.NotContains(t, m, "correct")

	rd := ingest.NewReader(bytes.NewReader(line), ingest.DefaultConfig(), mem)
	defer rd.Release()
	rec, err := rd.Next()
	require.NoError(t, err)
	defer rec.Release()
	require.Empty(t, rd.Rejects())
	require.EqualValues(t, 1, rec.NumRows())
	col := func(name string) int { return schemas.MustIndex(rec.Schema(), name) }
	require.Equal(t, "demo-42-"+ev.Src.ID, rec.Column(col(schemas.ColTraceID)).(*array.String).Value(0))
	require.Equal(t, "add2", rec.Column(col(schemas.ColDomain)).(*array.String).Value(0))
	require.Equal(t, at.UnixMilli(), int64(rec.Column(col(schemas.ColTS)).(*array.Timestamp).Value(0)))
	require.True(t, rec.Column(col(schemas.ColCorrect)).IsNull(0))
	_, err = rd.Next()
	require.ErrorIs(t, err, io.EOF)
}

func TestDemoScale(t *testing.T) {
	for _, tc := range []struct {
		est, lo, hi, truth float64
		want               string
	}{
		{0.5, 0.4, 0.6, 0.9, "|·····-E-···T·|"},
		{0.5, 0.45, 0.55, 0.5, "|·····-X-·····|"},
		{0, -0.1, 0.05, 0, "|X-···········|"},
		{1, 0.9, 1.2, nan(), "|···········-E|"},
	} {
		require.Equal(t, tc.want, scale(tc.est, tc.lo, tc.hi, tc.truth, 13))
	}
}

func nan() float64 { v, _ := strconv.ParseFloat("NaN", 64); return v }

func TestDemoFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--speed", "-1"}, "--speed -1"},
		{[]string{"--speed", "NaN"}, "--speed NaN: want a number >= 0"},
		{[]string{"--speed", "Inf"}, "--speed +Inf: want a number >= 0"},
		{[]string{"--refresh", "0s"}, "--refresh 0s"},
		{[]string{"--surge", "0.5"}, "--surge 0.5"},
		{[]string{"--degrade", "nope"}, `--degrade "nope": not a domain`},
		{[]string{"--traces", "/nonexistent/x.jsonl"}, "--traces"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			err := runDemo(context.Background(), tc.args, &out, &errb)
			require.ErrorContains(t, err, tc.want)
		})
	}
	var out, errb bytes.Buffer
	require.ErrorIs(t, runDemo(context.Background(), []string{"stray"}, &out, &errb), errUsage)
}

// TestPaceSpeed: a speed at which the day passes within one tick replays as
// fast as possible (1e300 hung: the simulated clock overflowed; 1e10 took
// 31 s where full speed takes 2).
func TestPaceSpeed(t *testing.T) {
	day := 24 * time.Hour
	require.Equal(t, 720.0, paceSpeed(720, day))
	require.Equal(t, 0.0, paceSpeed(0, day))
	require.Equal(t, 0.0, paceSpeed(1e10, day))
	require.Equal(t, 0.0, paceSpeed(1e300, day))
	require.Equal(t, 345600.0, paceSpeed(345600, day), "a quarter second: still paced")
	require.Equal(t, 0.0, paceSpeed(345601, day))
}

// TestDemoEndToEnd runs a shortened demo (a 10 s simulated day of 6,000
// responses) against a real clickhouse-server and checks its summary.
func TestDemoEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end demo skipped in -short mode")
	}
	if _, err := clickhouse.FindServerBinary(); err != nil {
		t.Skipf("clickhouse-server is not installed (make deps installs it): %v", err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	err := runDemo(ctx, []string{"--speed", "8640", "--events", "6000", "--plain"}, &out, &errb)
	t.Logf("stderr:\n%s", errb.String())
	t.Logf("stdout:\n%s", out.String())
	require.NoError(t, err)
	s := out.String()

	// The live table was drawn (once per simulated hour) with every domain.
	require.GreaterOrEqual(t, strings.Count(s, "entrowatch demo · simulated"), 6)
	require.Contains(t, s, "reverse8")

	require.Contains(t, s, "dead-lettered: 0, rejected at ingest: 0,")
	require.Regexp(t, `throughput: 6000 responses \(\d+ tokens\)`, s)

	m := regexp.MustCompile(`AEE over 8 domains: mean ([0-9.]+), median ([0-9.]+); Spearman rho (-?[0-9.]+)`).FindStringSubmatch(s)
	require.NotNil(t, m, "no AEE line")
	aee, _ := strconv.ParseFloat(m[1], 64)
	rho, _ := strconv.ParseFloat(m[3], 64)
	require.Less(t, aee, 0.1, "mean AEE")
	require.Greater(t, rho, 0.7, "Spearman rho")

	// An alarm fired on add2 after the degradation began, within hours.
	m = regexp.MustCompile(`alarm: (\w+) on tinylm-large/add2 first seen at simulated \d\d:\d\d, (-?)(\d+)h(\d\d)m after`).FindStringSubmatch(s)
	require.NotNil(t, m, "no alarm on add2")
	require.Empty(t, m[2], "alarm seen before the degradation")
	// At --speed 8640 the demo polls the alarms once per real second, 2.4
	// simulated hours: one poll late on a loaded machine (a CI run beside
	// other tests saw 4h) is not a slow alarm. Within half a day.
	h, _ := strconv.Atoi(m[3])
	require.Less(t, h, 12, "alarm latency")

	require.Contains(t, s, "labeling queue: first tinylm-large/add2 ")

	// The labeling round labels the queue's add2 candidates from the truth;
	// the calibration view compares the estimate with them.
	m = regexp.MustCompile(`labeling round: labelled the (\d+) responses the queue requested from tinylm-large/add2 .*estimated ([0-9.]+) vs realised ([0-9.]+) \(AEE ([0-9.]+), ECE [0-9.]+, n=(\d+)\)`).FindStringSubmatch(s)
	require.NotNil(t, m, "no labeling round on add2")
	require.Equal(t, "200", m[1])
	require.Equal(t, m[1], m[5], "every labelled response is in the calibration view")
	calAEE, _ := strconv.ParseFloat(m[4], 64)
	require.Less(t, calAEE, 0.25, "calibration AEE on the labelled add2 responses")
	// accuracy_corrected: the labelled responses correct the estimate; its
	// interval covers the truth of the same responses.
	m = regexp.MustCompile(`accuracy_corrected over the last \S+: estimated ([0-9.]+), corrected by (\d+) labels ([0-9.]+) \[([0-9.-]+), ([0-9.]+)\], true ([0-9.]+) \(n=(\d+)\)`).FindStringSubmatch(s)
	require.NotNil(t, m, "no accuracy_corrected line")
	f := func(i int) float64 { v, err := strconv.ParseFloat(m[i], 64); require.NoError(t, err); return v }
	require.Equal(t, "200", m[2])
	require.True(t, f(4)-0.03 <= f(6) && f(6) <= f(5)+0.03, "true %.3f outside the corrected interval [%.3f, %.3f]", f(6), f(4), f(5))
	require.Regexp(t, `clickhouse-client --port \d+ --query "SELECT kind, domain`, s)

	// The temporary directory (ClickHouse's data) is gone.
	dm := regexp.MustCompile(`starting clickhouse-server under (\S+)/clickhouse\.\.\.`).FindStringSubmatch(errb.String())
	require.NotNil(t, dm)
	_, err = os.Stat(dm[1])
	require.True(t, errors.Is(err, os.ErrNotExist), "%s still exists: %v", dm[1], err)
}
