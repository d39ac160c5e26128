package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	arrowipc "github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// fixtures are the golden responses and the numpy reference values
// (copied from shared/data/fixtures).
const fixtures = "../../operators/profile/testdata/"

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func readCSV(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	var out []map[string]string
	for _, r := range rows[1:] {
		m := map[string]string{}
		for i, h := range rows[0] {
			m[h] = r[i]
		}
		out = append(out, m)
	}
	return out
}

func TestScoreGoldenCSV(t *testing.T) {
	out := filepath.Join(t.TempDir(), "profiles.csv")
	_, stderr, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "scored 33 responses")
	require.Contains(t, stderr, "33 written, 0 rejected")

	want := readCSV(t, fixtures+"valid.expected.csv")
	got := readCSV(t, out)
	require.Len(t, got, len(want))
	header, err := os.ReadFile(out)
	require.NoError(t, err)
	wantHeader, err := os.ReadFile(fixtures + "valid.expected.csv")
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(strings.SplitN(string(wantHeader), "\n", 2)[0]), strings.SplitN(string(header), "\n", 2)[0])
	for i, w := range want {
		g := got[i]
		for _, k := range []string{"id", "model", "domain", "correct", "n_tokens"} {
			require.Equal(t, w[k], g[k], "%s %s", w["id"], k)
		}
		for _, k := range append(append([]string{}, schemas.ProfileFeatures...), schemas.Baselines...) {
			wv, _ := strconv.ParseFloat(w[k], 64)
			gv, err := strconv.ParseFloat(g[k], 64)
			require.NoError(t, err)
			tol := 1e-9
			if k == "skew" || k == "kurt" {
				tol = 1e-6
			}
			require.LessOrEqual(t, math.Abs(gv-wv), tol*math.Max(1, math.Abs(wv)), "%s %s got %v want %v", w["id"], k, gv, wv)
		}
	}
}

func TestScoreInvalidReasons(t *testing.T) {
	dir := t.TempDir()
	rejects := filepath.Join(dir, "rejects.jsonl")
	_, stderr, code := runCLI(t, "score", "--in", fixtures+"invalid.jsonl", "--out", filepath.Join(dir, "x.csv"), "--rejects", rejects)
	// Nothing scorable is a failure a script must see, and leaves no
	// header-only file that looks like a result.
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "none of the 5 responses could be scored")
	require.NoFileExists(t, filepath.Join(dir, "x.csv"))
	want := readCSV(t, fixtures+"invalid.expected.csv")
	for _, w := range want {
		require.Contains(t, stderr, "reject line "+w["line"]+" ")
		require.Regexp(t, "reject line "+w["line"]+` id="[^"]*" reason=`+w["reason"]+":", stderr)
	}
	require.Contains(t, stderr, "0 written, 5 rejected")
	b, err := os.ReadFile(rejects)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, len(want))
	for i, w := range want {
		require.Contains(t, lines[i], `"line":`+w["line"]+",")
		require.Contains(t, lines[i], `"reason":"`+w["reason"]+`"`)
	}

	_, stderr, code = runCLI(t, "score", "--strict", "--in", fixtures+"invalid.jsonl", "--out", filepath.Join(dir, "y.csv"))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "line 1:")
	require.Contains(t, stderr, "positive_logprob")

	// As a stream whose profile.max_logprob is 0.9: fx-200 (0.7) is scored.
	out := filepath.Join(dir, "z.csv")
	_, stderr, code = runCLI(t, "score", "--max-logprob", "0.9", "--in", fixtures+"invalid.jsonl", "--out", out)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stderr, "positive_logprob")
	rows := readCSV(t, out)
	require.Len(t, rows, 1)
	require.Equal(t, "fx-200", rows[0]["id"])
	_, stderr, code = runCLI(t, "score", "--max-logprob", "NaN", "--in", fixtures+"invalid.jsonl", "--out", out)
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "--max-logprob NaN: want a value in [0, 1)")
}

func TestScoreMaxSteps(t *testing.T) {
	dir := t.TempDir()
	_, stderr, code := runCLI(t, "score", "--max-steps", "50", "--in", fixtures+"valid.jsonl.gz", "--out", filepath.Join(dir, "x.csv"), "--quiet")
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `too_long \d+`, stderr)
	require.NotContains(t, stderr, "reject line", "--quiet prints the summary only")
}

