package ingest_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// readAll reads every batch of input and returns the rows as plain values.
type gotRow struct {
	id, model, domain, prompt, finish, provider string
	domainNull, promptNull, correctNull         bool
	correct                                     bool
	attrs                                       map[string]string
	chosen                                      []float64
	top                                         [][]float64
	noLogprobs                                  bool
	temperature                                 float32
}

func readAll(t *testing.T, input string, f64 bool) ([]gotRow, []ingest.Reject) {
	t.Helper()
	cfg := ingest.DefaultConfig()
	cfg.Float64 = f64
	cfg.BatchRows = 2
	rows, _, rejects := readWith(t, input, cfg)
	return rows, rejects
}

func toRows(rec arrow.RecordBatch) []gotRow {
	s := rec.Schema()
	str := func(name string) *array.String { return rec.Column(schemas.MustIndex(s, name)).(*array.String) }
	tok := rec.Column(schemas.MustIndex(s, schemas.ColTokenLogprob)).(*array.List)
	top := rec.Column(schemas.MustIndex(s, schemas.ColTopLogprobs)).(*array.List)
	attrs := rec.Column(schemas.MustIndex(s, schemas.ColAttributes)).(*array.Map)
	correct := rec.Column(schemas.MustIndex(s, schemas.ColCorrect)).(*array.Boolean)
	temp := rec.Column(schemas.MustIndex(s, schemas.ColTemperature)).(*array.Float32)
	floats := func(a arrow.Array, lo, hi int64) []float64 {
		out := []float64{}
		for j := lo; j < hi; j++ {
			switch v := a.(type) {
			case *array.Float32:
				// the shortest decimal that reads back as this float32
				x, _ := strconv.ParseFloat(strconv.FormatFloat(float64(v.Value(int(j))), 'g', -1, 32), 64)
				out = append(out, x)
			case *array.Float64:
				out = append(out, v.Value(int(j)))
			}
		}
		return out
	}
	var rows []gotRow
	for i := range int(rec.NumRows()) {
		r := gotRow{
			id: str(schemas.ColTraceID).Value(i), model: str(schemas.ColModel).Value(i),
			domain: str(schemas.ColDomain).Value(i), domainNull: str(schemas.ColDomain).IsNull(i),
			prompt: str(schemas.ColPrompt).Value(i), promptNull: str(schemas.ColPrompt).IsNull(i),
			finish: str(schemas.ColFinishReason).Value(i), provider: str(schemas.ColProvider).Value(i),
			correctNull: correct.IsNull(i), correct: correct.Value(i), temperature: temp.Value(i),
			attrs: map[string]string{},
		}
		lo, hi := attrs.ValueOffsets(i)
		keys, items := attrs.Keys().(*array.String), attrs.Items().(*array.String)
		for j := lo; j < hi; j++ {
			r.attrs[keys.Value(int(j))] = items.Value(int(j))
		}
		if tok.IsNull(i) {
			r.noLogprobs = true
		} else {
			lo, hi := tok.ValueOffsets(i)
			r.chosen = floats(tok.ListValues(), lo, hi)
			slo, shi := top.ValueOffsets(i)
			inner := top.ListValues().(*array.List)
			for s := slo; s < shi; s++ {
				a, b := inner.ValueOffsets(int(s))
				r.top = append(r.top, floats(inner.ListValues(), a, b))
			}
		}
		rows = append(rows, r)
	}
	return rows
}

const chat = `{"id":"c1","created":1760000000,"model":"gpt-x","domain":"math","prompt":"2+2?","attributes":{"tenant":"acme","route":"/v1","n":3},"correct":true,"choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[{"token":"4","logprob":-0.01,"bytes":[52],"top_logprobs":[{"token":"4","logprob":-0.01},{"token":"5","logprob":-4.6}]},{"token":".","logprob":-0.5,"top_logprobs":[{"token":".","logprob":-0.5},{"token":"!","logprob":-1.0},{"token":"?","logprob":-9999.0}]}]}}]}`

