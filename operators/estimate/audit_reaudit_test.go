package estimate

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTooFewRowsNamesTheLimit: the warning names the minimum that was
// missed, not both (60 rows, 55/5, was "under the minimum of 50 rows and 10
// of each class").
func TestTooFewRowsNamesTheLimit(t *testing.T) {
	var o TrainOptions
	for _, tc := range []struct {
		rows, pos   int
		want        string
		rows_, cls_ bool
	}{
		{60, 55, "60 rows (55 correct, 5 incorrect), under the minimum of 10 incorrect", false, true},
		{60, 5, "60 rows (5 correct, 55 incorrect), under the minimum of 10 correct", false, true},
		{40, 20, "40 rows (20 correct, 20 incorrect), under the minimum of 50 rows", true, false},
		{40, 35, "40 rows (35 correct, 5 incorrect), under the minimum of 50 rows and 10 incorrect", true, true},
		{3, 2, "3 rows (2 correct, 1 incorrect), under the minimum of 50 rows and 10 of each class", true, true},
	} {
		err := o.CheckRows(tc.rows, tc.pos)
		require.ErrorIs(t, err, ErrTooFewRows)
		require.EqualError(t, err, "too few labelled rows: "+tc.want)
		var few *TooFewRowsError
		require.True(t, errors.As(err, &few))
		require.Equal(t, tc.rows_, few.RowsShort(), tc.want)
		require.Equal(t, tc.cls_, few.ClassShort(), tc.want)
	}
}

// TestUnmeasuredMetrics: a model on 3 rows has no meaningful out-of-fold
// metrics (they read AUROC 0.000, ECE 0.667): Metrics.Unmeasured says why.
// A model with enough of each class has none.
func TestUnmeasuredMetrics(t *testing.T) {
	tbl := &Table{Features: []string{"a"}, X: []float64{0.9, 0.8, 0.2}, Y: []float64{1, 1, 0},
		Model: []string{"m", "m", "m"}, Domain: []string{"a", "a", "b"}}
	for _, ens := range []int{0, 3} {
		cfg := DefaultTrainConfig()
		cfg.Ensemble = ens
		m, err := Fit(tbl, "m", cfg)
		require.NoError(t, err)
		require.Equal(t, "2 correct and 1 incorrect rows: too few for each of the 3 folds to hold both classes", m.Metrics.Unmeasured, "ensemble %d", ens)
	}
	m, err := Fit(synthetic(600, []string{"a"}, 3), "m", DefaultTrainConfig())
	require.NoError(t, err)
	require.Empty(t, m.Metrics.Unmeasured)
}

// TestReadCSVOutOfRange: a number beyond float64 (1e400) is skipped as
// non-finite, like inf, instead of stopping the read as "not a number".
func TestReadCSVOutOfRange(t *testing.T) {
	in := "model,domain,correct,a\nm,d,1,1e400\nm,d,0,-1e400\nm,d,1,inf\nm,d,0,\nm,d,1,0.5\nm,d,0,1e-400\n"
	tbl, err := ReadCSV(strings.NewReader(in), []string{"a"})
	require.NoError(t, err)
	require.Equal(t, map[string]int{"non-finite feature": 4}, tbl.Skipped)
	require.Equal(t, []float64{0.5, 0}, tbl.X, "an underflow is 0, a number")
	_, err = ReadCSV(strings.NewReader("model,domain,correct,a\nm,d,1,x1\n"), []string{"a"})
	require.EqualError(t, err, `line 2: feature a: "x1" is not a number`)
}

// TestReadCSVOtherSeparator: a header separated by semicolons or tabs says
// the file must be comma-separated.
func TestReadCSVOtherSeparator(t *testing.T) {
	for sep, word := range map[string]string{";": "semicolons", "\t": "tabs"} {
		head := strings.Join([]string{"model", "domain", "correct", "confidence"}, sep)
		_, err := ReadCSV(strings.NewReader(head+"\n"), []string{"confidence"})
		require.ErrorContains(t, err, `column "model" missing from the CSV header (have `+head+`): the header is separated by `+word+
			`, but a labelled table must be comma-separated`)
	}
	// A comma-separated header that lacks a column keeps the plain message.
	_, err := ReadCSV(strings.NewReader("model,domain,correct,a;b\n"), []string{"confidence"})
	require.ErrorContains(t, err, "a labelled table needs model, domain, correct and the feature columns")
	require.NotContains(t, err.Error(), "semicolons")
}

// TestRankedTies: tied methods come in name order (stdout listed default
// first, summary.md sk_isotonic first), NaN last; summary.md follows it.
func TestRankedTies(t *testing.T) {
	med := map[string][2]float64{"sk_isotonic": {0.1, math.NaN()}, DefaultName: {0.1, 0.5}, "atc": {0.05, 1}, "x": {math.NaN(), 0}}
	require.Equal(t, []string{"atc", DefaultName, "sk_isotonic", "x"}, Ranked(med))
	rep := &Report{True: map[string]map[string]float64{}}
	for _, m := range []string{"sk_isotonic", DefaultName} { // sk_isotonic first in the results
		rep.Results = append(rep.Results, Result{Model: "m", K: 1, Method: m, AEE: 0.1, Rho: math.NaN()})
	}
	sum := Summary(rep)
	require.Less(t, strings.Index(sum, "| default | 0.100 | n/a |"), strings.Index(sum, "| sk_isotonic | 0.100 | n/a |"))
	require.Equal(t, "n/a", F3(math.NaN()))
}

