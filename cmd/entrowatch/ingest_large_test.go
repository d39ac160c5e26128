package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	arrowipc "github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// longResponse is a chat completion of steps steps with 20 alternatives
// each (about 1 KB of JSON per step), deterministic in seed.
func longResponse(id string, steps int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	var b bytes.Buffer
	b.WriteString(`{"id": "` + id + `", "object": "chat.completion", "created": 1760000000, "model": "fixture-model", "domain": "long", ` +
		`"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "..."}, "logprobs": {"content": [`)
	lp := make([]float64, 20)
	for s := range steps {
		if s > 0 {
			b.WriteString(", ")
		}
		top := -rng.ExpFloat64() * 0.5
		for k := range lp {
			lp[k] = top - float64(k)*0.3 - rng.Float64()*0.2
		}
		chosen := lp[rng.IntN(3)]
		b.WriteString(`{"token": "t` + strconv.Itoa(s%97) + `", "logprob": ` + strconv.FormatFloat(chosen, 'f', 6, 64) + `, "top_logprobs": [`)
		for k, v := range lp {
			if k > 0 {
				b.WriteString(", ")
			}
			b.WriteString(`{"token": "a` + strconv.Itoa(k) + `", "logprob": ` + strconv.FormatFloat(v, 'f', 6, 64) + `}`)
		}
		b.WriteString("]}")
	}
	b.WriteString("]}}]}")
	return b.Bytes()
}

// fixtureLines returns the lines of the golden responses.
func fixtureLines(t *testing.T) [][]byte {
	t.Helper()
	f, err := os.Open(fixtures + "valid.jsonl.gz")
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 64<<20)
	var out [][]byte
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			out = append(out, append([]byte(nil), sc.Bytes()...))
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// startFileRun starts entrowatch run with its embedded broker and the file
// sink writing CSV to out, both under dir, and waits until it consumes;
// stop stops it and checks that it stopped cleanly.
func startFileRun(t *testing.T) (dir, out, broker string, runErr *syncWriter, stop func()) {
	t.Helper()
	dir = t.TempDir()
	out = filepath.Join(dir, "scored.csv")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	broker = freeAddr(t)
	runErr, done := startRun(t, ctx, dir, fileRunConfig(dir, broker, out, freeAddr(t), "traces"))
	waitLog(t, runErr, "stream running")
	return dir, out, broker, runErr, func() {
		cancel()
		stopped(t, done, runErr)
	}
}

