package clickhouse

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
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
	ewipc "github.com/entrowatch/entrowatch/streams/ipc"
	ewkafka "github.com/entrowatch/entrowatch/streams/kafka"
)

func labelIPC(t testing.TB, mem memory.Allocator, ids []string, correct []bool) []byte {
	t.Helper()
	b := array.NewRecordBuilder(mem, schemas.Label)
	defer b.Release()
	for i, id := range ids {
		b.Field(0).(*array.StringBuilder).Append(id)
		b.Field(1).(*array.BooleanBuilder).Append(correct[i])
		b.Field(2).(*array.StringBuilder).Append("annotator")
		b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(t0.Add(time.Hour).UnixMilli()))
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schemas.Label), ipc.WithAllocator(mem))
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())
	return buf.Bytes()
}

func TestDecodeLabels(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	got, err := DecodeLabels(labelIPC(t, mem, []string{"a", "b"}, []bool{true, false}), "x", mem)
	require.NoError(t, err)
	require.Equal(t, []Label{
		{TraceID: "a", Correct: true, Source: "annotator", TS: t0.Add(time.Hour)},
		{TraceID: "b", Correct: false, Source: "annotator", TS: t0.Add(time.Hour)},
	}, got.Labels)
	_, err = DecodeLabels([]byte("\xff\xff\xff\xff garbage"), "x", mem)
	require.Error(t, err)
	js, err := DecodeLabels([]byte(`{"trace_id":"c","correct":1,"ts":"2026-03-01T00:00:00Z"}`), "x", mem)
	require.NoError(t, err)
	require.Equal(t, LabelsRead{Labels: []Label{{TraceID: "c", Correct: true, Source: "x", TS: t0}}}, js)
}

func TestLabelsThroughTopics(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "labels", "requests"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	kc := ewkafka.DefaultConfig()
	kc.Brokers = brokers

	// Requests out.
	var rows []row
	for i := range 100 {
		rows = append(rows, row{id: "q" + string(rune('a'+i%26)) + string(rune('a'+i/26)), ts: t0.Add(time.Duration(i) * time.Second), domain: "d", p: float64(i%10) / 10, correct: -1, clusterID: 1, cluster: "c"})
	}
	write(t, cfg, rows)
	reqs, err := RequestLabels(ctx, conn, cfg.Database, 1, 5, "b", time.Now(), DefaultRequestExpiry)
	require.NoError(t, err)
	require.Len(t, reqs, 5)
	require.NoError(t, PublishRequests(ctx, kc, "requests", reqs))
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: "requests", Partition: 0, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for i := range reqs {
		m, err := rd.ReadMessage(rctx)
		require.NoError(t, err)
		var got LabelRequest
		require.NoError(t, json.Unmarshal(m.Value, &got))
		require.Equal(t, reqs[i].TraceID, got.TraceID)
		require.Equal(t, reqs[i].TraceID, string(m.Key))
	}

	// Labels in: one Arrow IPC label.v1 message and one JSON message.
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "labels", Transport: tr, RequiredAcks: kafka.RequireAll, BatchTimeout: 10 * time.Millisecond}
	require.NoError(t, w.WriteMessages(ctx,
		kafka.Message{Value: labelIPC(t, mem, []string{reqs[0].TraceID, reqs[1].TraceID}, []bool{true, false})},
		kafka.Message{Value: []byte(`{"trace_id":"` + reqs[2].TraceID + `","correct":true}`)},
	))
	require.NoError(t, w.Close())
	res, err := ImportTopic(ctx, conn, cfg.Database, TopicImport{Kafka: kc, Topic: "labels", Group: "g", Source: "kafka", Idle: 2 * time.Second}, mem)
	require.NoError(t, err)
	require.Equal(t, TopicImported{Stored: 3}, res)
	var stored uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".labels_latest").Scan(&stored))
	require.Equal(t, uint64(3), stored)

	// The group committed: a second import finds nothing new.
	res, err = ImportTopic(ctx, conn, cfg.Database, TopicImport{Kafka: kc, Topic: "labels", Group: "g", Idle: time.Second}, mem)
	require.NoError(t, err)
	require.Equal(t, TopicImported{}, res)

	// Catching up, a message that is not labels is counted and reported
	// (TopicImported.Err), and the import goes on past it; following
	// (--follow, a long-running importer), it is skipped as run skips it.
	w = &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "labels", Transport: tr, RequiredAcks: kafka.RequireAll, BatchTimeout: 10 * time.Millisecond}
	require.NoError(t, w.WriteMessages(ctx, kafka.Message{Value: []byte("junk")},
		kafka.Message{Value: []byte(`{"trace_id":"` + reqs[3].TraceID + `","correct":false}`)}))
	require.NoError(t, w.Close())
	res, err = ImportTopic(ctx, conn, cfg.Database, TopicImport{Kafka: kc, Topic: "labels", Group: "g", Idle: 2 * time.Second}, mem)
	require.NoError(t, err)
	require.Equal(t, 1, res.Stored)
	require.Equal(t, 1, res.Unreadable)
	require.ErrorContains(t, res.Err(), "1 message is not labels, not stored: partition 0 offset 2: neither JSON nor a valid Arrow IPC stream")
	w = &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "labels", Transport: tr, RequiredAcks: kafka.RequireAll, BatchTimeout: 10 * time.Millisecond}
	require.NoError(t, w.WriteMessages(ctx, kafka.Message{Value: []byte("junk")},
		kafka.Message{Value: []byte(`{"trace_id":"` + reqs[4].TraceID + `","correct":false}`)}))
	require.NoError(t, w.Close())
	fctx, cancel := context.WithCancel(ctx)
	got := make(chan TopicImported, 1)
	go func() {
		res, err := ImportTopic(fctx, conn, cfg.Database, TopicImport{Kafka: kc, Topic: "labels", Group: "g", Follow: true}, mem)
		require.NoError(t, err)
		got <- res
	}()
	require.Eventually(t, func() bool {
		var n uint64
		require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".labels_latest").Scan(&n))
		return n == 5
	}, 20*time.Second, 50*time.Millisecond)
	cancel()
	require.Equal(t, TopicImported{Stored: 1, Dropped: 1}, <-got)
}

