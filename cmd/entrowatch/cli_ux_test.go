package main

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/estimate"
)

// TestHelpAndUsageErrors: asked-for help goes to stdout (for a pager or grep)
// and exits 0; a usage error prints its reason and a pointer to -h on stderr
// and exits 2.
func TestHelpAndUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"score", "-h"}, {"score", "--help"}, {"help", "score"}} {
		out, errs, code := runCLI(t, args...)
		require.Equal(t, 0, code, args)
		require.Contains(t, out, "Usage: entrowatch score", args)
		require.Contains(t, out, "Examples:", args)
		require.Empty(t, errs, args)
	}
	out, _, code := runCLI(t, "help", "cluster", "fit")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Usage: entrowatch cluster fit")
	for _, args := range [][]string{{"help"}, {"--help"}} {
		out, _, code := runCLI(t, args...)
		require.Equal(t, 0, code)
		require.Contains(t, out, "version")
		require.Contains(t, out, "score")
	}
	_, errs, code := runCLI(t)
	require.Equal(t, 2, code)
	require.Contains(t, errs, "Commands:")

	_, errs, code = runCLI(t, "score", "--in", "x.jsonl", "--bogus")
	require.Equal(t, 2, code)
	require.Contains(t, errs, "flag provided but not defined: -bogus")
	require.Contains(t, errs, "Run 'entrowatch score -h' for its flags.")
	require.NotContains(t, errs, "Flags:")

	_, errs, code = runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", filepath.Join(t.TempDir(), "x.txt"))
	require.Equal(t, 2, code)
	require.Contains(t, errs, "name it .csv, .csv.gz or .arrow")

	_, errs, code = runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", filepath.Join(t.TempDir(), "x.csv"), "--domain-from", "cluster")
	require.Equal(t, 2, code)
	require.Contains(t, errs, "--domain-from needs --clusters")
}

// TestScoreOutputIsAtomic: the output appears only when scoring succeeded; a
// failed run neither leaves a partial file nor clobbers an earlier result,
// and the input can never be the output.
func TestScoreOutputIsAtomic(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "scored.csv")
	_, errs, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", out, "--quiet")
	require.Equal(t, 0, code, errs)
	good, err := os.ReadFile(out)
	require.NoError(t, err)

	// A truncated gzip input fails, says why, and leaves the earlier result.
	raw, err := os.ReadFile(fixtures + "valid.jsonl.gz")
	require.NoError(t, err)
	cut := filepath.Join(dir, "cut.jsonl.gz")
	require.NoError(t, os.WriteFile(cut, raw[:len(raw)*2/3], 0o644))
	_, errs, code = runCLI(t, "score", "--in", cut, "--out", out)
	require.Equal(t, 1, code)
	require.Contains(t, errs, "gzip data ends abruptly")
	require.Contains(t, errs, "nothing written to "+out)
	after, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, string(good), string(after), "a failed run must not touch the previous output")
	leftovers, err := filepath.Glob(filepath.Join(dir, ".*partial"))
	require.NoError(t, err)
	require.Empty(t, leftovers)

	// An empty input is an error, not an empty success.
	empty := filepath.Join(dir, "empty.jsonl")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	_, errs, code = runCLI(t, "score", "--in", empty, "--out", filepath.Join(dir, "e.csv"))
	require.Equal(t, 1, code)
	require.Contains(t, errs, "holds no responses")
	require.NoFileExists(t, filepath.Join(dir, "e.csv"))

	// The input is never overwritten.
	arrowIn := filepath.Join(dir, "s.arrow")
	_, errs, code = runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", arrowIn, "--quiet")
	require.Equal(t, 0, code, errs)
	before, err := os.ReadFile(arrowIn)
	require.NoError(t, err)
	_, errs, code = runCLI(t, "score", "--in", arrowIn, "--out", arrowIn)
	require.Equal(t, 1, code)
	require.Contains(t, errs, "is the input file")
	now, err := os.ReadFile(arrowIn)
	require.NoError(t, err)
	require.Equal(t, before, now)

	// .csv.gz is gzip-compressed CSV that train reads back.
	gz := filepath.Join(dir, "scored.csv.gz")
	_, errs, code = runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", gz, "--quiet")
	require.Equal(t, 0, code, errs)
	f, err := os.Open(gz)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	plain, err := io.ReadAll(zr)
	require.NoError(t, err)
	require.Equal(t, string(good), string(plain))
	st, err := os.Stat(gz)
	require.NoError(t, err)
	ref := filepath.Join(t.TempDir(), "ref") // the mode os.Create gives under this process's umask
	rf, err := os.Create(ref)
	require.NoError(t, err)
	require.NoError(t, rf.Close())
	rst, err := os.Stat(ref)
	require.NoError(t, err)
	require.Equal(t, rst.Mode().Perm(), st.Mode().Perm())
}

