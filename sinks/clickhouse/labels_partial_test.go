package clickhouse

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/entrowatch/entrowatch/schemas"
	ewkafka "github.com/entrowatch/entrowatch/streams/kafka"
)

// arrowLabel is a label.v1 row whose fields may be null (nil).
type arrowLabel struct {
	id, source *string
	correct    *bool
	ms         *int64
}

func ptrTo[T any](v T) *T { return &v }

// labelRows is a label.v1 Arrow IPC message of rows.
func labelRows(t testing.TB, mem memory.Allocator, rows ...arrowLabel) []byte {
	t.Helper()
	b := array.NewRecordBuilder(mem, schemas.Label)
	defer b.Release()
	for _, r := range rows {
		ids, corr, srcs, tss := b.Field(0).(*array.StringBuilder), b.Field(1).(*array.BooleanBuilder), b.Field(2).(*array.StringBuilder), b.Field(3).(*array.TimestampBuilder)
		if r.id == nil {
			ids.AppendNull()
		} else {
			ids.Append(*r.id)
		}
		if r.correct == nil {
			corr.AppendNull()
		} else {
			corr.Append(*r.correct)
		}
		if r.source == nil {
			srcs.AppendNull()
		} else {
			srcs.Append(*r.source)
		}
		if r.ms == nil {
			tss.AppendNull()
		} else {
			tss.Append(arrow.Timestamp(*r.ms))
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schemas.Label), ipc.WithAllocator(mem))
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// partialMessages are labels topic messages with valid and invalid labels:
// a JSON message of three valid labels and one whose correct is "maybe"; a
// label.v1 batch of a valid row, a row without correct (unlabelled), one
// dated 2200 and one with an empty trace_id; a message of invalid labels
// only; and a valid one.
func partialMessages(t testing.TB, mem memory.Allocator) [][]byte {
	ok := t0.UnixMilli()
	return [][]byte{
		[]byte(`{"trace_id":"v1","correct":true}` + "\n" + `{"trace_id":"v2","correct":false}` + "\n" +
			`{"trace_id":"v3","correct":1,"source":"review"}` + "\n" + `{"trace_id":"bad","correct":"maybe"}` + "\n"),
		labelRows(t, mem,
			arrowLabel{id: ptrTo("a0"), correct: ptrTo(true), source: ptrTo("annotator"), ms: &ok},
			arrowLabel{id: ptrTo("a1"), source: ptrTo("annotator"), ms: &ok},
			arrowLabel{id: ptrTo("a2"), correct: ptrTo(true), ms: ptrTo(time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())},
			arrowLabel{id: ptrTo(""), correct: ptrTo(false), ms: &ok}),
		[]byte(`{"trace_id":"x1","correct":"maybe"}` + "\n" + `{"trace_id":"x2","correct":2}`),
		[]byte(`{"trace_id":"after","correct":true}`),
	}
}

// F1: one invalid label of a labels topic message lost all its valid
// labels, and the log said the message "holds no labels". Now the valid
// labels are stored, the invalid ones logged with their line or row and
// counted by reason, and only a message without a valid label counts as
// dropped.
func TestFollowLabelsStoresValidOfMessage(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	f := &feed{}
	for i, b := range partialMessages(t, mem) {
		f.msgs = append(f.msgs, kafka.Message{Topic: "labels", Offset: int64(i), Value: b})
	}
	var stored, dropped atomic.Int64
	var refusedMu sync.Mutex
	refused := map[string]int{}
	var log bytes.Buffer
	var mu sync.Mutex
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- FollowLabels(fctx, f, conn, cfg.Database, "kafka", mem, slog.New(slog.NewTextHandler(lockedWriter{&mu, &log}, nil)),
			FollowCounters{Stored: func(n int) { stored.Add(int64(n)) }, Dropped: func() { dropped.Add(1) },
				Refused: func(reason string, n int) { refusedMu.Lock(); refused[reason] += n; refusedMu.Unlock() }})
	}()
	require.Eventually(t, func() bool { return stored.Load() == 5 }, 20*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.EqualValues(t, 1, dropped.Load(), "only the message without a valid label")
	require.Equal(t, map[string]int{RefusedCorrect: 3, RefusedTS: 1, RefusedTraceID: 1}, refused)
	require.Equal(t, map[string]string{"v1": "1 kafka", "v2": "0 kafka", "v3": "1 review", "a0": "1 annotator", "after": "1 kafka"},
		latestLabels(t, conn, cfg.Database))

	mu.Lock()
	defer mu.Unlock()
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	require.Len(t, lines, 3, log.String())
	require.Contains(t, lines[0], "level=WARN")
	require.Contains(t, lines[0], `msg="labels: 3 labels of the message stored, 1 invalid ones refused"`)
	require.Contains(t, lines[0], "offset=0")
	require.Contains(t, lines[0], `line 4: trace bad: correct is \"maybe\"`)
	require.Contains(t, lines[1], "offset=1")
	require.Contains(t, lines[1], "1 labels of the message stored, 2 invalid ones refused")
	require.Contains(t, lines[1], "unlabelled=1")
	require.Contains(t, lines[1], "label batch row 2: trace a2: ts 2200-01-01T00:00:00Z is not between 2000-01-01 and 2100-01-01")
	require.Contains(t, lines[1], "label batch row 3: empty trace_id")
	require.Contains(t, lines[2], "level=ERROR")
	require.Contains(t, lines[2], "none of its 2 labels is valid")
	require.Contains(t, lines[2], "offset=2")
	require.NotContains(t, log.String(), "holds no labels")
}

// Catching up (labels import --topic without --follow), a message with an
// invalid label stopped the import at its offset, every time, and its valid
// labels were never stored. Now every valid label is stored, every offset
// committed after its labels, and the refused ones are listed at the end.
func TestImportTopicStoresValidOfMessage(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "labels"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	defer cluster.Close()
	kc := ewkafka.DefaultConfig()
	kc.Brokers = cluster.ListenAddrs()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(kc.Brokers...), Topic: "labels", Transport: tr, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	var msgs []kafka.Message
	for _, b := range partialMessages(t, mem) {
		msgs = append(msgs, kafka.Message{Value: b})
	}
	msgs = append(msgs, kafka.Message{Value: []byte("junk")})
	require.NoError(t, w.WriteMessages(ctx, msgs...))
	require.NoError(t, w.Close())

	ti := TopicImport{Kafka: kc, Topic: "labels", Group: "g", Source: "kafka", Idle: time.Second}
	res, err := ImportTopic(ctx, conn, cfg.Database, ti, mem)
	require.NoError(t, err)
	require.Equal(t, 5, res.Stored)
	require.Equal(t, 5, res.Refused)
	require.Equal(t, map[string]int{RefusedCorrect: 3, RefusedTS: 1, RefusedTraceID: 1}, res.Reasons)
	require.Equal(t, 1, res.Unreadable)
	require.Equal(t, 2, res.Dropped)
	require.Equal(t, 1, res.Unlabelled)
	require.Equal(t, map[string]string{"v1": "1 kafka", "v2": "0 kafka", "v3": "1 review", "a0": "1 annotator", "after": "1 kafka"},
		latestLabels(t, conn, cfg.Database))
	err = res.Err()
	require.ErrorContains(t, err, "5 invalid labels refused (correct 3, trace_id 1, ts 1) and 1 message is not labels, not stored: ")
	require.ErrorContains(t, err, `partition 0 offset 0 line 4: trace bad: correct is "maybe"`)
	require.ErrorContains(t, err, "partition 0 offset 1 label batch row 3: empty trace_id")
	require.ErrorContains(t, err, "partition 0 offset 4: neither JSON nor a valid Arrow IPC stream")

	// Committed: a second import finds nothing left.
	res, err = ImportTopic(ctx, conn, cfg.Database, ti, mem)
	require.NoError(t, err)
	require.Equal(t, TopicImported{}, res)
	require.NoError(t, res.Err())
}

// F3b: the "already stored" skip ran label by label, so a file that labels a
// trace twice (no, then yes) where yes was stored already stored its
// earlier no and skipped its last yes. A file's labels are now one per
// trace (the last, or the newest by ts) before the skip.
func TestImportLabelsLastOfFile(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	read := func(in string) []Label {
		t.Helper()
		rd, err := ReadLabels(strings.NewReader(in), "import", time.Time{})
		require.NoError(t, err)
		require.NoError(t, rd.Err())
		return rd.Labels
	}
	res, err := ImportLabels(ctx, conn, db, read("trace_id,correct\ndupfile-1,yes\n"), t0)
	require.NoError(t, err)
	require.Equal(t, Imported{Stored: 1, Unscored: 1}, res)
	res, err = ImportLabels(ctx, conn, db, read("trace_id,correct\ndupfile-1,no\ndupfile-1,yes\ndup-2,no\ndup-2,yes\n"), t0.Add(time.Hour))
	require.NoError(t, err)
	require.Equal(t, Imported{Stored: 1, Skipped: 1, Duplicates: 2, Unscored: 1}, res)
	require.Equal(t, map[string]string{"dupfile-1": "1 import", "dup-2": "1 import"}, latestLabels(t, conn, db))
}

// OnePerTrace keeps the label of each trace that the labels table would
// take: the newest by ts (to the millisecond), the last at an equal ts, a
// zero ts counting as now.
func TestOnePerTrace(t *testing.T) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	l := func(id string, c bool, ts time.Time) Label {
		return Label{TraceID: id, Correct: c, Source: "s", TS: ts}
	}
	for _, tc := range []struct {
		name string
		in   []Label
		now  time.Time
		want []Label
	}{
		{"distinct", []Label{l("a", true, at(0)), l("b", false, at(0))}, time.Time{}, []Label{l("a", true, at(0)), l("b", false, at(0))}},
		{"last_wins", []Label{l("a", false, at(1)), l("b", true, at(1)), l("a", true, at(1))}, time.Time{}, []Label{l("b", true, at(1)), l("a", true, at(1))}},
		{"newest_wins", []Label{l("a", true, at(2)), l("a", false, at(1))}, time.Time{}, []Label{l("a", true, at(2))}},
		{"same_millisecond", []Label{l("a", true, at(1).Add(900*time.Microsecond)), l("a", false, at(1))}, time.Time{}, []Label{l("a", false, at(1))}},
		{"zero_is_now", []Label{l("a", true, time.Time{}), l("a", false, at(1)), l("b", true, at(9)), l("b", false, time.Time{})}, at(5),
			[]Label{l("a", true, time.Time{}), l("b", true, at(9))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, dropped := OnePerTrace(tc.in, tc.now)
			require.Equal(t, tc.want, got)
			require.Equal(t, len(tc.in)-len(tc.want), dropped)
		})
	}
}

