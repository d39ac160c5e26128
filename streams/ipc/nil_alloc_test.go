package ipc_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	arrowipc "github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/ipc"
)

// TestNilAllocator: a nil allocator means memory.DefaultAllocator. Decode
// turned the nil-pointer panic into corrupt_ipc (a runner built with a nil
// allocator dead-lettered every message of a healthy topic), and OpenFile of
// a file that is not trace.v1 panicked instead of saying so.
func TestNilAllocator(t *testing.T) {
	src := synth(memory.NewGoAllocator(), 2, 3)
	defer src.Release()
	rec, err := ipc.Decode(compressed(t, src, arrowipc.WithSchema(src.Schema())), nil)
	require.NoError(t, err)
	require.Equal(t, src.NumRows(), rec.NumRows())
	rec.Release()

	other := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	b := array.NewRecordBuilder(memory.NewGoAllocator(), other)
	b.Field(0).(*array.Int64Builder).Append(1)
	r := b.NewRecordBatch()
	b.Release()
	defer r.Release()
	path := filepath.Join(t.TempDir(), "other.arrow")
	f, err := os.Create(path)
	require.NoError(t, err)
	w, err := arrowipc.NewFileWriter(f, arrowipc.WithSchema(other))
	require.NoError(t, err)
	require.NoError(t, w.Write(r))
	require.NoError(t, w.Close())
	require.NoError(t, f.Close())
	_, err = ipc.OpenFile(path, nil)
	require.Error(t, err)
}

// TestEncodeNilBatch: a nil batch is an error, not a panic.
func TestEncodeNilBatch(t *testing.T) {
	_, err := ipc.Encode(nil, 1<<20)
	require.ErrorContains(t, err, "nil batch")
}