// renameModel copies the JSON Lines fixture with every response's model
// renamed, as traffic of an LLM the estimator was not trained for.
func renameModel(t *testing.T, to string) string {
	t.Helper()
	f, err := os.Open(fixtures + "valid.jsonl.gz")
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	b, err := io.ReadAll(zr)
	require.NoError(t, err)
	var out strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m))
		m["model"] = to
		enc, err := json.Marshal(m)
		require.NoError(t, err)
		out.Write(enc)
		out.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "other.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(out.String()), 0o644))
	return path
}

// TestTrainOneModelHasFallback: an estimator trained on one LLM serves other
// LLMs' rows as the pooled fallback does when there are several; with
// --model there is no fallback and the rejections say which model and why,
// with their input line.
func TestTrainOneModelHasFallback(t *testing.T) {
	dir := t.TempDir()
	table := filepath.Join(dir, "fx.csv")
	_, errs, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", table, "--quiet")
	require.Equal(t, 0, code, errs)
	other := renameModel(t, "other-llm")

	est := filepath.Join(dir, "est.json")
	out, errs, code := runCLI(t, "train", "--in", table, "--out", est, "--features", "mean,std", "--transfer=false")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "models not in the table are estimated with model fixture-model")
	set, err := estimate.Load(est)
	require.NoError(t, err)
	require.Equal(t, "fixture-model", set.Fallback)
	scored := filepath.Join(dir, "other.csv")
	_, errs, code = runCLI(t, "score", "--in", other, "--out", scored, "--estimator", est)
	require.Equal(t, 0, code, errs)
	rows := readCSV(t, scored)
	require.Len(t, rows, 33)
	for _, r := range rows {
		require.NotEmpty(t, r["p_correct"], r["id"])
	}

	only := filepath.Join(dir, "only.json")
	_, errs, code = runCLI(t, "train", "--in", table, "--out", only, "--features", "mean,std", "--transfer=false", "--model", "fixture-model")
	require.Equal(t, 0, code, errs)
	set, err = estimate.Load(only)
	require.NoError(t, err)
	require.Empty(t, set.Fallback)
	_, errs, code = runCLI(t, "score", "--in", other, "--out", filepath.Join(dir, "none.csv"), "--estimator", only)
	require.Equal(t, 1, code, "no row could be estimated")
	require.Contains(t, errs, `reject line 1 id="fx-0" reason=unknown_model: no estimator for model "other-llm" and no fallback applies`)
	require.Contains(t, errs, "reject line 20 ")
	require.NotContains(t, errs, "reject line 22 ", "at most 20 lines per reason")
	require.Contains(t, errs, "further unknown_model rejections are counted in the summary")
	require.Contains(t, errs, "33 rejected (unknown_model 33)")
}

