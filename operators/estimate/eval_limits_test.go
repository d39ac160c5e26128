package estimate

import (
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEvaluateHugeK: a k list far beyond the domain count costs one skip
// line per model, not one per k (it used to be a string per model per k:
// 23 GB for --k 1..100000000), and KsFor cuts it at the domain count once.
func TestEvaluateHugeK(t *testing.T) {
	tbl := synthetic(300, []string{"a"}, 3)
	ks := make([]int, 200000)
	for i := range ks {
		ks[i] = i + 1
	}
	rep, err := Evaluate(context.Background(), tbl, EvalConfig{Methods: []string{"sk_platt"}, Ks: ks})
	require.NoError(t, err)
	require.Equal(t, []string{"m: k=3..200000 (3 domains)"}, rep.SkippedK)
	require.Len(t, rep.Results, 6)

	use, note, err := KsFor(tbl, ks)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, use)
	require.Equal(t, "k from 3 up left out: no model has more than 3 domains, and k must leave one to estimate", note)
	use, note, err = KsFor(tbl, []int{3, 2, 2})
	require.NoError(t, err)
	require.Equal(t, []int{2, 3}, use, "k = 3 is left to Evaluate, which lists it per model")
	require.Empty(t, note)
	_, _, err = KsFor(tbl, []int{7, 8})
	require.ErrorContains(t, err, "use k from 1 to 2")
	_, _, err = KsFor(synthetic(10, []string{"a"}, 1), []int{1, 2})
	require.ErrorContains(t, err, "single domain")
}

// TestEvaluateTooManyTrainingSets: every k of 24 domains is 2^24 - 2
// training sets; they are counted, not built (that took 12.5 GB), and the
// refusal names the count and a k that works.
func TestEvaluateTooManyTrainingSets(t *testing.T) {
	tbl := synthetic(2400, []string{"a"}, 24)
	_, err := Evaluate(context.Background(), tbl, EvalConfig{Methods: []string{"sk_platt"}})
	var tooMany *TooManyTrainingSetsError
	require.ErrorAs(t, err, &tooMany)
	require.Equal(t, TooManyTrainingSetsError{Model: "m", Domains: 24, Ks: "1..23", Sets: "16777214",
		Limit: DefaultMaxTrainingSets, SuggestK: 3, SuggestSets: 2324}, *tooMany)
	require.EqualError(t, err, "model m: 16777214 training sets (k = 1..23 of its 24 domains), more than the limit of 50000 per model; k = 1..3 gives 2324 training sets")

	// A limit of 60 allows k = 1, 2 of 10 domains (55 sets), not 1..3.
	tbl = synthetic(1000, []string{"a"}, 10)
	_, err = Evaluate(context.Background(), tbl, EvalConfig{Methods: []string{"sk_platt"}, Ks: []int{1, 2, 3}, MaxTrainingSets: 60})
	require.ErrorAs(t, err, &tooMany)
	require.Equal(t, "175", tooMany.Sets)
	require.Equal(t, 2, tooMany.SuggestK)
	var progress strings.Builder
	rep, err := Evaluate(context.Background(), tbl, EvalConfig{Methods: []string{"sk_platt"}, Ks: []int{1, 2}, MaxTrainingSets: 60, Progress: &progress})
	require.NoError(t, err)
	require.Len(t, rep.Results, 55)
	require.True(t, strings.HasPrefix(progress.String(), "eval: 55 training sets x 1 method = 55 fits, "), progress.String())
	require.Contains(t, progress.String(), "eval: 55/55 training sets")
}

// TestEvaluateOrderIndependentOfWorkers: results are merged in training-set
// order whatever finishes first.
func TestEvaluateOrderIndependentOfWorkers(t *testing.T) {
	tbl := synthetic(1200, []string{"a", "b"}, 5)
	var reps []*Report
	for _, w := range []int{1, 4} {
		rep, err := Evaluate(context.Background(), tbl, EvalConfig{Methods: []string{"sk_platt", "atc"}, Workers: w})
		require.NoError(t, err)
		reps = append(reps, rep)
	}
	require.Len(t, reps[0].Results, 30*2)
	require.Equal(t, reps[0].Results, reps[1].Results)
	require.Equal(t, reps[0].HeldOut, reps[1].HeldOut)
	require.Equal(t, []string{"d0"}, reps[0].Results[0].TrainDomains)
}

// TestEvaluateInterrupted: a cancelled evaluation says "interrupted" and how
// far it got, not "context canceled".
func TestEvaluateInterrupted(t *testing.T) {
	tbl := synthetic(400, []string{"a"}, 3)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Evaluate(ctx, tbl, EvalConfig{Methods: []string{"sk_platt"}})
	require.ErrorIs(t, err, context.Canceled)
	var stopped *InterruptedError
	require.ErrorAs(t, err, &stopped)
	require.Equal(t, 6, stopped.Total)
	require.Regexp(t, `^interrupted after \d of 6 training sets$`, err.Error())
}

