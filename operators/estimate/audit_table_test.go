package estimate

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// TestReadCSVDuplicateColumn: a header naming a column twice is refused,
// naming the column, whichever column it is (before, the last one won: a
// second "mean" of constants was trained on, a second "correct" made every
// row one class).
func TestReadCSVDuplicateColumn(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"model,domain,mean,correct,mean\nm,a,0.1,1,5\n", `column "mean" appears twice in the CSV header (columns 3 and 5)`},
		{"model,domain,mean,correct,correct\nm,a,0.1,1,0\n", `column "correct" appears twice in the CSV header (columns 4 and 5)`},
		{"model,domain,mean,correct,extra, extra \nm,a,0.1,1,x,y\n", `column "extra" appears twice`},
	} {
		_, err := ReadCSV(strings.NewReader(tc.in), []string{"mean"})
		require.ErrorContains(t, err, tc.want, tc.in)
	}
	// Unnamed columns cannot be asked for: several of them are fine.
	tbl, err := ReadCSV(strings.NewReader("model,domain,mean,correct,,\nm,a,0.1,1,x,y\n"), []string{"mean"})
	require.NoError(t, err)
	require.Equal(t, 1, tbl.N())
	// A spreadsheet's byte-order mark is not part of the first name.
	tbl, err = ReadCSV(strings.NewReader("\ufeffmodel,domain,mean,correct\nm,a,0.1,1\n"), []string{"mean"})
	require.NoError(t, err)
	require.Equal(t, []string{"m"}, tbl.Model)
	// Nor with a quoted header, as R's write.csv(fileEncoding = "UTF-8-BOM")
	// writes it (was: bare " in non-quoted-field).
	tbl, err = ReadCSV(strings.NewReader("\ufeff\"model\",\"domain\",\"mean\",\"correct\"\n\"m\",\"a\",0.1,TRUE\n"), []string{"mean"})
	require.NoError(t, err)
	require.Equal(t, []string{"m"}, tbl.Model)
}

// TestReadTableArrowDuplicateField: an Arrow schema can name a field twice;
// such input is refused as the CSV is.
func TestReadTableArrowDuplicateField(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := scoredBatch(t, mem, []scoredRow{{"llm-a", schemas.StatusOK, 0.5, 0.1, 2}})
	defer rec.Release()
	mi := schemas.MustIndex(rec.Schema(), "mean")
	fields := append(rec.Schema().Fields(), arrow.Field{Name: "mean", Type: arrow.PrimitiveTypes.Float64})
	cols := append(rec.Columns(), rec.Column(mi))
	dup := array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows())
	defer dup.Release()
	path := filepath.Join(t.TempDir(), "dup.arrows")
	f, err := os.Create(path)
	require.NoError(t, err)
	w := ipc.NewWriter(f, ipc.WithSchema(dup.Schema()))
	require.NoError(t, w.Write(dup))
	require.NoError(t, w.Close())
	require.NoError(t, f.Close())
	_, err = ReadTable(path, []string{"mean"})
	require.ErrorContains(t, err, `column "mean" appears twice in the Arrow schema`)

	var tbl Table
	require.ErrorContains(t, tbl.AppendScored(dup), `column "mean" appears twice`)
}

// TestReadCSVLineNumbers: errors name the line of the file, not the record
// number, when a quoted field spans lines.
func TestReadCSVLineNumbers(t *testing.T) {
	in := "model,domain,prompt,confidence,correct\nm,a,\"l1\nl2\nl3\",0.5,1\nm,a,x,0.4,0\nm,b,y,0.3,maybe\n"
	_, err := ReadCSV(strings.NewReader(in), []string{"confidence"})
	require.ErrorContains(t, err, `line 6: column correct: "maybe"`)

	in = "model,domain,prompt,confidence,correct\nm,a,\"l1\nl2\",high,1\n"
	_, err = ReadCSV(strings.NewReader(in), []string{"confidence"})
	require.ErrorContains(t, err, `line 3: feature confidence: "high"`)

	// A malformed record: encoding/csv's own error names the line, with no
	// record number in front of it.
	in = "model,domain,confidence,correct\nm,a,0.5,1\nm,a,0.5\n"
	_, err = ReadCSV(strings.NewReader(in), []string{"confidence"})
	require.ErrorContains(t, err, "record on line 3")
	require.NotContains(t, err.Error(), "line 2")
}

// TestReadTableEmpty: an empty file (plain or gzip) is called empty, not
// "reading the CSV header: EOF".
func TestReadTableEmpty(t *testing.T) {
	dir := t.TempDir()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	require.NoError(t, zw.Close())
	for name, body := range map[string][]byte{"empty.csv": nil, "empty.csv.gz": gz.Bytes(), "blank.csv": []byte("\n\n")} {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, body, 0o644))
		_, err := ReadTable(path, []string{"mean"})
		require.ErrorContains(t, err, path+": the file is empty", name)
		require.NotContains(t, err.Error(), "EOF", name)
	}
}

