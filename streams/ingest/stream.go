package ingest

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"

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
// out by MaxOpenStreams or MaxHeldSteps (the one that started first goes), is
// rejected as incomplete. A choice that grows past MaxSteps steps is rejected
// as too_long: its steps are dropped at once and its further chunks add
// nothing, so an endless stream holds at most MaxSteps steps. A chunk
// without choices (the usage chunk of stream_options.include_usage) adds
// nothing; Azure OpenAI's content-filter events are skipped before
// they reach a stream (filterEvent). A choice that opens a completed stream
// again is named <id>/<index> (finished).

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
	id                  string
	firstLine, lastLine int64
	chunks              int
	object              string
	resp                response // top-level fields, first value wins
	choices             map[int]*streamChoice
	held                int         // logprobs held by its choices
	older, newer        *openStream // the Reader's list of open streams, in the order they started
	// earlier are the choice indices of a stream of the same id that
	// completed before this one opened (see finished).
	earlier map[int]bool
}

// finished remembers the choice indices of the last MaxOpenStreams streams
// that completed. With n > 1 a choice may finish before another's first
// chunk comes (a one-token answer): the stream completes with the choices
// seen, and the later choice opens it again. Such a choice, with an index
// not seen before, is named <id>/<index> like every choice of a response
// with several; a stream of the same id repeating an index it had (the same
// response logged twice) keeps the id, as a repeat.
type finished struct {
	choices map[string]map[int]bool
	order   []string // ring of the ids in choices, oldest at next
	next    int
}

func (f *finished) add(id string, idx map[int]bool, most int) {
	if f.choices == nil {
		f.choices = map[string]map[int]bool{}
	}
	if old, ok := f.choices[id]; ok {
		maps.Copy(old, idx)
		return
	}
	if len(f.order) < most {
		f.order = append(f.order, id)
	} else {
		delete(f.choices, f.order[f.next])
		f.order[f.next] = id
		f.next = (f.next + 1) % most
	}
	f.choices[id] = maps.Clone(idx)
}

type streamChoice struct {
	finish *string
	joinedSteps
	tooLong bool // more than MaxSteps steps: its steps were dropped, its further chunks are ignored
}

// joinedSteps are the logprobs of a streamed choice, decoded and flat:
// step t's alternatives are alts[ends[t-1]:ends[t]] (ends[-1] = 0).
type joinedSteps struct {
	logprobs bool // some chunk carried logprobs.content or .refusal
	legacy   bool // some chunk carried token_logprobs
	chosen   []float64
	alts     []float64
	ends     []int
	// legacy completions: whether the first token_logprob and the first
	// top_logprobs were null (echo=true)
	nullToken, nullTop bool
}

// add appends the steps of one chunk.
func (j *joinedSteps) add(lp *logprobs) {
	if lp.Content != nil || lp.Refusal != nil {
		j.logprobs = true
		for _, steps := range []*[]step{lp.Content, lp.Refusal} {
			for _, st := range derefSteps(steps) {
				j.chosen = append(j.chosen, valueOf(st.Logprob))
				for _, a := range st.TopLogprobs {
					j.alts = append(j.alts, valueOf(a.Logprob))
				}
				j.ends = append(j.ends, len(j.alts))
			}
		}
	}
	if lp.TokenLogprobs != nil {
		if !j.legacy {
			j.nullToken = len(*lp.TokenLogprobs) > 0 && (*lp.TokenLogprobs)[0] == nil
			j.nullTop = len(lp.TopLogprobs) > 0 && lp.TopLogprobs[0] == nil
		}
		j.legacy = true
		for _, v := range *lp.TokenLogprobs {
			j.chosen = append(j.chosen, valueOf(v))
		}
		for _, m := range lp.TopLogprobs {
			from := len(j.alts)
			for _, v := range m {
				j.alts = append(j.alts, v)
			}
			// Most probable first, as for whole legacy responses.
			slices.SortFunc(j.alts[from:], func(a, b float64) int { return cmp.Compare(b, a) })
			j.ends = append(j.ends, len(j.alts))
		}
	}
}

// numSteps is the number of steps gathered.
func (j *joinedSteps) numSteps() int { return max(len(j.chosen), len(j.ends)) }

// values is the number of logprobs held.
func (j *joinedSteps) values() int { return len(j.chosen) + len(j.alts) }

