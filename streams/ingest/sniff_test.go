package ingest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/internal/testutil"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// traceArrow is chat as trace.v1, in the Arrow IPC stream or file format.
func traceArrow(t *testing.T, stream bool) []byte {
	t.Helper()
	rd := ingest.NewReader(strings.NewReader(chat+"\n"), ingest.DefaultConfig(), memory.NewGoAllocator())
	defer rd.Release()
	rec, err := rd.Next()
	require.NoError(t, err)
	defer rec.Release()
	var buf bytes.Buffer
	if stream {
		w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
		require.NoError(t, w.Write(rec))
		require.NoError(t, w.Close())
	} else {
		w, err := ipc.NewFileWriter(&buf, ipc.WithSchema(rec.Schema()))
		require.NoError(t, err)
		require.NoError(t, w.Write(rec))
		require.NoError(t, w.Close())
	}
	return buf.Bytes()
}

// TestOpenRecognisesTablesByContent: a table is "a table, not responses"
// whatever its name and gzip or not (before: only when named .csv, .tsv or
// .csv.gz; otherwise one malformed_json reject per row).
func TestOpenRecognisesTablesByContent(t *testing.T) {
	dir := t.TempDir()
	features := "id,model,domain,correct,n_tokens,mean\nfx-0,fixture-model,math,0,283,1.63\nfx-1,fixture-model,math,1,12,0.5\n"
	for name, data := range map[string][]byte{
		"table.txt":         []byte(features),
		"table":             []byte(features),
		"table.jsonl":       []byte(features),
		"csv.gz":            testutil.Gzip(t, []byte(features)),
		"table.jsonl.gz":    testutil.Gzip(t, []byte(features)),
		"bom-crlf.txt":      []byte("\ufeff" + strings.ReplaceAll(features, "\n", "\r\n")),
		"tabs.txt":          []byte("trace_id\tcorrect\nr1\t1\n"),
		"semicolons.txt":    []byte("trace_id;correct\nr1;1\n"),
		"quoted.txt":        []byte("\"id\",\"model\",\"correct\"\n\"a\",\"m\",\"1\"\n"),
		"header-only.dat":   []byte("trace_id,correct\n"),
		"multiline.txt":     []byte("domain,prompt\nprofessional_law,\"On February 1, a man conveys\nhis orchard, to a gardener\"\nmath,2+2\n"),
		"labels.gz":         testutil.Gzip(t, []byte("trace_id,correct,source\nr1,yes,human\n")),
		"prompts-long.data": []byte("domain,prompt\nlaw,\"" + strings.Repeat("a, b ", 30000) + "\"\n"),
	} {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o644))
		_, err := ingest.Open(p)
		require.ErrorContains(t, err, p+" is a table, not responses (its first line is a header: ", name)
		require.ErrorContains(t, err, "read by entrowatch train and eval", name)
	}
	// The header is shown, shortened.
	long := "c" + strings.Repeat(",column_with_a_long_name", 10) + "\n" + "1" + strings.Repeat(",2", 10) + "\n"
	p := filepath.Join(dir, "long.txt")
	require.NoError(t, os.WriteFile(p, []byte(long), 0o644))
	_, err := ingest.Open(p)
	require.ErrorContains(t, err, "(its first line is a header: c,column_with_a_long_name,")
	require.ErrorContains(t, err, "...)")
}

// TestOpenReadsResponsesAsBefore: what is not a table or Arrow reads exactly
// as Framed gives it, including text whose first line has commas.
func TestOpenReadsResponsesAsBefore(t *testing.T) {
	dir := t.TempDir()
	sse := "data: " + chat + "\n\ndata: [DONE]\n"
	pretty := "{\n  \"id\": \"p1\",\n  \"choices\": []\n}\n"
	batch := `{"id":"batch_req_1","custom_id":"r-1","response":{"status_code":200,"body":` + chat + `},"error":null}` + "\n"
	for name, text := range map[string]string{
		"lines.jsonl":     chat + "\n" + chat + "\n",
		"array.json":      "[" + chat + ",\n" + chat + "]",
		"pretty.json":     pretty + pretty,
		"sse.txt":         sse,
		"sse-event.txt":   "event: message\ndata: " + chat + "\n\n",
		"batch.jsonl":     batch,
		"bom-crlf.jsonl":  "\ufeff" + chat + "\r\n" + chat + "\r\n",
		"blank-first.txt": "\n\n" + chat + "\n",
		"prose.txt":       "hello, world\nthis is not a table\n",
		"one-word.txt":    "hello\n",
		"python.txt":      "{'id': 'x', 'choices': []}\n",
		"log.txt":         "2025-01-01,INFO,started\n2025-01-01,INFO,done\n",
		"empty.jsonl":     "",
	} {
		want, err := io.ReadAll(ingest.Framed(strings.NewReader(text)))
		require.NoError(t, err)
		for _, data := range [][]byte{[]byte(text), testutil.Gzip(t, []byte(text))} {
			p := filepath.Join(dir, name)
			require.NoError(t, os.WriteFile(p, data, 0o644))
			f, err := ingest.Open(p)
			require.NoError(t, err, name)
			got, err := io.ReadAll(f)
			require.NoError(t, err, name)
			require.NoError(t, f.Close())
			require.Equal(t, string(want), string(got), name)
		}
	}
}

