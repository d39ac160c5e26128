package profile_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
)

// TestNilBatch: a nil batch is an error, not a panic (a Go library audit).
func TestNilBatch(t *testing.T) {
	op, err := profile.New(profile.DefaultConfig(), nil, nil)
	require.NoError(t, err)
	_, err = op.Process(context.Background(), nil)
	require.ErrorContains(t, err, "nil batch")
	// Check and the assembler too (they panicked: golib2).
	require.ErrorContains(t, profile.Check(profile.DefaultConfig(), nil, func(int, *profile.Reject) {}), "nil batch")
	a, err := profile.NewAssembler(profile.DefaultAssemblerConfig(), nil)
	require.NoError(t, err)
	_, err = a.Add(nil, 0, time.Now())
	require.ErrorContains(t, err, "nil batch")
}
