package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/entrowatch/entrowatch/schemas"
)

// OpenAI's Responses API (POST /v1/responses, object "response"). With
// include: ["message.output_text.logprobs"] and top_logprobs: 20, each
// output_text part of a message item carries logprobs[] of {token, logprob,
// top_logprobs[]}, the same steps as chat completions. A response becomes one
// row: the logprobs of all its output_text parts in order (reasoning and tool
// call items carry none). finish_reason is "stop" for status completed, the
// incomplete_details reason (e.g. max_output_tokens) for incomplete, else the
// status. Streamed (stream=true), the response.completed and
// response.incomplete events carry the whole response and are read as one;
// the other response.* events (deltas) add nothing. created_at is the time;
// metadata (the caller's key-value pairs) are the attributes unless the
// line has its own; the API's "prompt" (a prompt-template reference object)
// is not prompt text and is dropped.

const responseObject = "response"

type outputItem struct {
	Type    string       `json:"type"`
	Content []outputPart `json:"content"`
}

type outputPart struct {
	Type     string  `json:"type"`
	Logprobs *[]step `json:"logprobs"`
}

type incompleteDetails struct {
	Reason string `json:"reason"`
}

// streamEvent reports whether resp is a Responses API stream event, and the
// response it carries, if any; a final event without its response is an error.
func (resp *response) streamEvent() (carried *response, isEvent bool, err error) {
	if !strings.HasPrefix(resp.Type, "response.") && resp.Type != "error" {
		return nil, false, nil
	}
	switch resp.Type {
	case "error": // the Responses API's stream error event
		return nil, true, &reasonError{schemas.ReasonFailedRequest, fmt.Errorf("an error event of a streamed response, no response to score: %s", eventError(resp))}
	case "response.completed", "response.incomplete", "response.failed":
		if resp.Response == nil {
			return nil, true, fmt.Errorf(`%s event without its "response"`, resp.Type)
		}
		return resp.Response, true, nil
	}
	return nil, true, nil
}

// asChoice turns a Responses API response into the one choice it amounts to.
func (resp *response) asChoice() (choice, error) {
	if resp.Output == nil {
		return choice{}, errors.New(`a "response" object without "output"`)
	}
	finish := resp.Status
	switch {
	case resp.Status == "completed":
		finish = "stop"
	case resp.IncompleteDetails != nil && resp.IncompleteDetails.Reason != "":
		finish = resp.IncompleteDetails.Reason
	}
	var content []step
	found := false
	for _, item := range resp.Output {
		if item.Type != "message" {
			continue
		}
		for _, part := range item.Content {
			if part.Type == "output_text" && part.Logprobs != nil && len(*part.Logprobs) > 0 {
				found = true
				content = append(content, *part.Logprobs...)
			}
		}
	}
	ch := choice{Index: 0, Finish: optString{set: true, value: &finish}}
	if found {
		ch.Logprobs = &logprobs{Content: &content}
	}
	return ch, nil
}

// adoptResponsesFields maps the Responses API's top-level fields onto the
// ones rows are built from.
func (resp *response) adoptResponsesFields() {
	if resp.Created == "" {
		resp.Created = resp.CreatedAt
	}
	if len(resp.Attributes) == 0 && len(resp.Metadata) > 0 {
		resp.Attributes = resp.Metadata
	}
	if p := bytes.TrimSpace(resp.Prompt); len(p) > 0 && p[0] == '{' {
		resp.Prompt = nil
	}
}

// eventError is the code and message of an "error" event.
func eventError(resp *response) string {
	parts := []string{}
	if c := strings.Trim(string(bytes.TrimSpace(resp.Code)), `"`); c != "" && c != "null" {
		parts = append(parts, c)
	}
	if resp.Message != "" {
		parts = append(parts, resp.Message)
	}
	if len(parts) == 0 {
		return "no message"
	}
	return clip(strings.Join(parts, ": "))
}
