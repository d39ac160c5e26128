package kafka

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// Message is one Kafka record as fetched or produced.
type Message = kafkago.Message

// Header is one Kafka record header.
type Header = kafkago.Header

// SourceConfig configures a consumer-group source. Offsets are never committed
// automatically: the stream commits after the sink confirms.
type SourceConfig struct {
	// Topic to consume. Default "traces".
	Topic string `yaml:"topic"`
	// Group is the consumer group; replicas with the same group share the
	// partitions. Default "entrowatch".
	Group string `yaml:"group"`
	// StartOffset is where a new group starts: "earliest" or "latest".
	// Default "earliest".
	StartOffset string `yaml:"start_offset"`
	// MinBytes and MaxBytes bound one fetch response (per partition). The
	// broker always returns at least one record batch, so MaxBytes near the
	// message size (1 MB) costs no throughput, and it keeps the embedded
	// broker, which copies a response while building it, 1.6x cheaper per
	// byte than 16 MiB responses. Defaults 1 and 1 MiB.
	MinBytes int `yaml:"min_bytes"`
	MaxBytes int `yaml:"max_bytes"`
	// MaxWait is how long a fetch waits for MinBytes. Default 250ms.
	MaxWait time.Duration `yaml:"max_wait"`
	// QueueCapacity is how many fetched messages are buffered ahead of the
	// stream; with 1 MiB messages it bounds the read-ahead memory.
	// Default 16.
	QueueCapacity int `yaml:"queue_capacity"`
	// HeartbeatInterval, SessionTimeout and RebalanceTimeout are the group
	// membership timings. Defaults 3s, 30s, 30s.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	SessionTimeout    time.Duration `yaml:"session_timeout"`
	RebalanceTimeout  time.Duration `yaml:"rebalance_timeout"`
	// JoinGroupBackoff is the wait before re-joining after an error.
	// Default 1s.
	JoinGroupBackoff time.Duration `yaml:"join_group_backoff"`
	// WatchPartitions rebalances the group when partitions are added to the
	// topic (checked every 5s), so that scaling a topic up needs no restart.
	// Default true.
	WatchPartitions bool `yaml:"watch_partitions"`
	// ReadBackoffMin and ReadBackoffMax bound the poll interval of an idle
	// partition. Defaults 50ms and 500ms.
	ReadBackoffMin time.Duration `yaml:"read_backoff_min"`
	ReadBackoffMax time.Duration `yaml:"read_backoff_max"`
}

// DefaultSourceConfig returns the documented defaults.
func DefaultSourceConfig() SourceConfig {
	return SourceConfig{
		Topic:             "traces",
		Group:             "entrowatch",
		StartOffset:       "earliest",
		MinBytes:          1,
		MaxBytes:          1 << 20,
		MaxWait:           250 * time.Millisecond,
		QueueCapacity:     16,
		HeartbeatInterval: 3 * time.Second,
		SessionTimeout:    30 * time.Second,
		RebalanceTimeout:  30 * time.Second,
		JoinGroupBackoff:  time.Second,
		WatchPartitions:   true,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    500 * time.Millisecond,
	}
}

