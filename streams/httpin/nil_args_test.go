package httpin

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/ingest"
)

// TestNewNilArgs: nil allocator, logger and registry mean the defaults
// (memory.DefaultAllocator, a discarding logger, metrics kept but not
// exported), as elsewhere; a nil registry panicked.
func TestNewNilArgs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LabelsTopic = ""
	h, err := New(cfg, ingest.DefaultConfig(), nil, nil, nil, nil, nil)
	require.NoError(t, err)
	require.NotNil(t, h.mem)
	require.NotNil(t, h.log)
}