// TestIngestLargeResponses: `entrowatch ingest` of the golden responses with
// a 12k-step and a 30k-step response among them (each over the 1 MB
// message limit) and one whose prompt alone fills a message. The long ones
// go as chunks and are stored by `entrowatch run` with the profile that
// `entrowatch score` gives the same rows unsplit (float32, as trace.v1
// carries them), to the last digit; the one that cannot be sent is rejected
// as too_long with its line and id, and every other response is stored.
// Before, the whole batch failed with "row larger than the message size
// limit ... (is the broker running? ...)".
func TestIngestLargeResponses(t *testing.T) {
	dir, out, broker, runErr, stop := startFileRun(t)

	fx := fixtureLines(t)
	long12 := longResponse("long-12k", 12000, 1)
	long30 := longResponse("long-30k", 30000, 2)
	huge := []byte(`{"id": "huge-prompt", "object": "chat.completion", "created": 1760000000, "model": "fixture-model", "prompt": "` +
		strings.Repeat("p", 1100000) + `", "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "."}, ` +
		`"logprobs": {"content": [{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1}]}, ` +
		`{"token": "b", "logprob": -0.2, "top_logprobs": [{"token": "b", "logprob": -0.2}]}]}}]}`)
	var lines [][]byte
	lines = append(lines, fx[:10]...)
	lines = append(lines, long12)
	lines = append(lines, fx[10:20]...)
	// A response the stream would dead-letter, refused up front: the rows
	// after it in the batch keep their own line numbers.
	positive, err := os.ReadFile(fixtures + "invalid.jsonl")
	require.NoError(t, err)
	positive, _, _ = bytes.Cut(positive, []byte("\n"))
	require.Contains(t, string(positive), `"fx-200"`)
	lines = append(lines, positive, huge, long30) // lines 22, 23, 24
	lines = append(lines, fx[20:]...)
	in := filepath.Join(dir, "in.jsonl")
	require.NoError(t, os.WriteFile(in, append(bytes.Join(lines, []byte("\n")), '\n'), 0o644))

	stdout, stderr, code := runCLI(t, "ingest", "--in", in, "--brokers", broker)
	require.Equal(t, 0, code, "something was produced; the reject is in the summary\n%s", stderr)
	want := len(fx) + 2
	require.Contains(t, stdout, "produced "+strconv.Itoa(want)+" responses")
	require.Contains(t, stdout, "2 lines rejected (positive_logprob 1, too_long 1)")
	require.Contains(t, stderr, "line 22 (fx-200): positive_logprob:")
	require.Contains(t, stderr, "line 23 (huge-prompt): too_long: the response (2 steps) encodes to")
	require.Contains(t, stderr, "cannot be sent as chunks either: its per-row columns alone")
	require.NotContains(t, stderr, "is the broker running")

	deadline := time.Now().Add(60 * time.Second) // a guard against hanging, not a speed assertion
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(out); strings.Count(string(b), "\n")-1 >= want {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	rows := readCSV(t, out)
	require.Len(t, rows, want, runErr.String())
	byID := map[string]map[string]string{}
	for _, r := range rows {
		byID[r["id"]] = r
	}
	require.Equal(t, "12000", byID["long-12k"]["n_tokens"])
	require.Equal(t, "30000", byID["long-30k"]["n_tokens"])
	require.NotContains(t, byID, "huge-prompt")
	require.NotContains(t, byID, "fx-200")

	// `entrowatch score` of the same two responses, read as ingest reads them
	// (float32) and scored unsplit.
	arrowIn := filepath.Join(dir, "long.arrow")
	writeTraces(t, arrowIn, append(append(append([]byte(nil), long12...), '\n'), long30...))
	ref := filepath.Join(dir, "ref.csv")
	_, stderr, code = runCLI(t, "score", "--in", arrowIn, "--out", ref)
	require.Equal(t, 0, code, stderr)
	refRows := readCSV(t, ref)
	require.Len(t, refRows, 2)
	for _, r := range refRows {
		require.Equal(t, r, byID[r["id"]], "%s: stored profile differs from score's", r["id"])
	}
}

// writeTraces writes the responses of jsonl as trace.v1 rows, as ingest
// converts them, to an Arrow IPC file.
func writeTraces(t *testing.T, path string, jsonl []byte) {
	t.Helper()
	rd := ingest.NewReader(bytes.NewReader(jsonl), ingest.DefaultConfig(), memory.NewGoAllocator())
	defer rd.Release()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	var w *arrowipc.Writer
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		require.Empty(t, rd.Rejects())
		if w == nil {
			w = arrowipc.NewWriter(f, arrowipc.WithSchema(rec.Schema()))
		}
		require.NoError(t, w.Write(rec))
		rec.Release()
	}
	require.NoError(t, w.Close())
}

// TestIngestLineOverMaxLineBytes: a line over max_line_bytes (64 MiB; a
// response of 100k steps is about 100 MB of JSON) is rejected as too_long,
// not malformed_json, and the reading goes on.
func TestIngestLineOverMaxLineBytes(t *testing.T) {
	cfg := ingest.DefaultConfig()
	cfg.MaxLineBytes = 1 << 20
	in := append(longResponse("long-2k", 2000, 3), '\n') // about 2 MB
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{"127.0.0.1:1"} // never dialled: nothing to produce
	p, err := kafka.NewProducer(conn, kafka.DefaultProducerConfig(), nil)
	require.NoError(t, err)
	defer p.Close()
	var stdout, stderr bytes.Buffer
	err = ingestAll(context.Background(), bytes.NewReader(in), p, cfg, 0, &stdout, &stderr)
	require.ErrorContains(t, err, "the one response could not be sent")
	require.Contains(t, stdout.String(), "1 line rejected (too_long 1)")
	require.Contains(t, stderr.String(), "line 1 (long-2k): too_long: line longer than 1048576 bytes (ingest max_line_bytes)")
}

// TestIngestLongResponseAgain: a response long enough to go as chunks, sent
// again (as when logged responses are ingested again to rescore them with a
// new estimator), is reassembled and written again. Before, every chunk of
// the second sending was dropped as a redelivery of a trace already
// emitted, silently: the stored row kept its old estimate.
func TestIngestLongResponseAgain(t *testing.T) {
	dir, out, broker, runErr, stop := startFileRun(t)
	in := filepath.Join(dir, "long.jsonl")
	require.NoError(t, os.WriteFile(in, append(longResponse("long-12k", 12000, 1), '\n'), 0o644))
	rows := func() int {
		b, _ := os.ReadFile(out)
		return strings.Count(string(b), "long-12k")
	}
	for want := 1; want <= 2; want++ {
		stdout, stderr, code := runCLI(t, "ingest", "--in", in, "--brokers", broker)
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, "produced 1 response in 2 messages")
		deadline := time.Now().Add(60 * time.Second) // a guard against hanging, not a speed assertion
		for rows() < want && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		require.Equal(t, want, rows(), "sending %d is written (the file sink appends)\n%s", want, runErr.String())
	}
	stop()
}
