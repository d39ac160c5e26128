package ingest_test

import (
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// readWith reads every batch of input with cfg and returns the rows as plain
// values, their input lines and the rejects.
func readWith(t *testing.T, input string, cfg ingest.Config) ([]gotRow, []int64, []ingest.Reject) {
	t.Helper()
	return readFrom(t, strings.NewReader(input), cfg)
}

func readFrom(t *testing.T, src io.Reader, cfg ingest.Config) ([]gotRow, []int64, []ingest.Reject) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	require.NoError(t, cfg.Validate())
	r := ingest.NewReader(src, cfg, mem)
	defer r.Release()
	var rows []gotRow
	var lines []int64
	var rejects []ingest.Reject
	for {
		rec, err := r.Next()
		rejects = append(rejects, r.Rejects()...)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		require.Len(t, r.RowLines(), int(rec.NumRows()))
		rows = append(rows, toRows(rec)...)
		lines = append(lines, r.RowLines()...)
		rec.Release()
	}
	return rows, lines, rejects
}

// The steps of the `chat` fixture, as OpenAI streams them.
var (
	stepFour = `{"token":"4","logprob":-0.01,"bytes":[52],"top_logprobs":[{"token":"4","logprob":-0.01},{"token":"5","logprob":-4.6}]}`
	stepDot  = `{"token":".","logprob":-0.5,"top_logprobs":[{"token":".","logprob":-0.5},{"token":"!","logprob":-1.0},{"token":"?","logprob":-9999.0}]}`
)

// chunk is one chat.completion.chunk line; extra is spliced into the object.
func chunk(id string, index int, content, finish, extra string) string {
	lp := "null"
	if content != "" {
		lp = `{"content":[` + content + `]}`
	}
	fin := "null"
	if finish != "" {
		fin = `"` + finish + `"`
	}
	return fmt.Sprintf(`{"id":%q,"object":"chat.completion.chunk","created":1760000000,"model":"gpt-x",%s"choices":[{"index":%d,"delta":{"content":"x"},"logprobs":%s,"finish_reason":%s}]}`,
		id, extra, index, lp, fin)
}

// A streamed response, with the server-sent-events framing, the role chunk,
// a chunk per token, the finish chunk, the usage chunk and [DONE], gives the
// same row as the whole response.
func TestStreamedResponseEqualsWhole(t *testing.T) {
	extra := `"domain":"math","prompt":"2+2?","attributes":{"tenant":"acme","route":"/v1","n":3},"correct":true,`
	sse := strings.Join([]string{
		": keep-alive comment",
		"event: message",
		"data: " + strings.Replace(chunk("c1", 0, "", "", extra), `"content":"x"`, `"role":"assistant","content":""`, 1),
		"",
		"data: " + chunk("c1", 0, stepFour, "", ""),
		"",
		"data:" + chunk("c1", 0, stepDot, "", ""),
		"",
		"id: 7",
		"retry: 1000",
		"data: " + chunk("c1", 0, "", "stop", ""),
		"",
		`data: {"id":"c1","object":"chat.completion.chunk","created":1760000000,"model":"gpt-x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`,
		"",
		"data: [DONE]",
		"",
	}, "\n")
	whole, _, rej := readWith(t, chat+"\n", ingest.DefaultConfig())
	require.Empty(t, rej)
	streamed, lines, rej := readWith(t, sse, ingest.DefaultConfig())
	require.Empty(t, rej)
	require.Len(t, streamed, 1)
	require.True(t, math.IsNaN(float64(streamed[0].temperature)) && math.IsNaN(float64(whole[0].temperature)), "no temperature given")
	whole[0].temperature, streamed[0].temperature = 0, 0 // NaN != NaN
	require.Equal(t, whole, streamed)
	require.Equal(t, []int64{11}, lines, "the row's line is its finish chunk's")
	require.Equal(t, []float64{-0.01, -0.5}, streamed[0].chosen)
	require.Equal(t, "stop", streamed[0].finish)
}

