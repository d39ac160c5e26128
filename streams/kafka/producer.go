package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/entrowatch/entrowatch/internal/words"
)

// ProducerConfig configures a producer. Writes are synchronous and wait for
// every in-sync replica (acks=all): a nil error means the broker has them.
type ProducerConfig struct {
	// Topic to produce to. Default "traces".
	Topic string `yaml:"topic"`
	// BatchTimeout is how long a partial batch waits for more messages.
	// Default 5ms (kafka-go's 1s default stalls every synchronous write).
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	// BatchBytes bounds one produce batch; it must stay under the broker's
	// message.max.bytes (Kafka default 1048588). Default 1048000.
	BatchBytes int64 `yaml:"batch_bytes"`
	// MaxMessageBytes bounds one encoded record batch (one Kafka message);
	// larger Arrow batches are split by rows. Default 1000000.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxAttempts is how often a failed write is tried. Default 10.
	MaxAttempts int `yaml:"max_attempts"`
	// WriteTimeout bounds one produce request. Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// DefaultProducerConfig returns the documented defaults.
func DefaultProducerConfig() ProducerConfig {
	return ProducerConfig{
		Topic:           "traces",
		BatchTimeout:    5 * time.Millisecond,
		BatchBytes:      1048000,
		MaxMessageBytes: 1000000,
		MaxAttempts:     10,
		WriteTimeout:    10 * time.Second,
	}
}

// Validate reports the first invalid field.
func (c ProducerConfig) Validate() error {
	switch {
	case c.Topic == "":
		return errors.New("producer.topic is empty: name the topic to produce to")
	case c.BatchTimeout <= 0:
		return fmt.Errorf("producer.batch_timeout %v: want > 0 (e.g. 5ms)", c.BatchTimeout)
	case c.MaxMessageBytes < 1024:
		return fmt.Errorf("producer.max_message_bytes %d: want >= 1024", c.MaxMessageBytes)
	case c.BatchBytes < int64(c.MaxMessageBytes)+1024:
		return fmt.Errorf("producer.batch_bytes %d: want at least max_message_bytes + 1024 (%d) so one message fits", c.BatchBytes, c.MaxMessageBytes+1024)
	case c.MaxAttempts < 1:
		return fmt.Errorf("producer.max_attempts %d: want >= 1", c.MaxAttempts)
	case c.WriteTimeout <= 0:
		return fmt.Errorf("producer.write_timeout %v: want > 0", c.WriteTimeout)
	}
	return nil
}

// Producer writes messages to one topic. It is safe for concurrent use.
type Producer struct {
	w   *kafkago.Writer
	t   *kafkago.Transport
	cfg ProducerConfig
	// alone sends one message per record batch: the messages a topic
	// refused as too large in a batch with others (see resendAlone).
	alone *kafkago.Writer
}

// NewProducer connects lazily, on the first write. A nil log discards.
func NewProducer(conn Config, cfg ProducerConfig, log *slog.Logger) (*Producer, error) {
	if err := conn.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t, err := conn.transport()
	if err != nil {
		return nil, err
	}
	writer := func(batchSize int, batchTimeout time.Duration) *kafkago.Writer {
		return &kafkago.Writer{
			Addr:            kafkago.TCP(conn.Brokers...),
			Topic:           cfg.Topic,
			Balancer:        &kafkago.Hash{}, // keyed messages (chunks of one trace) share a partition; unkeyed ones rotate
			MaxAttempts:     cfg.MaxAttempts,
			WriteBackoffMin: 50 * time.Millisecond,
			WriteBackoffMax: time.Second,
			BatchSize:       batchSize,
			BatchBytes:      cfg.BatchBytes,
			BatchTimeout:    batchTimeout,
			WriteTimeout:    cfg.WriteTimeout,
			RequiredAcks:    kafkago.RequireAll,
			Transport:       t,
			ErrorLogger: kafkago.LoggerFunc(func(msg string, args ...any) {
				log.Debug("kafka producer: "+fmt.Sprintf(msg, args...), "topic", cfg.Topic)
			}),
		}
	}
	return &Producer{w: writer(1000, cfg.BatchTimeout), t: t, cfg: cfg, alone: writer(1, time.Millisecond)}, nil
}

// Topic returns the topic produced to.
func (p *Producer) Topic() string { return p.cfg.Topic }

// MaxMessageBytes is the largest message value the producer accepts.
func (p *Producer) MaxMessageBytes() int { return p.cfg.MaxMessageBytes }

// TopicMessageBytes is the max.message.bytes a topic needs to take every
// produce of p: several messages to one partition go as one record batch
// of up to batch_bytes, which is what the broker checks, plus the batch's
// own header and margin (Kafka's default, 1048588, takes the default
// batch_bytes).
func (p *Producer) TopicMessageBytes() int64 { return p.cfg.TopicMessageBytes() }

// TopicMessageBytes is Producer.TopicMessageBytes for a producer with c.
func (c ProducerConfig) TopicMessageBytes() int64 { return c.BatchBytes + recordBatchMargin }

// recordBatchMargin covers a record batch's header (61 bytes) and the
// difference between kafka-go's estimate of a record's size and its
// encoding.
const recordBatchMargin = 588

// Produce writes msgs and returns once the broker acknowledged all of them
// (acks=all). Pass many messages per call: they are batched per partition.
func (p *Producer) Produce(ctx context.Context, msgs ...Message) error {
	for i := range msgs {
		if n := len(msgs[i].Value); n > p.cfg.MaxMessageBytes {
			return fmt.Errorf("producing to %s: message %d is %d bytes, over max_message_bytes %d", p.cfg.Topic, i, n, p.cfg.MaxMessageBytes)
		}
	}
	err := p.w.WriteMessages(ctx, msgs...)
	if err != nil && IsMessageTooLarge(err) {
		err = p.resendAlone(ctx, msgs, err)
	}
	if err != nil {
		if isUnknownTopic(err) {
			return fmt.Errorf("producing to %s: %w; create it, or start entrowatch run first (it creates its topics when create_topics is true): %w", p.cfg.Topic, ErrUnknownTopic, err)
		}
		return fmt.Errorf("producing %s to %s: %w", words.Count(len(msgs), "message"), p.cfg.Topic, err)
	}
	return nil
}

// resendAlone sends again, each in a record batch of its own, the messages
// of msgs that err says the topic refused as too large: several messages to
// one partition (of this call, or of concurrent ones) share a record batch
// of up to batch_bytes, which a topic whose max.message.bytes lies between
// max_message_bytes and batch_bytes refuses although each message fits
// (half of 24 concurrent HTTP bodies answered 413). The messages that went
// are not sent again. What remains is a message too large alone.
func (p *Producer) resendAlone(ctx context.Context, msgs []Message, err error) error {
	one := func(m Message) error {
		err := p.alone.WriteMessages(ctx, m)
		if we, ok := err.(kafkago.WriteErrors); ok && len(we) == 1 {
			return we[0] // not nested in the caller's WriteErrors
		}
		return err
	}
	we, ok := err.(kafkago.WriteErrors)
	if !ok || len(we) != len(msgs) {
		if len(msgs) == 1 && errors.Is(err, kafkago.MessageSizeTooLarge) {
			return one(msgs[0])
		}
		return err
	}
	for i, e := range we {
		if e != nil && errors.Is(e, kafkago.MessageSizeTooLarge) {
			we[i] = one(msgs[i])
		}
	}
	if we.Count() == 0 {
		return nil
	}
	return we
}

// ErrUnknownTopic is wrapped by Produce's error when the topic does not exist.
var ErrUnknownTopic = errors.New("the topic does not exist on the brokers")

// isUnknownTopic reports whether err, or every message's error of a
// partial failure, says that the topic does not exist.
func isUnknownTopic(err error) bool {
	var we kafkago.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && !errors.Is(e, kafkago.UnknownTopicOrPartition) {
				return false
			}
		}
		return we.Count() > 0
	}
	return errors.Is(err, kafkago.UnknownTopicOrPartition)
}

