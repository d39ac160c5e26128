package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/kafka"
	"github.com/entrowatch/entrowatch/streams/runner"
)

const deadlettersSynopsis = `[--brokers H:P,..] [--topic traces.dead] [--reason R,..] [--follow] [--max N] [--requeue TOPIC]

Lists what the stream dead-lettered, one JSON object per record on stdout:
partition, offset, time, reason, detail (the entrowatch.error header), source
(topic/partition@offset of the message it came from), row, trace_id, the
size of the attached bytes and, for a message or row too large to attach,
original_bytes (its size; bytes is then 0). It reads the topic from its first retained offset
without a consumer group, so nothing is committed and the stream is not
disturbed; it stops at the end (--follow waits for more). A summary by reason
goes to stderr. A message the stream processed twice (redelivered after a
restart, or after a sink write that failed) has its rows dead-lettered twice:
a record with the source, row, trace_id and bytes of one listed before is a copy,
counted in the summary and neither listed nor requeued.

Kafka with TLS or SASL: --kafka-tls, --kafka-tls-ca FILE, --kafka-sasl MECH,
--kafka-sasl-user USER (password from $ENTROWATCH_KAFKA_PASSWORD), as in
every command; the older --tls, --tls-ca, --sasl, --sasl-user still work.

--reason takes the reasons the stream dead-letters with: corrupt_ipc,
wrong_schema, empty, no_logprobs, nan_logprob, positive_logprob, too_long,
step_mismatch, incomplete, unknown_model, bad_feature; another is refused.

--requeue TOPIC produces the listed records' bytes (a trace.v1 row or the
original message) back to TOPIC, usually the source topic "traces", once the
cause is fixed: e.g. --reason unknown_model after the estimator learned the
model. Records without bytes (a row over the message limit) are skipped and
counted. It reads the records that are in the topic when it starts, so a
record that fails again is dead-lettered anew but not requeued again by the
same run; --requeue cannot be combined with --follow, which would feed every
record that still fails back to TOPIC endlessly (run --requeue again once the
cause is fixed).

Examples:
  entrowatch deadletters
  entrowatch deadletters --reason nan_logprob,positive_logprob --max 20
  entrowatch deadletters --reason unknown_model --requeue traces`

// deadLetterReasons are the reasons the stream dead-letters with (the
// entrowatch.reason header), in the order of docs/streams.md and of
// deadlettersSynopsis.
var deadLetterReasons = []string{
	schemas.ReasonCorruptIPC, schemas.ReasonWrongSchema,
	schemas.ReasonEmpty, schemas.ReasonNoLogprobs, schemas.ReasonNaNLogprob, schemas.ReasonPositiveLogprob,
	schemas.ReasonTooLong, schemas.ReasonMismatch, schemas.ReasonIncomplete,
	schemas.ReasonUnknownModel, schemas.ReasonBadFeature,
}

// deadLetter is one listed record.
type deadLetter struct {
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Time      time.Time `json:"time"`
	Reason    string    `json:"reason"`
	Detail    string    `json:"detail,omitempty"`
	Source    string    `json:"source,omitempty"`
	Row       *int      `json:"row,omitempty"`
	TraceID   string    `json:"trace_id,omitempty"`
	Bytes     int       `json:"bytes"`
	// OriginalBytes is the size of a message or row left out of the record
	// because it was over the dead-letter topic's message limit.
	OriginalBytes *int `json:"original_bytes,omitempty"`
}