// Streams interleave; each becomes a row when it finishes; several choices
// become one row each; a stream that never finishes is rejected as incomplete
// at the end of the input, and a stream without logprobs is a row without them.
func TestStreamedResponses(t *testing.T) {
	input := strings.Join([]string{
		chunk("a", 0, stepFour, "", `"domain":"A",`),      // 1
		chunk("b", 0, stepDot, "", ""),                    // 2
		chunk("n", 0, stepFour, "", ""),                   // 3
		chunk("n", 1, stepDot, "", ""),                    // 4
		chunk("b", 0, stepFour, "length", ""),             // 5: b done
		chunk("cut", 0, stepFour, "", ""),                 // 6
		chunk("n", 0, "", "stop", ""),                     // 7
		chunk("a", 0, stepDot, "", `"domain":"ignored",`), // 8
		chunk("n", 1, stepFour, "stop", ""),               // 9: n done (both choices)
		chunk("plain", 0, "", "", ""),                     // 10
		chunk("a", 0, "", "stop", ""),                     // 11: a done
		chunk("plain", 0, "", "stop", ""),                 // 12
		chunk("cut", 0, stepDot, "", ""),                  // 13: cut never finishes
	}, "\n")
	rows, lines, rej := readWith(t, input, ingest.DefaultConfig())
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.id)
	}
	require.Equal(t, []string{"b", "n/0", "n/1", "a", "plain"}, ids)
	require.Equal(t, []int64{5, 9, 9, 11, 12}, lines)
	require.Equal(t, []float64{-0.5, -0.01}, rows[0].chosen)
	require.Equal(t, "length", rows[0].finish)
	require.Equal(t, []float64{-0.01}, rows[1].chosen)
	require.Equal(t, []float64{-0.5, -0.01}, rows[2].chosen)
	require.Equal(t, []float64{-0.01, -0.5}, rows[3].chosen)
	require.Equal(t, "A", rows[3].domain, "the first value of a field wins")
	require.True(t, rows[4].noLogprobs)
	require.Len(t, rej, 1)
	require.Equal(t, ingest.Reject{Line: 13, ID: "cut", Reason: schemas.ReasonIncomplete, Err: rej[0].Err}, rej[0])
	require.ErrorContains(t, rej[0].Err, "2 chat.completion.chunk objects, lines 6-13")
	require.ErrorContains(t, rej[0].Err, "the input ended")
}

func TestStreamedResponsesBounded(t *testing.T) {
	cfg := ingest.DefaultConfig()
	cfg.MaxOpenStreams = 2
	input := strings.Join([]string{
		chunk("a", 0, stepFour, "", ""),
		chunk("b", 0, stepFour, "", ""),
		chunk("c", 0, stepFour, "", ""), // a is pushed out
		chunk("b", 0, stepDot, "stop", ""),
		chunk("c", 0, stepDot, "stop", ""),
		chunk("a", 0, stepDot, "stop", ""), // a again: a new stream, done at once
		`{"object":"chat.completion.chunk","choices":[{"index":0,"finish_reason":"stop"}]}`,
	}, "\n")
	rows, _, rej := readWith(t, input, cfg)
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.id)
	}
	require.Equal(t, []string{"b", "c", "a"}, ids)
	require.Equal(t, []float64{-0.5}, rows[2].chosen, "only what came after it was pushed out")
	require.Len(t, rej, 2)
	require.Equal(t, "a", rej[0].ID)
	require.Equal(t, schemas.ReasonIncomplete, rej[0].Reason)
	require.ErrorContains(t, rej[0].Err, "max_open_streams")
	require.Equal(t, schemas.ReasonMalformedJSON, rej[1].Reason)
	require.ErrorContains(t, rej[1].Err, `without "id"`)

	cfg.MaxOpenStreams = 0
	require.ErrorContains(t, cfg.Validate(), "max_open_streams")
}