// Close flushes and releases the connections.
func (p *Producer) Close() error {
	err := errors.Join(p.w.Close(), p.alone.Close())
	p.t.CloseIdleConnections() // a Writer leaves a Transport it did not create open
	if err != nil {
		return fmt.Errorf("closing producer %s: %w", p.cfg.Topic, err)
	}
	return nil
}

// EnsureTopics creates the topics that do not exist yet, with partitions
// partitions each. Existing topics are left as they are.
//
// Its error says why: brokers that cannot be reached give the dial error
// (connection refused, no such host, a timeout), not the "[8] Broker Not
// Available" kafka-go reports when it has no broker to send the request to;
// a topic the brokers refused to create (not authorized, an invalid
// partition count or replication factor, a policy) wraps ErrTopicRefused.
// Answered tells the errors that retrying cannot fix from those that may
// pass.
func EnsureTopics(ctx context.Context, conn Config, partitions int, topics ...string) error {
	c, done, err := conn.client()
	if err != nil {
		return err
	}
	defer done()
	// The cluster's metadata first: it fails with the cause when no broker
	// answers, where CreateTopics, routed to a controller it never learnt
	// of, says only "Broker Not Available".
	if _, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{}}); err != nil {
		return fmt.Errorf("reaching Kafka at %s: %w", strings.Join(conn.Brokers, ","), err)
	}
	req := &kafkago.CreateTopicsRequest{}
	for _, name := range topics {
		req.Topics = append(req.Topics, kafkago.TopicConfig{Topic: name, NumPartitions: partitions, ReplicationFactor: -1})
	}
	res, err := c.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("creating topics %v on %v: %w", topics, conn.Brokers, err)
	}
	for _, name := range topics {
		e := res.Errors[name]
		if e == nil || errors.Is(e, kafkago.TopicAlreadyExists) {
			continue
		}
		if Answered(e) {
			return fmt.Errorf("creating topic %s: %w: %w", name, ErrTopicRefused, e)
		}
		return fmt.Errorf("creating topic %s: %w", name, e)
	}
	return nil
}

