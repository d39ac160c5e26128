package ipc_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ipc"
)

// TestSplitHandsOverLargeRows: rows over the limit alone go to large with
// their index in the batch and size; the others are emitted in order.
func TestSplitHandsOverLargeRows(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	small := synth(mem, 10, 20)
	defer small.Release()
	big := synth(mem, 1, 2000) // about 170 KB
	defer big.Release()
	// Rows: small 0-3, big (4), small 4-9, big (11).
	parts := []arrow.RecordBatch{small.NewSlice(0, 4), big, small.NewSlice(4, 10), big}
	defer parts[0].Release()
	defer parts[2].Release()
	cols := make([]arrow.Array, small.NumCols())
	for c := range cols {
		var in []arrow.Array
		for _, p := range parts {
			in = append(in, p.Column(c))
		}
		a, err := array.Concatenate(in, mem)
		require.NoError(t, err)
		cols[c] = a
	}
	rec := array.NewRecordBatch(small.Schema(), cols, 12)
	for _, c := range cols {
		c.Release()
	}
	defer rec.Release()

	var emitted []string
	var large []int64
	err := ipc.Split(rec, 100<<10, func(b []byte) error {
		got, err := ipc.Decode(b, mem)
		require.NoError(t, err)
		ids := got.Column(schemas.MustIndex(got.Schema(), schemas.ColTraceID)).(*array.String)
		for i := range ids.Len() {
			emitted = append(emitted, ids.Value(i))
		}
		got.Release()
		return nil
	}, func(i int64, row arrow.RecordBatch, size int) error {
		require.EqualValues(t, 1, row.NumRows())
		require.Greater(t, size, 100<<10)
		large = append(large, i)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []int64{4, 11}, large)
	require.Len(t, emitted, 10)

	_, err = ipc.Encode(rec, 100<<10)
	require.ErrorIs(t, err, ipc.ErrTooLarge, "Encode has no large: such a row is an error")
}