// TestOpenRecognisesArrow: an Arrow IPC file or stream (what entrowatch
// score reads and writes) is an *ArrowInputError, whatever its name, also
// gzipped; before, each of its "lines" was a malformed_json reject.
func TestOpenRecognisesArrow(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name   string
		data   []byte
		stream bool
	}{
		{"traces.arrow", traceArrow(t, false), false},
		{"traces.jsonl", traceArrow(t, false), false},
		{"stream.arrows", traceArrow(t, true), true},
		{"stream.jsonl.gz", testutil.Gzip(t, traceArrow(t, true)), true},
	} {
		p := filepath.Join(dir, c.name)
		require.NoError(t, os.WriteFile(p, c.data, 0o644))
		_, err := ingest.Open(p)
		var ae *ingest.ArrowInputError
		require.ErrorAs(t, err, &ae, c.name)
		require.Equal(t, c.stream, ae.Stream, c.name)
		require.Equal(t, p, ae.Path)
		format := map[bool]string{false: "file", true: "stream"}[c.stream]
		require.EqualError(t, err, p+" is an Arrow IPC "+format+", not JSON responses")
	}
	require.EqualError(t, &ingest.ArrowInputError{Path: "-", Stream: true}, "standard input is an Arrow IPC stream, not JSON responses")
}

// TestOpenSniffsPipesWithoutHolding: on a FIFO (as on standard input) the
// content is looked at through the buffer, so nothing is lost, and a JSON
// or SSE stream is handed over at its first line while the writer keeps
// the pipe open; a table or Arrow stream on a pipe is refused as from a
// file.
func TestOpenSniffsPipesWithoutHolding(t *testing.T) {
	fifo := func(t *testing.T) (string, chan *os.File) {
		p := filepath.Join(t.TempDir(), "fifo")
		require.NoError(t, syscall.Mkfifo(p, 0o644))
		w := make(chan *os.File, 1)
		go func() {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				close(w)
				return
			}
			w <- f
		}()
		return p, w
	}
	// write writes data once the reader opened the FIFO, and keeps it open
	// until the test ends.
	write := func(t *testing.T, wc chan *os.File, data []byte) {
		go func() {
			if w, ok := <-wc; ok {
				w.Write(data)
				t.Cleanup(func() { w.Close() })
			}
		}()
	}
	// within runs f, with a guard against hanging (not a speed assertion).
	within := func(t *testing.T, what string, f func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: still waiting after 30 s with the pipe open", what)
			return nil
		}
	}
	for first, want := range map[string]string{chat + "\n": "{", "data: " + chat + "\n": "d", "[" + chat + ",\n": "{"} {
		p, wc := fifo(t)
		write(t, wc, []byte(first))
		var f io.ReadCloser
		require.NoError(t, within(t, "open", func() (err error) {
			f, err = ingest.OpenContext(context.Background(), p)
			return err
		}))
		b := make([]byte, 1)
		require.NoError(t, within(t, "first byte", func() error {
			_, err := io.ReadFull(f, b)
			return err
		}))
		require.Equal(t, want, string(b), first) // the array's "[" is taken off
		f.Close()
	}
	for name, data := range map[string][]byte{
		"table": []byte("trace_id,correct\nr1,1\n"),
		"arrow": traceArrow(t, true),
	} {
		p, wc := fifo(t)
		write(t, wc, data)
		err := within(t, name, func() error {
			_, err := ingest.OpenContext(context.Background(), p)
			return err
		})
		if name == "table" {
			require.ErrorContains(t, err, p+" is a table, not responses")
		} else {
			require.True(t, errors.As(err, new(*ingest.ArrowInputError)), "%v", err)
		}
	}
}

// TestOpenTruncatedGzipErrorOnce: the error of a truncated gzip file comes
// from the read that met it, and Close does not return it again (before it
// did, and entrowatch ingest printed "unexpected EOF" twice).
func TestOpenTruncatedGzipErrorOnce(t *testing.T) {
	var lines bytes.Buffer
	for range 300 {
		lines.WriteString(chat + "\n")
	}
	data := testutil.Gzip(t, lines.Bytes())
	p := filepath.Join(t.TempDir(), "cut.jsonl.gz")
	require.NoError(t, os.WriteFile(p, data[:len(data)/2], 0o644))
	f, err := ingest.Open(p)
	require.NoError(t, err)
	_, err = io.ReadAll(f)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.ErrorContains(t, err, "gzip data ends abruptly")
	require.NoError(t, f.Close())
}
