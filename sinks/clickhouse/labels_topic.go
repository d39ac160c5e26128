package clickhouse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/segmentio/kafka-go"

	"github.com/entrowatch/entrowatch/schemas"
	ewipc "github.com/entrowatch/entrowatch/streams/ipc"
	ewkafka "github.com/entrowatch/entrowatch/streams/kafka"
)

// DecodeLabels reads one Kafka message of labels: a label.v1 Arrow IPC
// stream (one or more batches) or JSON (one object or JSON Lines). It never
// panics on corrupt input.
func DecodeLabels(b []byte, source string, mem memory.Allocator) (labels []Label, err error) {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return ReadLabels(bytes.NewReader(b), source, time.Now())
	}
	// arrow-go trusts the flatbuffer lengths of a stream (a corrupt one makes
	// it allocate until the process dies): check them before it reads.
	if err := ewipc.CheckBounds(b); err != nil {
		return nil, fmt.Errorf("neither JSON nor a valid Arrow IPC stream: %w", err)
	}
	// A corrupt length field must not make the reader allocate gigabytes:
	// decoding may allocate what the message could plausibly decode to.
	bounded := ewipc.NewBoundedAllocator(mem, ewipc.DecodeLimit(len(b)))
	labels, err = decodeLabels(b, bounded)
	if err != nil {
		bounded.Reclaim() // what the reader abandoned when it failed
	}
	return labels, err
}

func decodeLabels(b []byte, mem memory.Allocator) (labels []Label, err error) {
	defer func() {
		if r := recover(); r != nil {
			labels, err = nil, fmt.Errorf("corrupt Arrow IPC label batch: %v", r)
		}
	}()
	rd, err := ipc.NewReader(bytes.NewReader(b), ipc.WithAllocator(mem))
	if err != nil {
		return nil, fmt.Errorf("neither JSON nor an Arrow IPC stream: %w", err)
	}
	defer rd.Release()
	if tag := schemas.NameOf(rd.Schema()); tag != "" && tag != schemas.Tag(schemas.LabelName) {
		return nil, fmt.Errorf("batch is %s, want %s", tag, schemas.Tag(schemas.LabelName))
	}
	for rd.Next() {
		ls, err := LabelsFromRecord(rd.RecordBatch())
		if err != nil {
			return nil, err
		}
		labels = append(labels, ls...)
	}
	if err := rd.Err(); err != nil {
		return nil, fmt.Errorf("corrupt Arrow IPC label batch: %w", err)
	}
	return labels, nil
}

// TopicImport says where ImportTopic reads labels.
type TopicImport struct {
	Kafka  ewkafka.Config // brokers, TLS, SASL
	Topic  string
	Group  string        // consumer group; offsets are committed after the labels are stored
	Source string        // source of labels that name none
	Follow bool          // keep reading until ctx ends, as FollowLabels does (bad messages skipped, inserts retried)
	Idle   time.Duration // without Follow, stop after this long without messages; default 5s
	Log    *slog.Logger  // with Follow, where skipped messages and retries are reported; nil discards
}

// ImportTopic stores the labels of a topic and returns how many it stored.
// Catching up (without Follow), a message that cannot be decoded stops the
// import with an error naming its partition and offset (it is not
// committed); following, it is FollowLabels: logged, counted and skipped.
func ImportTopic(ctx context.Context, conn driver.Conn, db string, ti TopicImport, mem memory.Allocator) (int, error) {
	if ti.Idle <= 0 {
		ti.Idle = 5 * time.Second
	}
	// The reader would wait quietly on a wrong password or a missing topic
	// and the import would report "0 labels" as if caught up.
	if err := ewkafka.CheckTopic(ctx, ti.Kafka, ti.Topic); err != nil {
		return 0, fmt.Errorf("labels import: %w", err)
	}
	sc := ewkafka.DefaultSourceConfig()
	sc.Topic, sc.Group = ti.Topic, ti.Group
	sc.MaxWait = 200 * time.Millisecond
	src, err := ewkafka.NewSource(ti.Kafka, sc, slog.New(slog.DiscardHandler))
	if err != nil {
		return 0, fmt.Errorf("labels import: %w", err)
	}
	defer src.Close()
	total := 0
	if ti.Follow {
		log := ti.Log
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		err := FollowLabels(ctx, src, conn, db, ti.Source, mem, log, FollowCounters{Stored: func(n int) { total += n }})
		return total, err
	}
	for {
		fctx, cancel := context.WithTimeout(ctx, ti.Idle)
		m, err := src.Fetch(fctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
				return total, nil // interrupted, or idle: caught up
			}
			return total, fmt.Errorf("labels import: %w", err)
		}
		labels, err := DecodeLabels(m.Value, ti.Source, mem)
		if err != nil {
			return total, fmt.Errorf("labels import: topic %s partition %d offset %d: %w", ti.Topic, m.Partition, m.Offset, err)
		}
		if err := InsertLabels(ctx, conn, db, labels); err != nil {
			return total, err
		}
		if err := src.Commit(ctx, m); err != nil {
			return total, fmt.Errorf("labels import: %w", err)
		}
		total += len(labels)
	}
}