// legacyChunk is a streamed legacy completion chunk as vLLM sends it; tokens
// are (logprob, alternative logprob) pairs; finish "" is an explicit null.
func legacyChunk(id, finish string, tokens ...[2]float64) string {
	var tl, top []string
	for _, tk := range tokens {
		tl = append(tl, fmt.Sprint(tk[0]))
		top = append(top, fmt.Sprintf(`{"a":%v,"b":%v}`, tk[0], tk[1]))
	}
	lp := "null"
	if len(tokens) > 0 {
		lp = `{"text_offset":[0],"token_logprobs":[` + strings.Join(tl, ",") + `],"tokens":["a"],"top_logprobs":[` + strings.Join(top, ",") + `]}`
	}
	fin := "null"
	if finish != "" {
		fin = `"` + finish + `"`
	}
	return `{"id":"` + id + `","object":"text_completion","created":1760000000,"model":"m","choices":[{"index":0,"text":"a","logprobs":` +
		lp + `,"finish_reason":` + fin + `,"stop_reason":null}]}`
}

// Streamed legacy completions (text_completion chunks with an explicit null
// finish_reason) are joined like chat chunks; whole ones stay whole.
func TestStreamedLegacyCompletions(t *testing.T) {
	sse := strings.Join([]string{
		"data: " + legacyChunk("L", "", [2]float64{-0.25, -1.5}),
		"data: " + legacyChunk("W", "length", [2]float64{-0.5, -2}), // a whole response in between
		"data: " + legacyChunk("L", "", [2]float64{-0.125, -3}, [2]float64{-1, -0.5}),
		"data: " + legacyChunk("L", "stop"),
		`data: {"id":"L","object":"text_completion","created":1760000000,"model":"m","choices":[],"usage":{"completion_tokens":3}}`,
		"data: [DONE]",
		legacyChunk("cut", "", [2]float64{-0.25, -1.5}),
	}, "\n\n")
	rows, lines, rej := readWith(t, sse, ingest.DefaultConfig())
	require.Len(t, rows, 2)
	require.Equal(t, "W", rows[0].id)
	require.Equal(t, []float64{-0.5}, rows[0].chosen)
	require.Equal(t, "L", rows[1].id)
	require.Equal(t, "stop", rows[1].finish)
	require.Equal(t, []float64{-0.25, -0.125, -1}, rows[1].chosen)
	require.Len(t, rows[1].top, 3)
	for i, want := range [][]float64{{-1.5, -0.25}, {-3, -0.125}, {-1, -0.5}} {
		require.ElementsMatch(t, want, rows[1].top[i])
	}
	require.Equal(t, []int64{3, 7}, lines)
	require.Len(t, rej, 1)
	require.Equal(t, "cut", rej[0].ID)
	require.Equal(t, schemas.ReasonIncomplete, rej[0].Reason)
	require.ErrorContains(t, rej[0].Err, "1 text_completion objects")
}

// Beyond max_open_streams the stream that started first is pushed out, also
// when it received a chunk since (first seen, not least recently used), and
// at the end of the input the open streams are rejected in the order they
// started.
func TestStreamEvictionOrder(t *testing.T) {
	cfg := ingest.DefaultConfig()
	cfg.MaxOpenStreams = 3
	input := strings.Join([]string{
		chunk("a", 0, stepFour, "", ""),    // 1
		chunk("b", 0, stepFour, "", ""),    // 2
		chunk("c", 0, stepFour, "", ""),    // 3
		chunk("a", 0, stepDot, "", ""),     // 4: a is still the oldest
		chunk("d", 0, stepFour, "", ""),    // 5: a pushed out
		chunk("b", 0, stepDot, "stop", ""), // 6: b done
		chunk("e", 0, stepFour, "", ""),    // 7
		chunk("f", 0, stepFour, "", ""),    // 8: c pushed out
		chunk("d", 0, stepDot, "", ""),     // 9
	}, "\n")
	rows, _, rej := readWith(t, input, cfg)
	require.Len(t, rows, 1)
	require.Equal(t, "b", rows[0].id)
	var got []string
	for _, r := range rej {
		require.Equal(t, schemas.ReasonIncomplete, r.Reason)
		got = append(got, fmt.Sprintf("%s@%d", r.ID, r.Line))
	}
	require.Equal(t, []string{"a@4", "c@3", "d@9", "e@7", "f@8"}, got)
	require.ErrorContains(t, rej[0].Err, "max_open_streams")
	require.ErrorContains(t, rej[1].Err, "max_open_streams")
	require.ErrorContains(t, rej[2].Err, "the input ended")
}

