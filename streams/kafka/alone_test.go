package kafka

import (
	"bytes"
	"context"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestProduceTooLargeTogether: a topic whose max.message.bytes (1,020,000)
// takes each message (at most max_message_bytes, 1,000,000) but not two in
// one record batch (up to batch_bytes, 1,048,000). Produce sends again, each
// alone, the messages refused with others, and none twice; a message too
// large alone is still an error (recheck10 F2: half of 24 concurrent HTTP
// bodies answered 413, ingest stopped).
func TestProduceTooLargeTogether(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "tight"),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": "1020000"}))
	require.NoError(t, err)
	defer c.Close()
	conn := DefaultConfig()
	conn.Brokers = c.ListenAddrs()
	pcfg := DefaultProducerConfig()
	pcfg.Topic = "tight"
	p, err := NewProducer(conn, pcfg, quiet)
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	msgs := make([]Message, 3)
	// Two of them fill a record batch of 1,030,000 bytes: under batch_bytes,
	// over the topic's limit.
	for i := range msgs {
		msgs[i] = Message{Key: []byte("k"), Value: bytes.Repeat([]byte{byte('a' + i)}, 515_000)}
	}
	require.NoError(t, p.Produce(ctx, msgs...), "each fits alone")
	lc, err := kafkago.DialLeader(ctx, "tcp", conn.Brokers[0], "tight", 0)
	require.NoError(t, err)
	defer lc.Close()
	last, err := lc.ReadLastOffset()
	require.NoError(t, err)
	require.EqualValues(t, 3, last, "3 messages, none twice")

	// A topic that takes 500,000 bytes: a message of 515,000 cannot go.
	c2, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "tight"),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": "500000"}))
	require.NoError(t, err)
	defer c2.Close()
	conn.Brokers = c2.ListenAddrs()
	p2, err := NewProducer(conn, pcfg, quiet)
	require.NoError(t, err)
	defer p2.Close()
	for _, batch := range [][]Message{msgs[:1], msgs} {
		err = p2.Produce(ctx, batch...)
		require.Error(t, err, "over the topic's limit alone: %d messages", len(batch))
		require.True(t, IsMessageTooLarge(err), "%v", err)
	}
}