// A label.v1 row dated in the future (2099) is refused as a JSON label is:
// it would win over every later correction (retrain audit F1).
func TestDecodeLabelsArrowFuture(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ok := time.Now().Add(-time.Hour).UnixMilli()
	msg := labelRows(t, mem,
		arrowLabel{id: ptrTo("f0"), correct: ptrTo(true), ms: ptrTo(time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())},
		arrowLabel{id: ptrTo("f1"), correct: ptrTo(false), ms: &ok})
	rd, err := DecodeLabels(msg, "kafka", mem)
	require.NoError(t, err)
	require.ErrorContains(t, rd.Err(), "label batch row 0: trace f0: ts 2099-01-01T00:00:00Z is in the future")
	require.Len(t, rd.Labels, 1)
	require.Equal(t, "f1", rd.Labels[0].TraceID)
}

// A CSV of labels produced to the labels topic is named as such, with where
// CSV goes (it was reported as a corrupt Arrow stream's metadata size).
func TestDecodeLabelsCSV(t *testing.T) {
	_, err := DecodeLabels([]byte("trace_id,correct\na,1\n"), "kafka", memory.NewGoAllocator())
	require.ErrorContains(t, err, "a CSV of labels: the labels topic takes JSON labels (one object per line) or label.v1 Arrow; CSV goes through POST /v1/labels or entrowatch labels import --in")
	_, err = DecodeLabels([]byte("not labels at all"), "kafka", memory.NewGoAllocator())
	require.ErrorContains(t, err, "neither JSON nor a valid Arrow IPC stream")
}