// TestScoreArrowRoundTrip: JSON -> trace.v1 Arrow file -> score -> scored.v1
// Arrow, and the features equal those of the CSV path (float64 input).
func TestScoreArrowRoundTrip(t *testing.T) {
	dir := t.TempDir()
	mem := memory.NewGoAllocator()
	f, err := ingest.Open(fixtures + "valid.jsonl.gz")
	require.NoError(t, err)
	cfg := ingest.DefaultConfig()
	cfg.Float64 = true
	r := ingest.NewReader(f, cfg, mem)
	traces := filepath.Join(dir, "traces.arrow")
	tf, err := os.Create(traces)
	require.NoError(t, err)
	w := arrowipc.NewWriter(tf, arrowipc.WithSchema(schemas.Trace64))
	for {
		rec, err := r.Next()
		if err != nil {
			break
		}
		require.NoError(t, w.Write(rec))
		rec.Release()
	}
	require.NoError(t, w.Close())
	require.NoError(t, tf.Close())
	r.Release()
	f.Close()

	scored := filepath.Join(dir, "scored.arrow")
	_, stderr, code := runCLI(t, "score", "--in", traces, "--out", scored)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stderr, "end-of-stream")
	csvOut := filepath.Join(dir, "scored.csv")
	_, stderr, code = runCLI(t, "score", "--in", traces, "--out", csvOut)
	require.Equal(t, 0, code, stderr)

	sf, err := os.Open(scored)
	require.NoError(t, err)
	defer sf.Close()
	rd, err := arrowipc.NewReader(sf)
	require.NoError(t, err)
	defer rd.Release()
	require.True(t, rd.Schema().Equal(schemas.Scored))
	rows := readCSV(t, csvOut)
	n := 0
	for rd.Next() {
		rec := rd.RecordBatch()
		mean := rec.Column(schemas.MustIndex(schemas.Scored, "mean")).(*array.Float64)
		for i := range mean.Len() {
			want, _ := strconv.ParseFloat(rows[n]["mean"], 64)
			require.Equal(t, want, mean.Value(i))
			n++
		}
	}
	require.Equal(t, 33, n)

	// Either file without its end-of-stream marker (a copy cut short
	// between batches looks the same) is read, with a warning.
	for _, p := range []string{traces, scored} {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, b[:len(b)-8], 0o644))
	}
	_, stderr, code = runCLI(t, "score", "--in", traces, "--out", filepath.Join(dir, "again.csv"))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "ends without the Arrow end-of-stream marker")
	_, stderr, code = runCLI(t, "train", "--in", scored, "--out", filepath.Join(dir, "est.json"), "--min-rows", "2", "--min-class", "1")
	require.Contains(t, stderr, "ends without its end-of-stream marker", "exit %d", code)
}

func TestScoreUsageErrors(t *testing.T) {
	_, stderr, code := runCLI(t, "score", "--in", "x.jsonl")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "score needs --in and --out")
	_, stderr, code = runCLI(t, "score", "--in", "/nonexistent.jsonl", "--out", filepath.Join(t.TempDir(), "o.csv"))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "no such file")
	_, stderr, code = runCLI(t, "score", "--bogus")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "flag provided but not defined")
	_, stderr, code = runCLI(t, "nonsense")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, `unknown command "nonsense"`)
}

// TestScoreWithEstimatorAndClusters: train on the golden features, fit
// clusters on generated prompts, then score with both artifacts.
func TestScoreWithEstimatorAndClusters(t *testing.T) {
	dir := t.TempDir()
	est := filepath.Join(dir, "estimator.json")
	_, stderr, code := runCLI(t, "train", "--in", fixtures+"valid.expected.csv", "--out", est)
	require.Equal(t, 0, code, stderr)

	var prompts strings.Builder
	for i := range 40 {
		if i%2 == 0 {
			prompts.WriteString("solve the quadratic equation for x and simplify the integral\n")
		} else {
			prompts.WriteString("write a python function that sorts a list and returns the result\n")
		}
	}
	ptxt := filepath.Join(dir, "prompts.txt")
	require.NoError(t, os.WriteFile(ptxt, []byte(prompts.String()), 0o644))
	clusters := filepath.Join(dir, "clusters.json")
	_, stderr, code = runCLI(t, "cluster", "fit", "--in", ptxt, "--out", clusters, "--k", "2")
	require.Equal(t, 0, code, stderr)

	out := filepath.Join(dir, "scored.csv")
	_, stderr, code = runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", out, "--estimator", est, "--clusters", clusters)
	require.Equal(t, 0, code, stderr)
	rows := readCSV(t, out)
	require.Len(t, rows, 33)
	for _, r := range rows {
		p, err := strconv.ParseFloat(r["p_correct"], 64)
		require.NoError(t, err, "p_correct %q", r["p_correct"])
		require.True(t, p >= 0 && p <= 1, "p_correct %v", p)
		_, err = strconv.Atoi(r["cluster_id"])
		require.NoError(t, err)
		require.NotEmpty(t, r["cluster_label"])
	}
}

