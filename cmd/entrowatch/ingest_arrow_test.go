package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	arrowipc "github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/internal/testutil"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/ipc"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// goldenTraces returns the golden responses as one trace.v1 batch, as
// ingest converts them.
func goldenTraces(t *testing.T, mem memory.Allocator) arrow.RecordBatch {
	t.Helper()
	f, err := ingest.Open(fixtures + "valid.jsonl.gz")
	require.NoError(t, err)
	defer f.Close()
	cfg := ingest.DefaultConfig()
	cfg.BatchRows = 1000
	r := ingest.NewReader(f, cfg, mem)
	defer r.Release()
	rec, err := r.Next()
	require.NoError(t, err)
	_, err = r.Next()
	require.ErrorIs(t, err, io.EOF, "the golden responses are one batch")
	return rec
}

// writeBatches writes rec to path as an Arrow IPC file (fileFormat) or
// stream, per rows rows to a batch.
func writeBatches(t *testing.T, path string, rec arrow.RecordBatch, per int, fileFormat bool) {
	t.Helper()
	out, err := os.Create(path)
	require.NoError(t, err)
	defer out.Close()
	var w interface {
		Write(arrow.RecordBatch) error
		Close() error
	}
	if fileFormat {
		w, err = arrowipc.NewFileWriter(out, arrowipc.WithSchema(rec.Schema()))
		require.NoError(t, err)
	} else {
		w = arrowipc.NewWriter(out, arrowipc.WithSchema(rec.Schema()))
	}
	for lo := int64(0); lo < rec.NumRows(); lo += int64(per) {
		s := rec.NewSlice(lo, min(lo+int64(per), rec.NumRows()))
		require.NoError(t, w.Write(s))
		s.Release()
	}
	require.NoError(t, w.Close())
}

// topicIDs reads every message of the traces topic and returns the trace ids
// of their rows, and how many messages there were.
func topicIDs(t *testing.T, conn kafka.Config) ([]string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []string
	msgs := 0
	require.NoError(t, kafka.ReadTopic(ctx, conn, "traces", false, func(m kafka.Message) error {
		msgs++
		rec, err := ipc.Decode(m.Value, memory.NewGoAllocator())
		if err != nil {
			return err
		}
		defer rec.Release()
		col := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
		for i := range col.Len() {
			ids = append(ids, col.Value(i))
		}
		return nil
	}))
	sort.Strings(ids)
	return ids, msgs
}