func TestShapes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		check func(t *testing.T, rows []gotRow, rejects []ingest.Reject)
	}{
		{"chat completion with extra fields", chat, func(t *testing.T, rows []gotRow, rejects []ingest.Reject) {
			require.Empty(t, rejects)
			require.Len(t, rows, 1)
			r := rows[0]
			require.Equal(t, "c1", r.id)
			require.Equal(t, "gpt-x", r.model)
			require.Equal(t, "math", r.domain)
			require.Equal(t, "2+2?", r.prompt)
			require.Equal(t, map[string]string{"tenant": "acme", "route": "/v1", "n": "3"}, r.attrs)
			require.False(t, r.correctNull)
			require.True(t, r.correct)
			require.Equal(t, []float64{-0.01, -0.5}, r.chosen)
			require.Equal(t, [][]float64{{-0.01, -4.6}, {-0.5, -1.0, -9999}}, r.top)
			require.Equal(t, "stop", r.finish)
			require.Equal(t, "openai", r.provider)
			require.True(t, math.IsNaN(float64(r.temperature)), "unknown temperature is NaN")
		}},
		{"legacy completions with maps", `{"id":"l1","object":"text_completion","model":"m","choices":[{"index":0,"text":"ab","finish_reason":"length","logprobs":{"tokens":["a","b"],"token_logprobs":[-0.2,-1.5],"top_logprobs":[{"a":-0.2,"c":-2.0},{"b":-1.5,"d":-0.4,"e":-3}],"text_offset":[0,1]}}]}`,
			func(t *testing.T, rows []gotRow, rejects []ingest.Reject) {
				require.Empty(t, rejects)
				require.Len(t, rows, 1)
				require.Equal(t, []float64{-0.2, -1.5}, rows[0].chosen)
				require.ElementsMatch(t, []float64{-0.2, -2.0}, rows[0].top[0])
				require.ElementsMatch(t, []float64{-1.5, -0.4, -3}, rows[0].top[1])
				require.True(t, rows[0].domainNull)
				require.True(t, rows[0].correctNull)
			}},
		{"vLLM: Python NaN/Infinity literals, 21 alternatives, sampling object", `{"id":"v1","model":"m","provider":"vllm","sampling":{"temperature":0.5},"choices":[{"index":0,"logprobs":{"content":[{"logprob":NaN,"top_logprobs":[{"logprob":-Infinity},{"logprob":Infinity}` + strings.Repeat(`,{"logprob":-1}`, 19) + `]}]}}]}`,
			func(t *testing.T, rows []gotRow, rejects []ingest.Reject) {
				require.Empty(t, rejects)
				require.Len(t, rows, 1)
				require.True(t, math.IsNaN(rows[0].chosen[0]))
				require.Len(t, rows[0].top[0], 21)
				require.True(t, math.IsInf(rows[0].top[0][0], -1))
				require.True(t, math.IsInf(rows[0].top[0][1], 1))
				require.Equal(t, "vllm", rows[0].provider)
				require.Equal(t, float32(0.5), rows[0].temperature)
			}},
		{"NaN inside a string is text, not a number", `{"id":"s1","model":"m","prompt":"NaN Infinity \"NaN\"","choices":[{"logprobs":{"content":[{"logprob":-1,"top_logprobs":[{"logprob":-1}]}]}}]}`,
			func(t *testing.T, rows []gotRow, rejects []ingest.Reject) {
				require.Empty(t, rejects)
				require.Equal(t, `NaN Infinity "NaN"`, rows[0].prompt)
				require.Equal(t, []float64{-1}, rows[0].chosen)
			}},
		{"several choices become several rows", `{"id":"n2","model":"m","choices":[{"index":0,"logprobs":{"content":[{"logprob":-1,"top_logprobs":[{"logprob":-1}]}]}},{"index":1,"logprobs":null}]}`,
			func(t *testing.T, rows []gotRow, rejects []ingest.Reject) {
				require.Empty(t, rejects)
				require.Len(t, rows, 2)
				require.Equal(t, "n2/0", rows[0].id)
				require.Equal(t, "n2/1", rows[1].id)
				require.True(t, rows[1].noLogprobs)
			}},
		{"chat messages as prompt, labels as 0/1", `{"id":"p1","model":"m","prompt":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"correct":0,"choices":[{"logprobs":{"content":[]}}]}`,
			func(t *testing.T, rows []gotRow, rejects []ingest.Reject) {
				require.Empty(t, rejects)
				require.Equal(t, "be brief\nhi", rows[0].prompt)
				require.False(t, rows[0].correctNull)
				require.False(t, rows[0].correct)
				require.Empty(t, rows[0].chosen)
				require.False(t, rows[0].noLogprobs)
			}},
		{"malformed lines are rejected with their line numbers; blank lines skipped", "{\"id\":\"ok\",\"model\":\"m\",\"choices\":[{}]}\n\nnot json\n{\"id\":\"x\"}\n[1,2]\n{\"id\":\"y\",\"choices\":[{}],\"correct\":\"maybe\"}\n",
			func(t *testing.T, rows []gotRow, rejects []ingest.Reject) {
				require.Len(t, rows, 1)
				require.True(t, rows[0].noLogprobs)
				require.Len(t, rejects, 4)
				for i, line := range []int64{3, 4, 5, 6} {
					require.Equal(t, line, rejects[i].Line)
					require.Equal(t, schemas.ReasonMalformedJSON, rejects[i].Reason)
					require.NotEmpty(t, rejects[i].Err.Error())
				}
				require.Equal(t, "x", rejects[1].ID)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, f64 := range []bool{false, true} {
				rows, rejects := readAll(t, tc.input, f64)
				tc.check(t, rows, rejects)
			}
		})
	}
}

