package kafka

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMessagesNilBatch: a nil batch is an error, not a panic.
func TestMessagesNilBatch(t *testing.T) {
	_, err := Messages(nil, nil, 1<<20)
	require.ErrorContains(t, err, "nil batch")
}
