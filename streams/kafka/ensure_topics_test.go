package kafka

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestEnsureTopicsUnreachable: brokers that cannot be reached gave
// "[8] Broker Not Available: not a client facing error ..." (kafka-go found
// no controller in a cluster layout it never got), hiding the connection
// refused; it is the dial error now, and not an answer of the brokers, so
// a caller retries it.
func TestEnsureTopicsUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now
	conn := DefaultConfig()
	conn.Brokers = []string{addr}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = EnsureTopics(ctx, conn, 1, "t", "t.dead")
	require.Error(t, err)
	require.Contains(t, err.Error(), "connection refused")
	require.Contains(t, err.Error(), addr)
	require.NotContains(t, err.Error(), "Broker Not Available")
	require.False(t, Answered(err), "unreachable brokers may come back: %v", err)
	require.NotErrorIs(t, err, ErrTopicRefused)
}

// TestEnsureTopicsRefused: a user the brokers do not allow to create topics
// gets their answer, ErrTopicRefused, which retrying cannot fix. The
// superuser creates them, and a second call leaves them as they are.
func TestEnsureTopicsRefused(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "root"), kfake.User("PLAIN", "bob", "builder"))
	require.NoError(t, err)
	defer c.Close()
	conn := DefaultConfig()
	conn.Brokers = c.ListenAddrs()
	conn.SASL.Mechanism, conn.SASL.Username, conn.SASL.Password = "plain", "bob", "builder"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	err = EnsureTopics(ctx, conn, 1, "t")
	require.ErrorIs(t, err, ErrTopicRefused)
	require.ErrorIs(t, err, kafkago.TopicAuthorizationFailed)
	require.True(t, Answered(err))

	conn.SASL.Username, conn.SASL.Password = "admin", "root"
	require.NoError(t, EnsureTopics(ctx, conn, 1, "t"))
	require.NoError(t, EnsureTopics(ctx, conn, 1, "t"), "existing topics are left as they are")
}

func TestAnswered(t *testing.T) {
	require.False(t, Answered(errors.New("dial tcp: connection refused")))
	require.False(t, Answered(kafkago.BrokerNotAvailable), "kafka-go's own: no broker known")
	require.False(t, Answered(kafkago.NotController), "retriable: the controller moves")
	require.True(t, Answered(kafkago.ClusterAuthorizationFailed))
}
