package ingest_test

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// batchLine wraps a response body as a line of an OpenAI Batch API (or vLLM
// run-batch) output file.
func batchLine(customID, extra, body string) string {
	return `{"id":"batch_req_` + customID + `","custom_id":"` + customID + `"` + extra +
		`,"response":{"status_code":200,"request_id":"req_x","body":` + body + `},"error":null}`
}

// TestBatchOutput: every line of a batch output file becomes the rows of
// its body, named by custom_id, or a failed_request reject that quotes the
// error; nothing is dropped.
func TestBatchOutput(t *testing.T) {
	legacy := `{"id":"cmpl-9","object":"text_completion","created":1760000001,"model":"llama","choices":[` +
		`{"index":0,"text":"ab","finish_reason":"length","logprobs":{"tokens":["a","b"],"token_logprobs":[-0.2,-1.5],"top_logprobs":[{"a":-0.2,"c":-2.0},{"b":-1.5,"d":-0.4}]}},` +
		`{"index":1,"text":"a","finish_reason":"stop","logprobs":{"tokens":["a"],"token_logprobs":[-0.2],"top_logprobs":[{"a":-0.2,"c":-2.0}]}}]}`
	responses := `{"id":"resp_1","object":"response","created_at":1760000002,"model":"gpt-4.1","status":"completed","error":null,` +
		`"output":[{"type":"message","content":[{"type":"output_text","text":"4","logprobs":[{"token":"4","logprob":-0.01,"top_logprobs":[{"token":"4","logprob":-0.01},{"token":"5","logprob":-4.6}]}]}]}]}`
	input := strings.Join([]string{
		// the chat body of the package's chat fixture, the line's domain winning over the body's
		batchLine("request-1", `,"domain":"greet","attributes":{"tenant":"t2"}`, chat),
		batchLine("request-2", "", legacy),
		batchLine("request-3", `,"correct":false`, responses),
		// an empty custom_id falls back to the body's id
		`{"id":"batch_req_e","custom_id":"","response":{"status_code":200,"body":` + legacy + `}}`,
		// vLLM writes -inf as -9999 and may write Python's NaN inside the body
		batchLine("request-4", "", `{"id":"c","model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[{"logprob":NaN,"top_logprobs":[{"logprob":-0.1}]}]}}]}`),
		`{"id":"batch_req_5","custom_id":"request-5","response":{"status_code":400,"request_id":"r","body":{"error":{"message":"Invalid 'top_logprobs': integer above maximum value.","type":"invalid_request_error","code":"integer_above_max_value"}}},"error":null}`,
		`{"id":"batch_req_6","custom_id":"request-6","response":null,"error":{"code":"batch_expired","message":"This request could not be executed before the completion window expired."}}`,
		`{"id":"batch_req_7","custom_id":"request-7","response":{"status_code":500,"request_id":"r"},"error":null}`,
		`{"id":"batch_req_8","custom_id":"request-8"}`,
		`{"id":"batch_req_9","custom_id":"request-9","response":{"status_code":200,"request_id":"r"},"error":null}`,
	}, "\n")
	rows, rejects := readAll(t, input, true)

	ids := []string{}
	for _, r := range rows {
		ids = append(ids, r.id)
	}
	require.Equal(t, []string{"request-1", "request-2/0", "request-2/1", "request-3", "cmpl-9/0", "cmpl-9/1", "request-4"}, ids)
	require.True(t, math.IsNaN(rows[6].chosen[0]), "Python's NaN inside the body is NaN (the profile operator rejects it), got %v", rows[6].chosen)
	require.Equal(t, "greet", rows[0].domain)
	require.Equal(t, map[string]string{"tenant": "t2"}, rows[0].attrs)
	require.Equal(t, "2+2?", rows[0].prompt, "the body's prompt is kept when the line has none")
	require.True(t, rows[0].correct)
	require.Equal(t, "gpt-x", rows[0].model)
	require.Equal(t, []float64{-0.01, -0.5}, rows[0].chosen)
	require.Equal(t, [][]float64{{-0.2, -2.0}, {-0.4, -1.5}}, rows[1].top)
	require.Equal(t, "llama", rows[1].model)
	require.Equal(t, "gpt-4.1", rows[3].model)
	require.False(t, rows[3].correctNull)
	require.False(t, rows[3].correct)

	type rej struct {
		line            int64
		id, reason, msg string
	}
	var got []rej
	for _, r := range rejects {
		got = append(got, rej{r.Line, r.ID, r.Reason, r.Err.Error()})
	}
	require.Len(t, got, 5, "%+v", got)
	require.Equal(t, rej{6, "request-5", schemas.ReasonFailedRequest,
		"the request failed with status 400, no response to score: integer_above_max_value: Invalid 'top_logprobs': integer above maximum value."}, got[0])
	require.Equal(t, rej{7, "request-6", schemas.ReasonFailedRequest,
		"the request failed, no response to score: batch_expired: This request could not be executed before the completion window expired."}, got[1])
	require.Equal(t, rej{8, "request-7", schemas.ReasonFailedRequest, "the request failed with status 500, no response to score: no error message"}, got[2])
	require.Equal(t, rej{9, "request-8", schemas.ReasonMalformedJSON, `a batch output line (it has "custom_id") without "response" or "error"`}, got[3])
	require.Equal(t, rej{10, "request-9", schemas.ReasonMalformedJSON, `a batch output line whose "response" has no "body"`}, got[4])
}

// TestBatchOutputMissingBody: a 200 without a body, and a line with neither
// response nor error, are reported, not skipped.
func TestBatchOutputMissingBody(t *testing.T) {
	_, rejects := readAll(t, `{"id":"b","custom_id":"r1","response":{"status_code":200}}`+"\n"+`{"custom_id":"r2"}`, false)
	require.Len(t, rejects, 2)
	require.Equal(t, schemas.ReasonMalformedJSON, rejects[0].Reason)
	require.Contains(t, rejects[0].Err.Error(), `has no "body"`)
	require.Equal(t, "r2", rejects[1].ID)
	require.Contains(t, rejects[1].Err.Error(), `without "response" or "error"`)
}

// TestAPIErrorLines: a logged failed call ({"error": ...}) and a failed
// Responses API response are failed_request, with the error's message.
func TestAPIErrorLines(t *testing.T) {
	input := `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}` + "\n" +
		`{"id":"resp_2","object":"response","status":"failed","error":{"code":"server_error","message":"The model failed."},"output":[]}` + "\n" +
		`{"type":"response.failed","response":{"id":"resp_3","object":"response","status":"failed","error":{"code":"server_error","message":"boom"},"output":[]}}` + "\n" +
		`{"error":"upstream timeout"}`
	rows, rejects := readAll(t, input, false)
	require.Empty(t, rows)
	require.Len(t, rejects, 4)
	for _, r := range rejects {
		require.Equal(t, schemas.ReasonFailedRequest, r.Reason, r.Err.Error())
	}
	require.Equal(t, "an API error, not a response: rate_limit_exceeded: Rate limit reached", rejects[0].Err.Error())
	require.Equal(t, "resp_2", rejects[1].ID)
	require.Equal(t, "an API error, not a response: server_error: boom", rejects[2].Err.Error())
	require.Equal(t, "an API error, not a response: upstream timeout", rejects[3].Err.Error())
}
