package ingest_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// TestAzureContentFilterEvents: Azure OpenAI's prompt-filter event before a
// stream and the asynchronous filter's annotation chunks (also one with the
// stream's own id after its finish) are skipped: one response, one row, no
// rejects. Before, each was a malformed_json reject (one per annotation) and
// the late annotation reopened the stream, rejected as incomplete at the end.
func TestAzureContentFilterEvents(t *testing.T) {
	annotation := func(id, obj string, off int) string {
		return `data: {"id":"` + id + `","object":"` + obj + `","created":0,"model":"","choices":[{"index":0,"finish_reason":null,` +
			`"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"content_filter_offsets":{"check_offset":` +
			strings.Repeat("1", off) + `0,"start_offset":0,"end_offset":2}}],"usage":null}`
	}
	chunk := func(choice string) string {
		return `data: {"id":"chatcmpl-az","object":"chat.completion.chunk","created":1760000000,"model":"gpt-4o","choices":[` + choice + `]}`
	}
	input := strings.Join([]string{
		`data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}`,
		chunk(`{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null,"content_filter_results":{}}`),
		chunk(`{"index":0,"delta":{"content":"Hi"},"finish_reason":null,"logprobs":{"content":[{"token":"Hi","logprob":-0.1,"top_logprobs":[{"token":"Hi","logprob":-0.1},{"token":"Hello","logprob":-2.5}]}]},"content_filter_results":{}}`),
		annotation("", "", 1),
		chunk(`{"index":0,"delta":{},"finish_reason":"stop","logprobs":null}`),
		annotation("", "", 2),
		annotation("chatcmpl-az", "chat.completion.chunk", 3),
		"data: [DONE]",
	}, "\n\n")
	rows, rejects := readAll(t, input, false)
	require.Empty(t, rejects)
	require.Len(t, rows, 1)
	require.Equal(t, "chatcmpl-az", rows[0].id)
	require.Equal(t, []float64{-0.1}, rows[0].chosen)
}

// TestStreamedChoiceAfterOthersFinished: with n > 1, a choice whose first
// chunk comes after the others finished is a row named <id>/<index>, not a
// second row under the bare id (which ClickHouse would take for a
// redelivery). A stream logged twice repeats its id, as before.
func TestStreamedChoiceAfterOthersFinished(t *testing.T) {
	chunk := func(index, body string) string {
		return `{"id":"chatcmpl-n2","created":1760000000,"model":"gpt-4o","object":"chat.completion.chunk","choices":[{"index":` + index + `,` + body + `}]}`
	}
	tok := `"delta":{"content":"x"},"logprobs":{"content":[{"token":"x","logprob":-0.2,"top_logprobs":[{"token":"x","logprob":-0.2},{"token":"y","logprob":-1.8}]}]},"finish_reason":null`
	stop := `"delta":{},"logprobs":null,"finish_reason":"stop"`
	one := []string{chunk("0", tok), chunk("0", stop)}
	input := strings.Join(append(append(append([]string{}, one...), chunk("1", tok), chunk("1", tok), chunk("1", stop)), one...), "\n")
	rows, rejects := readAll(t, input, false)
	require.Empty(t, rejects)
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.id)
	}
	require.Equal(t, []string{"chatcmpl-n2", "chatcmpl-n2/1", "chatcmpl-n2"}, ids, "the third is choice 0 logged again: a repeat")
	require.Len(t, rows[1].chosen, 2)
}

// TestLegacyWithoutTopLogprobs: a legacy completion requested without
// alternatives (top_logprobs null or absent), whole or streamed, is
// no_logprobs with what to request, not malformed_json.
func TestLegacyWithoutTopLogprobs(t *testing.T) {
	input := `{"id":"w","object":"text_completion","model":"m","choices":[{"index":0,"text":"ab","finish_reason":"length","logprobs":{"tokens":["a","b"],"token_logprobs":[-0.1,-0.2],"top_logprobs":null}}]}` + "\n" +
		`{"id":"w2","object":"text_completion","model":"m","choices":[{"index":0,"text":"ab","finish_reason":"length","logprobs":{"tokens":["a","b"],"token_logprobs":[-0.1,-0.2]}}]}` + "\n" +
		`{"id":"s","object":"text_completion","model":"m","choices":[{"index":0,"text":"a","finish_reason":null,"logprobs":{"tokens":["a"],"token_logprobs":[-0.1],"top_logprobs":null}}]}` + "\n" +
		`{"id":"s","object":"text_completion","model":"m","choices":[{"index":0,"text":"","finish_reason":"stop","logprobs":null}]}`
	rows, rejects := readAll(t, input, false)
	require.Empty(t, rows)
	require.Len(t, rejects, 3)
	for _, r := range rejects {
		require.Equal(t, schemas.ReasonNoLogprobs, r.Reason, r.Err.Error())
		require.Contains(t, r.Err.Error(), "legacy logprobs without top_logprobs: request alternatives")
	}
}

// TestResponsesErrorEvent: the Responses API's stream "error" event is a
// failed_request with its code and message, not malformed_json.
func TestResponsesErrorEvent(t *testing.T) {
	_, rejects := readAll(t, `data: {"type":"error","code":"ERR_SOMETHING","message":"Something went wrong","param":null,"sequence_number":1}`, false)
	require.Len(t, rejects, 1)
	require.Equal(t, schemas.ReasonFailedRequest, rejects[0].Reason)
	require.Equal(t, "an error event of a streamed response, no response to score: ERR_SOMETHING: Something went wrong", rejects[0].Err.Error())
}
