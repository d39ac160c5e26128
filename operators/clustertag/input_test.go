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
		{"jsonl malformed", FormatJSONL, `{"prompt":"p1"}` + "\n" + `{"prompt":`, nil, false, false, 0, "line 2: not a JSON object"},
		{"jsonl no prompt", FormatJSONL, `{"id":"a"}`, nil, false, false, 0, `no line has a "prompt"`},
		{"csv", FormatCSV, "Domain,Prompt\nlaw,\"a, b\"\neco,\n", []string{"a, b"}, true, false, 1, ""},
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
	_, err := Fit(context.Background(), []string{"court judge", "court judge", "planet orbit"}, DefaultFitConfig(), nil)
	require.ErrorContains(t, err, "too few to choose k")
	cfg := DefaultFitConfig()
	cfg.K = 2
	m, err := Fit(context.Background(), []string{"court judge", "court judge", "planet orbit", "planet orbit"}, cfg, nil)
	require.NoError(t, err)
	require.Len(t, m.Clusters, 2)
	// Identical prompts leave nothing to cluster.
	_, err = Fit(context.Background(), []string{"court judge", "court judge", "court judge"}, cfg, nil)
	require.ErrorContains(t, err, "the prompts are all the same: nothing to cluster")
	// A term in every prompt is dropped (max_df).
	_, err = Fit(context.Background(), []string{"court judge", "court judge planet", "court judge"}, cfg, nil)
	require.ErrorContains(t, err, "no term occurs")
	_, err = Fit(context.Background(), []string{"a", "b"}, cfg, nil)
	require.ErrorContains(t, err, "no term occurs in at least 2")

	// k above the distinct prompts: refused, not fitted as repeated clusters.
	cfg.K = 3
	_, err = Fit(context.Background(), []string{"court judge", "court judge", "planet orbit", "planet orbit"}, cfg, nil)
	require.ErrorContains(t, err, "k=3 is more than the 2 distinct prompts")
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
