package runner

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// TestNewNilArgs: nil allocator, logger and registry mean the defaults
// (memory.DefaultAllocator, a discarding logger, metrics kept but not
// exported); a nil registry panicked, and a nil allocator dead-lettered
// every message as corrupt_ipc (ipc.Decode now takes nil as the default).
func TestNewNilArgs(t *testing.T) {
	topic, dead, group := names("nilargs")
	src, err := kafka.NewSource(conn(), sourceConfig(topic, group), testLog(t))
	require.NoError(t, err)
	defer src.Close()
	dcfg := kafka.DefaultProducerConfig()
	dcfg.Topic = dead
	dlq, err := kafka.NewProducer(conn(), dcfg, testLog(t))
	require.NoError(t, err)
	defer dlq.Close()
	chain := func() ([]streams.Operator, error) { return nil, nil }
	r, err := New(DefaultConfig(), Parts{Source: src, DeadLetter: dlq, Chain: chain, Sink: newMemSink()}, nil, nil, nil)
	require.NoError(t, err)
	require.Equal(t, memory.DefaultAllocator, r.mem)
	require.NotNil(t, r.log)
}
