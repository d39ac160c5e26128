package clickhouse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/segmentio/kafka-go"

	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/schemas"
	ewipc "github.com/entrowatch/entrowatch/streams/ipc"
	ewkafka "github.com/entrowatch/entrowatch/streams/kafka"
)

// DecodeLabels reads one Kafka message of labels: a label.v1 Arrow IPC
// stream (one or more batches) or JSON (objects, one per line or
// pretty-printed, or an array of them), each label checked as ReadLabels
// checks one. Invalid labels are refused one by one (LabelsRead.Refused,
// naming their line or row); the others are kept, one per trace
// (OnePerTrace). The error is for a message that is not labels at all. It
// never panics on corrupt input.
func DecodeLabels(b []byte, source string, mem memory.Allocator) (LabelsRead, error) {
	now := time.Now()
	var rd LabelsRead
	var err error
	if t := bytes.TrimLeft(b, " \t\r\n\ufeff"); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		rd, err = ReadLabels(bytes.NewReader(b), source, now)
	} else {
		// arrow-go trusts the flatbuffer lengths of a stream (a corrupt one
		// makes it allocate until the process dies): check them before it
		// reads.
		if err := ewipc.CheckBounds(b); err != nil {
			if looksLikeCSVLabels(t) {
				return LabelsRead{}, errors.New("a CSV of labels: the labels topic takes JSON labels (one object per line) or label.v1 Arrow; CSV goes through POST /v1/labels or entrowatch labels import --in")
			}
			return LabelsRead{}, fmt.Errorf("neither JSON nor a valid Arrow IPC stream: %w", err)
		}
		// A corrupt length field must not make the reader allocate
		// gigabytes: decoding may allocate what the message could
		// plausibly decode to.
		bounded := ewipc.NewBoundedAllocator(mem, ewipc.DecodeLimit(len(b)))
		rd, err = decodeLabels(b, bounded, source, now)
		if err != nil {
			bounded.Reclaim() // what the reader abandoned when it failed
		}
	}
	if err != nil {
		return LabelsRead{}, err
	}
	rd.Labels, rd.Duplicates = OnePerTrace(rd.Labels, now)
	return rd, nil
}

// looksLikeCSVLabels reports text whose first line is a CSV header naming
// trace_id and correct.
func looksLikeCSVLabels(b []byte) bool {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	h := strings.ToLower(string(line))
	return strings.Contains(h, ",") && strings.Contains(h, "trace_id") && strings.Contains(h, "correct")
}

func decodeLabels(b []byte, mem memory.Allocator, source string, now time.Time) (rd LabelsRead, err error) {
	defer func() {
		if r := recover(); r != nil {
			rd, err = LabelsRead{}, fmt.Errorf("corrupt Arrow IPC label batch: %v", r)
		}
	}()
	rr, err := ipc.NewReader(bytes.NewReader(b), ipc.WithAllocator(mem))
	if err != nil {
		return rd, fmt.Errorf("neither JSON nor an Arrow IPC stream: %w", err)
	}
	defer rr.Release()
	if tag := schemas.NameOf(rr.Schema()); tag != "" && tag != schemas.Tag(schemas.LabelName) {
		return rd, fmt.Errorf("batch is %s, want %s", tag, schemas.Tag(schemas.LabelName))
	}
	rows := 0
	for rr.Next() {
		rec := rr.RecordBatch()
		if err := labelsFromRecord(rec, source, now, &rd, rows); err != nil {
			return LabelsRead{}, err
		}
		rows += int(rec.NumRows())
	}
	if err := rr.Err(); err != nil {
		return LabelsRead{}, fmt.Errorf("corrupt Arrow IPC label batch: %w", err)
	}
	return rd, nil
}

// TopicImport says where ImportTopic reads labels.
type TopicImport struct {
	Kafka  ewkafka.Config // brokers, TLS, SASL
	Topic  string         // the Kafka topic of label messages (see DecodeLabels)
	Group  string         // consumer group; offsets are committed after the labels are stored
	Source string         // source of labels that name none
	Follow bool           // keep reading until ctx ends, as FollowLabels does (inserts retried)
	Idle   time.Duration  // without Follow, stop after this long without messages; default 5s
	Log    *slog.Logger   // with Follow, where refused labels, skipped messages and retries are reported; nil discards
}