// A choice that grows past max_steps is rejected as too_long, once, with its
// steps dropped (memory stays bounded while its chunks keep coming); the
// other choices of the response are rows.
func TestStreamTooLong(t *testing.T) {
	cfg := ingest.DefaultConfig()
	cfg.MaxSteps = 2
	lines := []string{
		chunk("long", 0, stepFour, "", ""),
		chunk("n", 0, stepFour, "", ""),
		chunk("n", 1, stepFour, "", ""),
	}
	for range 5 {
		lines = append(lines, chunk("long", 0, stepDot, "", ""), chunk("n", 0, stepDot, "", ""))
	}
	lines = append(lines,
		chunk("long", 0, "", "length", ""), // 14
		chunk("n", 0, "", "stop", ""),
		chunk("n", 1, stepDot, "stop", ""), // 16
		chunk("cut", 0, stepFour+","+stepDot+","+stepDot, "", ""),
		chunk("cut", 0, stepDot, "", ""),
	)
	rows, rowLines, rej := readWith(t, strings.Join(lines, "\n"), cfg)
	require.Len(t, rows, 1)
	require.Equal(t, "n/1", rows[0].id, "named as one of several choices")
	require.Equal(t, []float64{-0.01, -0.5}, rows[0].chosen)
	require.Equal(t, []int64{16}, rowLines)
	require.Len(t, rej, 3, "one reject per response or choice, not per chunk")
	require.Equal(t, ingest.Reject{Line: 14, ID: "long", Reason: schemas.ReasonTooLong, Err: rej[0].Err}, rej[0])
	require.ErrorContains(t, rej[0].Err, "choice 0 has more than 2 steps (the --max-steps of entrowatch score and entrowatch ingest; run's ingest.max_steps")
	require.Equal(t, ingest.Reject{Line: 16, ID: "n/0", Reason: schemas.ReasonTooLong, Err: rej[1].Err}, rej[1])
	require.Equal(t, "cut", rej[2].ID)
	require.Equal(t, schemas.ReasonTooLong, rej[2].Reason, "a stream cut off after it grew too long")
	require.ErrorContains(t, rej[2].Err, "the input ended")

	cfg = ingest.DefaultConfig()
	cfg.MaxSteps = 0
	require.ErrorContains(t, cfg.Validate(), "max_steps")
	cfg = ingest.DefaultConfig()
	cfg.MaxHeldSteps = cfg.MaxSteps - 1
	require.ErrorContains(t, cfg.Validate(), "max_held_steps")
}

// The logprobs held over all open streams are bounded by max_held_steps:
// beyond it the stream that started first is rejected as incomplete.
func TestStreamHeldStepsBounded(t *testing.T) {
	cfg := ingest.DefaultConfig()
	cfg.MaxSteps, cfg.MaxHeldSteps = 1, 1 // 21 logprobs
	var alts []string
	for i := range 20 {
		alts = append(alts, fmt.Sprintf(`{"logprob":%d}`, -i-1))
	}
	big := `{"logprob":-1,"top_logprobs":[` + strings.Join(alts, ",") + `]}` // 21 logprobs
	input := strings.Join([]string{
		chunk("a", 0, big, "", ""),
		chunk("b", 0, stepFour, "", ""), // 3 more: a goes
		chunk("b", 0, "", "stop", ""),
		chunk("c", 0, big, "stop", ""), // held and done at once
	}, "\n")
	rows, _, rej := readWith(t, input, cfg)
	require.Len(t, rows, 2)
	require.Equal(t, "b", rows[0].id)
	require.Equal(t, "c", rows[1].id)
	require.Len(t, rej, 1)
	require.Equal(t, ingest.Reject{Line: 1, ID: "a", Reason: schemas.ReasonIncomplete, Err: rej[0].Err}, rej[0])
	require.ErrorContains(t, rej[0].Err, "max_held_steps")
}
