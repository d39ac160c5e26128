package runner

import (
	"context"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// TestTransactionalProducer: a producer writing in transactions (franz-go,
// as a Java or librdkafka producer would) gets its committed responses
// scored and its commit and abort markers, which kafka-go's reader hands
// over as messages, consumed and counted: each used to be a corrupt_ipc
// dead letter. An aborted transaction's responses are scored too (a limit).
func TestTransactionalProducer(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("txn")
	topics(t, 1, topic, dead)
	cl, err := kgo.NewClient(kgo.SeedBrokers(testBroker.Addr()), kgo.TransactionalID("tx-"+topic), kgo.DefaultProduceTopic(topic))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	send := func(id string, commit bool) {
		rec := traceBatch(t, memory.NewGoAllocator(), row{id: id, steps: 3})
		msgs, err := kafka.Messages(rec, nil, 1<<20)
		rec.Release()
		require.NoError(t, err)
		require.NoError(t, cl.BeginTransaction())
		for _, m := range msgs {
			r := &kgo.Record{Value: m.Value}
			for _, h := range m.Headers {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
			}
			require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
		}
		end := kgo.TryAbort
		if commit {
			end = kgo.TryCommit
		}
		require.NoError(t, cl.EndTransaction(ctx, end))
	}
	send("c-1", true)
	send("a-1", false)
	send("c-2", true)

	sink := newMemSink()
	rp := startReplica(t, topic, group, dead, sink, mem, nil)
	waitFor(t, "c-1 and c-2", func() bool { return sink.has("c-1") && sink.has("c-2") })
	require.Eventually(t, func() bool { return testutil.ToFloat64(rp.r.m.markers) == 3 }, 10*time.Second, 10*time.Millisecond,
		"the commit and abort markers are consumed as markers")
	rp.stop(t)
	// The limit docs/streams.md states: kafka-go does not drop the records
	// of aborted transactions (it cannot tell them without the producer
	// ids), so they are scored like committed ones.
	require.True(t, sink.has("a-1"))
	st := rp.r.Stats()
	require.Empty(t, st.DeadLettered, "no marker is dead-lettered")
	require.EqualValues(t, 3, st.SinkRows)
	committed, end := offsets(t, topic, group, 1)
	require.Equal(t, end, committed, "the markers are committed past")
}

// TestRefusedGroupSettings: a session timeout the brokers refuse (below
// their group.min.session.timeout.ms) stops the stream with the cause; it
// was retried for ever under "is Kafka reachable?", the replica live and
// consuming nothing.
func TestRefusedGroupSettings(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("refused")
	topics(t, 1, topic, dead)
	sc := sourceConfig(topic, group)
	sc.SessionTimeout, sc.HeartbeatInterval = 50*time.Millisecond, 10*time.Millisecond // the test broker's minimum is 100ms
	src, err := kafka.NewSource(conn(), sc, testLog(t))
	require.NoError(t, err)
	defer src.Close()
	dlq := producer(t, dead)
	r, err := New(DefaultConfig(), Parts{Source: src, DeadLetter: dlq, Chain: func() ([]streams.Operator, error) { return nil, nil }, Sink: newMemSink()}, mem, testLog(t), prometheus.NewRegistry())
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "the brokers refuse this consumer's settings or rights")
		require.ErrorIs(t, err, kafkago.InvalidSessionTimeout)
	case <-time.After(30 * time.Second):
		t.Fatal("the stream retries a refused session timeout for ever")
	}
}