// Validate reports the first invalid field.
func (c SourceConfig) Validate() error {
	switch {
	case c.Topic == "":
		return errors.New("source.topic is empty: name the topic to consume")
	case c.Group == "":
		return errors.New("source.group is empty: name the consumer group")
	case c.StartOffset != "earliest" && c.StartOffset != "latest":
		return fmt.Errorf("source.start_offset %q: want earliest or latest", c.StartOffset)
	case c.MinBytes < 1 || c.MaxBytes < c.MinBytes:
		return fmt.Errorf("source.min_bytes %d / max_bytes %d: want 1 <= min_bytes <= max_bytes", c.MinBytes, c.MaxBytes)
	case c.MaxWait <= 0:
		return fmt.Errorf("source.max_wait %v: want > 0", c.MaxWait)
	case c.QueueCapacity < 1:
		return fmt.Errorf("source.queue_capacity %d: want >= 1", c.QueueCapacity)
	case c.HeartbeatInterval <= 0 || c.SessionTimeout <= c.HeartbeatInterval:
		return fmt.Errorf("source.heartbeat_interval %v / session_timeout %v: want 0 < heartbeat_interval < session_timeout", c.HeartbeatInterval, c.SessionTimeout)
	case c.RebalanceTimeout <= 0 || c.JoinGroupBackoff <= 0:
		return fmt.Errorf("source.rebalance_timeout %v / join_group_backoff %v: want > 0", c.RebalanceTimeout, c.JoinGroupBackoff)
	case c.ReadBackoffMin <= 0 || c.ReadBackoffMax < c.ReadBackoffMin:
		return fmt.Errorf("source.read_backoff_min %v / read_backoff_max %v: want 0 < min <= max", c.ReadBackoffMin, c.ReadBackoffMax)
	}
	return nil
}

// Source consumes a topic in a consumer group. Fetch returns messages of all
// assigned partitions, in offset order within each partition; Commit moves the
// group's offsets past the given messages.
type Source struct {
	r     *kafkago.Reader
	topic string
	group string
	// clientID is unique to this Source (the configured client_id plus a
	// random suffix), so that Watermarks can find its own member among the
	// group's.
	clientID    string
	startLatest bool
	admin       *kafkago.Client
	done        func()
	closeOnce   sync.Once
	closeErr    error
}

// NewSource joins the group lazily, on the first Fetch. A nil log discards.
func NewSource(conn Config, cfg SourceConfig, log *slog.Logger) (*Source, error) {
	if err := conn.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d, err := conn.dialer()
	if err != nil {
		return nil, err
	}
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, err
	}
	d.ClientID = conn.ClientID + "-" + hex.EncodeToString(suffix[:])
	admin, done, err := conn.client()
	if err != nil {
		return nil, err
	}
	start := kafkago.FirstOffset
	if cfg.StartOffset == "latest" {
		start = kafkago.LastOffset
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:               conn.Brokers,
		GroupID:               cfg.Group,
		Topic:                 cfg.Topic,
		Dialer:                d,
		QueueCapacity:         cfg.QueueCapacity,
		MinBytes:              cfg.MinBytes,
		MaxBytes:              cfg.MaxBytes,
		MaxWait:               cfg.MaxWait,
		HeartbeatInterval:     cfg.HeartbeatInterval,
		SessionTimeout:        cfg.SessionTimeout,
		RebalanceTimeout:      cfg.RebalanceTimeout,
		JoinGroupBackoff:      cfg.JoinGroupBackoff,
		ReadBackoffMin:        cfg.ReadBackoffMin,
		ReadBackoffMax:        cfg.ReadBackoffMax,
		StartOffset:           start,
		WatchPartitionChanges: cfg.WatchPartitions,
		CommitInterval:        0, // synchronous: Commit returns once the broker has the offsets
		// kafka-go logs every rebalance and retry at error level; keep them at debug.
		ErrorLogger: kafkago.LoggerFunc(func(msg string, args ...any) {
			log.Debug("kafka source: "+fmt.Sprintf(msg, args...), "topic", cfg.Topic, "group", cfg.Group)
		}),
		Logger: kafkago.LoggerFunc(func(msg string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug("kafka source: "+fmt.Sprintf(msg, args...), "topic", cfg.Topic, "group", cfg.Group)
			}
		}),
	})
	return &Source{r: r, topic: cfg.Topic, group: cfg.Group, clientID: d.ClientID, startLatest: cfg.StartOffset == "latest", admin: admin, done: done}, nil
}

// PartitionOffsets is where an assigned partition stands.
type PartitionOffsets struct {
	High int64 // high watermark: the offset the next produced message gets
	// Next is the offset the group consumes next when this member has not
	// fetched from the partition yet: the committed offset, else (a new
	// group) the log start with start_offset earliest, the end with latest.
	Next int64
	// Start is the log start offset: the oldest message retention kept.
	Start int64
	// Committed is the group's committed offset, -1 when it has none.
	Committed int64
	// Latest: a group without a committed offset starts at the end
	// (start_offset latest), not at the log start.
	Latest bool
}