// TestUnevaluatedModel: a model whose every training set has one class has
// no results; the tables say n/a (not 0.000), the report says why, and its
// plot panel too.
func TestUnevaluatedModel(t *testing.T) {
	tbl := synthetic(600, []string{"a"}, 3)
	solo := synthetic(300, []string{"a"}, 3)
	for i := range solo.N() {
		solo.Model[i], solo.Y[i] = "always", 1
	}
	one := synthetic(50, []string{"a"}, 1)
	for i := range one.N() {
		one.Model[i] = "one"
	}
	for _, o := range []*Table{solo, one} {
		tbl.Model = append(tbl.Model, o.Model...)
		tbl.Domain = append(tbl.Domain, o.Domain...)
		tbl.X = append(tbl.X, o.X...)
		tbl.Y = append(tbl.Y, o.Y...)
	}
	rep, err := Evaluate(context.Background(), tbl, EvalConfig{Methods: []string{"sk_platt", DefaultName}, Ks: []int{1, 2}})
	require.NoError(t, err)
	require.Equal(t, map[string]string{
		"always": "all its rows are correct, so no training set has both classes",
		"one":    "it has a single domain (d0), so none can be held out",
	}, rep.Unevaluated)
	require.Equal(t, []string{"one: k=1,2 (1 domain)"}, rep.SkippedK, "singular domain")
	for _, r := range rep.Results {
		require.Equal(t, "m", r.Model)
	}
	sum := Summary(rep)
	require.NotContains(t, sum, "0.000 (0.000)")
	require.Contains(t, sum, "| default | n/a | ")
	require.Contains(t, sum, "- always: all its rows are correct")
	svg := estimatesSVG(rep)
	require.Contains(t, svg, ">not evaluated:</text>")
	require.Contains(t, svg, ">all its rows are correct, so no")
}

// TestNotApplicableMethods: the default list's methods that do not apply
// are named with the reason, not dropped silently.
func TestNotApplicableMethods(t *testing.T) {
	tbl := synthetic(600, []string{"a"}, 3) // a is a logit: not a probability
	rep, err := Evaluate(context.Background(), tbl, EvalConfig{Ks: []int{1}, Methods: nil, Workers: 1})
	require.NoError(t, err)
	require.Equal(t, []string{
		"screen1_isotonic_train: with 1 feature there is nothing to screen: screen0_isotonic_train is the same model",
		"raw_mean: the first feature, a, is not a probability of being right (that needs every value in [0,1] and a higher mean on correct rows)",
	}, rep.NotApplicable)
	require.Contains(t, Summary(rep), "Methods left out, not applicable to these features:\n\n- screen1_isotonic_train: ")

	_, err = Evaluate(context.Background(), tbl, EvalConfig{Ks: []int{1}, Methods: []string{"raw_mean"}})
	require.EqualError(t, err, `method "raw_mean" does not apply to these features: the first feature, a, is not a probability of being right (that needs every value in [0,1] and a higher mean on correct rows)`)

	_, err = Evaluate(context.Background(), tbl, EvalConfig{Ks: []int{1}, Methods: []string{"ensemble2"}})
	require.EqualError(t, err, `method "ensemble2" does not apply to these features: an ensemble of 2 single-feature models needs as many features (have 1; ensemble1 uses them all)`)

	// "all" is every method these features allow; raw_mean is named as left out.
	methods, notApplicable, err := selectMethods(tbl, []string{"all"})
	require.NoError(t, err)
	require.Equal(t, []string{"raw_mean: the first feature, a, is not a probability of being right (that needs every value in [0,1] and a higher mean on correct rows)"}, notApplicable)
	require.Len(t, methods, len(Methods(tbl.Features, false)))
}

// TestSummaryEscapesPipes: a "|" in a name does not break the markdown
// tables; results.csv quotes what CSV needs quoted.
func TestSummaryEscapesPipes(t *testing.T) {
	tbl := synthetic(600, []string{"a"}, 3)
	for i := range tbl.N() {
		tbl.Model[i] = "m|1"
		tbl.Domain[i] = map[string]string{"d0": "a|b", "d1": `c,"d"`, "d2": "e"}[tbl.Domain[i]]
	}
	rep, err := Evaluate(context.Background(), tbl, EvalConfig{Ks: []int{1}, Methods: []string{"sk_platt"}})
	require.NoError(t, err)
	sum := Summary(rep)
	require.Contains(t, sum, "| m\\|1 | a\\|b | 200 |")
	unescaped := regexp.MustCompile(`(^|[^\\])\|`)
	for _, line := range strings.Split(sum, "\n") {
		if strings.HasPrefix(line, "| m\\|1 | ") && strings.Count(line, "|") > 4 {
			// model, domain, rows, accuracy: 5 cell borders.
			if strings.Contains(line, " 200 |") {
				require.Len(t, unescaped.FindAllStringIndex(" "+line, -1), 5, line)
			}
		}
	}
	dir := t.TempDir()
	require.NoError(t, WriteReport(dir, rep))
	f, err := os.Open(filepath.Join(dir, "results.csv"))
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	var train []string
	for _, r := range rows[1:] {
		require.Len(t, r, 6)
		require.Equal(t, "m|1", r[0])
		train = append(train, r[2])
	}
	require.ElementsMatch(t, []string{"a|b", `c,"d"`, "e"}, train)
}

