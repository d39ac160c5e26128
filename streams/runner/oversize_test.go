package runner

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus/testutil"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// bigProducer produces messages up to just under the broker's limit
// (1048588), as a foreign producer may, past our own 1000000.
func bigProducer(t *testing.T, topic string) *kafka.Producer {
	t.Helper()
	cfg := kafka.DefaultProducerConfig()
	cfg.Topic = topic
	cfg.MaxMessageBytes = int(cfg.BatchBytes) - 1024
	p, err := kafka.NewProducer(conn(), cfg, testLog(t))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// goodMessages encodes whole traces of ids as one message.
func goodMessages(t *testing.T, ids ...row) []kafka.Message {
	t.Helper()
	rec := traceBatch(t, memory.NewGoAllocator(), ids...)
	defer rec.Release()
	msgs, err := kafka.Messages(rec, nil, kafka.DefaultProducerConfig().MaxMessageBytes)
	require.NoError(t, err)
	return msgs
}

// TestDeadLetterOversizedMessage: an undecodable message that the broker
// took (it is under the broker's limit) but that is over the dead-letter
// producer's max_message_bytes is dead-lettered without its bytes, with its
// size and why they are missing; the stream goes on and commits past it.
// Before, the producer's refusal was retried for ever and the partition
// stalled.
func TestDeadLetterOversizedMessage(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("oversized")
	topics(t, 1, topic, dead)
	garbage := bytes.Repeat([]byte("not arrow "), 104000) // 1040000 bytes
	msgs := append([]kafka.Message{{Key: []byte("big-key"), Value: garbage, Headers: []kafka.Header{{Key: "origin", Value: []byte("elsewhere")}}}},
		goodMessages(t, row{id: "after-1", steps: 5})...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, bigProducer(t, topic).Produce(ctx, msgs...))

	sink := newMemSink()
	rp := startReplica(t, topic, group, dead, sink, mem, nil)
	waitFor(t, "the trace after the oversized message", func() bool { return sink.has("after-1") })
	recs := readAll(t, dead, 1)
	waitCommitted(t, topic, group, 1)
	rp.stop(t)

	m := recs[0]
	require.Equal(t, schemas.ReasonCorruptIPC, header(m, HeaderReason))
	require.Empty(t, m.Value, "the original bytes do not fit the dead-letter topic")
	require.Equal(t, strconv.Itoa(len(garbage)), header(m, HeaderOriginalBytes))
	require.Contains(t, header(m, HeaderError), "original message of 1040000 bytes not attached: over the dead-letter max_message_bytes (1000000)")
	require.Contains(t, header(m, HeaderError), "corrupt_ipc", "the decoder's error is kept")
	require.Equal(t, topic+"/0@0", header(m, HeaderSource))
	require.Equal(t, "big-key", string(m.Key))
	require.Equal(t, "elsewhere", header(m, "origin"))
	require.Equal(t, 1.0, testutil.ToFloat64(rp.r.m.dead.WithLabelValues(schemas.ReasonCorruptIPC)), "counted")
}

// TestDeadLetterTopicRefusesSize: a dead-letter topic whose
// max.message.bytes is below the producer's max_message_bytes refuses a
// record as too large, which no retry can change: the records go one by
// one, the refused one without its bytes, and the stream goes on.
func TestDeadLetterTopicRefusesSize(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("dlsize")
	topics(t, 1, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafkago.Client{Addr: kafkago.TCP(testBroker.Addr()), Transport: tr}
	res, err := c.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{
		Topic: dead, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafkago.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "300000"}},
	}}})
	require.NoError(t, err)
	require.NoError(t, res.Errors[dead])

	garbage := bytes.Repeat([]byte("x"), 400000) // under dead_letter.max_message_bytes, over the topic's limit
	// A small undecodable message right after: its dead letter shares the
	// produce of the refused one, and goes only once.
	msgs := append([]kafka.Message{{Value: garbage}, {Value: []byte("small garbage")}},
		goodMessages(t, row{id: "nan-1", steps: 5, nan: true}, row{id: "after-1", steps: 5})...)
	require.NoError(t, producer(t, topic).Produce(ctx, msgs...))

	sink := newMemSink()
	rp := startReplica(t, topic, group, dead, sink, mem, func(c *Config, _ *profile.Config) {
		c.SinkBatchRows, c.SinkBatchWait = 100, 200*time.Millisecond // the two dead letters in one produce
	})
	waitFor(t, "the traces after the refused record", func() bool { return sink.has("after-1") })
	recs := readAll(t, dead, 3)
	waitCommitted(t, topic, group, 1)
	rp.stop(t)

	byReason := map[string]kafkago.Message{}
	for _, m := range recs {
		if len(m.Value) == 0 || header(m, HeaderReason) != schemas.ReasonCorruptIPC {
			byReason[header(m, HeaderReason)] = m
		}
	}
	m := byReason[schemas.ReasonCorruptIPC]
	require.Empty(t, m.Value)
	require.Equal(t, "400000", header(m, HeaderOriginalBytes))
	require.Contains(t, header(m, HeaderError), "original message of 400000 bytes not attached: the dead-letter topic refused it as too large")
	require.NotEmpty(t, byReason[schemas.ReasonNaNLogprob].Value, "a record that fits keeps its bytes")
	require.Equal(t, "nan-1", string(byReason[schemas.ReasonNaNLogprob].Key))
	lc, err := kafkago.DialLeader(ctx, "tcp", testBroker.Addr(), dead, 0)
	require.NoError(t, err)
	defer lc.Close()
	end, err := lc.ReadLastOffset()
	require.NoError(t, err)
	require.EqualValues(t, 3, end, "each record once: the ones stored are not produced again one by one")
}

