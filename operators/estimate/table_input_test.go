package estimate

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// A labelled Arrow table cut short (a copy interrupted, a disk that filled)
// never reads as a smaller valid table: a cut inside a message is an error
// (an EOF there once passed for a clean end), and a stream cut between two
// batches, which the Arrow format cannot tell from a stream its writer
// closed without the end-of-stream marker, is read and marked Unterminated
// for train and eval to warn. The file format's footer makes every cut an
// error.
func TestReadTableArrowTruncated(t *testing.T) {
	mem := memory.NewGoAllocator()
	rec := scoredBatch(t, mem, []scoredRow{
		{"llm-a", schemas.StatusOK, 0.5, 0.1, 2},
		{"llm-a", schemas.StatusOK, 0.6, 0.2, 1},
	})
	defer rec.Release()
	dir := t.TempDir()
	for _, stream := range []bool{true, false} {
		var buf bytes.Buffer
		if stream {
			w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
			require.NoError(t, w.Write(rec))
			require.NoError(t, w.Write(rec))
			require.NoError(t, w.Close())
		} else {
			w, err := ipc.NewFileWriter(&buf, ipc.WithSchema(rec.Schema()))
			require.NoError(t, err)
			require.NoError(t, w.Write(rec))
			require.NoError(t, w.Write(rec))
			require.NoError(t, w.Close())
		}
		full := buf.Bytes()
		path := filepath.Join(dir, "t.arrow")
		require.NoError(t, os.WriteFile(path, full, 0o644))
		tbl, err := ReadTable(path, []string{"mean", "std"})
		require.NoError(t, err)
		require.Equal(t, 4, tbl.N())
		require.False(t, tbl.Unterminated)
		var unterminated []int
		// Messages are 8-byte aligned, so every boundary is among these
		// cuts; the odd ones sample the insides of messages.
		for cut := 1; cut < len(full); cut++ {
			if cut%8 != 0 && cut%29 != 0 {
				continue
			}
			require.NoError(t, os.WriteFile(path, full[:cut], 0o644))
			tbl, err := ReadTable(path, []string{"mean", "std"})
			if err != nil {
				continue
			}
			if !stream || !tbl.Unterminated {
				t.Fatalf("stream=%v: cut at %d of %d bytes read as %d rows, unterminated %v, no error", stream, cut, len(full), tbl.N(), tbl.Unterminated)
			}
			unterminated = append(unterminated, tbl.N())
		}
		if stream {
			// After the first batch, and after the second, which leaves
			// only the 8-byte marker out (after the schema, no rows: an
			// error).
			require.Equal(t, []int{2, 4}, unterminated, "rows read at the cuts between batches")
		}
	}
}

func TestReadTableDirectory(t *testing.T) {
	dir := t.TempDir()
	_, err := ReadTable(dir, nil)
	require.EqualError(t, err, dir+" is a directory: give a labelled table (a CSV, or Arrow from entrowatch score)")
}
