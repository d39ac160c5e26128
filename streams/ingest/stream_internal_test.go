package ingest

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
)

// An endless stream holds at most max_steps steps: the steps of a choice
// that grew past it are dropped, not kept until the stream finishes.
func TestEndlessStreamHoldsBoundedSteps(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	var b strings.Builder
	for range 1000 {
		b.WriteString(`data: {"id":"s1","object":"chat.completion.chunk","choices":[{"index":0,"logprobs":{"content":[{"logprob":-1,"top_logprobs":[{"logprob":-1},{"logprob":-2}]}]},"finish_reason":null}]}` + "\n\n")
	}
	cfg := DefaultConfig()
	cfg.MaxSteps, cfg.MaxHeldSteps = 10, 10
	r := NewReader(strings.NewReader(b.String()), cfg, mem)
	defer r.Release()
	maxHeld := 0
	for r.line < 2000 {
		raw, err := r.lr.next()
		require.NoError(t, err)
		r.line++
		if line, skip := sseData(raw); !skip && len(line) > 0 {
			require.Nil(t, r.addLine(line))
		}
		maxHeld = max(maxHeld, r.held)
		s := r.streams["s1"]
		require.NotNil(t, s, "line %d", r.line)
		require.LessOrEqual(t, len(s.choices[0].chosen)+len(s.choices[0].alts), 10*3)
	}
	require.LessOrEqual(t, maxHeld, 10*3)
	require.Equal(t, 0, r.held, "the too-long choice holds nothing")
	_, err := r.Next()
	require.ErrorIs(t, err, io.EOF)
	require.Len(t, r.Rejects(), 1)
	require.Equal(t, "too_long", r.Rejects()[0].Reason)
	require.Nil(t, r.oldest)
	require.Nil(t, r.newest)
}

// Pushing out the oldest open stream takes constant time: the open streams
// are a list in the order they started, whose head is the one to go.
func TestOpenStreamsList(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cfg := DefaultConfig()
	cfg.MaxOpenStreams = 100
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, `{"id":"s%d","object":"chat.completion.chunk","choices":[{"index":0,"logprobs":{"content":[{"logprob":-1,"top_logprobs":[{"logprob":-1}]}]},"finish_reason":null}]}`+"\n", i)
	}
	r := NewReader(strings.NewReader(b.String()), cfg, mem)
	defer r.Release()
	for range 500 {
		raw, err := r.lr.next()
		require.NoError(t, err)
		r.line++
		require.Nil(t, r.addLine(raw))
	}
	require.Len(t, r.streams, 100)
	n := 0
	for s := r.oldest; s != nil; s = s.newer {
		require.Equal(t, fmt.Sprintf("s%d", 400+n), s.id, "first seen first")
		require.Same(t, s, r.streams[s.id])
		n++
	}
	require.Equal(t, 100, n)
	require.Len(t, r.rejects, 400)
	require.Equal(t, 100*2, r.held)
}

// TestSettled: the lines of a streamed response still open are not
// settled: an error that stops ingest must not say they were sent.
func TestSettled(t *testing.T) {
	in := `{"id":"s","object":"chat.completion.chunk","choices":[{"index":0,"logprobs":{"content":[{"logprob":-1,"top_logprobs":[{"logprob":-1}]}]},"finish_reason":null}]}` + "\n" +
		`{"id":"w","choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[{"logprob":-1,"top_logprobs":[{"logprob":-1}]}]}}]}` + "\n"
	cfg := DefaultConfig()
	cfg.BatchRows = 1
	r := NewReader(strings.NewReader(in), cfg, memory.NewGoAllocator())
	defer r.Release()
	rec, err := r.Next()
	require.NoError(t, err)
	require.EqualValues(t, 1, rec.NumRows())
	rec.Release()
	require.EqualValues(t, 2, r.Lines())
	require.Zero(t, r.Settled(), "line 1 starts a stream still open")
}
