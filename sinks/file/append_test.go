package file_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
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
	"github.com/entrowatch/entrowatch/sinks/file"
)

// readArrowIDs reads an Arrow IPC stream file whole: its trace ids in order.
func readArrowIDs(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	r, err := ipc.NewReader(f)
	require.NoError(t, err)
	defer r.Release()
	require.True(t, r.Schema().Equal(schemas.Scored))
	var ids []string
	for r.Next() {
		col := r.RecordBatch().Column(schemas.MustIndex(schemas.Scored, schemas.ColTraceID)).(*array.String)
		for i := 0; i < col.Len(); i++ {
			ids = append(ids, col.Value(i))
		}
	}
	require.NoError(t, r.Err(), "the file reads to its end")
	return ids
}

// TestAppendArrow: with Append a sink writes after the batches an earlier
// sink left in the file, whether that one closed (end-of-stream marker) or
// crashed (no marker, a message cut short, or only part of the schema),
// and the file reads as one stream of all the rows. Before, `entrowatch
// run` with a fixed file.path truncated the file at every start, losing
// rows whose offsets were committed.
func TestAppendArrow(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	first, tr1 := scoredBatch(t, mem, 7, 5, 1)
	defer tr1.Release()
	defer first.Release()
	second, tr2 := scoredBatch(t, mem, 4, 6, 2)
	defer tr2.Release()
	defer second.Release()
	dir := t.TempDir()
	write := func(path string, appendTo bool) {
		writeBatches(t, file.Config{Path: path, Append: appendTo}, mem, second)
	}

	// Closed, then appended to twice.
	closed := filepath.Join(dir, "closed.arrow")
	s, err := file.New(file.Config{Path: closed}, mem)
	require.NoError(t, err)
	require.NoError(t, s.Write(context.Background(), first))
	// A crash copy: what the file holds after a Write (fsynced), before Close.
	crashed, err := os.ReadFile(closed)
	require.NoError(t, err)
	require.NoError(t, s.Close(context.Background()))
	want := readArrowIDs(t, closed)
	require.Len(t, want, 7)
	// The start of one more batch message, as a crash in its Write leaves.
	two := filepath.Join(dir, "two.arrow")
	s, err = file.New(file.Config{Path: two}, mem)
	require.NoError(t, err)
	require.NoError(t, s.Write(context.Background(), first))
	require.NoError(t, s.Write(context.Background(), first))
	twice, err := os.ReadFile(two)
	require.NoError(t, err)
	require.NoError(t, s.Close(context.Background()))
	require.Equal(t, crashed, twice[:len(crashed)])
	partial := twice[len(crashed) : len(crashed)+(len(twice)-len(crashed))/2]
	write(closed, true)
	write(closed, true)
	got := readArrowIDs(t, closed)
	require.Len(t, got, 15)
	require.Equal(t, want, got[:7])
	require.Equal(t, got[7:11], got[11:15])

	// Crashed after a write: no end-of-stream marker.
	p := filepath.Join(dir, "crashed.arrow")
	require.NoError(t, os.WriteFile(p, crashed, 0o644))
	write(p, true)
	require.Len(t, readArrowIDs(t, p), 11)

	// Crashed in the middle of a batch: the part written is cut off.
	p = filepath.Join(dir, "cut.arrow")
	require.NoError(t, os.WriteFile(p, append(append([]byte{}, crashed...), partial...), 0o644))
	write(p, true)
	require.Len(t, readArrowIDs(t, p), 11)

	// Crashed while writing the schema: started over.
	p = filepath.Join(dir, "schema.arrow")
	require.NoError(t, os.WriteFile(p, crashed[:20], 0o644))
	write(p, true)
	require.Len(t, readArrowIDs(t, p), 4)

	// Missing: created.
	p = filepath.Join(dir, "new.arrow")
	write(p, true)
	require.Len(t, readArrowIDs(t, p), 4)

	// Without Append the file is replaced, as `entrowatch score --out` wants.
	write(closed, false)
	require.Len(t, readArrowIDs(t, closed), 4)
}