// TestTrainEvalArgumentChecks: mistakes are refused before any fitting.
func TestTrainEvalArgumentChecks(t *testing.T) {
	in := labelled(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "--in", in, "--out", filepath.Join(dir, "e.json"), "--features", "confidence,correct"}, `feature "correct" is the label`},
		{[]string{"train", "--in", in, "--out", filepath.Join(dir, "e.json"), "--features", "confidence,confidence"}, `feature "confidence" is listed twice`},
		{[]string{"train", "--in", in, "--out", filepath.Join(dir, "e.json"), "--features", "domain"}, `feature "domain" is a key column`},
		{[]string{"train", "--in", in, "--out", in, "--features", "confidence"}, "is an input table"},
		{[]string{"train", "--in", labelled(t) + "," + in, "--out", in, "--features", "confidence"}, "is an input table"},
		{[]string{"train", "--in", in, "--out", filepath.Join(dir, "no", "such", "e.json"), "--features", "confidence"}, "does not exist"},
		{[]string{"eval", "--in", in, "--report", in, "--features", "confidence"}, "is a file; give a directory"},
		{[]string{"eval", "--in", in, "--report", dir, "--features", "correct"}, `feature "correct" is the label`},
	} {
		_, errs, code := runCLI(t, tc.args...)
		require.Equal(t, 1, code, tc.args)
		require.Contains(t, errs, tc.want, tc.args)
		require.NotContains(t, errs, "train: llm-a", "refused before fitting")
	}
	// A setting that cannot work is a usage error (exit 2), also refused
	// before fitting.
	_, errs, code := runCLI(t, "train", "--in", in, "--out", filepath.Join(dir, "e.json"), "--ensemble", "-1")
	require.Equal(t, 2, code, errs)
	require.Contains(t, errs, "ensemble = -1: want 0")
	require.Contains(t, errs, "Run 'entrowatch train -h' for its flags.")
	require.NotContains(t, errs, "train: llm-a", "refused before fitting")
	require.NoFileExists(t, filepath.Join(dir, "e.json"))
	b, err := os.ReadFile(in)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(b), "model,domain,"), "the input table is intact")
}

func TestParseKs(t *testing.T) {
	for in, want := range map[string][]int{"1,2,3": {1, 2, 3}, "1..3": {1, 2, 3}, "1-3": {1, 2, 3}, "3,1,1": {1, 3}, "1..2,4": {1, 2, 4}, " 2 ": {2}} {
		got, err := parseKs(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "0", "one", "3..1", "1..", "-1", "1,,2"} {
		_, err := parseKs(in)
		require.Error(t, err, in)
	}
	// The largest int: k++ wrapped past it and the range never ended.
	done := make(chan []int, 1)
	go func() {
		ks, _ := parseKs("9223372036854775807")
		done <- ks
	}()
	select {
	case ks := <-done:
		require.Equal(t, []int{math.MaxInt}, ks)
	case <-time.After(10 * time.Second): // a guard against hanging, not a speed assertion
		t.Fatal("parseKs(MaxInt) did not return")
	}
	ks, err := parseKs("9223372036854775806..9223372036854775807")
	require.NoError(t, err)
	require.Equal(t, []int{math.MaxInt - 1}, ks, "a range starting above maxK yields its start only")
}

func TestCountsText(t *testing.T) {
	require.Equal(t, "0", countsText(nil))
	require.Equal(t, "0", countsText(map[string]int64{"empty": 0}))
	require.Equal(t, "3 (empty 1, nan_logprob 2)", countsText(map[string]int64{"nan_logprob": 2, "empty": 1, "too_long": 0}))
}

// TestIngestNothingReadable: an input of which nothing can be produced fails
// (before any broker is needed), with the reasons capped per kind.
func TestIngestNothingReadable(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(junk, []byte(strings.Repeat("not json\n", 30)), 0o644))
	out, errs, code := runCLI(t, "ingest", "--in", junk, "--brokers", "127.0.0.1:1")
	require.Equal(t, 1, code, errs)
	require.Contains(t, out, "30 lines rejected (malformed_json 30)")
	require.Contains(t, errs, "none of the 30 responses could be sent")
	require.Contains(t, errs, "line 20:")
	require.NotContains(t, errs, "line 21:")
	require.Contains(t, errs, "further malformed_json lines are counted in the summary")
	// --quiet: the summary only, as for score.
	out, errs, code = runCLI(t, "ingest", "--in", junk, "--brokers", "127.0.0.1:1", "--quiet")
	require.Equal(t, 1, code, errs)
	require.Contains(t, out, "30 lines rejected (malformed_json 30)")
	require.NotContains(t, errs, "line 1:")
	require.Contains(t, errs, "none of the 30 responses could be sent")

	empty := filepath.Join(dir, "empty.jsonl")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	_, errs, code = runCLI(t, "ingest", "--in", empty, "--brokers", "127.0.0.1:1")
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, "the input holds no responses")

	// --rate NaN passed as "no pacing"; +Inf too.
	for _, r := range []string{"NaN", "+Inf", "-1", "1e-12"} { // 1e-12 overflowed the schedule: sent at once, stamped in year 0
		_, errs, code = runCLI(t, "ingest", "--in", empty, "--brokers", "127.0.0.1:1", "--rate", r)
		require.Equal(t, 2, code, errs)
		require.Contains(t, errs, "want a number of responses per second from 0.001 (one every 1000 s) up", r)
	}
	// Flag values that cannot work: exit 2, named by their flag.
	for _, tc := range [][]string{
		{"--batch-rows", "0", "--batch-rows 0: want at least 1"},
		{"--idle-flush", "-1s", "--idle-flush -1s: want a duration"},
		{"--topic", "", `--topic "": want the topic`},
		{"--max-logprob", "1", "--max-logprob must be in [0, 1)"},
	} {
		_, errs, code = runCLI(t, "ingest", "--in", empty, "--brokers", "127.0.0.1:1", tc[0], tc[1])
		require.Equal(t, 2, code, errs)
		require.Contains(t, errs, tc[2])
		require.Contains(t, errs, "Run 'entrowatch ingest -h' for its flags.")
	}
	for _, tc := range [][]string{
		{"--bogus", "flag provided but not defined: -bogus"},
		{"--since=banana", `invalid value "banana" for flag -since`},
		{"--out=p.txt", "--out p.txt: labels export writes CSV"},
	} {
		_, errs, code = runCLI(t, "labels", "export", "--clickhouse", "clickhouse://127.0.0.1:1", tc[0])
		require.Equal(t, 2, code, errs)
		require.Contains(t, errs, tc[1])
		require.Contains(t, errs, "Run 'entrowatch labels export -h' for its flags.")
	}
	// Responses produced to the dead-letter topic are never scored.
	_, errs, _ = runCLI(t, "ingest", "--in", empty, "--brokers", "127.0.0.1:1", "--topic", "traces.dead")
	require.Contains(t, errs, "--topic traces.dead looks like a dead-letter topic")
}