// FuzzDecodeLabels: any message bytes give labels with trace ids or an
// error, never a panic or an out-of-memory death. Buffers are checked on
// success only: when arrow's reader panics mid-stream (recovered) it leaves
// its partial buffers to the garbage collector.
func FuzzDecodeLabels(f *testing.F) {
	mem := memory.NewGoAllocator()
	f.Add(labelIPC(f, mem, []string{"a", "b"}, []bool{true, false}))
	f.Add([]byte(`{"trace_id":"a","correct":true}` + "\n" + `{"trace_id":"b","correct":"0","ts":1767225600000}`))
	f.Add([]byte("trace_id,correct\na,1\n"))
	f.Add([]byte(`[{"trace_id":"a","correct":true},{"trace_id":" b","correct":"x"},{"trace_id":"a","correct":null}]`))
	f.Add([]byte("{\n  \"trace_id\": 5,\n  \"correct\": true\n}\n{\"trace_id\":\"c\",\"correct\":0,\"source\":7}"))
	f.Add(labelRows(f, mem, arrowLabel{id: ptrTo("a"), correct: ptrTo(true)}, arrowLabel{id: ptrTo("  ")}, arrowLabel{correct: ptrTo(false), source: ptrTo("")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		rd, err := DecodeLabels(b, "fuzz", mem)
		if err != nil {
			return
		}
		mem.AssertSize(t, 0)
		seen := map[string]bool{}
		for _, l := range rd.Labels {
			if checkTraceID(l.TraceID) != nil || len(l.Source) > maxSourceBytes || l.Source == "" || !schemas.InEpochRange(l.TS) || seen[l.TraceID] {
				t.Fatalf("label %+v from %q: not what a label may be", l, b)
			}
			seen[l.TraceID] = true
		}
		if rd.Refused != len(rd.First) && len(rd.First) != maxRefusalsListed {
			t.Fatalf("%d refused, %d listed", rd.Refused, len(rd.First))
		}
	})
}

// FollowLabels, as entrowatch run uses it, stores labels as they come,
// skips (and counts) a message that holds none instead of stalling, and
// commits: a restart finds nothing left.
func TestFollowLabels(t *testing.T) {
	cfg, conn := migrated(t)
	mem := memory.NewGoAllocator()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "labels"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	defer cluster.Close()
	kc := ewkafka.DefaultConfig()
	kc.Brokers = cluster.ListenAddrs()
	source := func() *ewkafka.Source {
		sc := ewkafka.DefaultSourceConfig()
		sc.Topic, sc.Group = "labels", "entrowatch-labels"
		sc.MaxWait, sc.HeartbeatInterval, sc.SessionTimeout = 50*time.Millisecond, 100*time.Millisecond, time.Second
		sc.JoinGroupBackoff, sc.ReadBackoffMin, sc.ReadBackoffMax = 100*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond
		s, err := ewkafka.NewSource(kc, sc, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		return s
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{Addr: kafka.TCP(cluster.ListenAddrs()...), Topic: "labels", Transport: tr, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	ctx := context.Background()
	require.NoError(t, w.WriteMessages(ctx,
		kafka.Message{Value: []byte(`{"trace_id":"f1","correct":true}` + "\n" + `{"trace_id":"f2","correct":false,"source":"review"}`)},
		kafka.Message{Value: []byte("not labels at all")},
		kafka.Message{Value: []byte(`{"trace_id":"f3","correct":1}`)},
	))

	var stored, dropped atomic.Int64
	counters := FollowCounters{Stored: func(n int) { stored.Add(int64(n)) }, Dropped: func() { dropped.Add(1) }}
	fctx, cancel := context.WithCancel(ctx)
	src := source()
	done := make(chan error, 1)
	go func() {
		done <- FollowLabels(fctx, src, conn, cfg.Database, "kafka", mem, slog.New(slog.DiscardHandler), counters)
	}()
	require.Eventually(t, func() bool { return stored.Load() == 3 }, 20*time.Second, 20*time.Millisecond)
	require.EqualValues(t, 1, dropped.Load())
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, src.Close())
	var got []string
	rows, err := conn.Query(ctx, "SELECT trace_id, source FROM "+cfg.Database+".labels_latest ORDER BY trace_id")
	require.NoError(t, err)
	for rows.Next() {
		var id, source string
		require.NoError(t, rows.Scan(&id, &source))
		got = append(got, id+"/"+source)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"f1/kafka", "f2/review", "f3/kafka"}, got)

	// Committed: a new follower of the group stores only what comes next.
	require.NoError(t, w.WriteMessages(ctx, kafka.Message{Value: []byte(`{"trace_id":"f4","correct":true}`)}))
	stored.Store(0)
	fctx, cancel = context.WithCancel(ctx)
	defer cancel()
	src = source()
	defer src.Close()
	go func() {
		done <- FollowLabels(fctx, src, conn, cfg.Database, "kafka", mem, slog.New(slog.DiscardHandler), counters)
	}()
	require.Eventually(t, func() bool { return stored.Load() == 1 }, 20*time.Second, 20*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.EqualValues(t, 1, stored.Load(), "a committed message was stored again")
	cancel()
	require.NoError(t, <-done)
}

// TestDecodeLabelsMemoryLimit: label batches are decoded through the shared
// bounded allocator; one that needs more than its limit is an error, and
// what the reader abandoned is reclaimed (the checked allocator ends at 0).
func TestDecodeLabelsMemoryLimit(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	msg := labelIPC(t, mem, []string{"a", "b", "c"}, []bool{true, false, true})
	bounded := ewipc.NewBoundedAllocator(mem, 16)
	rd, err := decodeLabels(msg, bounded, "kafka", time.Now())
	require.Zero(t, rd)
	require.ErrorContains(t, err, "corrupt Arrow IPC label batch")
	require.ErrorContains(t, err, "decoding memory limit")
	bounded.Reclaim()
}

// oneMessage is a LabelFeed of one message, then nothing.
type oneMessage struct {
	m    kafka.Message
	sent bool
}

func (f *oneMessage) Fetch(ctx context.Context) (kafka.Message, error) {
	if !f.sent {
		f.sent = true
		return f.m, nil
	}
	<-ctx.Done()
	return kafka.Message{}, ctx.Err()
}

func (f *oneMessage) Commit(context.Context, ...kafka.Message) error { return nil }

// TestFollowLabelsCountsErrors: a failing insert is counted (run exports it
// as entrowatch_labels_insert_errors_total), not only logged, and retried.
func TestFollowLabelsCountsErrors(t *testing.T) {
	_, conn := migrated(t)
	var errs, stored atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	feed := &oneMessage{m: kafka.Message{Value: []byte(`{"trace_id":"e1","correct":true}`)}}
	go func() {
		done <- FollowLabels(ctx, feed, conn, "no_such_database", "kafka", memory.NewGoAllocator(), slog.New(slog.DiscardHandler),
			FollowCounters{Stored: func(n int) { stored.Add(int64(n)) }, Errors: func() { errs.Add(1) }})
	}()
	require.Eventually(t, func() bool { return errs.Load() >= 1 }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.Zero(t, stored.Load())
}

// TestFollowLabelsRefusedStops: a fetch error no retry can fix (here a
// session timeout below the brokers' minimum; in the audit, the labels
// group's ACL) ends FollowLabels with its cause, so that run stops: it was
// retried for ever at WARN while /readyz said ready and no label was stored
// (recheck9 F2).
func TestFollowLabelsRefusedStops(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "labels"), kfake.GroupMinSessionTimeout(time.Second))
	require.NoError(t, err)
	defer cluster.Close()
	kc := ewkafka.DefaultConfig()
	kc.Brokers = cluster.ListenAddrs()
	sc := ewkafka.DefaultSourceConfig()
	sc.Topic, sc.Group = "labels", "entrowatch-labels"
	sc.SessionTimeout, sc.HeartbeatInterval = 200*time.Millisecond, 50*time.Millisecond
	src, err := ewkafka.NewSource(kc, sc, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer src.Close()
	done := make(chan error, 1)
	go func() {
		done <- FollowLabels(context.Background(), src, nil, "entrowatch", "kafka", memory.NewGoAllocator(), slog.New(slog.DiscardHandler), FollowCounters{})
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, kafka.InvalidSessionTimeout)
		require.ErrorContains(t, err, "the brokers refuse the labels consumer's settings or rights, which retrying cannot fix")
	case <-time.After(30 * time.Second):
		t.Fatal("the labels consumer retries a refused session timeout for ever")
	}
}