// chunked rebuilds a trace.v1 (float32) batch as chunk rows: each response
// split in two (seq 0 with the first half of the steps, seq 1 final with the
// rest), the second chunk first when flip says so; drop names responses whose
// final chunk is left out.
func chunked(t *testing.T, mem memory.Allocator, rec arrow.RecordBatch, flip func(i int) bool, drop map[string]bool) arrow.RecordBatch {
	t.Helper()
	sc := rec.Schema()
	ids := rec.Column(schemas.MustIndex(sc, schemas.ColTraceID)).(*array.String)
	tok := rec.Column(schemas.MustIndex(sc, schemas.ColTokenLogprob)).(*array.List)
	top := rec.Column(schemas.MustIndex(sc, schemas.ColTopLogprobs)).(*array.List)
	var parts []arrow.RecordBatch
	part := func(i int, lo, hi int64, seq int32, final bool) arrow.RecordBatch {
		cols := make([]arrow.Array, sc.NumFields())
		for c, f := range sc.Fields() {
			switch f.Name {
			case schemas.ColSeq:
				b := array.NewInt32Builder(mem)
				b.Append(seq)
				cols[c] = b.NewArray()
			case schemas.ColFinal:
				b := array.NewBooleanBuilder(mem)
				b.Append(final)
				cols[c] = b.NewArray()
			case schemas.ColTokenLogprob:
				b := array.NewListBuilder(mem, arrow.PrimitiveTypes.Float32)
				b.Append(true)
				s, _ := tok.ValueOffsets(i)
				vals := tok.ListValues().(*array.Float32)
				for j := s + lo; j < s+hi; j++ {
					b.ValueBuilder().(*array.Float32Builder).Append(vals.Value(int(j)))
				}
				cols[c] = b.NewArray()
			case schemas.ColTopLogprobs:
				b := array.NewListBuilder(mem, arrow.ListOf(arrow.PrimitiveTypes.Float32))
				b.Append(true)
				s, _ := top.ValueOffsets(i)
				inner := top.ListValues().(*array.List)
				vals := inner.ListValues().(*array.Float32)
				for j := s + lo; j < s+hi; j++ {
					ib := b.ValueBuilder().(*array.ListBuilder)
					ib.Append(true)
					a, z := inner.ValueOffsets(int(j))
					for k := a; k < z; k++ {
						ib.ValueBuilder().(*array.Float32Builder).Append(vals.Value(int(k)))
					}
				}
				cols[c] = b.NewArray()
			default:
				cols[c] = array.NewSlice(rec.Column(c), int64(i), int64(i+1))
			}
		}
		out := array.NewRecordBatch(sc, cols, 1)
		for _, a := range cols {
			a.Release()
		}
		return out
	}
	for i := range ids.Len() {
		s, e := tok.ValueOffsets(i)
		n := e - s
		first, second := part(i, 0, n/2, 0, false), part(i, n/2, n, 1, true)
		if drop[ids.Value(i)] {
			second.Release()
			parts = append(parts, first)
			continue
		}
		if flip(i) {
			first, second = second, first
		}
		parts = append(parts, first, second)
	}
	cols := make([]arrow.Array, sc.NumFields())
	for c := range cols {
		var arrs []arrow.Array
		for _, p := range parts {
			arrs = append(arrs, p.Column(c))
		}
		a, err := array.Concatenate(arrs, mem)
		require.NoError(t, err)
		cols[c] = a
	}
	out := array.NewRecordBatch(sc, cols, int64(len(parts)))
	for _, a := range cols {
		a.Release()
	}
	for _, p := range parts {
		p.Release()
	}
	return out
}

