package ingest

import (
	"bytes"
	"errors"
	"fmt"
	json "github.com/goccy/go-json"
	"strings"

	"github.com/entrowatch/entrowatch/schemas"
)

// Batch output files: OpenAI's Batch API, and vLLM's run-batch, which writes
// the same shape, return one line per request:
//
//	{"id": "batch_req_..", "custom_id": "request-1",
//	 "response": {"status_code": 200, "request_id": "..", "body": {<the response>}},
//	 "error": null}
//
// The body is read like any other response. The row's trace_id is the
// custom_id, the key the caller chose to pair outputs with requests (and so
// labels with rows); the body's own id is used only when custom_id is empty.
// Extra fields (domain, prompt, attributes, correct, ...) may sit on the line
// or in the body; the line's win.

// batchOutput reports whether resp is a batch output line and, if so,
// returns the response its body holds, or why there is none.
func (resp *response) batchOutput() (body *response, isBatch bool, err error) {
	if resp.CustomID == nil {
		return nil, false, nil
	}
	if msg, failed := errorMessage(resp.Error); failed {
		return nil, true, &reasonError{schemas.ReasonFailedRequest, fmt.Errorf("the request failed, no response to score: %s", msg)}
	}
	r := resp.Response
	if r == nil {
		return nil, true, errors.New(`a batch output line (it has "custom_id") without "response" or "error"`)
	}
	if r.StatusCode != nil && *r.StatusCode != 200 {
		msg := "no error message"
		if r.Body != nil {
			if m, failed := errorMessage(r.Body.Error); failed {
				msg = m
			}
		}
		return nil, true, &reasonError{schemas.ReasonFailedRequest, fmt.Errorf("the request failed with status %d, no response to score: %s", *r.StatusCode, msg)}
	}
	b := r.Body
	if b == nil {
		return nil, true, errors.New(`a batch output line whose "response" has no "body"`)
	}
	if msg, failed := b.failed(); failed {
		return nil, true, &reasonError{schemas.ReasonFailedRequest, fmt.Errorf("the request failed, no response to score: %s", msg)}
	}
	if *resp.CustomID != "" {
		b.ID = *resp.CustomID
	}
	if resp.Domain != nil {
		b.Domain = resp.Domain
	}
	if len(resp.Prompt) > 0 {
		b.Prompt = resp.Prompt
	}
	if len(resp.Attributes) > 0 {
		b.Attributes = resp.Attributes
	}
	if len(resp.Correct) > 0 {
		b.Correct = resp.Correct
	}
	if resp.Provider != "" {
		b.Provider = resp.Provider
	}
	if resp.LogprobsMode != "" {
		b.LogprobsMode = resp.LogprobsMode
	}
	if resp.Temperature != nil {
		b.Temperature = resp.Temperature
	}
	if resp.TopP != nil {
		b.TopP = resp.TopP
	}
	if resp.Sampling != nil {
		b.Sampling = resp.Sampling
	}
	return b, true, nil
}

// failed reports whether resp is an API error rather than a response: an
// "error" object and nothing generated ({"error": {...}} as an SDK logs a
// failed call, or a Responses API object whose status is "failed").
func (resp *response) failed() (string, bool) {
	msg, isErr := errorMessage(resp.Error)
	if !isErr || len(resp.Choices) > 0 {
		return "", false
	}
	for _, item := range resp.Output {
		for _, part := range item.Content {
			if part.Logprobs != nil && len(*part.Logprobs) > 0 {
				return "", false
			}
		}
	}
	return msg, true
}

// errorMessage reads an API error ({"message": .., "code": .., "type": ..},
// or a bare string) for a report; null, absent or empty is no error.
func errorMessage(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" || string(raw) == "{}" || string(raw) == `""` {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return clip(s), true
	}
	var e struct {
		Message string `json:"message"`
		Code    any    `json:"code"`
		Type    string `json:"type"`
	}
	if json.Unmarshal(raw, &e) != nil {
		return clip(string(raw)), true
	}
	var parts []string
	if e.Code != nil && fmt.Sprint(e.Code) != "" {
		parts = append(parts, fmt.Sprint(e.Code))
	} else if e.Type != "" {
		parts = append(parts, e.Type)
	}
	if e.Message != "" {
		parts = append(parts, e.Message)
	}
	if len(parts) == 0 {
		return clip(string(raw)), true
	}
	return clip(strings.Join(parts, ": ")), true
}

// clip bounds a message quoted from the input.
func clip(s string) string {
	const max = 300
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "..."
}

// filterEvent reports whether resp is an event of Azure OpenAI's content
// filter rather than a response or a chunk of one: the prompt filter's
// results before a stream ("choices": [] and prompt_filter_results), or an
// annotation of the asynchronous filter (every choice carries only
// content_filter_offsets: no delta, no logprobs, no finish_reason). Such an
// annotation may carry the stream's own id after its last chunk: it must
// not open the stream again.
func (resp *response) filterEvent() bool {
	if len(resp.Choices) == 0 {
		return len(resp.PromptFilterResults) > 0 && resp.Output == nil
	}
	for _, ch := range resp.Choices {
		if len(ch.ContentFilterOffsets) == 0 || ch.Logprobs != nil || len(ch.Delta) > 0 || ch.Finish.value != nil {
			return false
		}
	}
	return true
}
