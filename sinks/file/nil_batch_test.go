package file_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/sinks/file"
)

// TestWriteNilBatch: a nil batch is an error, not a panic.
func TestWriteNilBatch(t *testing.T) {
	s, err := file.New(file.Config{Path: filepath.Join(t.TempDir(), "x.csv")}, nil)
	require.NoError(t, err)
	defer s.Close(context.Background())
	require.ErrorContains(t, s.Write(context.Background(), nil), "nil batch")
}
