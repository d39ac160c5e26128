package clustertag

import (
	"context"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

func TestRead(t *testing.T) {
	for _, tc := range []struct {
		name, format, in string
		prompts          []string
		domain, emb      bool
		skipped          int
		err              string
	}{
		{"jsonl", FormatJSONL, `{"id":"a","prompt":"p1","domain":"law","choices":[{"x":1}]}` + "\n\n" + `{"id":"b"}` + "\n" + `{"prompt":"p2"}`,
			[]string{"p1", "p2"}, true, false, 1, ""},
		{"jsonl embeddings", FormatJSONL, `{"prompt":"p1","embedding":[1,0]}` + "\n" + `{"embedding":[0,1]}`,
			[]string{"p1", ""}, false, true, 0, ""},
		{"jsonl chat messages", FormatJSONL, `{"prompt":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}` + "\n" +
			`{"prompt":{"text":"odd"}}` + "\n" + `{"prompt":null}` + "\n" + `{"prompt":[]}`,
			[]string{"be brief\nhi", `{"text":"odd"}`}, false, false, 2, ""},
		{"jsonl malformed", FormatJSONL, `{"prompt":"p1"}` + "\n" + `{"prompt":`, nil, false, false, 0, "line 2: not a JSON object"},
		{"jsonl no prompt", FormatJSONL, `{"id":"a"}`, nil, false, false, 0, `no line has a "prompt"`},
		{"csv", FormatCSV, "Domain,Prompt\nlaw,\"a, b\"\neco,\n", []string{"a, b"}, true, false, 1, ""},
		{"csv bom quoted header", FormatCSV, "\ufeff\"Domain\",\"Prompt\"\r\n\"law\",\"a, b\"\r\n", []string{"a, b"}, true, false, 0, ""},
		{"csv embedding", FormatCSV, "prompt,embedding\np,\"[0.5, 0.5]\"\nq,0.1 0.9\n", []string{"p", "q"}, false, true, 0, ""},
		{"csv bad embedding", FormatCSV, "prompt,embedding\np,\"[x]\"\n", nil, false, false, 0, "row 2: embedding"},
		{"csv no prompt column", FormatCSV, "domain,text\nlaw,x\n", nil, false, false, 0, "no prompt column"},
		{"csv empty", FormatCSV, "", nil, false, false, 0, "empty CSV"},
		{"text", FormatText, "first prompt\n\n  second  \n", []string{"first prompt", "second"}, false, false, 0, ""},
		{"text empty", FormatText, "\n\n", nil, false, false, 0, "no non-empty line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Read(strings.NewReader(tc.in), tc.format)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, x := range d.Docs {
				got = append(got, x.Prompt)
			}
			require.Equal(t, tc.prompts, got)
			require.Equal(t, tc.domain, d.HasDomain)
			require.Equal(t, tc.emb, d.Embeddings)
			require.Equal(t, tc.skipped, d.Skipped)
		})
	}
	require.Equal(t, FormatJSONL, FormatOf("x/responses.JSONL.gz"))
	require.Equal(t, FormatCSV, FormatOf("p.csv"))
	require.Equal(t, FormatText, FormatOf("p.txt.gz"))
}