func runDeadletters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("deadletters", deadlettersSynopsis, stderr)
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap brokers; the default is entrowatch run's embedded broker")
	topic := fs.String("topic", "traces.dead", "dead-letter topic (the stream's dead_letter.topic)")
	reasons := fs.String("reason", "", "only these reasons, comma-separated (default: all; the list is in the text above)")
	follow := fs.Bool("follow", false, "keep waiting for new records until Ctrl-C (not with --requeue)")
	maxN := fs.Int("max", 0, "stop after this many listed records (0 = no limit)")
	requeue := fs.String("requeue", "", "produce the listed records' bytes to this topic (e.g. traces); not with --follow")
	kf := addKafkaFlags(fs, kafkaPlain)
	if err := kf.parse(args); err != nil {
		return err
	}
	if *maxN < 0 {
		return badFlag("--max: want 0 (no limit) or more")
	}
	if *follow && *requeue != "" {
		return badFlag("%s", "--follow and --requeue cannot be combined: every record that fails again would be requeued again, endlessly; "+
			"requeue without --follow (it takes the records in the topic now) and run it again once more causes are fixed")
	}
	switch {
	case *topic == "":
		return badFlag("--topic \"\": want the dead-letter topic (the stream's dead_letter.topic, default traces.dead)")
	case *requeue == "" && flagSet(fs, "requeue"):
		return badFlag("--requeue \"\": want the topic to produce the records to (usually traces)")
	case *requeue != "" && *requeue == *topic:
		return badFlag("--requeue %s is the dead-letter topic itself", *requeue)
	}
	want := map[string]bool{}
	for _, r := range featureList(*reasons) {
		if !slices.Contains(deadLetterReasons, r) {
			return badFlag("--reason %s: unknown reason %q; the stream dead-letters with %s", *reasons, r, strings.Join(deadLetterReasons, ", "))
		}
		want[r] = true
	}
	conn := kf.config(*brokers, "entrowatch-deadletters")
	var p *kafka.Producer
	if *requeue != "" {
		if err := kafka.CheckTopic(ctx, conn, *requeue); err != nil {
			return fmt.Errorf("--requeue: %w", err)
		}
		pcfg := kafka.DefaultProducerConfig()
		pcfg.Topic = *requeue
		pcfg.BatchTimeout = time.Millisecond
		var err error
		if p, err = kafka.NewProducer(conn, pcfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(stdout)
	byReason := map[string]int64{}
	var listed, requeued, noBytes, copies int64
	// A message processed again (redelivered after a restart, or after a
	// sink write that failed) has its rows dead-lettered again: the same
	// source offset, row and trace id. Copies are counted, not listed or
	// requeued.
	seen := map[string]struct{}{}
	const maxSeen = 1_000_000 // bounds memory with --follow; later records are not checked
	errEnough := errors.New("enough")
	err := kafka.ReadTopic(ctx, conn, *topic, *follow, func(m kafka.Message) error {
		d := deadLetter{Partition: m.Partition, Offset: m.Offset, Time: m.Time.UTC(), Bytes: len(m.Value)}
		for _, h := range m.Headers {
			switch h.Key {
			case runner.HeaderReason:
				d.Reason = string(h.Value)
			case runner.HeaderError:
				d.Detail = string(h.Value)
			case runner.HeaderSource:
				d.Source = string(h.Value)
			case runner.HeaderRow:
				if n, err := strconv.Atoi(string(h.Value)); err == nil {
					d.Row = &n
				}
			case runner.HeaderOriginalBytes:
				if n, err := strconv.Atoi(string(h.Value)); err == nil {
					d.OriginalBytes = &n
				}
			}
		}
		if d.Row != nil {
			d.TraceID = string(m.Key)
		}
		if len(want) > 0 && !want[d.Reason] {
			return nil
		}
		if strings.Contains(d.Source, "@") { // topic/partition@offset: one message
			// The row's bytes tell apart two traces given up by one
			// message (one id under two models); a copy has the same.
			key := fmt.Sprintf("%s\x00%s\x00%x", d.Source, d.TraceID, sha256.Sum256(m.Value))
			if d.Row != nil {
				key += "\x00" + strconv.Itoa(*d.Row)
			}
			if _, dup := seen[key]; dup {
				copies++
				return nil
			}
			if len(seen) < maxSeen {
				seen[key] = struct{}{}
			}
		}
		if err := enc.Encode(d); err != nil {
			return err
		}
		listed++
		byReason[d.Reason]++
		if p != nil {
			if len(m.Value) == 0 {
				noBytes++
			} else {
				// The stream's own headers (schema, chunking) go back with the
				// bytes; the dead-letter ones do not.
				var hs []kafka.Header
				for _, h := range m.Headers {
					switch h.Key {
					case runner.HeaderReason, runner.HeaderError, runner.HeaderSource, runner.HeaderRow, runner.HeaderOriginalBytes:
					default:
						hs = append(hs, h)
					}
				}
				if err := p.Produce(ctx, kafka.Message{Key: m.Key, Value: m.Value, Headers: hs}); err != nil {
					return fmt.Errorf("requeueing to %s after %d records: %w", *requeue, requeued, err)
				}
				requeued++
			}
		}
		if *maxN > 0 && listed >= int64(*maxN) {
			return errEnough
		}
		return nil
	})
	if p != nil {
		err = errors.Join(err, p.Close())
	}
	if errors.Is(err, errEnough) {
		err = nil
	}
	if err != nil && listed == 0 && requeued == 0 {
		if *brokers == "127.0.0.1:9092" && !errors.Is(err, kafka.ErrUnknownTopic) {
			return fmt.Errorf("%w (is entrowatch run up? its embedded broker listens on 127.0.0.1:9092; --brokers names another)", err)
		}
		return err
	}
	fmt.Fprintf(stderr, "deadletters: %s from %s", words.Count(int(listed), "record"), *topic)
	if listed > 0 {
		fmt.Fprintf(stderr, " (%s)", reasonsText(byReason))
	}
	if copies > 0 {
		fmt.Fprintf(stderr, "; %s of records listed above left out (the same message and row dead-lettered again when it was processed again: redelivered after a restart or a failed sink write)",
			words.CountAs(int(copies), "copy", "copies"))
	}
	if p != nil {
		fmt.Fprintf(stderr, "; %d requeued to %s", requeued, *requeue)
		if noBytes > 0 {
			fmt.Fprintf(stderr, ", %d without bytes skipped", noBytes)
		}
	}
	fmt.Fprintln(stderr)
	return err
}