// TestNumberedMethods: screenN and ensembleN exist for every N that makes
// sense, not only the few of "all"; other N are refused saying why.
func TestNumberedMethods(t *testing.T) {
	tbl := synthetic(600, []string{"a", "b", "c", "d", "e", "f"}, 3)
	methods, _, err := selectMethods(tbl, []string{"ensemble4", "ensemble1", "screen5_isotonic_train", "ensemble6_offset", "screen4_isotonic_oof_offset"})
	require.NoError(t, err)
	var names []string
	for _, m := range methods {
		names = append(names, m.Name)
	}
	require.Equal(t, []string{"ensemble4", "ensemble1", "screen5_isotonic_train", "ensemble6_offset", "screen4_isotonic_oof_offset"}, names)
	pred, err := methods[0].Fit(tbl)
	require.NoError(t, err)
	require.False(t, math.IsNaN(pred(tbl.Row(0))))

	for name, want := range map[string]string{
		"screen99_isotonic_train": `method "screen99_isotonic_train" does not apply to these features: screening to 99 of 6 features keeps them all, as screen0_isotonic_train does (N goes from 0, all, to 5)`,
		"screen6_isotonic_oof":    `as screen0_isotonic_oof does`,
		"ensemble7":               `method "ensemble7" does not apply to these features: an ensemble of 7 single-feature models needs as many features (have 6; ensemble6 uses them all)`,
		"ensemble0":               `unknown method "ensemble0": the methods are `,
		"nope":                    `ensembleN, ensembleN_offset, ensembleN_avg and ensembleN_offset_avg (N from 1 to 6)`,
	} {
		_, _, err := selectMethods(tbl, []string{name})
		require.ErrorContains(t, err, want, name)
	}
}

// TestEvalWorkersCap: --workers 1000 is cut to the training sets and to 4
// per CPU, saying so; the default is not commented on.
func TestEvalWorkersCap(t *testing.T) {
	for _, tc := range []struct {
		asked, total, cpus, want int
		note                     string
	}{
		{1000, 6, 2, 6, " (1000 asked for: at most one per training set)"},
		{1000, 5000, 2, 8, " (1000 asked for: at most 4 per CPU, 2 CPUs)"},
		{3, 5000, 2, 3, ""},
		{0, 1, 2, 1, ""},
	} {
		n, note := evalWorkers(tc.asked, tc.total, tc.cpus)
		require.Equal(t, tc.want, n, "%+v", tc)
		require.Equal(t, tc.note, note, "%+v", tc)
	}
	var progress strings.Builder
	_, err := Evaluate(context.Background(), synthetic(300, []string{"a"}, 3), EvalConfig{Ks: []int{1}, Methods: []string{"sk_platt"}, Workers: 1000, Progress: &progress})
	require.NoError(t, err)
	require.Contains(t, progress.String(), "3 workers (1000 asked for: at most one per training set)")
}

// TestTrainRecordsSkipped: the set records why an LLM got no model of its
// own, so that score can say it; a set without skipped models has no such
// field (its bytes and hash are as before), and a listed model must not
// also have a model.
func TestTrainRecordsSkipped(t *testing.T) {
	set, err := Train(context.Background(), tinyLLM(llmTable(false), 2, 1), DefaultTrainConfig(), TrainOptions{})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"tiny": "too few labelled rows: 3 rows (2 correct, 1 incorrect), under the minimum of 50 rows and 10 of each class"}, set.Skipped)
	path := filepath.Join(t.TempDir(), "est.json")
	require.NoError(t, set.Save(path))
	back, err := Load(path)
	require.NoError(t, err)
	require.Equal(t, set.Skipped, back.Skipped)
	op, err := New(Config{Set: back}, nil, nil)
	require.NoError(t, err)
	defer op.Close()
	require.Contains(t, op.LeftOut("tiny"), "too few labelled rows")
	require.Empty(t, op.LeftOut("llm-a"))

	set, err = Train(context.Background(), llmTable(false), DefaultTrainConfig(), TrainOptions{})
	require.NoError(t, err)
	b, err := set.Marshal()
	require.NoError(t, err)
	require.NotContains(t, string(b), `"skipped"`)

	set.Skipped = map[string]string{"llm-a": "x"}
	_, err = set.Marshal()
	require.ErrorContains(t, err, `model "llm-a" is listed as skipped but has a model in the set`)

	// One class only is recorded too.
	tbl := tinyLLM(llmTable(false), 60, 0)
	set, err = Train(context.Background(), tbl, DefaultTrainConfig(), TrainOptions{})
	require.NoError(t, err)
	require.Equal(t, "its 60 labelled rows are all of one class", set.Skipped["tiny"])
	var raw map[string]json.RawMessage
	b, err = set.Marshal()
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &raw))
	require.Contains(t, raw, "skipped")
}