// TestAppendRefuses: a file Append cannot write after is refused with what
// is wrong and what to do, and left as it was.
func TestAppendRefuses(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dir := t.TempDir()
	csvPlain := filepath.Join(dir, "plain.csv")
	s, err := file.New(file.Config{Path: csvPlain}, mem)
	require.NoError(t, err)
	require.NoError(t, s.Close(context.Background()))
	var gzArrow bytes.Buffer
	zw := gzip.NewWriter(&gzArrow)
	_, _ = zw.Write([]byte("x"))
	require.NoError(t, zw.Close())
	for _, tc := range []struct {
		name, content string
		cfg           file.Config
		err           string
	}{
		{"text as arrow", "hello\nworld\n", file.Config{}, "is not an Arrow IPC stream"},
		{"csv with other columns", "", file.Config{CSVEstimate: true}, "exists with other columns than this sink writes"},
		{"compressed arrow", gzArrow.String(), file.Config{Format: "arrow", Gzip: true}, "a compressed Arrow stream cannot be written after"},
		{"gzip cut short", gzArrow.String()[:gzArrow.Len()-6], file.Config{Format: "csv", Gzip: true}, "cut short by a crash?"},
		{"not gzip", "id,model\n", file.Config{Format: "csv", Gzip: true}, "is not gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			content := []byte(tc.content)
			if tc.name == "csv with other columns" {
				p += ".csv"
				content, err = os.ReadFile(csvPlain)
				require.NoError(t, err)
			}
			require.NoError(t, os.WriteFile(p, content, 0o644))
			cfg := tc.cfg
			cfg.Path, cfg.Append = p, true
			_, err := file.New(cfg, mem)
			require.ErrorContains(t, err, tc.err)
			require.ErrorContains(t, err, "move it away or choose another file.path")
			after, rerr := os.ReadFile(p)
			require.NoError(t, rerr)
			require.Equal(t, content, after, "left as it was")
		})
	}
}

// TestAppendCSV: CSV goes on under the one header, after the last whole
// line (a line a crash cut short is written over); compressed CSV adds a
// gzip member and reads back as one text.
func TestAppendCSV(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	scored, traces := scoredBatch(t, mem, 5, 6, 3)
	defer traces.Release()
	defer scored.Release()
	dir := t.TempDir()
	write := func(path string, appendTo bool) {
		writeBatches(t, file.Config{Path: path, Append: appendTo, CSVEstimate: true}, mem, scored)
	}
	once := filepath.Join(dir, "once.csv")
	write(once, false)
	one, err := os.ReadFile(once)
	require.NoError(t, err)
	header, rows, _ := strings.Cut(string(one), "\n")
	require.Equal(t, 5, strings.Count(rows, "\n"))

	p := filepath.Join(dir, "out.csv")
	write(p, true)
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("cut-short,m,") // a crash in the middle of a line
	require.NoError(t, err)
	require.NoError(t, f.Close())
	write(p, true)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, header+"\n"+rows+rows, string(got))

	// A header a crash cut short: started over.
	p = filepath.Join(dir, "header.csv")
	require.NoError(t, os.WriteFile(p, []byte(header[:10]), 0o644))
	write(p, true)
	got, err = os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, string(one), string(got))

	gz := filepath.Join(dir, "out.csv.gz")
	write(gz, true)
	write(gz, true)
	zf, err := os.Open(gz)
	require.NoError(t, err)
	defer zf.Close()
	zr, err := gzip.NewReader(zf)
	require.NoError(t, err)
	text, err := io.ReadAll(zr)
	require.NoError(t, err)
	require.Equal(t, header+"\n"+rows+rows, string(text))
}

// writeBatches writes recs with a sink made from cfg and closes it.
func writeBatches(t *testing.T, cfg file.Config, mem memory.Allocator, recs ...arrow.RecordBatch) {
	t.Helper()
	s, err := file.New(cfg, mem)
	require.NoError(t, err)
	for _, rec := range recs {
		require.NoError(t, s.Write(context.Background(), rec))
	}
	require.NoError(t, s.Close(context.Background()))
}