// TestScoreArrowChunks: an Arrow file of chunk rows (as producers stream them
// to the topic, some out of order) scores like the whole responses; a trace
// whose final chunk never comes is rejected as incomplete.
func TestScoreArrowChunks(t *testing.T) {
	dir := t.TempDir()
	mem := memory.NewGoAllocator()
	f, err := ingest.Open(fixtures + "valid.jsonl.gz")
	require.NoError(t, err)
	defer f.Close()
	cfg := ingest.DefaultConfig() // float32 logprobs: what the stream carries, and what chunks are reassembled in
	cfg.BatchRows = 10
	r := ingest.NewReader(f, cfg, mem)
	defer r.Release()
	write := func(name string, conv func(arrow.RecordBatch) arrow.RecordBatch, recs []arrow.RecordBatch) string {
		path := filepath.Join(dir, name)
		tf, err := os.Create(path)
		require.NoError(t, err)
		w := arrowipc.NewWriter(tf, arrowipc.WithSchema(schemas.Trace))
		for _, rec := range recs {
			c := conv(rec)
			require.NoError(t, w.Write(c))
			c.Release()
		}
		require.NoError(t, w.Close())
		require.NoError(t, tf.Close())
		return path
	}
	var recs []arrow.RecordBatch
	for {
		rec, err := r.Next()
		if err != nil {
			break
		}
		recs = append(recs, rec)
	}
	whole := write("whole.arrow", func(rec arrow.RecordBatch) arrow.RecordBatch { rec.Retain(); return rec }, recs)
	chunks := write("chunks.arrow", func(rec arrow.RecordBatch) arrow.RecordBatch {
		return chunked(t, mem, rec, func(i int) bool { return i%3 == 1 }, map[string]bool{"fx-7": true})
	}, recs)
	for _, rec := range recs {
		rec.Release()
	}

	_, stderr, code := runCLI(t, "score", "--in", whole, "--out", filepath.Join(dir, "whole.csv"))
	require.Equal(t, 0, code, stderr)
	_, stderr, code = runCLI(t, "score", "--in", chunks, "--out", filepath.Join(dir, "chunks.csv"))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, `reject trace fx-7 id="fx-7" reason=incomplete`)
	require.Contains(t, stderr, "scored 33 responses")
	require.Contains(t, stderr, "32 written, 1 rejected")

	want := map[string]map[string]string{}
	for _, row := range readCSV(t, filepath.Join(dir, "whole.csv")) {
		want[row["id"]] = row
	}
	got := readCSV(t, filepath.Join(dir, "chunks.csv"))
	require.Len(t, got, 32)
	for _, g := range got {
		w := want[g["id"]]
		require.NotNil(t, w, g["id"])
		for _, k := range append([]string{"model", "n_tokens"}, schemas.ProfileFeatures...) {
			require.Equal(t, w[k], g[k], "%s %s", g["id"], k)
		}
	}
}

// scoreLine is a scorable chat response with id.
func scoreLine(id string) string {
	return `{"id":"` + id + `","created":1760000000,"model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[` +
		`{"logprob":-0.1,"top_logprobs":[{"logprob":-0.1},{"logprob":-2.5}]},{"logprob":-0.7,"top_logprobs":[{"logprob":-0.7},{"logprob":-0.9}]}]}}]}`
}

// Responses after the end of a JSON array are scored, not dropped.
func TestScoreReadsPastTheArray(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.json")
	data := "[" + scoreLine("r1") + "," + scoreLine("r2") + "]\n[" + scoreLine("r3") + "," + scoreLine("r4") + "]\n" + scoreLine("r5") + "\n"
	require.NoError(t, os.WriteFile(in, []byte(data), 0o644))
	out := filepath.Join(dir, "out.csv")
	_, stderr, code := runCLI(t, "score", "--in", in, "--out", out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "scored 5 responses")
	require.Contains(t, stderr, "5 written, 0 rejected")
	require.Len(t, readCSV(t, out), 5)
}

// Repeated trace ids are counted in a warning after the summary.
func TestScoreWarnsRepeatedIDs(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	lines := []string{scoreLine("a"), scoreLine("b"), scoreLine("a"), scoreLine("c"), scoreLine("a"), scoreLine("b")}
	require.NoError(t, os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	_, stderr, code := runCLI(t, "score", "--in", in, "--out", filepath.Join(dir, "out.csv"))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "6 written, 0 rejected")
	require.Contains(t, stderr, `warning: 3 responses repeat the model and trace id of one that came before in `+in+` ("a", "b")`)

	require.NoError(t, os.WriteFile(in, []byte(strings.Join(lines[:2], "\n")+"\n"), 0o644))
	_, stderr, code = runCLI(t, "score", "--in", in, "--out", filepath.Join(dir, "out2.csv"))
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stderr, "warning")
}