// TestWrongFieldTypeSaysWhatJSON: a field of the wrong JSON type is named
// with the JSON wanted, not a Go type.
func TestWrongFieldTypeSaysWhatJSON(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	input := `{"id":"a","model":"m","choices":{"x":1}}` + "\n" + `{"id":"b","model":["m"],"choices":[]}` + "\n"
	r := ingest.NewReader(strings.NewReader(input), ingest.DefaultConfig(), mem)
	defer r.Release()
	var rejects []ingest.Reject
	for {
		rec, err := r.Next()
		rejects = append(rejects, r.Rejects()...) // also when the batch is empty (io.EOF)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		rec.Release()
	}
	require.Len(t, rejects, 2)
	require.EqualError(t, rejects[0].Err, "field choices: got JSON object, want an array")
	require.EqualError(t, rejects[1].Err, "field model: got JSON array, want a string")
}

func TestLineTooLongIsRejectedNotFatal(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cfg := ingest.DefaultConfig()
	cfg.MaxLineBytes = 1024
	input := `{"id":"big","prompt":"` + strings.Repeat("x", 4096) + `"}` + "\n" + chat + "\n"
	r := ingest.NewReader(strings.NewReader(input), cfg, mem)
	defer r.Release()
	rec, err := r.Next()
	require.NoError(t, err)
	require.EqualValues(t, 1, rec.NumRows())
	rec.Release()
	require.Len(t, r.Rejects(), 1)
	require.Equal(t, int64(1), r.Rejects()[0].Line)
	require.Equal(t, "big", r.Rejects()[0].ID)
	require.Contains(t, r.Rejects()[0].Err.Error(), "max_line_bytes")
	_, err = r.Next()
	require.ErrorIs(t, err, io.EOF)
}

func TestOpenDetectsGzip(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(chat + "\n"))
	zw.Close()
	for name, data := range map[string][]byte{"a.jsonl": []byte(chat + "\n"), "b.data": buf.Bytes()} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o644))
		f, err := ingest.Open(p)
		require.NoError(t, err)
		got, err := io.ReadAll(f)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		require.Equal(t, chat+"\n", string(got), name)
	}
	_, err := ingest.Open(filepath.Join(dir, "missing.jsonl"))
	require.Error(t, err)
	// A directory or a table is a mistake about the whole input, not a
	// malformed line per row.
	_, err = ingest.Open(dir)
	require.ErrorContains(t, err, "is a directory")
	table := filepath.Join(dir, "features.csv.gz")
	require.NoError(t, os.WriteFile(table, []byte("model,domain,correct\n"), 0o644))
	_, err = ingest.Open(table)
	require.ErrorContains(t, err, "is a table, not responses")
	// An artifact given as input says which flag takes it (it was one
	// malformed_json line: no "choices").
	for format, flag := range map[string]string{"entrowatch.estimator.v1": "--estimator", "entrowatch.clusters.v2": "--clusters"} {
		art := filepath.Join(dir, "artifact.json")
		require.NoError(t, os.WriteFile(art, []byte("{\n \"format\": \""+format+"\",\n \"version\": \"sha256:0\"\n}\n"), 0o644))
		_, err = ingest.Open(art)
		require.ErrorContains(t, err, "is an entrowatch artifact (format "+format+"), not responses: give it with "+flag)
	}
	// A truncated gzip file says so instead of a bare "unexpected EOF".
	var big bytes.Buffer
	zw = gzip.NewWriter(&big)
	for range 200 {
		zw.Write([]byte(chat + "\n"))
	}
	zw.Close()
	cut := filepath.Join(dir, "cut.jsonl.gz")
	require.NoError(t, os.WriteFile(cut, big.Bytes()[:big.Len()/2], 0o644))
	f, err := ingest.Open(cut)
	require.NoError(t, err)
	_, err = io.ReadAll(f)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.ErrorContains(t, err, "gzip data ends abruptly")
	f.Close()
}