// TestSendTime: the replay schedule of --rate is start + i/rate, and one
// beyond ten years is an error rather than an overflowed duration.
func TestSendTime(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	got, err := sendTime(start, 3, 2)
	require.NoError(t, err)
	require.Equal(t, start.Add(1500*time.Millisecond), got)
	_, err = sendTime(start, 1<<40, minRate)
	require.ErrorContains(t, err, "more than ten years")
}

func TestKeptRuns(t *testing.T) {
	require.Equal(t, [][2]int64{{0, 5}}, keptRuns(5, nil))
	require.Equal(t, [][2]int64{{1, 3}, {4, 5}}, keptRuns(5, []int{0, 3}))
	require.Equal(t, [][2]int64{{0, 4}}, keptRuns(5, []int{4}))
	require.Empty(t, keptRuns(2, []int{0, 1}))
}

// TestStallWatch: bench pipeline gives up on a stream that stopped making
// progress (it waited forever for traces that were dropped) once its count
// has not moved for the set time, and not before.
func TestStallWatch(t *testing.T) {
	t0 := time.Unix(0, 0)
	w := stallWatch{after: time.Minute, at: t0}
	require.False(t, w.stuck(0, t0.Add(30*time.Second)))
	require.False(t, w.stuck(5, t0.Add(50*time.Second)), "progress")
	require.False(t, w.stuck(5, t0.Add(110*time.Second)), "a minute since the last progress, not more")
	require.True(t, w.stuck(5, t0.Add(111*time.Second)))
	require.False(t, w.stuck(6, t0.Add(200*time.Second)), "moving again")
}

