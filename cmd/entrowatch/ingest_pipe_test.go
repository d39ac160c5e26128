package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/ipc"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// TestIngestLivePipe: `tail -f log | entrowatch ingest --in -` sends each
// response when the pipe pauses, while the pipe is still open; before,
// responses waited until 1,024 of them had arrived (or the pipe closed).
func TestIngestLivePipe(t *testing.T) {
	b, _, p := tracesBroker(t)

	lines := fixtureLines(t)
	pr, pw := io.Pipe()
	cfg := ingest.DefaultConfig()
	cfg.FlushIdle = 50 * time.Millisecond
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- ingestAll(context.Background(), pr, p, cfg, 0, &stdout, &stderr) }()

	rd := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{b.Addr()}, Topic: "traces", Partition: 0, MaxWait: 50 * time.Millisecond})
	defer rd.Close()
	// rows waits for n more rows on the topic (a guard against hanging, not a speed assertion)
	rows := func(n int) int {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		got := 0
		for got < n {
			m, err := rd.ReadMessage(ctx)
			require.NoError(t, err, "only %d of %d responses on the topic while the pipe is open", got, n)
			rec, err := ipc.Decode(m.Value, memory.NewGoAllocator())
			require.NoError(t, err)
			got += int(rec.NumRows())
			rec.Release()
		}
		return got
	}

	_, err := pw.Write(append(bytes.Join(lines[:3], []byte("\n")), '\n'))
	require.NoError(t, err)
	require.Equal(t, 3, rows(3))
	_, err = pw.Write(append(lines[3], '\n'))
	require.NoError(t, err)
	require.Equal(t, 1, rows(1))

	require.NoError(t, pw.Close())
	require.NoError(t, <-done)
	require.True(t, strings.HasPrefix(stdout.String(), "produced 4 responses"), stdout.String())
}

// TestIngestIdleFlushFlag: the flag is documented and a negative one refused.
func TestIngestIdleFlushFlag(t *testing.T) {
	_, stderr, code := runCLI(t, "ingest", "--in", "x.jsonl", "--idle-flush", "-1s")
	require.Equal(t, 2, code, "a flag value that cannot work")
	require.Contains(t, stderr, "--idle-flush -1s: want a duration")
	help, _, code := runCLI(t, "ingest", "-h")
	require.Equal(t, 0, code)
	require.Contains(t, help, "-idle-flush duration")
}

// TestLiveInput: pipes and FIFOs pause, regular files are read in full
// batches.
func TestLiveInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "in.jsonl")
	require.NoError(t, os.WriteFile(file, []byte("{}\n"), 0o644))
	require.False(t, liveInput(file))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	require.True(t, liveInput(fifo))
}

// TestIngestRefusedRowsOneMessage: the responses refused up front are taken
// out of their batch, which still goes as one message; a bad line in five
// made as many messages as there were gaps between them.
func TestIngestRefusedRowsOneMessage(t *testing.T) {
	b, conn, p := tracesBroker(t)

	var in bytes.Buffer
	var want []string
	for i, line := range fixtureLines(t)[:20] {
		in.Write(line)
		in.WriteByte('\n')
		want = append(want, peekTestID(t, line))
		if i%5 == 1 {
			fmt.Fprintf(&in, `{"id":"bad-%d","choices":[{"index":0,"logprobs":{"content":[{"logprob":-0.1,"top_logprobs":[{"logprob":0.5}]}]}}]}`+"\n", i)
		}
	}
	prof := profile.DefaultConfig()
	var stdout, stderr bytes.Buffer
	require.NoError(t, ingestConn(context.Background(), &in, p, ingestOptions{conn: conn, icfg: ingest.DefaultConfig(), prof: &prof}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "produced 20 responses in 1 message")
	require.Contains(t, stdout.String(), "4 lines rejected (positive_logprob 4)")

	rd := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{b.Addr()}, Topic: "traces", Partition: 0, MaxWait: 50 * time.Millisecond})
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := rd.ReadMessage(ctx)
	require.NoError(t, err)
	rec, err := ipc.Decode(m.Value, memory.NewGoAllocator())
	require.NoError(t, err)
	defer rec.Release()
	ids := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
	var got []string
	for i := range ids.Len() {
		got = append(got, ids.Value(i))
	}
	require.Equal(t, want, got, "the kept responses, in order")
}

func peekTestID(t *testing.T, line []byte) string {
	var v struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(line, &v))
	return v.ID
}

// tracesBroker starts an embedded broker with a one-partition "traces"
// topic and a producer to it; both stop at the end of the test.
func tracesBroker(t *testing.T) (*broker.Broker, kafka.Config, *kafka.Producer) {
	t.Helper()
	bcfg := broker.DefaultConfig()
	bcfg.Partitions = 1
	bcfg.Topics = []string{"traces"}
	b, err := broker.Start(bcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close(context.Background()) })
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{b.Addr()}
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = "traces"
	pcfg.BatchTimeout = time.Millisecond
	p, err := kafka.NewProducer(conn, pcfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return b, conn, p
}

// TestIngestRejectsInInputOrder: a batch's rejections are printed in input
// order, whoever found them: the reader's (a line that is not JSON) were
// printed before the checks' (a positive logprob) of earlier lines.
func TestIngestRejectsInInputOrder(t *testing.T) {
	_, conn, _ := tracesBroker(t)
	fx := fixtureLines(t)
	positive, err := os.ReadFile(fixtures + "invalid.jsonl")
	require.NoError(t, err)
	positive, _, _ = bytes.Cut(positive, []byte("\n"))
	lines := [][]byte{fx[0], positive, []byte("{not json"), fx[1]}
	in := filepath.Join(t.TempDir(), "in.jsonl")
	require.NoError(t, os.WriteFile(in, append(bytes.Join(lines, []byte("\n")), '\n'), 0o644))
	stdout, stderr, code := runCLI(t, "ingest", "--in", in, "--brokers", conn.Brokers[0])
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "produced 2 responses")
	i2, i3 := strings.Index(stderr, "line 2 (fx-200): positive_logprob"), strings.Index(stderr, "line 3")
	require.True(t, i2 >= 0 && i3 >= 0, stderr)
	require.Less(t, i2, i3, "line 2 before line 3:\n%s", stderr)
}