// FuzzReader feeds arbitrary lines to the adapter: it must never panic, every
// non-blank line is either rows or one reject, and batches are valid Arrow.
func FuzzReader(f *testing.F) {
	f.Add([]byte(chat))
	for _, name := range []string{"testdata/seed-legacy.jsonl", "testdata/seed-invalid.jsonl"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"id":"a","choices":[{"logprobs":{"content":[{"logprob":NaN,"top_logprobs":[{"logprob":-Infinity}]}]}}]}`))
	f.Add([]byte("{\"id\":\"a\",\"choices\":[]}\n\n{"))
	f.Add([]byte(respAPI("r", "incomplete", `"incomplete_details":{"reason":"max_output_tokens"},`) + "\n" +
		`data: {"type":"response.completed","response":` + respAPI("r2", "completed", "") + "}\n"))
	f.Add([]byte("data: " + chunk("s", 0, stepFour, "", "") + "\n\ndata: " + chunk("s", 1, stepDot, "", "") + "\n\ndata: " +
		chunk("s", 0, "", "stop", "") + "\n\nevent: x\ndata: " + chunk("s", 1, "", "length", "") + "\n\ndata: [DONE]\n"))
	// a batch output line, an Azure filter event, a pretty object in JSON Lines
	f.Add([]byte(`{"id":"b","custom_id":"c","response":{"status_code":200,"body":` + chat + `},"error":null}` + "\n" +
		`{"choices":[],"id":"","prompt_filter_results":[]}` + "\n" + chat + "\n{\n\"id\": \"p\",\n\"choices\": []\n}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		cfg := ingest.DefaultConfig()
		cfg.BatchRows = 3
		r := ingest.NewReader(bytes.NewReader(data), cfg, mem)
		defer r.Release()
		for {
			rec, err := r.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				return // a read error is reported, not a panic
			}
			if !rec.Schema().Equal(schemas.Trace) {
				t.Fatalf("schema %v", rec.Schema())
			}
			for _, c := range rec.Columns() {
				if c.Len() != int(rec.NumRows()) {
					t.Fatalf("column length %d, rows %d", c.Len(), rec.NumRows())
				}
			}
			rec.Release()
		}
	})
}

// Legacy top_logprobs are maps, which Go iterates in random order: the
// alternatives are put most probable first, so every run gives the same
// row (and the same features to the last bit).
func TestLegacyAlternativesOrdered(t *testing.T) {
	line := `{"id":"L","object":"text_completion","model":"m","choices":[{"index":0,"finish_reason":"length",` +
		`"logprobs":{"token_logprobs":[-0.3],"top_logprobs":[{"e":-4,"a":-0.3,"d":-3,"b":-1,"c":-2,"f":-Infinity}]}}]}`
	for range 20 {
		rows, rej := readAll(t, line, true)
		require.Empty(t, rej)
		require.Equal(t, [][]float64{{-0.3, -1, -2, -3, -4, math.Inf(-1)}}, rows[0].top)
	}
}

// A chat completion that refused (structured outputs) carries its tokens'
// logprobs under logprobs.refusal, whole or streamed.
func TestRefusalLogprobs(t *testing.T) {
	step := `{"token":"I","logprob":-0.2,"top_logprobs":[{"token":"I","logprob":-0.2},{"token":"Sorry","logprob":-1.7}]}`
	whole := `{"id":"r1","model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"refusal":"I can't"},` +
		`"logprobs":{"content":null,"refusal":[` + step + `,` + step + `]}}]}`
	chunk := func(lp, fin string) string {
		return `{"id":"r2","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"logprobs":` + lp + `,"finish_reason":` + fin + `}]}`
	}
	streamed := chunk(`{"content":null,"refusal":[`+step+`]}`, "null") + "\n" + chunk(`{"refusal":[`+step+`]}`, "null") + "\n" + chunk("null", `"stop"`)
	rows, rej := readAll(t, whole+"\n"+streamed+"\n", true)
	require.Empty(t, rej)
	require.Len(t, rows, 2)
	for _, r := range rows {
		require.False(t, r.noLogprobs, r.id)
		require.Equal(t, []float64{-0.2, -0.2}, r.chosen, r.id)
		require.Equal(t, [][]float64{{-0.2, -1.7}, {-0.2, -1.7}}, r.top, r.id)
	}
}

// A legacy completion made with echo=true starts with the prompt's first
// token, which has no logprob: rejected as nan_logprob with a reason that
// says what to change, whole or streamed. A null later in the text is left to
// the profile (nan_logprob at that step).
func TestLegacyEcho(t *testing.T) {
	echo := `{"id":"E","object":"text_completion","model":"m","choices":[{"index":0,"text":"Hi there","finish_reason":"stop",` +
		`"logprobs":{"tokens":["Hi"," there"],"token_logprobs":[null,-0.5],"top_logprobs":[null,{" there":-0.5," all":-1.2}],"text_offset":[0,2]}}]}`
	chunk := func(lp, fin string) string {
		return `{"id":"S","object":"text_completion","model":"m","choices":[{"index":0,"text":"x","logprobs":` + lp + `,"finish_reason":` + fin + `}]}`
	}
	streamed := chunk(`{"token_logprobs":[null],"top_logprobs":[null]}`, "null") + "\n" +
		chunk(`{"token_logprobs":[-0.5],"top_logprobs":[{"x":-0.5}]}`, `"stop"`)
	later := `{"id":"N","object":"text_completion","model":"m","choices":[{"index":0,"finish_reason":"stop",` +
		`"logprobs":{"token_logprobs":[-0.5,null],"top_logprobs":[{"a":-0.5},{"b":-0.1}]}}]}`
	rows, rej := readAll(t, echo+"\n"+streamed+"\n"+later+"\n", true)
	require.Len(t, rej, 2)
	for _, r := range rej {
		require.Equal(t, schemas.ReasonNaNLogprob, r.Reason, r.ID)
		require.ErrorContains(t, r.Err, "echo=true", r.ID)
	}
	require.Equal(t, []string{"E", "S"}, []string{rej[0].ID, rej[1].ID})
	require.Len(t, rows, 1)
	require.Equal(t, "N", rows[0].id)
	require.True(t, math.IsNaN(rows[0].chosen[1]))
}

// TestInvalidConfigIsReportedByNext: NewReader keeps its signature, so an
// invalid Config (here the zero value, BatchRows 0) is Next's error, every
// time, instead of empty batches for ever.
func TestInvalidConfigIsReportedByNext(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	r := ingest.NewReader(strings.NewReader(chat+"\n"), ingest.Config{}, mem)
	defer r.Release()
	for range 3 {
		rec, err := r.Next()
		require.Nil(t, rec)
		require.ErrorContains(t, err, "ingest.batch_rows must be at least 1, got 0")
		require.ErrorContains(t, err, "ingest.DefaultConfig()")
		require.NotErrorIs(t, err, io.EOF)
	}
	require.True(t, r.Schema().Equal(schemas.Trace))
}

// TestNextAfterRelease: reading a released reader is an error, not a panic,
// and Release may be called twice.
func TestNextAfterRelease(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	r := ingest.NewReader(strings.NewReader(chat+"\n"+chat+"\n"), ingest.DefaultConfig(), mem)
	r.Release()
	require.NotPanics(t, func() {
		rec, err := r.Next()
		require.Nil(t, rec)
		require.ErrorContains(t, err, "after Release")
	})
	require.NotPanics(t, r.Release)
}

// TestBatchOutlivesReader: a batch from Next belongs to the caller and
// stays valid after Reader.Release.
func TestBatchOutlivesReader(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	r := ingest.NewReader(strings.NewReader(chat+"\n"), ingest.DefaultConfig(), mem)
	rec, err := r.Next()
	require.NoError(t, err)
	r.Release()
	defer rec.Release()
	require.Equal(t, "c1", toRows(rec)[0].id)
}

// TestNilAllocator: a nil allocator means memory.DefaultAllocator.
func TestNilAllocator(t *testing.T) {
	r := ingest.NewReader(strings.NewReader(chat+"\n"), ingest.DefaultConfig(), nil)
	defer r.Release()
	var rec arrow.RecordBatch
	require.NotPanics(t, func() {
		var err error
		rec, err = r.Next()
		require.NoError(t, err)
	})
	defer rec.Release()
	require.EqualValues(t, 1, rec.NumRows())
}

// oneStep is a chat response of one step: chosen logprob and alternatives as
// JSON text; extra is spliced into the object.
func oneStep(id, chosen, alts, extra string) string {
	return `{"id":"` + id + `","created":1760000000,"model":"m",` + extra + `"choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[` +
		`{"logprob":` + chosen + `,"top_logprobs":[` + alts + `]}]}}]}`
}

// A logprob is judged the same whether it is stored as float32 (the stream,
// HTTP) or float64 (score): values beyond float32's range do not become
// ±Inf, and a number of the input is never taken for one of the sentinels
// that stand for Python's NaN and Infinity.
func TestLogprobRangeSameInBothWidths(t *testing.T) {
	input := strings.Join([]string{
		oneStep("pos-chosen", "1e39", `{"logprob":-1}`, ""),
		oneStep("neg-chosen", "-1e39", `{"logprob":-1e39},{"logprob":-1}`, ""),
		oneStep("sentinel-nan", "7.0e307", `{"logprob":-1}`, ""),
		oneStep("sentinel-neg", "-8.0e307", `{"logprob":-Infinity},{"logprob":-1}`, `"temperature":NaN,`),
		oneStep("sentinel-pos", "-1", `{"logprob":8e307},{"logprob":-1}`, `"top_p":Infinity,`),
		oneStep("nan", "NaN", `{"logprob":-1}`, ""),
		oneStep("pos-alt", "-1", `{"logprob":1e39}`, ""),
		oneStep("inf-alt", "-1", `{"logprob":Infinity}`, ""),
	}, "\n")
	want := map[string]string{
		"pos-chosen":   schemas.ReasonPositiveLogprob,
		"neg-chosen":   "",
		"sentinel-nan": schemas.ReasonPositiveLogprob,
		"sentinel-neg": "",
		"sentinel-pos": schemas.ReasonPositiveLogprob,
		"nan":          schemas.ReasonNaNLogprob,
		"pos-alt":      schemas.ReasonPositiveLogprob,
		"inf-alt":      schemas.ReasonNaNLogprob,
	}
	for _, f64 := range []bool{false, true} {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		cfg := ingest.DefaultConfig()
		cfg.Float64 = f64
		r := ingest.NewReader(strings.NewReader(input), cfg, mem)
		rec, err := r.Next()
		require.NoError(t, err)
		require.Empty(t, r.Rejects())
		got := map[string]string{}
		ids := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
		for i := range ids.Len() {
			got[ids.Value(i)] = ""
		}
		require.NoError(t, profile.Check(profile.DefaultConfig(), rec, func(row int, rj *profile.Reject) {
			got[ids.Value(row)] = rj.Reason
		}))
		require.Equal(t, want, got, "float64 %v", f64)
		rows := toRows(rec)
		require.True(t, math.IsNaN(float64(rows[3].temperature)), "NaN stays NaN")
		require.Equal(t, math.Inf(-1), rows[3].top[0][0], "-Infinity stays -Inf")
		require.False(t, math.IsInf(rows[3].chosen[0], 0), "a genuine -8.0e307 stays finite")
		require.Less(t, rows[3].chosen[0], -3e38)
		rec.Release()
		r.Release()
		mem.AssertSize(t, 0)
	}
}

// Choices that repeat an index would make two rows of one trace id.
func TestDuplicateChoiceIndex(t *testing.T) {
	two := func(a, b string) string {
		c := `"finish_reason":"stop","logprobs":{"content":[` + stepFour + `]}`
		return `{"id":"d","created":1760000000,"choices":[{` + a + c + `},{` + b + c + `}]}`
	}
	rows, rej := readAll(t, two(`"index":0,`, `"index":0,`)+"\n"+two(``, ``)+"\n"+two(`"index":0,`, `"index":1,`), false)
	require.Len(t, rows, 2)
	require.Equal(t, "d/0", rows[0].id)
	require.Equal(t, "d/1", rows[1].id)
	require.Len(t, rej, 2)
	for _, r := range rej {
		require.Equal(t, schemas.ReasonMalformedJSON, r.Reason)
		require.ErrorContains(t, r.Err, `"index": 0 twice`)
	}
}

// "created" is Unix seconds or milliseconds of this century; anything else is
// rejected rather than stored as a time no view shows (or an overflow).
func TestCreated(t *testing.T) {
	for _, tc := range []struct {
		created string
		ms      int64 // 0: rejected
	}{
		{"1760000000", 1760000000000},
		{"1760000000.25", 1760000000250},
		{"1795585100000", 1795585100000},
		{"946684800", 946684800000},
		{"946684799", 0},
		{"4102444800", 0},
		{"1e300", 0},
		{"-1e18", 0},
		{"0", 0},
		{"9.2e18", 0},
		{"NaN", 0},
	} {
		t.Run(tc.created, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			line := strings.Replace(chat, `"created":1760000000`, `"created":`+tc.created, 1)
			r := ingest.NewReader(strings.NewReader(line), ingest.DefaultConfig(), mem)
			defer r.Release()
			rec, err := r.Next()
			if tc.ms == 0 {
				require.ErrorIs(t, err, io.EOF)
				require.Len(t, r.Rejects(), 1)
				require.Equal(t, schemas.ReasonMalformedJSON, r.Rejects()[0].Reason)
				require.ErrorContains(t, r.Rejects()[0].Err, `"created" is `+tc.created+": created must be Unix seconds")
				return
			}
			require.NoError(t, err)
			defer rec.Release()
			ts := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTS)).(*array.Timestamp)
			require.Equal(t, arrow.Timestamp(tc.ms), ts.Value(0))
		})
	}
}

