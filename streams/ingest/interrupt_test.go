package ingest_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/ingest"
)

// readUntilError reads r until an error, failing the test if none comes
// within a generous guard (not a speed assertion).
func readUntilError(t *testing.T, r io.Reader) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := r.Read(buf); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("the read did not end after the context was cancelled")
		return nil
	}
}

// TestOpenContextInterrupts: Ctrl-C or SIGTERM ended `entrowatch score` and
// `ingest` only between batches, so an input that never ends (/dev/zero,
// one endless line) or a pipe whose writer waits (`sleep 15 | entrowatch
// score --in -`) kept them running. The reads of OpenContext's input fail
// with ErrInterrupted once the context is done.
func TestOpenContextInterrupts(t *testing.T) {
	t.Run("endless device", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		rc, err := ingest.OpenContext(ctx, "/dev/zero")
		require.NoError(t, err)
		defer rc.Close()
		_, err = io.ReadFull(rc, make([]byte, 1<<20))
		require.NoError(t, err, "reads before the signal")
		cancel()
		require.ErrorIs(t, readUntilError(t, rc), ingest.ErrInterrupted)
	})
	t.Run("pipe whose writer waits", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "fifo")
		require.NoError(t, syscall.Mkfifo(fifo, 0o600))
		// Opening a FIFO for reading waits for a writer, and OpenContext
		// looks at the first 64 KiB (gzip, JSON Lines or an array): the
		// writer opens and sends that much, then waits.
		wch := make(chan *os.File, 1)
		go func() {
			w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
			if err == nil {
				_, _ = w.Write([]byte(strings.Repeat(`{"id":"a"}`+"\n", 7000)))
				wch <- w
			}
		}()
		ctx, cancel := context.WithCancel(context.Background())
		rc, err := ingest.OpenContext(ctx, fifo)
		require.NoError(t, err)
		w := <-wch
		line, err := bufio.NewReader(rc).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, `{"id":"a"}`+"\n", line, "what the writer sent arrives")
		cancel()
		require.ErrorIs(t, readUntilError(t, rc), ingest.ErrInterrupted)
		require.NoError(t, w.Close()) // the copying goroutine's read ends
		require.NoError(t, rc.Close())
	})
	t.Run("regular file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "r.jsonl")
		require.NoError(t, os.WriteFile(p, []byte(`{"id":"a"}`+"\n"), 0o644))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rc, err := ingest.OpenContext(ctx, p)
		if err == nil {
			_, err = io.ReadAll(rc)
			rc.Close()
		}
		require.True(t, errors.Is(err, ingest.ErrInterrupted), "%v", err)
	})
}

// TestFramedLiveStream: the framing of a pipe is decided once its first line
// has arrived; it waited for 64 KiB (or the end) before the first byte.
func TestFramedLiveStream(t *testing.T) {
	for _, tc := range []struct{ first, want string }{
		{`{"id":"a","choices":[]}` + "\n", `{"id":"a","choices":[]}` + "\n"},
		{"[\n", ""},
	} {
		pr, pw := io.Pipe()
		go func() { _, _ = pw.Write([]byte(tc.first)) }() // and then waits, open
		got := make(chan string, 1)
		go func() {
			br := bufio.NewReader(ingest.Framed(pr))
			if tc.want == "" {
				got <- "framed" // an array: nothing to read until its first element ends
				return
			}
			line, _ := br.ReadString('\n')
			got <- line
		}()
		select {
		case line := <-got:
			if tc.want != "" {
				require.Equal(t, tc.want, line)
			}
		case <-time.After(20 * time.Second): // a guard against hanging, not a speed assertion
			t.Fatalf("%q: nothing came out of a live stream", tc.first)
		}
		pw.Close()
	}
}
