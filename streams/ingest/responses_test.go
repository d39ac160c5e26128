package ingest_test

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/ingest"
)

// respAPI is a Responses API response (object "response") with a reasoning
// item, and a message whose two output_text parts carry the `chat` fixture's
// two steps; extra is spliced in at the top level.
func respAPI(id, status, extra string) string {
	return `{"id":"` + id + `","object":"response","created_at":1760000000.0,"status":"` + status + `",` + extra +
		`"model":"gpt-x","temperature":0.7,"top_p":1.0,"prompt":{"id":"pmpt_1","version":"2"},` +
		`"metadata":{"tenant":"acme"},"output":[` +
		`{"type":"reasoning","id":"rs_1","summary":[]},` +
		`{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[` +
		`{"type":"output_text","text":"4","annotations":[],"logprobs":[` + stepFour + `]},` +
		`{"type":"output_text","text":".","annotations":[],"logprobs":[` + stepDot + `]}]}]}`
}

func TestResponsesAPI(t *testing.T) {
	rows, _, rej := readWith(t, strings.Join([]string{
		respAPI("resp_1", "completed", ""),
		strings.Replace(respAPI("resp_2", "incomplete", `"incomplete_details":{"reason":"max_output_tokens"},"attributes":{"route":"/x"},`),
			`"prompt":{"id":"pmpt_1","version":"2"}`, `"prompt":"2+2?"`, 1), // a prompt logged by the caller
		// logprobs not requested: empty lists
		`{"id":"resp_3","object":"response","status":"completed","model":"gpt-x","output":[{"type":"message","content":[{"type":"output_text","text":"hi","logprobs":[]}]}]}`,
		`{"id":"resp_4","object":"response","status":"completed","model":"gpt-x"}`,
	}, "\n"), ingest.DefaultConfig())
	require.Len(t, rows, 3)
	require.Len(t, rej, 1)
	require.Equal(t, "resp_4", rej[0].ID)
	require.ErrorContains(t, rej[0].Err, `without "output"`)

	r := rows[0]
	require.Equal(t, "resp_1", r.id)
	require.Equal(t, "gpt-x", r.model)
	require.Equal(t, "stop", r.finish)
	require.Equal(t, []float64{-0.01, -0.5}, r.chosen)
	require.Equal(t, [][]float64{{-0.01, -4.6}, {-0.5, -1, -9999}}, r.top)
	require.InDelta(t, 0.7, r.temperature, 1e-6)
	require.Equal(t, map[string]string{"tenant": "acme"}, r.attrs, "metadata become the attributes")
	require.True(t, r.promptNull, "a prompt-template reference is not prompt text")

	r = rows[1]
	require.Equal(t, "max_output_tokens", r.finish)
	require.Equal(t, map[string]string{"route": "/x"}, r.attrs, "the line's own attributes win")
	require.Equal(t, "2+2?", r.prompt)

	require.True(t, rows[2].noLogprobs)
}

// A streamed Responses API response: the delta events add nothing, the
// response.completed event carries the whole response.
func TestResponsesAPIStreamed(t *testing.T) {
	whole, _, rej := readWith(t, respAPI("resp_1", "completed", ""), ingest.DefaultConfig())
	require.Empty(t, rej)
	sse := strings.Join([]string{
		"event: response.created",
		`data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","output":[]}}`,
		"",
		"event: response.output_text.delta",
		`data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"4","logprobs":[` + stepFour + `]}`,
		"",
		"event: response.output_text.done",
		`data: {"type":"response.output_text.done","sequence_number":7,"item_id":"msg_1","output_index":1,"content_index":1,"text":".","logprobs":[` + stepDot + `]}`,
		"",
		"event: response.completed",
		`data: {"type":"response.completed","sequence_number":9,"response":` + respAPI("resp_1", "completed", "") + `}`,
		"",
	}, "\n")
	streamed, lines, rej := readWith(t, sse, ingest.DefaultConfig())
	require.Empty(t, rej)
	_, _, rej2 := readWith(t, `{"type":"response.completed","sequence_number":9}`, ingest.DefaultConfig())
	require.Len(t, rej2, 1)
	require.ErrorContains(t, rej2[0].Err, `response.completed event without its "response"`)
	require.Len(t, streamed, 1)
	require.Equal(t, []int64{11}, lines)
	require.False(t, math.IsNaN(float64(streamed[0].temperature)))
	require.Equal(t, whole, streamed)
}
