package estimate

import (
	"bytes"
	"compress/gzip"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

func TestReadCSV(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		rows     int
		skipped  map[string]int
		err      string
	}{
		{"labels in several spellings", "model,domain,correct,confidence\nm,a,1,0.5\nm,a,false,0.2\nm,,True,0.9\n", 3, map[string]int{}, ""},
		{"unlabelled and non-finite rows are skipped", "model,domain,correct,confidence\nm,a,,0.5\nm,a,1,NaN\nm,a,1,\nm,a,0,0.1\n", 1,
			map[string]int{"no label": 1, "non-finite feature": 2}, ""},
		{"missing column", "model,correct,confidence\nm,1,0.5\n", 0, nil, `column "domain" missing`},
		{"missing feature", "model,domain,correct\nm,a,1\n", 0, nil, `column "confidence" missing`},
		{"bad label", "model,domain,correct,confidence\nm,a,maybe,0.5\n", 0, nil, `line 2: column correct: "maybe"`},
		{"bad number", "model,domain,correct,confidence\nm,a,1,high\n", 0, nil, `line 2: feature confidence: "high"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, err := ReadCSV(strings.NewReader(tc.in), []string{"confidence"})
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.rows, tbl.N())
			require.Equal(t, tc.skipped, tbl.Skipped)
		})
	}
	tbl, err := ReadCSV(strings.NewReader("model,domain,correct,confidence\nm,,1,0.5\n"), []string{"confidence"})
	require.NoError(t, err)
	require.Equal(t, NoDomain, tbl.Domain[0])
}

func TestReadTableArrow(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := scoredBatch(t, mem, []scoredRow{
		{"llm-a", schemas.StatusOK, 0.5, 0.1, 2},
		{"llm-a", schemas.ReasonEmpty, 0, 0, 1},
		{" llm-b ", schemas.StatusOK, 0.7, 0.2, 1}, // blanks taken off, as from a CSV
		{"llm-b", schemas.StatusOK, 0.7, 0.2, 0},
		{"llm-b", schemas.StatusOK, math.NaN(), 0.2, 2},
	})
	defer rec.Release()
	dir := t.TempDir()
	write := func(name string, stream bool) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		require.NoError(t, err)
		defer f.Close()
		var w interface {
			Write(arrow.RecordBatch) error
			Close() error
		}
		if stream {
			w = ipc.NewWriter(f, ipc.WithSchema(rec.Schema()))
		} else {
			w, err = ipc.NewFileWriter(f, ipc.WithSchema(rec.Schema()))
			require.NoError(t, err)
		}
		require.NoError(t, w.Write(rec))
		require.NoError(t, w.Close())
		return path
	}
	for _, stream := range []bool{false, true} {
		path := write(map[bool]string{false: "s.arrow", true: "s.arrows"}[stream], stream)
		tbl, err := ReadTable(path, []string{"mean", "std"})
		require.NoError(t, err)
		require.Equal(t, []float64{0.5, 0.1, 0.7, 0.2}, tbl.X)
		require.Equal(t, []float64{1, 0}, tbl.Y)
		require.Equal(t, []string{"llm-a", "llm-b"}, tbl.Model)
		require.Equal(t, 1, tbl.Trimmed)
		require.Equal(t, []string{NoDomain, NoDomain}, tbl.Domain)
		require.Equal(t, map[string]int{"no label": 1, "status empty": 1, "non-finite feature": 1}, tbl.Skipped)
		_, err = ReadTable(path, []string{"confidence"})
		require.ErrorContains(t, err, `"confidence"`)
	}
}

// Responses given where a labelled table belongs get told to score them
// first, gzip or not, whatever their framing; a CSV still reads.
func TestReadTableRefusesResponses(t *testing.T) {
	dir := t.TempDir()
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(s))
		require.NoError(t, zw.Close())
		return b.Bytes()
	}
	resp := `{"id":"a","model":"m","choices":[]}` + "\n"
	for name, body := range map[string][]byte{
		"lines.jsonl":    []byte(resp),
		"lines.jsonl.gz": gz(resp),
		"array.json":     []byte("\ufeff[\n " + resp + "]"),
		"sse.txt":        []byte("data: " + resp + "\n"),
	} {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, body, 0o644))
		_, err := ReadTable(path, []string{"mean"})
		require.ErrorContains(t, err, "score the responses first", name)
	}
	path := filepath.Join(dir, "ok.csv")
	require.NoError(t, os.WriteFile(path, []byte("model,domain,correct,mean\nm,d,1,0.5\nm,d,0,0.9\n"), 0o644))
	tbl, err := ReadTable(path, []string{"mean"})
	require.NoError(t, err)
	require.Equal(t, 2, tbl.N())
}