// steps fills r with the joined steps, as choice.steps does for a whole response.
func (j *joinedSteps) steps(r *row) error {
	switch {
	case !j.logprobs && !j.legacy:
		r.noLogprobs = true
		return nil
	case j.legacy && !j.logprobs && len(j.ends) == 0 && len(j.chosen) > 0:
		return errNoLegacyTop()
	case len(j.chosen) != len(j.ends):
		return fmt.Errorf("legacy logprobs: %d token_logprobs but %d top_logprobs", len(j.chosen), len(j.ends))
	case j.legacy && !j.logprobs && j.nullToken && j.nullTop:
		return errEcho()
	}
	r.chosen = j.chosen
	r.top = make([][]float64, len(j.ends))
	from := 0
	for t, end := range j.ends {
		r.top[t] = j.alts[from:end:end]
		from = end
	}
	return nil
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
			r.rejectStream(r.oldest, fmt.Sprintf("more than %d streamed responses open at once (ingest max_open_streams)", r.cfg.MaxOpenStreams))
		}
		s = &openStream{id: c.ID, firstLine: r.line, object: c.Object, resp: response{ID: c.ID}, choices: map[int]*streamChoice{},
			earlier: r.finished.choices[c.ID]}
		r.streams[c.ID] = s
		r.link(s)
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
		if lp := ch.Logprobs; lp != nil && !sc.tooLong {
			held := sc.values()
			sc.add(lp)
			if sc.numSteps() > r.cfg.MaxSteps {
				sc.tooLong = true
				sc.joinedSteps = joinedSteps{} // its steps are not needed to reject it
			}
			s.held += sc.values() - held
			r.held += sc.values() - held
		}
		if f := ch.Finish.value; f != nil && *f != "" {
			sc.finish = f
		}
	}
	for _, sc := range s.choices {
		if sc.finish == nil {
			for r.held > r.cfg.MaxHeldSteps*valuesPerStep && r.oldest != nil {
				r.rejectStream(r.oldest, fmt.Sprintf("the open streamed responses held more than %d steps of logprobs (ingest max_held_steps), and this one started first",
					r.cfg.MaxHeldSteps))
			}
			return nil, nil
		}
	}
	r.closeStream(s)
	resp := s.resp
	resp.multi = len(s.choices) > 1 || s.laterChoices()
	idx := make(map[int]bool, len(s.choices))
	for i := range s.choices {
		idx[i] = true
	}
	r.finished.add(s.id, idx, r.cfg.MaxOpenStreams)
	for _, i := range slices.Sorted(maps.Keys(s.choices)) {
		sc := s.choices[i]
		if sc.tooLong {
			id := c.ID
			if resp.multi {
				id += "/" + strconv.Itoa(i)
			}
			r.rejects = append(r.rejects, Reject{Line: r.line, ID: id, Reason: schemas.ReasonTooLong,
				Err: fmt.Errorf("streamed response (%d %s objects, lines %d-%d): %s", s.chunks, s.object, s.firstLine, s.lastLine, r.tooLong(i))})
			continue
		}
		resp.Choices = append(resp.Choices, choice{Index: i, Finish: optString{set: true, value: sc.finish}, joined: &sc.joinedSteps})
	}
	if len(resp.Choices) == 0 {
		return nil, nil
	}
	rows, err := resp.toRows(r.cfg)
	if err != nil {
		return nil, &Reject{Line: r.line, ID: c.ID, Reason: reasonOf(err), Err: err}
	}
	return rows, nil
}

// laterChoices reports whether s holds choices of a response whose other
// choices completed before s opened: none of its indices was seen then.
func (s *openStream) laterChoices() bool {
	if len(s.earlier) == 0 {
		return false
	}
	for i := range s.choices {
		if s.earlier[i] {
			return false
		}
	}
	return true
}

// valuesPerStep is what a step of MaxHeldSteps holds: the chosen token's
// logprob and 20 alternatives.
const valuesPerStep = 21

func (r *Reader) tooLong(choice int) string {
	return fmt.Sprintf("choice %d has more than %d steps (the --max-steps of entrowatch score and entrowatch ingest; run's ingest.max_steps); its steps were dropped unscored",
		choice, r.cfg.MaxSteps)
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

// link appends s to the list of open streams (it started last).
func (r *Reader) link(s *openStream) {
	s.older = r.newest
	if r.newest != nil {
		r.newest.newer = s
	} else {
		r.oldest = s
	}
	r.newest = s
}

// closeStream forgets s: it is complete or rejected.
func (r *Reader) closeStream(s *openStream) {
	delete(r.streams, s.id)
	if s.older != nil {
		s.older.newer = s.newer
	} else {
		r.oldest = s.newer
	}
	if s.newer != nil {
		s.newer.older = s.older
	} else {
		r.newest = s.older
	}
	s.older, s.newer = nil, nil
	r.held -= s.held
}

// rejectOpenStreams rejects every stream still open, oldest first (at the end
// of the input).
func (r *Reader) rejectOpenStreams() {
	for r.oldest != nil {
		r.rejectStream(r.oldest, "the input ended")
	}
}

// rejectStream rejects s, which is open: as too_long when a choice of it
// grew past MaxSteps, else as incomplete.
func (r *Reader) rejectStream(s *openStream, why string) {
	r.closeStream(s)
	what := fmt.Sprintf("streamed response (%d %s objects, lines %d-%d)", s.chunks, s.object, s.firstLine, s.lastLine)
	for _, i := range slices.Sorted(maps.Keys(s.choices)) {
		if s.choices[i].tooLong {
			r.rejects = append(r.rejects, Reject{Line: s.lastLine, ID: s.id, Reason: schemas.ReasonTooLong,
				Err: fmt.Errorf("%s: %s; nor did it finish: %s before its last chunk", what, r.tooLong(i), why)})
			return
		}
	}
	r.rejects = append(r.rejects, Reject{Line: s.lastLine, ID: s.id, Reason: schemas.ReasonIncomplete,
		Err: fmt.Errorf("%s has no finish_reason: %s before its last chunk", what, why)})
}