// TestDeadLetterRecordFits: dlq keeps a record under the dead-letter
// producer's limit, dropping the value first and then the original key and
// headers, never the reason, detail, source and row.
func TestDeadLetterRecordFits(t *testing.T) {
	cfg := kafka.DefaultProducerConfig()
	cfg.Topic, cfg.MaxMessageBytes = "dead", 2048
	dl, err := kafka.NewProducer(conn(), cfg, nil) // never produces here
	require.NoError(t, err)
	defer dl.Close()
	w := &worker{r: &Runner{parts: Parts{DeadLetter: dl}}}
	orig := []kafka.Header{{Key: "origin", Value: []byte("x")}}

	m := w.dlq([]byte("k"), bytes.Repeat([]byte("v"), 100), orig, "corrupt_ipc", "bad", "t/0@1", -1)
	require.Len(t, m.Value, 100, "a record that fits is kept whole")

	m = w.dlq([]byte("k"), bytes.Repeat([]byte("v"), 5000), orig, "corrupt_ipc", "bad", "t/0@1", -1)
	require.Empty(t, m.Value)
	require.Equal(t, "k", string(m.Key))
	require.Equal(t, "x", header(kafkago.Message{Headers: m.Headers}, "origin"))
	require.Equal(t, "5000", header(kafkago.Message{Headers: m.Headers}, HeaderOriginalBytes))
	require.Equal(t, "bad; original message of 5000 bytes not attached: over the dead-letter max_message_bytes (2048)",
		header(kafkago.Message{Headers: m.Headers}, HeaderError))

	m = w.dlq(bytes.Repeat([]byte("k"), 3000), bytes.Repeat([]byte("v"), 100), orig, "nan_logprob", "step 1", "t/0@2", 3)
	require.Empty(t, m.Value)
	require.Empty(t, m.Key)
	h := kafkago.Message{Headers: m.Headers}
	require.Empty(t, header(h, "origin"))
	require.Equal(t, "nan_logprob", header(h, HeaderReason))
	require.Equal(t, "t/0@2", header(h, HeaderSource))
	require.Equal(t, "3", header(h, HeaderRow))
	require.Equal(t, "100", header(h, HeaderOriginalBytes))
	require.Equal(t, "step 1; original row of 100 bytes not attached: over the dead-letter max_message_bytes (2048); "+
		"key and headers of the original left out: over the dead-letter max_message_bytes (2048)", header(h, HeaderError))
	require.LessOrEqual(t, recordSize(m), 2048)
}