// TopicImported is what ImportTopic did.
type TopicImported struct {
	Stored     int            // labels stored
	Refused    int            // invalid labels, not stored
	Reasons    map[string]int // Refused by reason (LabelRefusalReasons)
	Unreadable int            // messages that are not labels at all (without Follow)
	Dropped    int            // messages of which no label was stored: unreadable, or none valid
	Unlabelled int            // rows without correct, skipped
	Duplicates int            // labels dropped because another of their trace in the message wins
	// First lists the first refusals and unreadable messages (without
	// Follow; with it they are logged), each naming its partition, offset
	// and line or row.
	First []string
}

// maxTopicRefusalsListed bounds TopicImported.First.
const maxTopicRefusalsListed = 10

// add counts what a message held.
func (r *TopicImported) add(rd LabelsRead, where string) {
	r.Stored += len(rd.Labels)
	r.Unlabelled += rd.Unlabelled
	r.Duplicates += rd.Duplicates
	r.Refused += rd.Refused
	if len(rd.Labels) == 0 {
		r.Dropped++
	}
	for reason, n := range rd.Reasons {
		if r.Reasons == nil {
			r.Reasons = map[string]int{}
		}
		r.Reasons[reason] += n
	}
	for _, f := range rd.First {
		r.note(where + " " + f)
	}
}

func (r *TopicImported) note(s string) {
	if len(r.First) < maxTopicRefusalsListed {
		r.First = append(r.First, s)
	}
}

// Err is nil when every label read was valid and every message was labels,
// else an error that counts and lists what was not stored.
func (r TopicImported) Err() error {
	if r.Refused == 0 && r.Unreadable == 0 {
		return nil
	}
	var what []string
	if r.Refused > 0 {
		what = append(what, fmt.Sprintf("%s refused (%s)", words.CountAs(r.Refused, "invalid label", "invalid labels"), reasonCounts(r.Reasons)))
	}
	if r.Unreadable > 0 {
		what = append(what, words.CountAs(r.Unreadable, "message is", "messages are")+" not labels")
	}
	more := ""
	if n := r.Refused + r.Unreadable - len(r.First); n > 0 {
		more = fmt.Sprintf(" (and %d more)", n)
	}
	return fmt.Errorf("%s, not stored: %s%s; the valid labels were stored and the offsets committed, so send the refused ones again, corrected",
		strings.Join(what, " and "), strings.Join(r.First, "; "), more)
}

// ImportTopic stores the labels of a topic. Each message's valid labels
// are stored, then its offset is committed; its invalid labels are refused
// and counted, as are messages that are not labels at all. Catching up
// (without Follow), it goes on to the end and returns what it did; the
// caller reports TopicImported.Err. Following, it is FollowLabels: the
// same, logged as it happens. The error is for a failure to read the
// topic or store labels.
func ImportTopic(ctx context.Context, conn driver.Conn, db string, ti TopicImport, mem memory.Allocator) (TopicImported, error) {
	var res TopicImported
	if ti.Idle <= 0 {
		ti.Idle = 5 * time.Second
	}
	// The reader would wait quietly on a wrong password or a missing topic
	// and the import would report "0 labels" as if caught up.
	if err := ewkafka.CheckTopic(ctx, ti.Kafka, ti.Topic); err != nil {
		return res, fmt.Errorf("labels import: %w", err)
	}
	sc := ewkafka.DefaultSourceConfig()
	sc.Topic, sc.Group = ti.Topic, ti.Group
	sc.MaxWait = 200 * time.Millisecond
	src, err := ewkafka.NewSource(ti.Kafka, sc, slog.New(slog.DiscardHandler))
	if err != nil {
		return res, fmt.Errorf("labels import: %w", err)
	}
	defer src.Close()
	if ti.Follow {
		log := ti.Log
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		err := FollowLabels(ctx, src, conn, db, ti.Source, mem, log, FollowCounters{
			Stored:  func(n int) { res.Stored += n },
			Dropped: func() { res.Dropped++ },
			Refused: func(reason string, n int) {
				res.Refused += n
				if res.Reasons == nil {
					res.Reasons = map[string]int{}
				}
				res.Reasons[reason] += n
			},
		})
		return res, err
	}
	for {
		fctx, cancel := context.WithTimeout(ctx, ti.Idle)
		m, err := src.Fetch(fctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
				return res, nil // interrupted, or idle: caught up
			}
			return res, fmt.Errorf("labels import: %w", err)
		}
		where := fmt.Sprintf("partition %d offset %d", m.Partition, m.Offset)
		rd, err := DecodeLabels(m.Value, ti.Source, mem)
		if err != nil {
			res.Unreadable++
			res.note(where + ": " + err.Error())
		}
		if err := InsertLabels(ctx, conn, db, rd.Labels); err != nil {
			return res, err
		}
		if err := src.Commit(ctx, m); err != nil {
			return res, fmt.Errorf("labels import: %w", err)
		}
		res.add(rd, where)
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
	Stored  func(n int)                // labels stored
	Dropped func()                     // messages of which no label was stored (not labels, or none valid), skipped
	Refused func(reason string, n int) // invalid labels, by reason (LabelRefusalReasons), not stored
	Errors  func()                     // failed inserts (each retried until it succeeds)
}