// Watermarks returns the partitions of the topic assigned to this member of
// the group now (none before it joined, or while the group rebalances),
// each with its high watermark and the group's next offset. It asks the
// group coordinator (DescribeGroups, OffsetFetch) and the partition leaders
// (ListOffsets), so it answers whether or not messages are being fetched:
// the lag it gives grows while a stalled replica fetches nothing, also for a
// partition it has not fetched from since it was assigned.
func (s *Source) Watermarks(ctx context.Context) (map[int]PartitionOffsets, error) {
	g, err := s.admin.DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: []string{s.group}})
	if err != nil {
		return nil, fmt.Errorf("describing group %s: %w", s.group, err)
	}
	var parts []int
	for _, grp := range g.Groups {
		if grp.Error != nil {
			return nil, fmt.Errorf("describing group %s: %w", s.group, grp.Error)
		}
		for _, m := range grp.Members {
			if m.ClientID != s.clientID {
				continue
			}
			for _, t := range m.MemberAssignments.Topics {
				if t.Topic == s.topic {
					parts = append(parts, t.Partitions...)
				}
			}
		}
	}
	out := make(map[int]PartitionOffsets, len(parts))
	if len(parts) == 0 {
		return out, nil
	}
	reqs := make([]kafkago.OffsetRequest, 0, 2*len(parts))
	for _, p := range parts {
		reqs = append(reqs, kafkago.FirstOffsetOf(p), kafkago.LastOffsetOf(p))
	}
	lo, err := s.admin.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{s.topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("listing the offsets of %s: %w", s.topic, err)
	}
	first := map[int]int64{}
	for _, po := range lo.Topics[s.topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("listing the offsets of %s partition %d: %w", s.topic, po.Partition, po.Error)
		}
		next := po.FirstOffset
		if s.startLatest {
			next = po.LastOffset
		}
		out[po.Partition] = PartitionOffsets{High: po.LastOffset, Next: next, Start: po.FirstOffset, Committed: -1, Latest: s.startLatest}
		first[po.Partition] = po.FirstOffset
	}
	of, err := s.admin.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: s.group, Topics: map[string][]int{s.topic: parts}})
	if err == nil && of.Error != nil {
		err = of.Error
	}
	if err != nil {
		return nil, fmt.Errorf("reading the committed offsets of group %s: %w", s.group, err)
	}
	for _, p := range of.Topics[s.topic] {
		o, ok := out[p.Partition]
		if !ok || p.Error != nil || p.CommittedOffset < 0 {
			continue // nothing committed: Next stays the start offset
		}
		// A committed offset below the log start (retention deleted what
		// was never consumed) resumes at the log start.
		o.Next = max(p.CommittedOffset, first[p.Partition])
		o.Committed = p.CommittedOffset
		out[p.Partition] = o
	}
	return out, nil
}

// Topic returns the consumed topic.
func (s *Source) Topic() string { return s.topic }

// Fetch blocks for the next message or until ctx is done.
func (s *Source) Fetch(ctx context.Context) (Message, error) {
	m, err := s.r.FetchMessage(ctx)
	if err != nil {
		return m, fmt.Errorf("fetching from %s: %w", s.topic, err)
	}
	return m, nil
}

// Commit commits, per partition, the offset after the highest given message.
// It returns once the broker has stored the offsets.
func (s *Source) Commit(ctx context.Context, msgs ...Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := s.r.CommitMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("committing offsets of %s: %w", s.topic, err)
	}
	return nil
}

// Close leaves the group and stops fetching. Offsets not yet committed are
// not committed: the next owner of the partition sees those messages again.
// Closing again does nothing.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		defer s.done()
		if err := s.r.Close(); err != nil {
			s.closeErr = fmt.Errorf("closing source %s: %w", s.topic, err)
		}
	})
	return s.closeErr
}