// ErrTopicRefused is wrapped by EnsureTopics' error when the brokers
// answered and refused to create a topic.
var ErrTopicRefused = errors.New("the brokers refused to create the topic")

// Answered reports whether err carries an error code the brokers answered
// with that retrying the same request cannot fix: authentication failed, not
// authorized, an invalid request. Brokers that cannot be reached, timeouts
// and a cluster in transition (a controller or a leader moving: Kafka's
// retriable codes) are not; nor is "[8] Broker Not Available", which
// kafka-go reports itself when it knows no broker to send a request to.
func Answered(err error) bool {
	var ke kafkago.Error
	return errors.As(err, &ke) && !ke.Temporary() && ke != kafkago.BrokerNotAvailable
}

// Refused reports a fetch error no retry can fix: the brokers refuse the
// consumer group's settings (a session timeout outside their range, an
// invalid group id) or this user's rights (topic, group, authentication).
// A consumer that retried it would sit live, consuming nothing, for ever.
func Refused(err error) bool {
	for _, e := range []kafkago.Error{kafkago.InvalidSessionTimeout, kafkago.InvalidGroupId,
		kafkago.TopicAuthorizationFailed, kafkago.GroupAuthorizationFailed, kafkago.SASLAuthenticationFailed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// CheckTopic connects as conn (TLS, SASL) and asks the brokers for topic's
// metadata, so that an unreachable cluster, refused credentials or a
// missing topic are errors now rather than a consumer that waits quietly
// (kafka-go's reader retries those for ever and only logs them).
func CheckTopic(ctx context.Context, conn Config, topic string) error {
	c, done, err := conn.client()
	if err != nil {
		return err
	}
	defer done()
	res, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("reaching Kafka at %v: %w", conn.Brokers, err)
	}
	for _, tp := range res.Topics {
		if tp.Name != topic {
			continue
		}
		if tp.Error != nil {
			if errors.Is(tp.Error, kafkago.UnknownTopicOrPartition) {
				return fmt.Errorf("topic %s: %w", topic, ErrUnknownTopic)
			}
			return fmt.Errorf("topic %s: %w", topic, tp.Error)
		}
		return nil
	}
	return fmt.Errorf("topic %s: %w", topic, ErrUnknownTopic)
}

// client is an admin client of the cluster as conn (TLS, SASL); done closes
// its connections.
func (c Config) client() (*kafkago.Client, func(), error) {
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	t, err := c.transport()
	if err != nil {
		return nil, nil, err
	}
	return &kafkago.Client{Addr: kafkago.TCP(c.Brokers...), Transport: t, Timeout: c.DialTimeout}, t.CloseIdleConnections, nil
}