func TestTinyInputs(t *testing.T) {
	// Two different prompts but one point after vectorising ("planet" and
	// "orbit" are in one prompt only): the error says so, and does not
	// suggest a k that then fails.
	_, err := Fit(context.Background(), []string{"court judge", "court judge", "planet orbit"}, DefaultFitConfig(), nil)
	require.ErrorContains(t, err, "after vectorising, the 3 prompts are 1 distinct point (1 with no term found in at least 2 prompts were left out")
	_, err = Fit(context.Background(), []string{"court judge", "court judge", "planet orbit", "planet orbit"}, DefaultFitConfig(), nil)
	require.ErrorContains(t, err, "2 distinct prompts after vectorising (prompts with the same vocabulary terms count as one, those without any are left out) are too few to choose k in [3, 20]: give k explicitly (--k N, N <= 2)")
	cfg := DefaultFitConfig()
	cfg.K = 2
	m, err := Fit(context.Background(), []string{"court judge", "court judge", "planet orbit", "planet orbit"}, cfg, nil)
	require.NoError(t, err)
	require.Len(t, m.Clusters, 2)
	// Identical prompts leave nothing to cluster.
	_, err = Fit(context.Background(), []string{"court judge", "court judge", "court judge"}, cfg, nil)
	require.ErrorContains(t, err, "the prompts are all the same: nothing to cluster")
	// A term in every prompt is dropped (max_df): the error says so.
	_, err = Fit(context.Background(), []string{"court judge", "court judge planet", "court judge"}, cfg, nil)
	require.ErrorContains(t, err, "every term found in at least 2 of the 3 prompts is in more than 50% of them (max_df), as court, judge")
	_, err = Fit(context.Background(), []string{"court judge", "planet orbit"}, cfg, nil)
	require.ErrorContains(t, err, "no term occurs in at least 2 of the 2 prompts (min_df): the prompts share no words")
	_, err = Fit(context.Background(), []string{"a", "b"}, cfg, nil)
	require.ErrorContains(t, err, "none of the 2 prompts has a word to cluster on")
	_, err = Fit(context.Background(), []string{"a"}, cfg, nil)
	require.ErrorContains(t, err, "1 prompt: need at least 2 to cluster")

	// k above the distinct prompts: refused, not fitted as repeated clusters.
	cfg.K = 3
	_, err = Fit(context.Background(), []string{"court judge", "court judge", "planet orbit", "planet orbit"}, cfg, nil)
	require.ErrorContains(t, err, "k=3 is more than the 2 distinct prompts")
	// Only what can be fitted is suggested: --k auto cannot choose among
	// 2 points, and 2 points do not leave 5 per cluster.
	require.ErrorContains(t, err, ": give a k of at most 2")
	require.NotContains(t, err.Error(), "--k auto")
	require.NotContains(t, err.Error(), "distinct per cluster")
	// Same terms after vectorising count as one.
	cfg.K = 4
	_, err = Fit(context.Background(), []string{"court judge", "Court, judge!", "court judge", "planet orbit", "planet orbit", "recipe oven", "recipe oven"}, cfg, nil)
	require.ErrorContains(t, err, "k=4 is more than the 3 distinct prompts after vectorising")
}

// TestClusterFitIDColumn: prompts that are a few short values repeated (a column of
// ids) are refused when k cannot be met, and fitted with warnings otherwise.
func TestClusterFitIDColumn(t *testing.T) {
	var ids []string
	for i := range 60 {
		ids = append(ids, []string{"q1", "q2", "q3"}[i%3])
	}
	cfg := DefaultFitConfig()
	_, err := Fit(context.Background(), ids[:40], cfg, nil)
	require.ErrorContains(t, err, "ids or labels")
	cfg.K = 3
	m, err := Fit(context.Background(), ids, cfg, nil)
	require.NoError(t, err)
	require.Len(t, m.Warnings, 2)
	require.Contains(t, m.Warnings[0], `the 60 prompts hold only 3 different values ("q1", "q2", "q3")`)
	require.Contains(t, m.Warnings[1], "the vocabulary has only 3 terms")

	// Long prompts repeated are real traffic, not ids: no hint.
	long := make([]string, 60)
	for i := range long {
		long[i] = []string{"what is the orbit of the planet", "who was the judge at the court"}[i%2]
	}
	cfg.K = 2
	m, err = Fit(context.Background(), long, cfg, nil)
	require.NoError(t, err)
	for _, w := range m.Warnings {
		require.NotContains(t, w, "ids or labels")
	}
}