// --max-steps bounds a streamed response while its chunks are joined: it is
// rejected as too_long by the reader, and the rest is scored.
func TestScoreMaxStepsStreamed(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	chunk := func(id, finish string) string {
		fin := "null"
		if finish != "" {
			fin = `"` + finish + `"`
		}
		return `data: {"id":"` + id + `","object":"chat.completion.chunk","created":1760000000,"model":"m","choices":[{"index":0,` +
			`"logprobs":{"content":[{"logprob":-0.5,"top_logprobs":[{"logprob":-0.5},{"logprob":-1}]}]},"finish_reason":` + fin + `}]}`
	}
	var lines []string
	for i := range 5 {
		lines = append(lines, chunk("long", ""), chunk("forever", ""))
		if i < 2 {
			lines = append(lines, chunk("short", ""))
		}
	}
	lines = append(lines, chunk("long", "stop"), chunk("short", "stop"))
	require.NoError(t, os.WriteFile(in, []byte(strings.Join(lines, "\n\n")+"\n"), 0o644))
	_, stderr, code := runCLI(t, "score", "--max-steps", "4", "--in", in, "--out", filepath.Join(dir, "out.csv"))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "1 written, 2 rejected (too_long 2)")
	require.Contains(t, stderr, `id="long" reason=too_long: streamed response (6 chat.completion.chunk objects, lines 1-25): choice 0 has more than 4 steps`)
	require.Contains(t, stderr, `id="forever" reason=too_long`)
}

// captureStdout runs f with os.Stdout (where --out - writes) redirected and
// returns what it wrote.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	old := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = old }()
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		done <- b
	}()
	f()
	os.Stdout = old
	require.NoError(t, w.Close())
	return string(<-done)
}

// oneResponse is a minimal chat completion with a label field set to
// correct (raw JSON).
func oneResponse(id, correct string) string {
	return `{"id":"` + id + `","model":"m","correct":` + correct + `,"choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[` +
		`{"token":"4","logprob":-0.01,"top_logprobs":[{"token":"4","logprob":-0.01},{"token":"5","logprob":-4.6}]},` +
		`{"token":".","logprob":-0.5,"top_logprobs":[{"token":".","logprob":-0.5},{"token":"!","logprob":-1.0}]}]}}]}` + "\n"
}

// TestScoreLabelSpellings: a "correct" string field takes the spellings of a
// labelled CSV's correct column (before, "yes" rejected the response as
// malformed_json while "true" was read).
func TestScoreLabelSpellings(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "y.jsonl")
	body := oneResponse("a", `"yes"`) + oneResponse("b", `"No"`) + oneResponse("c", `"t"`) + oneResponse("d", `"F"`) +
		oneResponse("e", `"true"`) + oneResponse("f", `0`) + oneResponse("g", `""`) + oneResponse("h", `null`)
	require.NoError(t, os.WriteFile(in, []byte(body), 0o644))
	out := filepath.Join(dir, "y.csv")
	_, stderr, code := runCLI(t, "score", "--in", in, "--out", out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "8 written, 0 rejected")
	got := map[string]string{}
	for _, r := range readCSV(t, out) {
		got[r["id"]] = r["correct"]
	}
	require.Equal(t, map[string]string{"a": "1", "b": "0", "c": "1", "d": "0", "e": "1", "f": "0", "g": "", "h": ""}, got)
}

// TestScoreNothingScoredToStdout: when nothing can be scored, --out - writes
// nothing to standard output, as the error says (before, the CSV header was
// written there); when rows are scored, the CSV goes there as before.
func TestScoreNothingScoredToStdout(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte(oneResponse("a", `"maybe"`)), 0o644))
	var stderr string
	var code int
	written := captureStdout(t, func() { _, stderr, code = runCLI(t, "score", "--in", bad, "--out", "-") })
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "nothing written to standard output")
	require.Empty(t, written)

	good := filepath.Join(dir, "good.jsonl")
	require.NoError(t, os.WriteFile(good, []byte(oneResponse("a", "true")), 0o644))
	written = captureStdout(t, func() { _, stderr, code = runCLI(t, "score", "--in", good, "--out", "-") })
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSpace(written), "\n")
	require.Len(t, lines, 2, written)
	require.True(t, strings.HasPrefix(lines[0], "id,model,domain,correct,n_tokens,"), lines[0])
	require.True(t, strings.HasPrefix(lines[1], "a,m,"), lines[1])
}