// TestReadTableIntegerFeature: n_tokens, an integer column of scored.v1,
// reads as a feature from Arrow input as from CSV.
func TestReadTableIntegerFeature(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := withNTokens(t, mem, scoredBatch(t, mem, []scoredRow{
		{"llm-a", schemas.StatusOK, 0.5, 0.1, 2},
		{"llm-a", schemas.StatusOK, 0.7, 0.2, 1},
	}), []int32{12, 40})
	defer rec.Release()
	var tbl Table
	tbl.Features = []string{schemas.ColNTokens, "mean"}
	require.NoError(t, tbl.AppendScored(rec))
	require.Equal(t, []float64{12, 0.5, 40, 0.7}, tbl.X)

	csvTbl, err := ReadCSV(strings.NewReader("model,domain,correct,n_tokens\nm,a,1,12\n"), []string{schemas.ColNTokens})
	require.NoError(t, err)
	require.Equal(t, []float64{12}, csvTbl.X)
}

// TestFeaturesWrittenByOrAfterTheEstimator: columns the estimator writes,
// or the topic tagger writes after it, cannot be trained on (the artifact
// could not score a row).
func TestFeaturesWrittenByOrAfterTheEstimator(t *testing.T) {
	for _, f := range []string{schemas.ColPCorrect, schemas.ColClusterID, schemas.ColClusterDistance} {
		_, err := ReadCSV(strings.NewReader("model,domain,correct,"+f+"\nm,a,1,1\n"), []string{f})
		require.ErrorContains(t, err, `feature "`+f+`" is written by`, f)
	}
}

// withNTokens returns rec with its n_tokens column set to n (rec released).
func withNTokens(t testing.TB, mem memory.Allocator, rec arrow.RecordBatch, n []int32) arrow.RecordBatch {
	t.Helper()
	defer rec.Release()
	b := array.NewInt32Builder(mem)
	defer b.Release()
	b.AppendValues(n, nil)
	a := b.NewArray()
	defer a.Release()
	cols := append([]arrow.Array(nil), rec.Columns()...)
	cols[schemas.MustIndex(rec.Schema(), schemas.ColNTokens)] = a
	return array.NewRecordBatch(rec.Schema(), cols, rec.NumRows())
}

// TestTableNotesAndAppend: how rows were read is said (Notes), also after
// tables are joined; a literal (none) domain merging with empty ones is
// named; tables of other features are not joined.
func TestTableNotesAndAppend(t *testing.T) {
	a, err := ReadCSV(strings.NewReader("model,domain,mean,correct\nm,,0.1,1\n m ,(none),0.2,0\n"), []string{"mean"})
	require.NoError(t, err)
	require.Equal(t, []string{"m", "m"}, a.Model)
	require.Equal(t, []string{NoDomain, NoDomain}, a.Domain)
	b, err := ReadCSV(strings.NewReader("model,domain,mean,correct\n,d,0.3,1\nm,d,0.4,1\n"), []string{"mean"})
	require.NoError(t, err)
	require.Equal(t, map[string]int{"no model": 1}, b.Skipped, "an LLM named \"\" is never meant")
	require.NoError(t, a.Append(b))
	require.Equal(t, 3, a.N())
	require.Equal(t, map[string]int{"no model": 1}, a.Skipped)
	require.Equal(t, []string{
		"1 row has no domain: put in one domain named (none), together with the 1 whose domain is the text (none) (give every row its domain, or leave them out)",
		"1 row has blanks around its model or domain: taken off (responses name models without them)",
	}, a.Notes())
	// Blank ids repeat nothing; a repeated id is said.
	ids, err := ReadCSV(strings.NewReader("id,model,domain,mean,correct\n,m,d,0.1,1\n,m,d,0.2,0\nx,m,d,0.3,1\nx,m,d,0.4,0\n"), []string{"mean"})
	require.NoError(t, err)
	require.Equal(t, []string{"1 row repeats the model and id of an earlier row (the same response in two tables, or twice in one): each copy counts as a row; " +
		"drop the repeats: give each export once (two overlapping exports repeat every response they share), and labels export --labels-only leaves out the responses whose label came with them rather than through the labels table"}, ids.Notes())
	// One id under two models is two responses, as the store keys them.
	two, err := ReadCSV(strings.NewReader("id,model,domain,mean,correct\nx,m,d,0.1,1\nx,n,d,0.2,0\n"), []string{"mean"})
	require.NoError(t, err)
	require.Empty(t, two.Notes())
	c, err := ReadCSV(strings.NewReader("model,domain,sd,correct\nm,d,0.3,1\n"), []string{"sd"})
	require.NoError(t, err)
	require.ErrorContains(t, a.Append(c), "the tables have different features (mean; sd)")
}