// TestCreatedWrongType: a "created" that is not a number names the field
// and says what it takes; it said "field : got JSON string "yesterday",
// want a string".
func TestCreatedWrongType(t *testing.T) {
	for _, tc := range []struct{ field, value, got string }{
		{"created", `"yesterday"`, `string "yesterday"`},
		{"created", "true", "bool"},
		{"created", "[1]", "array"},
	} {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		line := strings.Replace(chat, `"created":1760000000`, `"`+tc.field+`":`+tc.value, 1)
		require.NotEqual(t, chat, line)
		r := ingest.NewReader(strings.NewReader(line), ingest.DefaultConfig(), mem)
		_, err := r.Next()
		require.ErrorIs(t, err, io.EOF)
		require.Len(t, r.Rejects(), 1)
		require.Equal(t, schemas.ReasonMalformedJSON, r.Rejects()[0].Reason)
		require.EqualError(t, r.Rejects()[0].Err, "field "+tc.field+": got JSON "+tc.got+", want a number: Unix seconds (or milliseconds), e.g. 1760000000")
		r.Release()
		mem.AssertSize(t, 0)
	}
}

// TestLongID: an id longer than MaxTraceIDBytes is malformed_json; it was
// accepted up to the message limit, and no label could name it.
func TestLongID(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ok := strings.Replace(chat, `"id":"c1"`, `"id":"`+strings.Repeat("a", schemas.MaxTraceIDBytes)+`"`, 1)
	long := strings.Replace(chat, `"id":"c1"`, `"id":"`+strings.Repeat("b", schemas.MaxTraceIDBytes+1)+`"`, 1)
	r := ingest.NewReader(strings.NewReader(ok+"\n"+long+"\n"), ingest.DefaultConfig(), mem)
	defer r.Release()
	rec, err := r.Next()
	require.NoError(t, err)
	require.EqualValues(t, 1, rec.NumRows())
	rec.Release()
	require.Len(t, r.Rejects(), 1)
	require.Equal(t, schemas.ReasonMalformedJSON, r.Rejects()[0].Reason)
	require.EqualError(t, r.Rejects()[0].Err, `"id" of 1025 bytes, more than the maximum 1024: ids name responses in labels and queries`)
}