// labelBoxes returns the boxes of estimates.svg's domain labels.
func labelBoxes(t *testing.T, svg string) [][4]float64 {
	re := regexp.MustCompile(`<text x="([\d.]+)" y="([\d.]+)" fill="#444" font-size="9"( text-anchor="end")?>([^<]*)</text>`)
	var boxes [][4]float64
	for _, m := range re.FindAllStringSubmatch(svg, -1) {
		x, _ := strconv.ParseFloat(m[1], 64)
		y, _ := strconv.ParseFloat(m[2], 64)
		w := textWidth(m[4], 9)
		if m[3] != "" {
			x -= w
		}
		boxes = append(boxes, [4]float64{x, x + w, y - 9, y})
	}
	return boxes
}

// TestEstimatesPlot: domain labels do not overlap however close their points;
// a method keeps its colour whatever the ranking; a method drawn exactly
// under another says so in the legend.
func TestEstimatesPlot(t *testing.T) {
	rep := &Report{True: map[string]map[string]float64{"m": {}}, HeldOut: map[string]map[string]map[string]float64{"m": {}}}
	for _, m := range []string{DefaultName, "sk_isotonic", "sk_platt"} {
		rep.HeldOut["m"][m] = map[string]float64{}
	}
	for i := range 12 {
		d := fmt.Sprintf("domain%02d", i)
		rep.True["m"][d] = 0.5 + float64(i%3)*0.002
		rep.HeldOut["m"][DefaultName][d] = 0.5 + float64(i)*0.001
		rep.HeldOut["m"]["sk_isotonic"][d] = 0.5 + float64(i)*0.001
		rep.HeldOut["m"]["sk_platt"][d] = 0.4
	}
	rank := func(platt float64) {
		rep.Results = nil
		for m, a := range map[string]float64{DefaultName: 0.1, "sk_isotonic": 0.15, "sk_platt": platt} {
			rep.Results = append(rep.Results, Result{Model: "m", K: 1, TrainDomains: []string{"domain00"}, Method: m, AEE: a})
		}
	}
	rank(0.2)
	svg := estimatesSVG(rep)
	boxes := labelBoxes(t, svg)
	require.Len(t, boxes, 12)
	for i, a := range boxes {
		for _, b := range boxes[:i] {
			overlap := a[0] < b[1] && b[0] < a[1] && a[2] < b[3]-1e-6 && b[2] < a[3]-1e-6
			require.False(t, overlap, "labels at %v and %v overlap", a, b)
		}
	}
	require.Contains(t, svg, ">sk_isotonic (same as default)</text>")
	require.NotContains(t, svg, ">sk_platt (same")
	colour := regexp.MustCompile(`fill="(#[0-9a-f]{6})" fill-opacity="0.8"><title>sk_platt `)
	first := colour.FindStringSubmatch(svg)
	require.NotNil(t, first)
	rank(0.12) // sk_platt now ranks above sk_isotonic
	second := colour.FindStringSubmatch(estimatesSVG(rep))
	require.NotNil(t, second)
	require.Equal(t, first[1], second[1])
	require.Equal(t, methodColor("sk_platt"), first[1])
	require.NotEqual(t, methodColor("sk_platt"), methodColor("sk_isotonic"))
	require.Equal(t, methodColor("forest_none"), methodColor("forest_none"))
}

// TestPlaceLabels: labels of one point end apart. At y = 59.1 the label's
// baseline is 54.1 and (54.1+10)-54.1 < 10 in floating point: this once
// looped forever.
func TestPlaceLabels(t *testing.T) {
	var ls []pointLabel
	for i := range 30 {
		ls = append(ls, pointLabel{x: 100, y: 59.1, text: "d" + strconv.Itoa(i)})
	}
	out := placeLabels(ls, [][2]float64{{100, 59.1}, {110, 80}}, labelBox{0, 400, 0, 1000}, 9)
	var ys []float64
	for _, l := range out {
		ys = append(ys, l.ty)
	}
	slices.Sort(ys)
	for i := 1; i < len(ys); i++ {
		require.GreaterOrEqual(t, ys[i]-ys[i-1], 10-1e-6)
	}
	require.False(t, math.IsNaN(ys[0]))
	// Near the right edge, a label goes left of its point.
	out = placeLabels([]pointLabel{{x: 395, y: 50, text: "winogrande"}}, nil, labelBox{0, 400, 0, 1000}, 9)
	require.True(t, out[0].end)
}

// TestReliabilitySameAs: identical reliability curves are named in the legend.
func TestReliabilitySameAs(t *testing.T) {
	r := &Reliability{}
	r.add(0.3, 1)
	r.add(0.7, 0)
	rep := &Report{Reliability: map[string]*Reliability{DefaultName: r, "sk_isotonic": r, "sk_platt": {}}}
	for _, m := range []string{DefaultName, "sk_isotonic", "sk_platt"} {
		rep.Results = append(rep.Results, Result{Model: "m", Method: m})
	}
	svg := reliabilitySVG(rep)
	require.Contains(t, svg, ">sk_isotonic (same as default)</text>")
}
