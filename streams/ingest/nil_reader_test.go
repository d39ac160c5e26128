package ingest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/ingest"
)

// TestNewReaderNil: a nil io.Reader is an error from Next, not a panic
// (also with the idle flush, whose goroutine would read it).
func TestNewReaderNil(t *testing.T) {
	for _, idle := range []time.Duration{0, 10 * time.Millisecond} {
		cfg := ingest.DefaultConfig()
		cfg.FlushIdle = idle
		rd := ingest.NewReader(nil, cfg, nil)
		_, err := rd.Next()
		require.ErrorContains(t, err, "nil io.Reader")
		rd.Release()
	}
}