// TestDupIDsBounded: score's repeated-id check keeps at most max ids (its
// memory grew with every distinct id of the input), still finds repeats of
// the ids it keeps, and says when it stopped keeping.
func TestDupIDsBounded(t *testing.T) {
	ids := func(s ...string) *array.String {
		b := array.NewStringBuilder(memory.NewGoAllocator())
		defer b.Release()
		b.AppendValues(s, nil)
		return b.NewStringArray()
	}
	d := newDupIDs(2)
	for _, batch := range [][]string{{"a", "b"}, {"c", "a"}, {"c", "d", "b"}} {
		a := ids(batch...)
		d.add(nil, a, nil)
		a.Release()
	}
	require.Len(t, d.seen, 2)
	require.EqualValues(t, 2, d.n, "a and b again; c was not kept")
	var w strings.Builder
	d.warn(&w, "in.jsonl")
	require.Contains(t, w.String(), "note: repeated trace ids were looked for among the first 2 distinct ids of in.jsonl only")
	require.Contains(t, w.String(), `warning: 2 responses repeat the model and trace id of one that came before in in.jsonl ("a", "b")`)

	d = newDupIDs(10)
	a := ids("a", "b", "a")
	d.add(nil, a, nil)
	a.Release()
	w.Reset()
	d.warn(&w, "in.jsonl")
	require.NotContains(t, w.String(), "note:")
	require.Contains(t, w.String(), `warning: 1 response repeats the model and trace id`)

	// The store keys rows on model and trace id: one id under two models is
	// two rows, not a repeat; a rejected copy is not written, so repeats
	// nothing (the usual "fix the bad line and append it").
	d = newDupIDs(10)
	m, a := ids("A", "B", "A", "A"), ids("m1", "m1", "fix1", "fix1")
	d.add(m, a, map[int]bool{2: true})
	m.Release()
	a.Release()
	require.Zero(t, d.n)
}

// TestFlagValuesRefusedFirst: a flag value that cannot work exits 2 with the
// command's pointer to -h, before any work (connecting, reading, producing).
// alarms --interval 0s panicked in time.NewTicker; others exited 1 after
// the work, or were accepted.
func TestFlagValuesRefusedFirst(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"alarms", "--webhook", "http://127.0.0.1:1/", "--interval", "0s", "--clickhouse", "clickhouse://127.0.0.1:1/default"}, "--interval 0s: want > 0"},
		{[]string{"alarms", "--webhook", "http://127.0.0.1:1/", "--webhook-retries", "-3", "--clickhouse", "clickhouse://127.0.0.1:1/default"}, "--webhook-retries -3: want >= 0"},
		{[]string{"alarms", "--list", "--read-timeout", "0s", "--clickhouse", "clickhouse://127.0.0.1:1/default"}, "--read-timeout 0s: want > 0"},
		{[]string{"bench", "pipeline", "--fetch-max-bytes", "-1"}, "--fetch-max-bytes -1: want at least 1"},
		{[]string{"cluster", "fit", "--in", "x.csv", "--out", "c.json", "--embedding", "bogus"}, `--embedding "bogus": want auto, yes or no`},
		{[]string{"cluster", "report", "--in", "x.csv", "--clusters", "c.json", "--examples", "-5"}, "--examples -5: want 0 or more"},
		{[]string{"eval", "--in", "x.csv", "--report", t.TempDir(), "--methods", "sk_platt,bogus"}, `unknown method "bogus"`},
		{[]string{"deadletters", "--brokers", "127.0.0.1:1", "--topic="}, `--topic "": want the dead-letter topic`},
		{[]string{"deadletters", "--brokers", "127.0.0.1:1", "--requeue="}, `--requeue "": want the topic`},
		{[]string{"deadletters", "--brokers", "127.0.0.1:1", "--requeue", "traces.dead"}, "is the dead-letter topic itself"},
		{[]string{"run", "--log-level", "bogus"}, `--log-level "bogus": want debug, info, warn or error`},
	} {
		_, errs, code := runCLI(t, tc.args...)
		require.Equal(t, 2, code, "%v: %s", tc.args, errs)
		require.Contains(t, errs, tc.want, tc.args)
		cmd := tc.args[0]
		if withSubcommands[cmd] {
			cmd += " " + tc.args[1]
		}
		require.Contains(t, errs, "Run 'entrowatch "+cmd+" -h' for its flags.", tc.args)
	}
}