// TestOperatorEmbeddings tags rows by an embedding column when the artifact
// clusters embeddings.
func TestOperatorEmbeddings(t *testing.T) {
	vecs, _ := blobs(3, 30, 6, 0.05, 4)
	cfg := quietConfig()
	cfg.K = 3
	cfg.ThresholdQuantile = 1
	m, err := FitEmbeddings(context.Background(), vecs, nil, cfg, nil)
	require.NoError(t, err)
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	op, err := New(Config{Model: m}, mem, nil)
	require.NoError(t, err)

	// scored.v1 plus an embedding column.
	fields := append(schemas.Scored.Fields(), arrow.Field{Name: ColEmbedding, Type: arrow.ListOf(arrow.PrimitiveTypes.Float32), Nullable: true})
	md := schemas.Scored.Metadata()
	s := arrow.NewSchema(fields, &md)
	b := array.NewRecordBuilder(mem, s)
	defer b.Release()
	rows := [][]float32{vecs[0], vecs[40], nil}
	for _, v := range rows {
		for i, f := range b.Fields() {
			if i < len(fields)-1 {
				f.AppendEmptyValue()
				continue
			}
			lb := f.(*array.ListBuilder)
			if v == nil {
				lb.AppendNull()
				continue
			}
			lb.Append(true)
			lb.ValueBuilder().(*array.Float32Builder).AppendValues(v, nil)
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	out, err := op.Process(context.Background(), rec)
	require.NoError(t, err)
	defer out[0].Release()
	ids := out[0].Column(schemas.MustIndex(s, schemas.ColClusterID)).(*array.Int32).Int32Values()
	tg := m.NewTagger()
	c0, _, _ := tg.TagVector(vecs[0])
	c1, _, _ := tg.TagVector(vecs[40])
	require.Equal(t, []int32{int32(m.Clusters[c0].ID), int32(m.Clusters[c1].ID), -1}, ids)
	require.NotEqual(t, ids[0], ids[1])

	// Without the column the operator says what is missing.
	plain := scoredBatch(t, mem, []*string{sp("x")}, []*string{nil})
	defer plain.Release()
	_, err = op.Process(context.Background(), plain)
	require.ErrorContains(t, err, `no "embedding" column`)
}

// TestHelloWorld: fit on hello/world/hello said "give --k N, N <= 2", and
// --k 2 then said "nothing to cluster"; both now say the same.
func TestHelloWorld(t *testing.T) {
	prompts := []string{"hello", "world", "hello"}
	_, errAuto := Fit(context.Background(), prompts, DefaultFitConfig(), nil)
	cfg := DefaultFitConfig()
	cfg.K = 2
	_, errTwo := Fit(context.Background(), prompts, cfg, nil)
	require.Error(t, errAuto)
	require.Equal(t, errAuto.Error(), errTwo.Error())
	require.Contains(t, errAuto.Error(), "nothing to cluster")
	require.NotContains(t, errAuto.Error(), "--k N")
}

// TestLongLines: a line above the limit is skipped and named, not a raw
// "bufio.Scanner: token too long" for the whole input.
func TestLongLines(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, tc := range []struct {
		name string
		read func(string) (*Docs, error)
		in   string
	}{
		{"jsonl", func(s string) (*Docs, error) { return readJSONL(strings.NewReader(s), 64) },
			`{"prompt":"a b"}` + "\n" + `{"prompt":"` + long + `"}` + "\r\n" + `{"prompt":"c d"}` + "\n" + long},
		{"text", func(s string) (*Docs, error) { return readText(strings.NewReader(s), 64) },
			"a b\n" + long + "\r\nc d\n" + long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := tc.read(tc.in)
			require.NoError(t, err)
			require.Equal(t, []int{2, 4}, d.TooLong)
			require.Len(t, d.Docs, 2)
			require.Equal(t, "c d", d.Docs[1].Prompt)
			_, err = tc.read(long + "\n\n" + long)
			require.ErrorContains(t, err, "every line with content is longer than 64 bytes (2 lines skipped, the first line 1)")
		})
	}
	// At the limit (line ending excluded) a line is kept.
	d, err := readText(strings.NewReader(strings.Repeat("y", 64)+"\r\n"), 64)
	require.NoError(t, err)
	require.Empty(t, d.TooLong)
	require.Len(t, d.Docs, 1)
}