// TestScoreFallbackSummary: rows scored by the estimator's fallback are
// counted per LLM model on stderr (CSV output has no estimator_version).
func TestScoreFallbackSummary(t *testing.T) {
	dir := t.TempDir()
	est := filepath.Join(dir, "est.json")
	_, stderr, code := runCLI(t, "train", "--in", fixtures+"valid.expected.csv", "--out", est, "--transfer=false")
	require.Equal(t, 0, code, stderr)
	out := filepath.Join(dir, "own.csv")
	_, stderr, code = runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", out, "--estimator", est)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stderr, "scored by the fallback", "fixture-model has its own model")

	other := renameModel(t, "other-llm")
	_, stderr, code = runCLI(t, "score", "--in", other, "--out", filepath.Join(dir, "other.csv"), "--estimator", est, "--quiet")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "estimator: 33 rows of model other-llm scored by the fallback, model fixture-model: "+
		"the estimator has no model of other-llm's own and records no reason (other-llm was not in its training table, "+
		"or an older entrowatch train left it out); to give it one, train on labelled rows of other-llm\n")
	require.NotContains(t, stderr, "train one on its labelled rows", "not the advice for an LLM train left out")

	// An LLM that train left out for too few rows: score gives train's reason.
	b, err := os.ReadFile(fixtures + "valid.expected.csv")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	table := lines
	for _, l := range lines[1:4] {
		table = append(table, strings.Replace(l, ",fixture-model,", ",other-llm,", 1))
	}
	in := filepath.Join(dir, "with-few.csv")
	require.NoError(t, os.WriteFile(in, []byte(strings.Join(table, "\n")+"\n"), 0o644))
	_, stderr, code = runCLI(t, "train", "--in", in, "--out", est, "--transfer=false", "--min-rows", "20", "--min-class", "2")
	require.Equal(t, 0, code, stderr)
	_, stderr, code = runCLI(t, "score", "--in", other, "--out", filepath.Join(dir, "other2.csv"), "--estimator", est, "--quiet")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "estimator: 33 rows of model other-llm scored by the fallback, the pooled model (*): "+
		"entrowatch train left other-llm out: too few labelled rows: 3 rows (")
	require.Contains(t, stderr, "under the minimum of 20 rows and 2 correct; to give it a model of its own, add labelled rows of it and retrain\n")
}

// TestScoreRejectsPaths: --rejects naming the --out file lost every reject
// without a word (the summary counted 16, the file held the 7 scored rows),
// and --rejects - created a file named "-". Now the first is refused and
// "-" is standard output, refused when --out is standard output too.
func TestScoreRejectsPaths(t *testing.T) {
	dir := t.TempDir()
	in := fixtures + "invalid.jsonl"
	same := filepath.Join(dir, "same.csv")
	_, stderr, code := runCLI(t, "score", "--in", in, "--out", same, "--rejects", same)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "--rejects "+same+" is the --out file")
	require.NoFileExists(t, same)
	// The same file written two ways is the same file.
	_, stderr, code = runCLI(t, "score", "--in", in, "--out", same, "--rejects", filepath.Join(dir, ".", "same.csv"))
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "is the --out file")

	// A link to the other file, which does not exist yet: the write through
	// the link lands on it (the 33 scored rows were lost).
	link := filepath.Join(dir, "link.csv")
	require.NoError(t, os.Symlink("same.csv", link))
	_, stderr, code = runCLI(t, "score", "--in", in, "--out", link, "--rejects", same)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "is the --out file")
	_, stderr, code = runCLI(t, "score", "--in", in, "--out", same, "--rejects", link)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "is the --out file")

	_, stderr, code = runCLI(t, "score", "--in", in, "--out", "-", "--rejects", "-")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "would both write to standard output")

	wd, err := os.Getwd()
	require.NoError(t, err)
	t.Chdir(dir)
	stdout, stderr, code := runCLI(t, "score", "--in", filepath.Join(wd, in), "--out", filepath.Join(dir, "out.csv"), "--rejects", "-")
	require.NotEqual(t, 2, code, stderr)
	require.NoFileExists(t, filepath.Join(dir, "-"))
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.NotEmpty(t, lines)
	for _, l := range lines {
		var rj struct {
			Line   int    `json:"line"`
			Reason string `json:"reason"`
		}
		require.NoError(t, json.Unmarshal([]byte(l), &rj), l)
		require.NotEmpty(t, rj.Reason, l)
	}
	require.Contains(t, stderr, strconv.Itoa(len(lines))+" rejected")
}