// FollowLabels stores the labels of feed in the labels table until ctx ends,
// committing each message after its valid labels are stored. Invalid labels
// are refused one by one: logged with the message's partition and offset
// and their line or row (the first maxRefusalsListed of a message), counted
// and not stored, so that one bad label loses neither the others of its
// message nor the labels of everyone else. A message that is not labels is
// logged, counted and skipped the same way. A failing fetch or insert is
// retried with backoff (1 s doubling to 30 s), and nothing is committed
// meanwhile. It returns nil when ctx ends. Labels that name no source get
// source.
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
		if ewkafka.Refused(err) {
			// The group's settings or rights are wrong: retrying would
			// store no label, for ever, with every signal green.
			return fmt.Errorf("labels: the brokers refuse the labels consumer's settings or rights, which retrying cannot fix: %w (check the user's ACLs on the labels topic and its consumer group, and source.session_timeout against the brokers' group.min/max.session.timeout.ms)", err)
		}
		if err != nil {
			log.Warn("labels: fetch failed; retrying", "err", err, "retry_in", backoff)
			if !wait() {
				return nil
			}
			continue
		}
		rd, derr := DecodeLabels(m.Value, source, mem)
		for len(rd.Labels) > 0 {
			err := InsertLabels(ctx, conn, db, rd.Labels)
			if err == nil {
				break
			}
			if c.Errors != nil {
				c.Errors()
			}
			log.Warn("labels: insert failed; retrying", "err", err, "labels", len(rd.Labels), "retry_in", backoff)
			if !wait() {
				return nil
			}
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
		reportMessage(log, c, m, rd, derr)
	}
}

// reportMessage counts and logs what FollowLabels did with a message.
func reportMessage(log *slog.Logger, c FollowCounters, m kafka.Message, rd LabelsRead, derr error) {
	if len(rd.Labels) > 0 && c.Stored != nil {
		c.Stored(len(rd.Labels))
	}
	if len(rd.Labels) == 0 && c.Dropped != nil {
		c.Dropped()
	}
	if c.Refused != nil {
		for _, reason := range slices.Sorted(maps.Keys(rd.Reasons)) {
			c.Refused(reason, rd.Reasons[reason])
		}
	}
	at := []any{"topic", m.Topic, "partition", m.Partition, "offset", m.Offset}
	refused := func() []any {
		return append(at, "stored", len(rd.Labels), "refused", rd.Refused, "unlabelled", rd.Unlabelled,
			"reasons", reasonCounts(rd.Reasons), "first", strings.Join(rd.First, "; "))
	}
	switch {
	case derr != nil:
		log.Error("labels: message skipped, it cannot be read as labels", append(at, "err", derr)...)
	case len(rd.Labels) == 0 && rd.Refused > 0:
		log.Error(fmt.Sprintf("labels: message skipped, none of its %d labels is valid (refused)", rd.Refused), refused()...)
	case rd.Refused > 0:
		log.Warn(fmt.Sprintf("labels: %d labels of the message stored, %d invalid ones refused", len(rd.Labels), rd.Refused), refused()...)
	case len(rd.Labels) == 0:
		log.Warn("labels: message skipped, it holds no labels", append(at, "unlabelled", rd.Unlabelled)...)
	case rd.Unlabelled > 0:
		log.Info("labels: rows without correct skipped (unlabelled)", append(at, "stored", len(rd.Labels), "unlabelled", rd.Unlabelled)...)
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
