package ingest

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/entrowatch/entrowatch/schemas"
)

// Streamed responses. With stream=true an OpenAI-compatible server (OpenAI,
// vLLM) sends a response as a series of server-sent events, each a
// chat.completion.chunk object whose choices carry the logprobs of the tokens
// in their delta, the last with a finish_reason. Streamed legacy completions
// are text_completion objects like whole ones, told apart by an explicit
// "finish_reason": null on every choice (or by an id whose stream is open).
//
// The Reader accepts those objects as lines, with or without the SSE framing
// ("data: {...}", "data: [DONE]", event:/id:/retry: and comment lines), and
// joins the chunks of one id, in input order, into one response: it becomes
// a row when every choice seen has its finish_reason. Streams of different
// ids may interleave. A stream still open at the end of the input, or pushed
// out by MaxOpenStreams, is rejected as incomplete. A chunk without choices
// (the usage chunk of stream_options.include_usage) adds nothing.

const (
	chunkObject  = "chat.completion.chunk"
	legacyObject = "text_completion"
)

// isChunk tells whether resp is one chunk of a streamed response.
func (r *Reader) isChunk(resp *response) bool {
	switch resp.Object {
	case chunkObject:
		return true
	case legacyObject:
		if _, open := r.streams[resp.ID]; open {
			return true
		}
		if len(resp.Choices) == 0 {
			return len(resp.Usage) > 0 // the usage chunk ending a stream
		}
		for _, ch := range resp.Choices {
			if !ch.Finish.set || ch.Finish.value != nil {
				return false
			}
		}
		return true
	}
	return false
}

// openStream gathers the chunks of one streamed response.
type openStream struct {
	firstLine, lastLine int64
	chunks              int
	object              string
	resp                response // top-level fields, first value wins
	choices             map[int]*streamChoice
}

type streamChoice struct {
	finish   *string
	content  []step
	logprobs bool // some chunk carried logprobs.content
	// legacy completions: token_logprobs and top_logprobs
	tokenLogprobs []*float64
	topLogprobs   []map[string]float64
	legacy        bool
}

// sseData unwraps a server-sent-events line: the payload of a data: line,
// and skip for lines that carry none (event:, id:, retry:, comments, [DONE]).
func sseData(line []byte) (payload []byte, skip bool) {
	if len(line) == 0 || line[0] == '{' {
		return line, false
	}
	if rest, ok := bytes.CutPrefix(line, []byte("data:")); ok {
		rest = bytes.TrimSpace(rest)
		return rest, len(rest) == 0 || string(rest) == "[DONE]"
	}
	for _, p := range []string{"event:", "id:", "retry:", ":"} {
		if bytes.HasPrefix(line, []byte(p)) {
			return nil, true
		}
	}
	return line, false
}