// TestIngestArrow: ingest sends a trace.v1 Arrow file (file or stream
// format, whatever its name) as it sends JSON responses: batches written one
// response each go out together, responses the stream would dead-letter are
// refused by row, chunk rows are joined and a trace whose final chunk never
// comes is refused as incomplete. Before, every Arrow input was refused.
func TestIngestArrow(t *testing.T) {
	mem := memory.NewGoAllocator()
	rec := goldenTraces(t, mem)
	defer rec.Release()
	ids := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
	tok := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTokenLogprob)).(*array.List)
	var all []string
	for i := range ids.Len() {
		all = append(all, ids.Value(i))
	}
	sort.Strings(all)
	dir := t.TempDir()

	t.Run("one response per batch", func(t *testing.T) {
		for _, fileFormat := range []bool{true, false} {
			_, conn, _ := tracesBroker(t)
			path := filepath.Join(dir, fmt.Sprintf("single-%v.jsonl", fileFormat)) // misnamed: read by content
			writeBatches(t, path, rec, 1, fileFormat)
			stdout, stderr, code := runCLI(t, "ingest", "--in", path, "--brokers", conn.Brokers[0])
			require.Equal(t, 0, code, stderr)
			require.Contains(t, stdout, fmt.Sprintf("produced %d responses in 1 message to traces", len(all)))
			require.Contains(t, stdout, "; 0 responses rejected")
			got, msgs := topicIDs(t, conn)
			require.Equal(t, all, got)
			require.Equal(t, 1, msgs)
		}
	})

	t.Run("one large batch cut by --batch-rows", func(t *testing.T) {
		_, conn, _ := tracesBroker(t)
		path := filepath.Join(dir, "large.arrow")
		writeBatches(t, path, rec, len(all), true)
		stdout, stderr, code := runCLI(t, "ingest", "--in", path, "--brokers", conn.Brokers[0], "--batch-rows", "10")
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, fmt.Sprintf("produced %d responses in 4 messages", len(all)), "33 rows as 10+10+10+3")
		got, _ := topicIDs(t, conn)
		require.Equal(t, all, got)
		// --rate sends about 20 batches a second: 5 rows each at 100/s.
		_, conn, _ = tracesBroker(t)
		stdout, stderr, code = runCLI(t, "ingest", "--in", path, "--brokers", conn.Brokers[0], "--rate", "100")
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, fmt.Sprintf("produced %d responses in 7 messages", len(all)), "paced in batches of 5, not sent in one")
	})

	t.Run("stream without its end", func(t *testing.T) {
		_, conn, _ := tracesBroker(t)
		path := filepath.Join(dir, "open.arrows")
		out, err := os.Create(path)
		require.NoError(t, err)
		w := arrowipc.NewWriter(out, arrowipc.WithSchema(rec.Schema()))
		require.NoError(t, w.Write(rec))
		require.NoError(t, out.Close()) // the writer is not closed: no end-of-stream marker
		stdout, stderr, code := runCLI(t, "ingest", "--in", path, "--brokers", conn.Brokers[0])
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, fmt.Sprintf("produced %d responses", len(all)))
		require.Contains(t, stderr, path+" ends without the Arrow end-of-stream marker")
	})

	t.Run("refused by row", func(t *testing.T) {
		_, conn, _ := tracesBroker(t)
		path := filepath.Join(dir, "rows.arrow")
		writeBatches(t, path, rec, 10, true)
		const limit = 40
		var want []string
		firstLong := -1
		for i := range ids.Len() {
			if s, e := tok.ValueOffsets(i); e-s > limit {
				if firstLong < 0 {
					firstLong = i
				}
				continue
			}
			want = append(want, ids.Value(i))
		}
		require.NotEmpty(t, want)
		require.GreaterOrEqual(t, firstLong, 0, "some golden response has more than %d steps", limit)
		sort.Strings(want)
		stdout, stderr, code := runCLI(t, "ingest", "--in", path, "--brokers", conn.Brokers[0], "--max-steps", fmt.Sprint(limit))
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, fmt.Sprintf("%d responses rejected (too_long %d)", len(all)-len(want), len(all)-len(want)))
		require.Contains(t, stderr, fmt.Sprintf("row %d (batch %d) (%s): too_long: ", firstLong+1, firstLong/10+1, ids.Value(firstLong)))
		got, _ := topicIDs(t, conn)
		require.Equal(t, want, got)
	})

	t.Run("chunks", func(t *testing.T) {
		_, conn, _ := tracesBroker(t)
		lost := ids.Value(3)
		ch := chunked(t, mem, rec, func(i int) bool { return i%2 == 0 }, map[string]bool{lost: true})
		defer ch.Release()
		path := filepath.Join(dir, "chunks.arrows")
		writeBatches(t, path, ch, 7, false)
		stdout, stderr, code := runCLI(t, "ingest", "--in", path, "--brokers", conn.Brokers[0])
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, fmt.Sprintf("produced %d responses", len(all)-1))
		require.Contains(t, stdout, "1 response rejected (incomplete 1)")
		require.Contains(t, stderr, "trace "+lost+": incomplete: ")
		got, _ := topicIDs(t, conn)
		var want []string
		for _, id := range all {
			if id != lost {
				want = append(want, id)
			}
		}
		require.Equal(t, want, got, "each response once, whole")
	})

	t.Run("not from a pipe or gzip", func(t *testing.T) {
		path := filepath.Join(dir, "plain.arrow")
		writeBatches(t, path, rec, 100, true)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		gz := filepath.Join(dir, "traces.arrow.gz")
		require.NoError(t, os.WriteFile(gz, testutil.Gzip(t, b), 0o644))
		_, stderr, code := runCLI(t, "ingest", "--in", gz, "--brokers", "127.0.0.1:1")
		require.Equal(t, 1, code)
		require.Contains(t, stderr, gz+" is an Arrow IPC file, not JSON responses: ingest reads Arrow IPC (trace.v1) from a file given by name, uncompressed")
	})

	t.Run("rate without ts", func(t *testing.T) {
		_, conn, _ := tracesBroker(t)
		idx := schemas.MustIndex(rec.Schema(), schemas.ColTS)
		var fields []arrow.Field
		var cols []arrow.Array
		for i, f := range rec.Schema().Fields() {
			if i != idx {
				fields, cols = append(fields, f), append(cols, rec.Column(i))
			}
		}
		md := rec.Schema().Metadata()
		noTS := array.NewRecordBatch(arrow.NewSchema(fields, &md), cols, rec.NumRows())
		defer noTS.Release()
		path := filepath.Join(dir, "nots.arrow")
		writeBatches(t, path, noTS, 100, true)
		_, stderr, code := runCLI(t, "ingest", "--in", path, "--brokers", conn.Brokers[0], "--rate", "1000")
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "--rate stamps each response's ts")
		// Without --rate it goes.
		stdout, stderr, code := runCLI(t, "ingest", "--in", path, "--brokers", conn.Brokers[0])
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, fmt.Sprintf("produced %d responses", len(all)))
	})

	t.Run("corrupt", func(t *testing.T) {
		path := filepath.Join(dir, "plain.arrow")
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		cut := filepath.Join(dir, "cut.arrow")
		require.NoError(t, os.WriteFile(cut, b[:len(b)/2], 0o644))
		_, stderr, code := runCLI(t, "ingest", "--in", cut, "--brokers", "127.0.0.1:1")
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "reading "+cut+" as Arrow IPC trace.v1")
		// score's output is Arrow, but not traces.
		scored := filepath.Join(dir, "scored.arrow")
		_, stderr, code = runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", scored)
		require.Equal(t, 0, code, stderr)
		_, stderr, code = runCLI(t, "ingest", "--in", scored, "--brokers", "127.0.0.1:1")
		require.Equal(t, 1, code)
		require.Contains(t, stderr, `no column "token_logprob" (schema "scored.v1"); trace.v1 is required`)
	})
}

