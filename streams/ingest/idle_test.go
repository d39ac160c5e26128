package ingest_test

import (
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

func chatLine(id string) string {
	return strings.Replace(chat, `"id":"c1"`, `"id":"`+id+`"`, 1) + "\n"
}

// nextWithin calls Next, failing the test if it has not returned after a
// generous time: with FlushIdle it must return while the writer waits.
func nextWithin(t *testing.T, rd *ingest.Reader) (arrow.RecordBatch, error) {
	t.Helper()
	type result struct {
		rec arrow.RecordBatch
		err error
	}
	done := make(chan result, 1)
	go func() {
		rec, err := rd.Next()
		done <- result{rec, err}
	}()
	select {
	case r := <-done:
		return r.rec, r.err
	case <-time.After(20 * time.Second):
		t.Fatal("Next did not return while the input paused (it waits for a full batch)")
		return nil, nil
	}
}

func batchIDs(rec arrow.RecordBatch) []string {
	var ids []string
	for _, r := range toRows(rec) {
		ids = append(ids, r.id)
	}
	return ids
}

// TestFlushIdle: a live pipe's responses are handed over when it pauses,
// without waiting for BatchRows of them; a line cut by a pause is joined,
// not lost; rejects are handed over too.
func TestFlushIdle(t *testing.T) {
	pr, pw := io.Pipe()
	cfg := ingest.DefaultConfig()
	cfg.FlushIdle = 20 * time.Millisecond
	rd := ingest.NewReader(pr, cfg, memory.NewGoAllocator())
	defer rd.Release()

	go func() { _, _ = io.WriteString(pw, chatLine("a")+chatLine("b")) }()
	rec, err := nextWithin(t, rd)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, batchIDs(rec))
	rec.Release()

	// half a line, a pause, the rest: one row
	line := chatLine("c")
	go func() {
		_, _ = io.WriteString(pw, line[:40])
		time.Sleep(200 * time.Millisecond)
		_, _ = io.WriteString(pw, line[40:])
	}()
	rec, err = nextWithin(t, rd)
	require.NoError(t, err)
	require.Equal(t, []string{"c"}, batchIDs(rec))
	require.Empty(t, rd.Rejects())
	rec.Release()

	// a rejected line alone is reported at the pause
	go func() { _, _ = io.WriteString(pw, "{not json\n") }()
	rec, err = nextWithin(t, rd)
	require.NoError(t, err)
	require.Zero(t, rec.NumRows())
	require.Len(t, rd.Rejects(), 1)
	require.Equal(t, schemas.ReasonMalformedJSON, rd.Rejects()[0].Reason)
	require.Equal(t, int64(4), rd.Rejects()[0].Line)
	rec.Release()

	go func() {
		_, _ = io.WriteString(pw, chatLine("d"))
		pw.Close()
	}()
	rec, err = nextWithin(t, rd)
	require.NoError(t, err)
	require.Equal(t, []string{"d"}, batchIDs(rec))
	rec.Release()
	_, err = nextWithin(t, rd)
	require.ErrorIs(t, err, io.EOF)
}

// TestFlushIdleTooLong: a line over the limit that arrives in parts around
// a pause is still one too_long reject, and the line after it is read.
func TestFlushIdleTooLong(t *testing.T) {
	pr, pw := io.Pipe()
	cfg := ingest.DefaultConfig()
	cfg.FlushIdle = 20 * time.Millisecond
	cfg.MaxLineBytes = 1024
	rd := ingest.NewReader(pr, cfg, memory.NewGoAllocator())
	defer rd.Release()
	go func() {
		_, _ = io.WriteString(pw, `{"id":"long","x":"`+strings.Repeat("x", 800))
		time.Sleep(200 * time.Millisecond)
		_, _ = io.WriteString(pw, strings.Repeat("y", 800)+`"}`+"\n"+chatLine("after"))
		pw.Close()
	}()
	var ids []string
	var rejects []ingest.Reject
	for {
		rec, err := nextWithin(t, rd)
		rejects = append(rejects, rd.Rejects()...)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		ids = append(ids, batchIDs(rec)...)
		rec.Release()
	}
	require.Equal(t, []string{"after"}, ids)
	require.Len(t, rejects, 1)
	require.Equal(t, schemas.ReasonTooLong, rejects[0].Reason)
	require.Equal(t, "long", rejects[0].ID)
	require.Equal(t, int64(1), rejects[0].Line)
}

// TestFlushIdleRefusesNegative: a negative time is a configuration error.
func TestFlushIdleRefusesNegative(t *testing.T) {
	cfg := ingest.DefaultConfig()
	cfg.FlushIdle = -time.Second
	require.ErrorContains(t, cfg.Validate(), "idle flush time")
}

// TestFlushIdleTrickle: input that never pauses for FlushIdle (a line every
// 30 ms against 50 ms) is still handed over, within idleMaxWaits idle times;
// it waited for BatchRows lines or the end of the pipe.
func TestFlushIdleTrickle(t *testing.T) {
	pr, pw := io.Pipe()
	cfg := ingest.DefaultConfig()
	cfg.FlushIdle = 50 * time.Millisecond
	rd := ingest.NewReader(pr, cfg, memory.NewGoAllocator())
	defer rd.Release()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				pw.Close()
				return
			case <-time.After(30 * time.Millisecond):
			}
			if _, err := io.WriteString(pw, chatLine("t"+strconv.Itoa(i))); err != nil {
				return
			}
		}
	}()
	rec, err := nextWithin(t, rd)
	require.NoError(t, err)
	require.NotZero(t, rec.NumRows())
	require.Less(t, rec.NumRows(), int64(cfg.BatchRows))
	rec.Release()
}

// TestIdleReaderReleaseEndsGoroutine: a Reader with FlushIdle released
// before the end of its input ends the goroutine that reads it, once the
// input is closed (one goroutine and 64 KiB were left per reader).
func TestIdleReaderReleaseEndsGoroutine(t *testing.T) {
	// loops counts the goroutines reading for an idle reader.
	loops := func() int {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*idleReader).loop")
	}
	var ws []*io.PipeWriter
	for range 20 {
		pr, pw := io.Pipe()
		ws = append(ws, pw)
		cfg := ingest.DefaultConfig()
		cfg.FlushIdle = 10 * time.Millisecond
		rd := ingest.NewReader(pr, cfg, memory.NewGoAllocator())
		go func() { pw.Write([]byte(chatLine("a") + chatLine("b"))) }()
		rec, err := nextWithin(t, rd)
		require.NoError(t, err)
		rec.Release()
		rd.Release() // the input has more to come: not at its end
	}
	require.Equal(t, 20, loops(), "each reads its input until it is closed")
	for _, pw := range ws {
		pw.Close()
	}
	require.Eventually(t, func() bool { return loops() == 0 }, 5*time.Second, 10*time.Millisecond, "%d left", loops())
}
