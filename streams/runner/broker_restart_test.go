package runner

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// TestBrokerRestart: the broker goes away mid-stream and comes back (with its
// data dir); the stream reconnects and nothing is lost.
func TestBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a broker")
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	bcfg := broker.DefaultConfig()
	bcfg.Listen, bcfg.DataDir, bcfg.Partitions = addr, t.TempDir(), 2
	bcfg.MinSessionTimeout = 100 * time.Millisecond
	bcfg.Topics = []string{"restart", "restart.dead"}
	quiet := slog.New(slog.DiscardHandler)
	b, err := broker.Start(bcfg, quiet)
	require.NoError(t, err)
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{addr}
	conn.DialTimeout = time.Second

	produce := func(ids []string) {
		pcfg := kafka.DefaultProducerConfig()
		pcfg.Topic = "restart"
		p, err := kafka.NewProducer(conn, pcfg, quiet)
		require.NoError(t, err)
		defer p.Close()
		mem := memory.NewGoAllocator()
		for lo := 0; lo < len(ids); lo += 5 {
			var rows []row
			for _, id := range ids[lo:min(len(ids), lo+5)] {
				rows = append(rows, row{id: id, steps: 4})
			}
			rec := traceBatch(t, mem, rows...)
			_, err := p.ProduceBatch(context.Background(), rec, nil)
			rec.Release()
			require.NoError(t, err)
		}
	}
	first, second := ids("br1", 100), ids("br2", 100)
	produce(first)

	src, err := kafka.NewSource(conn, sourceConfig("restart", "g-restart"), quiet)
	require.NoError(t, err)
	dcfg := kafka.DefaultProducerConfig()
	dcfg.Topic = "restart.dead"
	dlq, err := kafka.NewProducer(conn, dcfg, quiet)
	require.NoError(t, err)
	chain := func() ([]streams.Operator, error) {
		op, err := profile.New(profile.DefaultConfig(), mem, quiet)
		return []streams.Operator{op}, err
	}
	cfg := DefaultConfig()
	cfg.CommitInterval, cfg.SinkBatchRows = 20*time.Millisecond, 0
	sink := newMemSink()
	r, err := New(cfg, Parts{Source: src, DeadLetter: dlq, Chain: chain, Sink: sink}, mem, testLog(t), prometheus.NewRegistry())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, "the first half", func() bool { return sink.unique() == len(first) })

	require.NoError(t, b.Close(context.Background()))
	time.Sleep(500 * time.Millisecond) // the stream sees connections fail
	b, err = broker.Start(bcfg, quiet)
	require.NoError(t, err)
	defer b.Close(context.Background())
	produce(second)
	waitFor(t, "the second half after the broker came back", func() bool { return sink.unique() == len(first)+len(second) })
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, src.Close())
	require.NoError(t, dlq.Close())
}
