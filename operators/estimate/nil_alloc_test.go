package estimate

import (
	"context"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// TestOperatorNilAllocatorAndClose: a nil allocator means
// memory.DefaultAllocator (README, "Use it from Go"; the first Process
// panicked inside arrow); Process after Close is an error wrapping
// ErrClosed, not a panic; a second Close does nothing.
func TestOperatorNilAllocatorAndClose(t *testing.T) {
	op, err := New(Config{Set: testSet(t, true)}, nil, nil)
	require.NoError(t, err)
	in := scoredBatch(t, memory.DefaultAllocator, []scoredRow{{"llm-a", schemas.StatusOK, 0.5, 0.1, 1}})
	defer in.Release()
	out, err := op.Process(context.Background(), in)
	require.NoError(t, err)
	require.Len(t, out, 1)
	out[0].Release()
	_, err = op.Process(context.Background(), nil)
	require.ErrorContains(t, err, "nil batch")
	op.Close()
	op.Close()
	_, err = op.Process(context.Background(), in)
	require.ErrorIs(t, err, ErrClosed)
}

// TestNilSetAndBatch: a nil set fails Validate and a nil batch AppendScored,
// with errors, not panics.
func TestNilSetAndBatch(t *testing.T) {
	var s *Set
	require.ErrorContains(t, s.Validate(), "estimator set is nil")
	var tbl Table
	require.ErrorContains(t, tbl.AppendScored(nil), "nil batch")
}