// addChunk files one chat.completion.chunk and returns the rows of the
// response it completes, if any.
func (r *Reader) addChunk(c *response) ([]row, *Reject) {
	if c.ID == "" {
		return nil, &Reject{Line: r.line, Reason: schemas.ReasonMalformedJSON,
			Err: fmt.Errorf(`%s without "id": the chunks of a streamed response are joined by id`, c.Object)}
	}
	if len(c.Choices) == 0 {
		return nil, nil
	}
	if r.streams == nil {
		r.streams = map[string]*openStream{}
	}
	s := r.streams[c.ID]
	if s == nil {
		if len(r.streams) >= r.cfg.MaxOpenStreams {
			r.rejectOldestStream()
		}
		s = &openStream{firstLine: r.line, object: c.Object, resp: response{ID: c.ID}, choices: map[int]*streamChoice{}}
		r.streams[c.ID] = s
	}
	s.lastLine = r.line
	s.chunks++
	s.resp.merge(c)
	for _, ch := range c.Choices {
		sc := s.choices[ch.Index]
		if sc == nil {
			sc = &streamChoice{}
			s.choices[ch.Index] = sc
		}
		if lp := ch.Logprobs; lp != nil {
			if lp.Content != nil || lp.Refusal != nil {
				sc.logprobs = true
				sc.content = append(append(sc.content, derefSteps(lp.Content)...), derefSteps(lp.Refusal)...)
			}
			if lp.TokenLogprobs != nil {
				sc.legacy = true
				sc.tokenLogprobs = append(sc.tokenLogprobs, *lp.TokenLogprobs...)
				sc.topLogprobs = append(sc.topLogprobs, lp.TopLogprobs...)
			}
		}
		if f := ch.Finish.value; f != nil && *f != "" {
			sc.finish = f
		}
	}
	for _, sc := range s.choices {
		if sc.finish == nil {
			return nil, nil
		}
	}
	delete(r.streams, c.ID)
	resp := s.resp
	for _, i := range slices.Sorted(maps.Keys(s.choices)) {
		sc := s.choices[i]
		ch := choice{Index: i, Finish: optString{set: true, value: sc.finish}}
		switch {
		case sc.logprobs:
			content := sc.content
			ch.Logprobs = &logprobs{Content: &content}
		case sc.legacy:
			tl := sc.tokenLogprobs
			ch.Logprobs = &logprobs{TokenLogprobs: &tl, TopLogprobs: sc.topLogprobs}
		}
		resp.Choices = append(resp.Choices, ch)
	}
	rows, err := resp.toRows(r.cfg)
	if err != nil {
		return nil, &Reject{Line: r.line, ID: c.ID, Reason: reasonOf(err), Err: err}
	}
	return rows, nil
}

// merge takes c's top-level fields that s does not have yet.
func (s *response) merge(c *response) {
	setString(&s.Model, c.Model)
	setString(&s.Provider, c.Provider)
	setString(&s.LogprobsMode, c.LogprobsMode)
	if s.Created == "" {
		s.Created = c.Created
	}
	if s.Temperature == nil {
		s.Temperature = c.Temperature
	}
	if s.TopP == nil {
		s.TopP = c.TopP
	}
	if s.Sampling == nil {
		s.Sampling = c.Sampling
	}
	if s.Domain == nil {
		s.Domain = c.Domain
	}
	if len(s.Prompt) == 0 || string(s.Prompt) == "null" {
		s.Prompt = append(s.Prompt[:0], c.Prompt...)
	}
	if len(s.Attributes) == 0 {
		s.Attributes = c.Attributes
	}
	if len(s.Correct) == 0 || string(s.Correct) == "null" {
		s.Correct = append(s.Correct[:0], c.Correct...)
	}
}

func setString(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// rejectOldestStream rejects, as incomplete, the open stream that started first.
func (r *Reader) rejectOldestStream() {
	var oldest string
	for id, s := range r.streams {
		if oldest == "" || s.firstLine < r.streams[oldest].firstLine {
			oldest = id
		}
	}
	r.rejectStream(oldest, fmt.Sprintf("more than %d streamed responses open at once (ingest max_open_streams)", r.cfg.MaxOpenStreams))
}

// rejectOpenStreams rejects every stream still open, oldest first (at the end
// of the input).
func (r *Reader) rejectOpenStreams() {
	ids := slices.SortedFunc(maps.Keys(r.streams), func(a, b string) int {
		return cmp.Compare(r.streams[a].firstLine, r.streams[b].firstLine)
	})
	for _, id := range ids {
		r.rejectStream(id, "the input ended")
	}
}

func (r *Reader) rejectStream(id, why string) {
	s := r.streams[id]
	delete(r.streams, id)
	r.rejects = append(r.rejects, Reject{Line: s.lastLine, ID: id, Reason: schemas.ReasonIncomplete,
		Err: fmt.Errorf("streamed response (%d %s objects, lines %d-%d) has no finish_reason: %s before its last chunk",
			s.chunks, s.object, s.firstLine, s.lastLine, why)})
}