// TestRejectsPerNextBounded: a long run of rejected lines does not pile up
// in one Next call (memory bounded by the cap, not the input); the rows after
// it and every reject still come out.
func TestRejectsPerNextBounded(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	const bad = 10000
	in := strings.Repeat("{}\n", bad) + chat + "\n"
	r := ingest.NewReader(strings.NewReader(in), ingest.DefaultConfig(), mem)
	defer r.Release()
	var rows, rejects, calls, most int
	for {
		rec, err := r.Next()
		n := len(r.Rejects())
		rejects += n
		most = max(most, n)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		calls++
		rows += int(rec.NumRows())
		rec.Release()
	}
	require.Equal(t, bad, rejects)
	require.Equal(t, 1, rows)
	require.LessOrEqual(t, most, 4096, "rejects gathered by one Next call")
	require.GreaterOrEqual(t, calls, 3)
}

// TestByteOrderMarkMidInput: a byte-order mark where a concatenated file
// began (line 2 of JSON Lines, or before a second array) is skipped like the
// one at the start of the input, not a malformed_json reject.
func TestByteOrderMarkMidInput(t *testing.T) {
	for name, in := range map[string]string{
		"lines":  chat + "\n\ufeff" + chat + "\n",
		"arrays": "[" + chat + "]\n\ufeff[" + chat + "]\n",
	} {
		rows, _, rejects := readFramed(t, in)
		require.Empty(t, rejects, name)
		require.Len(t, rows, 2, name)
	}
}

