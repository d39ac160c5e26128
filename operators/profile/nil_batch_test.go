package profile_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
)

// TestNilBatch: a nil batch is an error, not a panic (a Go library audit).
func TestNilBatch(t *testing.T) {
	op, err := profile.New(profile.DefaultConfig(), nil, nil)
	require.NoError(t, err)
	_, err = op.Process(context.Background(), nil)
	require.ErrorContains(t, err, "nil batch")
}