// LabelFeed is a consumer-group source of label messages, such as
// streams/kafka.Source.
type LabelFeed interface {
	Fetch(ctx context.Context) (kafka.Message, error)
	Commit(ctx context.Context, msgs ...kafka.Message) error
}

// FollowCounters receives what FollowLabels did; nil funcs are skipped.
type FollowCounters struct {
	Stored  func(n int) // labels stored
	Dropped func()      // messages that hold no labels, skipped
	Errors  func()      // failed inserts (each retried until it succeeds)
}

// FollowLabels stores the labels of feed in the labels table until ctx ends,
// committing each message after its labels are stored. A message that is not
// labels is logged with its partition and offset, counted and skipped, so
// that one bad producer cannot stall the labels of everyone else. A failing
// fetch or insert is retried with backoff (1 s doubling to 30 s), and
// nothing is committed meanwhile. It returns nil when ctx ends. Labels that
// name no source get source.
func FollowLabels(ctx context.Context, feed LabelFeed, conn driver.Conn, db, source string, mem memory.Allocator, log *slog.Logger, c FollowCounters) error {
	const minBackoff, maxBackoff = time.Second, 30 * time.Second
	backoff := minBackoff
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
			backoff = min(2*backoff, maxBackoff)
			return true
		}
	}
	for {
		m, err := feed.Fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			log.Warn("labels: fetch failed; retrying", "err", err, "retry_in", backoff)
			if !wait() {
				return nil
			}
			continue
		}
		labels, err := DecodeLabels(m.Value, source, mem)
		if err != nil {
			log.Error("labels: message skipped, it holds no labels", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
			if c.Dropped != nil {
				c.Dropped()
			}
		}
		for err == nil {
			if err = InsertLabels(ctx, conn, db, labels); err == nil {
				break
			}
			if c.Errors != nil {
				c.Errors()
			}
			log.Warn("labels: insert failed; retrying", "err", err, "labels", len(labels), "retry_in", backoff)
			if !wait() {
				return nil
			}
			err = nil
		}
		for {
			cerr := feed.Commit(ctx, m)
			if cerr == nil {
				break
			}
			log.Warn("labels: commit failed; retrying", "err", cerr, "retry_in", backoff)
			if !wait() {
				return nil
			}
		}
		backoff = minBackoff
		if err == nil && c.Stored != nil {
			c.Stored(len(labels))
		}
	}
}

// FollowLabels is FollowLabels on the sink's connection and database.
func (s *Sink) FollowLabels(ctx context.Context, feed LabelFeed, mem memory.Allocator, log *slog.Logger, c FollowCounters) error {
	return FollowLabels(ctx, feed, s.conn, s.cfg.DatabaseName(), "kafka", mem, log, c)
}

// PublishRequests produces one JSON message per request (keyed by trace_id)
// with acks from all replicas.
func PublishRequests(ctx context.Context, kc ewkafka.Config, topic string, reqs []LabelRequest) error {
	// Created when missing, as the writer used to ask the broker to; when
	// this fails (no permission), producing says what is wrong.
	_ = ewkafka.EnsureTopics(ctx, kc, 1, topic)
	if err := ewkafka.CheckTopic(ctx, kc, topic); err != nil {
		return fmt.Errorf("labels requests: %w", err) // also with no request to send
	}
	pcfg := ewkafka.DefaultProducerConfig()
	pcfg.Topic = topic
	p, err := ewkafka.NewProducer(kc, pcfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return fmt.Errorf("labels requests: %w", err)
	}
	msgs := make([]kafka.Message, len(reqs))
	for i, r := range reqs {
		b, _ := json.Marshal(r)
		msgs[i] = kafka.Message{Key: []byte(r.TraceID), Value: b}
	}
	err = p.Produce(ctx, msgs...)
	if err != nil {
		err = fmt.Errorf("labels requests: %d requests (brokers %s): %w", len(reqs), strings.Join(kc.Brokers, ","), err)
	}
	return errors.Join(err, p.Close())
}