// multiChoice is a response with n one-step choices and the given prompt.
func multiChoice(id string, n int, prompt string) string {
	var b strings.Builder
	b.WriteString(`{"id":"` + id + `","model":"m","prompt":"` + prompt + `","choices":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"index":%d,"finish_reason":"stop","logprobs":{"content":[{"token":"a","logprob":-0.1,"top_logprobs":[{"token":"a","logprob":-0.1}]}]}}`, i)
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestChoicesBounded: each choice is a row carrying the response's prompt,
// so a 270 KB body of 1,500 choices and a 100 KB prompt took `run` to 1.5
// GB. More than max_choices choices, or rows that would hold more than
// max_line_bytes in all, are too_long; a batch ends early once its rows
// hold 32 MiB.
func TestChoicesBounded(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cfg := ingest.DefaultConfig()
	cfg.MaxLineBytes = 1 << 20
	prompt := strings.Repeat("p", 400<<10)
	in := strings.Join([]string{
		multiChoice("ok-128", 128, "short"),
		multiChoice("many", 129, "short"),
		multiChoice("wide", 3, prompt), // 3 x 400 KB over the 1 MiB bound
		multiChoice("ok-2", 2, prompt),
	}, "\n")
	r := ingest.NewReader(strings.NewReader(in), cfg, mem)
	defer r.Release()
	rec, err := r.Next()
	require.NoError(t, err)
	require.EqualValues(t, 130, rec.NumRows())
	rec.Release()
	rj := r.Rejects()
	require.Len(t, rj, 2)
	require.Equal(t, schemas.ReasonTooLong, rj[0].Reason)
	require.Equal(t, "many", rj[0].ID)
	require.EqualError(t, rj[0].Err, "129 choices, more than the maximum 128 (ingest.max_choices)")
	require.Equal(t, schemas.ReasonTooLong, rj[1].Reason)
	require.Equal(t, "wide", rj[1].ID)
	require.ErrorContains(t, rj[1].Err, "3 choices, each a row carrying the prompt and attributes")
	_, err = r.Next()
	require.ErrorIs(t, err, io.EOF)

	// A batch ends once its rows hold 32 MiB, not only at batch_rows.
	cfg = ingest.DefaultConfig()
	big := strings.Repeat("q", 6<<20)
	var lines []string
	for i := range 8 {
		lines = append(lines, multiChoice(fmt.Sprintf("big-%d", i), 1, big))
	}
	r2 := ingest.NewReader(strings.NewReader(strings.Join(lines, "\n")), cfg, mem)
	defer r2.Release()
	var sizes []int64
	for {
		rec, err := r2.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		sizes = append(sizes, rec.NumRows())
		rec.Release()
	}
	require.Equal(t, []int64{6, 2}, sizes, "6 rows of 6 MiB pass 32 MiB")
	require.Error(t, ingest.Config{BatchRows: 1, MaxLineBytes: 1024, MaxOpenStreams: 1, MaxSteps: 1, MaxHeldSteps: 1}.Validate(), "max_choices 0")
}