// TestIngestInterrupted: Ctrl-C during an ingest, of JSON or of an Arrow
// file, ends with how much was acknowledged and "interrupted", not the
// context's "context canceled" (recheck8 nit).
func TestIngestInterrupted(t *testing.T) {
	_, conn, _ := tracesBroker(t)
	mem := memory.NewGoAllocator()
	rec := goldenTraces(t, mem)
	arrowPath := filepath.Join(t.TempDir(), "traces.arrow")
	writeBatches(t, arrowPath, rec, 1, true)
	rec.Release()
	for _, in := range []string{fixtures + "valid.jsonl.gz", arrowPath} {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(1500*time.Millisecond, cancel) // as Ctrl-C cancels run's context
		var out, errb bytes.Buffer
		code := dispatch(ctx, []string{"ingest", "--in", in, "--brokers", conn.Brokers[0], "--rate", "5", "--batch-rows", "1"}, &out, &errb)
		cancel()
		require.Equal(t, 1, code, errb.String())
		require.Regexp(t, `(?m)^entrowatch ingest: after [1-9][0-9]* responses were acknowledged.*: interrupted \(the batch being sent may have reached the broker too: sending it again is harmless\)\n\z`, errb.String(), in)
	}
	require.Equal(t, "done: interrupted (the batch being sent may have reached the broker too: sending it again is harmless)", (&interruptedError{fmt.Errorf("done: %w", context.Canceled)}).Error())
	require.NoError(t, interrupted(context.Background(), nil))
	err := errors.New("broker down")
	require.Equal(t, err, interrupted(context.Background(), err), "not an interruption when the context is live")
}
