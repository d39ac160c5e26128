// Package ingest adapts what LLM servers return to trace.v1 record batches.
//
// It reads JSON Lines of OpenAI-compatible responses, one response object per
// line, in the shapes real servers produce:
//   - chat completions: choices[].logprobs.content[] with logprob and top_logprobs;
//   - legacy completions: choices[].logprobs.{token_logprobs, top_logprobs} with
//     top_logprobs as token->logprob maps;
//   - vLLM's variants: 21 alternatives (the sampled token appended), -9999 for
//     -inf, fewer alternatives than requested, and Python's NaN/Infinity literals.
//
// Streamed responses (chat.completion.chunk objects, or legacy text_completion
// chunks with an explicit "finish_reason": null, with or without the
// server-sent-events framing) are joined by id, in input order, into one
// response, which becomes a row once every choice has its finish_reason. A
// stream still open at the end of the input is rejected as incomplete.
// OpenAI's Responses API objects (object "response") and their streamed
// response.completed events are read too; the delta events are skipped.
// Batch output files (OpenAI's Batch API, vLLM's run-batch) are unwrapped:
// the row is the body's, named by custom_id; a failed request, like any
// API error object, is rejected as failed_request (batch.go). The
// README of the repository ("Inputs it understands") lists the shapes with
// examples.
//
// Extra top-level fields are kept: domain, prompt, attributes (object of
// strings), correct (label), provider, logprobs_mode, temperature and top_p
// (also read from a "sampling" object). A response with several choices
// becomes one row per choice, trace_id "<id>/<index>".
//
// Only lines that are not JSON objects of this shape are rejected here
// (reason malformed_json). Everything else becomes a row, and the profile
// operator judges its logprobs, so that the stream dead-letters bad responses
// with the same reasons as the offline scorer.
package ingest

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	json "github.com/goccy/go-json"
	"io"
	"maps"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/schemas"
)

// Config tunes the reader.
type Config struct {
	// BatchRows is the number of responses per record batch. Default 1024.
	BatchRows int `yaml:"batch_rows"`
	// MaxLineBytes bounds one JSON line; longer lines are rejected as
	// too_long and skipped, unread (a line that long holds tens of
	// thousands of steps, or a giant prompt). Default 64 MiB.
	MaxLineBytes int `yaml:"max_line_bytes"`
	// Float64 stores logprobs as float64 (schemas.Trace64) instead of trace.v1's
	// float32. Default false: float32 is what trace.v1 carries on the wire
	// (Kafka), and rounding the returned digits to float32 moves the features
	// by up to about 5e-8 relative. Set it for exact offline scoring (as
	// entrowatch score does): the features then match a float64 computation
	// on the returned digits to within about 1e-14 relative.
	Float64 bool `yaml:"float64"`
	// Provider is the provider written when a response names none. Default "openai".
	Provider string `yaml:"provider"`
	// LogprobsMode is the logprobs_mode written when a response names none.
	// Default "raw_logprobs".
	LogprobsMode string `yaml:"logprobs_mode"`
	// MaxOpenStreams bounds the streamed responses (chat.completion.chunk
	// objects) being joined at once; beyond it the one that started first is
	// rejected as incomplete. Default 10000.
	MaxOpenStreams int `yaml:"max_open_streams"`
	// MaxSteps is the most steps a choice of a streamed response may gather:
	// once it has more, its steps are dropped, its further chunks ignored,
	// and it is rejected as too_long. Set it to the profile's max_steps (the
	// longest trajectory scored; whole responses are left to the profile).
	// Default 32768, as profile's.
	MaxSteps int `yaml:"max_steps"`
	// MaxHeldSteps bounds the logprobs held over all open streams, in steps
	// of 21 logprobs (a chosen token and 20 alternatives; a step with more
	// alternatives counts as more than one); beyond it the streams that
	// started first are rejected as incomplete. At least MaxSteps. Default
	// 1000000 (about 170 MB).
	MaxHeldSteps int `yaml:"max_held_steps"`
	// MaxChoices is the most choices one response may have: each becomes a
	// row carrying the response's prompt and attributes, so a small body of
	// many choices and a long prompt would grow a thousandfold in memory.
	// A response with more, or whose rows would hold more than
	// MaxLineBytes in all, is rejected as too_long. Default 128 (the most
	// OpenAI's n allows).
	MaxChoices int `yaml:"max_choices"`
	// FlushIdle ends a batch early, holding what was read, when the input
	// has given nothing more for this long: a live pipe (tail -f | entrowatch
	// ingest --in -) then sends its responses as they come instead of
	// waiting for BatchRows of them; input that never pauses is handed over
	// at least every 5 x FlushIdle. The input is then read by a goroutine,
	// which a read blocked on standard input keeps until the process ends.
	// 0 (the default): batches end at BatchRows, at the batch size limit, or
	// at the end of the input.
	FlushIdle time.Duration `yaml:"-"`
}

// DefaultConfig returns the documented defaults. Its logprobs are float32
// (trace.v1); set Float64 for exact offline scoring.
func DefaultConfig() Config {
	return Config{BatchRows: 1024, MaxLineBytes: 64 << 20, Provider: "openai", LogprobsMode: "raw_logprobs", MaxOpenStreams: 10000,
		MaxSteps: 32768, MaxHeldSteps: 1000000, MaxChoices: 128}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.BatchRows < 1 {
		return fmt.Errorf("ingest.batch_rows must be at least 1, got %d", c.BatchRows)
	}
	if c.MaxLineBytes < 1024 {
		return fmt.Errorf("ingest.max_line_bytes must be at least 1024, got %d", c.MaxLineBytes)
	}
	if c.MaxOpenStreams < 1 {
		return fmt.Errorf("ingest.max_open_streams must be at least 1, got %d", c.MaxOpenStreams)
	}
	if c.MaxSteps < 1 {
		return fmt.Errorf("ingest.max_steps must be at least 1, got %d", c.MaxSteps)
	}
	if c.MaxHeldSteps < c.MaxSteps {
		return fmt.Errorf("ingest.max_held_steps must be at least max_steps (%d), got %d", c.MaxSteps, c.MaxHeldSteps)
	}
	if c.MaxChoices < 1 {
		return fmt.Errorf("ingest.max_choices must be at least 1, got %d", c.MaxChoices)
	}
	if c.FlushIdle < 0 {
		return fmt.Errorf("the idle flush time must be 0 (off) or positive, got %v", c.FlushIdle)
	}
	return nil
}

// Reject is a line that could not be turned into a row.
type Reject struct {
	Line int64  // 1-based line number in the input
	ID   string // response id when it could be read
	// Reason is one of:
	//   - schemas.ReasonMalformedJSON: the line is not a JSON object of a
	//     known shape, lacks "id" or "choices",
	//     repeats a choice index, has a "created" that is not a time between
	//     2000 and 2100 in Unix seconds or milliseconds, or carries a label
	//     ("correct") that is not one (true/false, 1/0, or a string such as
	//     "yes"/"no": the spellings a labelled CSV's correct column takes);
	//   - schemas.ReasonFailedRequest: an API error instead of a response (a
	//     batch output line with an error or a status other than 200, a
	//     logged {"error": ...}, a failed Responses API response);
	//   - schemas.ReasonIncomplete: a streamed response whose finish_reason
	//     never came before the input ended, or pushed out by MaxOpenStreams
	//     or MaxHeldSteps;
	//   - schemas.ReasonTooLong: a line longer than MaxLineBytes, or a choice
	//     of a streamed response with more than MaxSteps steps;
	//   - schemas.ReasonNaNLogprob: a legacy completion made with echo=true,
	//     whose logprobs begin with the prompt's first token (null).
	// Every other problem with logprobs is left to the profile operator.
	Reason string
	Err    error // what was wrong, for people
}

// reasonError is a response that parses but cannot be scored for a reason
// more precise than malformed_json, e.g. logprobs of an echoed prompt.
type reasonError struct {
	reason string
	err    error
}

func (e *reasonError) Error() string { return e.err.Error() }
func (e *reasonError) Unwrap() error { return e.err }

// reasonOf is the reject reason of an error from toRows.
func reasonOf(err error) string {
	if re, ok := errors.AsType[*reasonError](err); ok {
		return re.reason
	}
	return schemas.ReasonMalformedJSON
}

// Reader turns JSON Lines into trace.v1 batches: schemas.Trace (float32
// logprobs, as on the wire) by default, schemas.Trace64 with Config.Float64,
// which is the one to use for exact offline scoring. Every row is a whole
// response: seq 0, final true. Not safe for concurrent use.
type Reader struct {
	cfg      Config
	err      error // sticky: an invalid Config, or use after Release
	lr       *lineReader
	b        *builder
	line     int64
	rejects  []Reject
	rowLines []int64
	done     bool
	scratch  []byte
	streams  map[string]*openStream // streamed responses being joined, by id
	oldest   *openStream            // the open streams in the order they started, oldest first
	newest   *openStream
	held     int // logprobs held by the open streams
	pretty   prettyObject
	finished finished
	// batchBytes estimates what the batch being built holds (row.bytes).
	batchBytes int
	idle       *idleReader // with FlushIdle: its goroutine is stopped by Release
}

// NewReader reads responses from r. An invalid cfg (see Validate) is
// reported by the first call to Next, and by every one after it; start from
// DefaultConfig. A nil mem means memory.DefaultAllocator. Call Release when
// done with the reader.
func NewReader(r io.Reader, cfg Config, mem memory.Allocator) *Reader {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	nilReader := r == nil
	if nilReader {
		r = bytes.NewReader(nil) // Next reports the error before reading
	}
	var idle *idleReader
	if cfg.FlushIdle > 0 {
		idle = newIdleReader(r, cfg.FlushIdle)
		r = idle
	}
	rd := &Reader{cfg: cfg, lr: newLineReader(r, cfg.MaxLineBytes), b: newBuilder(mem, cfg.Float64), idle: idle}
	if err := cfg.Validate(); err != nil {
		rd.err = fmt.Errorf("ingest: invalid reader config: %w (start from ingest.DefaultConfig() and change the fields you need)", err)
	}
	if nilReader {
		rd.err = errors.New("ingest: NewReader of a nil io.Reader")
	}
	return rd
}

var errReleased = errors.New("ingest: Next called after Release: the reader's buffers are freed; make a new Reader with NewReader")

// Schema is the schema of the batches Next returns.
func (r *Reader) Schema() *arrow.Schema {
	if r.cfg.Float64 {
		return schemas.Trace64
	}
	return schemas.Trace
}

// maxRejectsPerNext bounds the rejects one Next call gathers: a long run of
// lines that are all rejected ends the call early (with a batch of fewer
// rows, possibly none), so memory stays bounded by this many rejects rather
// than by the input.
const maxRejectsPerNext = 4096

// Next returns the next batch of up to BatchRows rows, or io.EOF. Rejects and
// RowLines describe the lines consumed by this call. The batch may have fewer
// rows, even none, when a run of more than 4096 rejected lines ended the call
// early; callers release it like any other and call Next again.
//
// The batch belongs to the caller, who must Release it; it does not depend on
// the Reader and stays valid after later calls to Next and after
// Reader.Release. An error other than io.EOF (a read error, an invalid
// Config, use after Release) comes with a nil batch.
func (r *Reader) Next() (arrow.RecordBatch, error) {
	r.rejects = r.rejects[:0]
	r.rowLines = r.rowLines[:0]
	if r.err != nil {
		return nil, r.err
	}
	r.batchBytes = 0
	for !r.done && r.b.rows < r.cfg.BatchRows && r.batchBytes < maxBatchBytes && len(r.rejects) < maxRejectsPerNext {
		raw, err := r.lr.next()
		if errors.Is(err, io.EOF) && r.pretty.on {
			r.endPretty() // the input ended inside an object: it is reported, as malformed_json
		}
		if errors.Is(err, errIdle) {
			if r.b.rows > 0 || len(r.rejects) > 0 {
				break // the input paused: hand over what was read (Config.FlushIdle)
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			r.done = true
			r.rejectOpenStreams()
			break
		}
		r.line++
		if errors.Is(err, errLineTooLong) {
			r.rejects = append(r.rejects, Reject{Line: r.line, ID: peekID(raw), Reason: schemas.ReasonTooLong,
				Err: fmt.Errorf("line longer than %d bytes (ingest max_line_bytes); skipped", r.cfg.MaxLineBytes)})
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading line %d: %w", r.line, err)
		}
		if r.pretty.on && r.gatherPretty(trimLine(raw)) {
			continue
		}
		line, skip := sseData(trimLine(raw))
		if skip || len(line) == 0 {
			continue
		}
		if len(line) == 1 && line[0] == '{' {
			r.pretty = prettyObject{on: true, start: r.line}
			r.gatherPretty(line)
			continue
		}
		if err := r.addLine(line); err != nil {
			r.rejects = append(r.rejects, *err)
		}
	}
	if r.b.rows == 0 {
		if r.done {
			return nil, io.EOF
		}
	}
	return r.b.finish(), nil
}

// Rejects returns the lines rejected during the last Next call.
func (r *Reader) Rejects() []Reject { return r.rejects }

// RowLines returns, for each row of the last batch, its input line number.
func (r *Reader) RowLines() []int64 { return r.rowLines }

// Lines returns the number of lines read so far.
func (r *Reader) Lines() int64 { return r.line }

// Settled returns the line up to which every response read is settled:
// returned in a batch by Next, or rejected. The chunks of a streamed
// response still open (its final chunk not read yet) are not: Settled is
// then the line before its first chunk.
func (r *Reader) Settled() int64 {
	if r.oldest != nil {
		return r.oldest.firstLine - 1
	}
	return r.line
}

// Release frees the reader's builders; batches Next returned are not
// affected (their owners release them). Next after Release returns an error.
// Release may be called more than once. With FlushIdle, the goroutine that
// reads the input ends once its read in progress returns: close the input
// to end it at once.
func (r *Reader) Release() {
	if r.idle != nil {
		r.idle.stop()
	}
	if r.b == nil {
		return
	}
	r.b.release()
	r.b = nil
	r.err = errReleased
}

func (r *Reader) addLine(line []byte) *Reject {
	line, sanitized := r.sanitize(line)
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		return &Reject{Line: r.line, ID: peekID(line), Reason: schemas.ReasonMalformedJSON, Err: jsonError(err)}
	}
	if sanitized {
		resp.unsentinel()
	}
	if resp.filterEvent() {
		return nil // Azure's content-filter results: no response of their own
	}
	if body, isBatch, err := resp.batchOutput(); isBatch {
		if err != nil {
			return &Reject{Line: r.line, ID: *resp.CustomID, Reason: reasonOf(err), Err: err}
		}
		resp = *body
	}
	if carried, isEvent, err := resp.streamEvent(); isEvent {
		if err != nil {
			return &Reject{Line: r.line, Reason: reasonOf(err), Err: err}
		}
		if carried == nil {
			return nil // a delta or progress event of a streamed Responses API response
		}
		resp = *carried
	}
	if msg, failed := resp.failed(); failed {
		return &Reject{Line: r.line, ID: resp.ID, Reason: schemas.ReasonFailedRequest, Err: fmt.Errorf("an API error, not a response: %s", msg)}
	}
	var rows []row
	if r.isChunk(&resp) {
		var rej *Reject
		if rows, rej = r.addChunk(&resp); rej != nil {
			return rej
		}
	} else {
		var err error
		if rows, err = resp.toRows(r.cfg); err != nil {
			return &Reject{Line: r.line, ID: resp.ID, Reason: reasonOf(err), Err: err}
		}
	}
	for i := range rows {
		r.b.append(&rows[i])
		r.batchBytes += rows[i].bytes()
		r.rowLines = append(r.rowLines, r.line)
	}
	return nil
}

// maxBatchBytes ends a batch early when its rows hold this much: BatchRows
// rows of long prompts would otherwise be gigabytes.
const maxBatchBytes = 32 << 20

var errLineTooLong = errors.New("line too long")

// lineReader splits input into lines of at most max bytes; a longer line is
// skipped to its end and reported, and reading goes on after it.
type lineReader struct {
	br  *bufio.Reader
	max int
	buf []byte
	// resume: the last call returned errIdle in the middle of a line, whose
	// start buf holds (tooLong: it was already too long).
	resume, tooLong bool
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its newline. The slice is valid until
// the next call. At a too-long line it returns the line's first bytes and
// errLineTooLong.
//
// errIdle (from an idleReader) comes with no line: the part of a line read
// so far is kept, and the next call goes on with it.
func (l *lineReader) next() ([]byte, error) {
	if !l.resume {
		l.buf = l.buf[:0]
		l.tooLong = false
	}
	l.resume = false
	for {
		frag, err := l.br.ReadSlice('\n')
		if !l.tooLong {
			if len(l.buf)+len(frag) > l.max+1 {
				l.tooLong = true
				l.buf = append(l.buf, frag[:min(len(frag), 256)]...)
			} else {
				l.buf = append(l.buf, frag...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, errIdle):
			l.resume = true
			return nil, errIdle
		case err == nil:
			if l.tooLong {
				return l.buf, errLineTooLong
			}
			return l.buf[:len(l.buf)-1], nil
		case errors.Is(err, io.EOF):
			if l.tooLong {
				return l.buf, errLineTooLong
			}
			if len(l.buf) == 0 {
				return nil, io.EOF
			}
			return l.buf, nil
		default:
			return nil, err
		}
	}
}

// Python's json module writes NaN, Infinity and -Infinity as bare literals,
// which are not JSON; vLLM and many logging pipelines emit them. sanitize
// replaces them, outside strings, with numeric sentinels, which unsentinel
// maps back after decoding, in lines sanitize changed only. A number in
// such a line that equals a sentinel is moved one unit in the last place
// towards zero, so that no value the input holds is taken for a sentinel
// (7.0e307 stays a positive logprob, -8.0e307 a finite one).
const (
	nanSentinel    = 7.0e307
	posInfSentinel = 8.0e307
	negInfSentinel = -8.0e307
)

// numberByte marks the bytes of a JSON number.
var numberByte = func() (t [256]bool) {
	for _, c := range []byte("0123456789+-.eE") {
		t[c] = true
	}
	return t
}()

// sanitize returns line with Python's literals replaced, and whether it
// replaced any. The result is valid until the next call.
func (r *Reader) sanitize(line []byte) ([]byte, bool) {
	if !bytes.Contains(line, []byte("NaN")) && !bytes.Contains(line, []byte("Infinity")) {
		return line, false
	}
	out := r.scratch[:0]
	inStr, esc, replaced := false, false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		if inStr {
			out = append(out, c)
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch {
		case c == '"':
			inStr = true
		case bytes.HasPrefix(line[i:], []byte("NaN")):
			out = append(out, "7.0e307"...)
			i += 2
			replaced = true
			continue
		case bytes.HasPrefix(line[i:], []byte("-Infinity")):
			out = append(out, "-8.0e307"...)
			i += 8
			replaced = true
			continue
		case bytes.HasPrefix(line[i:], []byte("Infinity")):
			out = append(out, "8.0e307"...)
			i += 7
			replaced = true
			continue
		case c == '-' || c >= '0' && c <= '9':
			j := i + 1
			for j < len(line) && numberByte[line[j]] {
				j++
			}
			out = appendNumber(out, line[i:j])
			i = j - 1
			continue
		}
		out = append(out, c)
	}
	r.scratch = out
	return out, replaced
}

// appendNumber appends a number of the input, moved off the sentinels.
func appendNumber(out, num []byte) []byte {
	if len(num) < len("7e307") || !bytes.ContainsAny(num, "eE") && len(num) < 300 {
		return append(out, num...) // far too small to be a sentinel
	}
	v, err := strconv.ParseFloat(string(num), 64)
	if err != nil || v != nanSentinel && v != posInfSentinel && v != negInfSentinel {
		return append(out, num...)
	}
	return strconv.AppendFloat(out, math.Nextafter(v, 0), 'g', -1, 64)
}

func isSentinel(v float64) bool {
	return v == nanSentinel || v == posInfSentinel || v == negInfSentinel
}

func decodeFloat(v float64) float64 {
	switch v {
	case nanSentinel:
		return math.NaN()
	case posInfSentinel:
		return math.Inf(1)
	case negInfSentinel:
		return math.Inf(-1)
	}
	return v
}

// unsentinel maps the sentinels sanitize wrote back to NaN and ±Inf, in
// every number field that is read.
func (resp *response) unsentinel() {
	for _, p := range []*float64{resp.Temperature, resp.TopP} {
		unsentinelPtr(p)
	}
	if s := resp.Sampling; s != nil {
		unsentinelPtr(s.Temperature)
		unsentinelPtr(s.TopP)
	}
	for _, ch := range resp.Choices {
		lp := ch.Logprobs
		if lp == nil {
			continue
		}
		unsentinelSteps(lp.Content)
		unsentinelSteps(lp.Refusal)
		if lp.TokenLogprobs != nil {
			for _, p := range *lp.TokenLogprobs {
				unsentinelPtr(p)
			}
		}
		for _, m := range lp.TopLogprobs {
			for k, v := range m {
				m[k] = decodeFloat(v)
			}
		}
	}
	for _, item := range resp.Output {
		for _, part := range item.Content {
			unsentinelSteps(part.Logprobs)
		}
	}
	for _, n := range []*json.Number{&resp.Created, &resp.CreatedAt} {
		if v, err := n.Float64(); err == nil && isSentinel(v) {
			*n = json.Number(strconv.FormatFloat(decodeFloat(v), 'g', -1, 64)) // "NaN", "+Inf": rejected as times
		}
	}
	unsentinelAny(resp.Attributes)
	unsentinelAny(resp.Metadata)
	if resp.Response != nil {
		resp.Response.unsentinel()
	}
	if resp.Body != nil {
		resp.Body.unsentinel()
	}
}

func unsentinelPtr(p *float64) {
	if p != nil {
		*p = decodeFloat(*p)
	}
}

func unsentinelSteps(steps *[]step) {
	if steps == nil {
		return
	}
	for _, st := range *steps {
		unsentinelPtr(st.Logprob)
		for _, a := range st.TopLogprobs {
			unsentinelPtr(a.Logprob)
		}
	}
}

// unsentinelAny puts Python's literal, as text, where an attribute held one.
func unsentinelAny(v any) {
	lit := func(x any) any {
		f, ok := x.(float64)
		if !ok || !isSentinel(f) {
			return x
		}
		switch {
		case f == nanSentinel:
			return "NaN"
		case f == posInfSentinel:
			return "Infinity"
		}
		return "-Infinity"
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = lit(e)
			unsentinelAny(e)
		}
	case []any:
		for i, e := range x {
			x[i] = lit(e)
			unsentinelAny(e)
		}
	}
}

func jsonError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("not valid JSON at byte %d: %v", se.Offset, err)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" && te.Type == reflect.TypeFor[response]() {
			return fmt.Errorf("got JSON %s, want a response object: each line (or element of a JSON array) must be one "+
				"OpenAI-compatible response object {\"id\": ..., \"choices\": [...]}", te.Value)
		}
		if te.Type == reflect.TypeFor[json.Number]() {
			// Only created and created_at are numbers kept as text; the
			// decoder does not always say which.
			f := te.Field
			if f == "" {
				f = "created"
			}
			return fmt.Errorf("field %s: got JSON %s, want a number: Unix seconds (or milliseconds), e.g. 1760000000", f, te.Value)
		}
		return fmt.Errorf("field %s: got JSON %s, want %s", te.Field, te.Value, jsonKind(te.Type))
	}
	return err
}

// jsonKind names a Go type as the JSON a user would have to send.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a number"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "another JSON type"
}

// peekID finds the "id" of a line that failed to decode, for the report.
func peekID(line []byte) string {
	i := bytes.Index(line, []byte(`"id"`))
	if i < 0 {
		return ""
	}
	rest := bytes.TrimLeft(line[i+4:], " \t:")
	if len(rest) == 0 || rest[0] != '"' {
		return ""
	}
	if j := bytes.IndexByte(rest[1:], '"'); j >= 0 && j < 256 {
		return string(rest[1 : j+1])
	}
	return ""
}

// artifactFormat matches the start of an artifact entrowatch writes (train,
// cluster fit), capturing its format.
var artifactFormat = regexp.MustCompile(`^\s*\{\s*"format"\s*:\s*"(entrowatch\.[a-z]+\.v[0-9]+)"`)

// Open opens a file for NewReader, decompressing gzip (by content, not name)
// and turning a JSON array or pretty-printed objects into JSON Lines. "-" is
// standard input. An input that is not responses by its name or content is
// refused with an error saying what it is: a table (CSV, TSV; named so, or
// starting with a header line), an Arrow IPC file or stream
// (*ArrowInputError), an entrowatch artifact, a directory.
func Open(path string) (io.ReadCloser, error) { return OpenContext(context.Background(), path) }

// OpenContext is Open whose reads end once ctx is done (Ctrl-C, SIGTERM):
// from then on a read fails with ErrInterrupted, also one waiting for
// standard input or a pipe (see interruptible).
func OpenContext(ctx context.Context, path string) (io.ReadCloser, error) {
	var f *os.File
	if path == "-" {
		f = os.Stdin
	} else {
		var err error
		lower := strings.ToLower(path)
		if strings.HasSuffix(lower, ".csv") || strings.HasSuffix(lower, ".csv.gz") || strings.HasSuffix(lower, ".tsv") {
			return nil, errTable(path, "")
		}
		if f, err = os.Open(path); err != nil {
			return nil, err
		}
		if st, err := f.Stat(); err == nil && st.IsDir() {
			f.Close()
			return nil, fmt.Errorf("%s is a directory: give a file of responses", path)
		}
	}
	st, err := f.Stat()
	regular := path != "-" && err == nil && st.Mode().IsRegular()
	src := interruptible(ctx, regular, f)
	br := bufio.NewReaderSize(src, 1<<20)
	if regular {
		// Not on a pipe: a live stream of short lines would wait for 512 bytes.
		head, _ := br.Peek(512)
		if m := artifactFormat.FindSubmatch(head); m != nil {
			src.Close()
			flag := "--estimator"
			if bytes.Contains(m[1], []byte(".clusters.")) {
				flag = "--clusters"
			}
			return nil, fmt.Errorf("%s is an entrowatch artifact (format %s), not responses: give it with %s, and responses with --in", path, m[1], flag)
		}
	}
	in, closeIn := br, src.Close
	magic, _ := br.Peek(2)
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			src.Close()
			return nil, fmt.Errorf("%s: gzip: %w", path, err)
		}
		in = bufio.NewReaderSize(gzipErrors{zr, path}, 1<<20)
		// gzip.Reader.Close only returns again the error a Read returned
		// (a truncated or corrupt file): the reader of the input has it
		// already, and it was printed twice.
		closeIn = func() error { zr.Close(); return src.Close() }
	}
	// A table or an Arrow file, whatever its name (and gzip or not), is
	// one clear error rather than a malformed_json reject per line.
	if err := sniff(in, path); err != nil {
		closeIn()
		return nil, err
	}
	return readCloser{Framed(in), closeIn}, nil
}

// Framed returns r as JSON Lines: as is when it is JSON Lines, rewritten one
// value per line when it is a JSON array or pretty-printed objects (detected
// from the first bytes). What follows the array (more arrays, objects) is
// read too, a value per line.
func Framed(r io.Reader) io.Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 1<<20)
	}
	// A byte-order mark some editors write is not part of the JSON. Three
	// bytes are waited for only when the first is the mark's: a live stream
	// that sent "[\n" is not held.
	if b, _ := br.Peek(1); len(b) == 1 && b[0] == 0xef {
		if bom, _ := br.Peek(3); string(bom) == "\ufeff" {
			br.Discard(3)
		}
	}
	if detectFraming(br) != framedLines {
		return newReframer(br)
	}
	return br
}

// gzipErrors says what gzip's bare errors mean for a file of responses.
type gzipErrors struct {
	zr   *gzip.Reader
	path string
}

func (g gzipErrors) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = fmt.Errorf("%s: the gzip data ends abruptly (a truncated file, e.g. an interrupted copy or download): %w", g.path, err)
	case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader):
		err = fmt.Errorf("%s: the gzip data is corrupt: %w", g.path, err)
	}
	return n, err
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// response is the part of an OpenAI-compatible response entrowatch reads.
type response struct {
	ID           string          `json:"id"`
	Object       string          `json:"object"`
	Created      json.Number     `json:"created"`
	Model        string          `json:"model"`
	Provider     string          `json:"provider"`
	LogprobsMode string          `json:"logprobs_mode"`
	Temperature  *float64        `json:"temperature"`
	TopP         *float64        `json:"top_p"`
	Sampling     *sampling       `json:"sampling"`
	Domain       *string         `json:"domain"`
	Prompt       json.RawMessage `json:"prompt"`
	Attributes   map[string]any  `json:"attributes"`
	Correct      json.RawMessage `json:"correct"`
	Choices      []choice        `json:"choices"`
	Usage        json.RawMessage `json:"usage"`

	// Responses API (responses.go)
	CreatedAt         json.Number        `json:"created_at"`
	Output            []outputItem       `json:"output"`
	Status            string             `json:"status"`
	IncompleteDetails *incompleteDetails `json:"incomplete_details"`
	Metadata          map[string]any     `json:"metadata"`
	Type              string             `json:"type"`     // stream events
	Response          *response          `json:"response"` // in response.completed events; a batch output line's response (batch.go)
	Error             json.RawMessage    `json:"error"`    // an API error (batch.go)
	Message           string             `json:"message"`  // of a Responses API "error" event
	Code              json.RawMessage    `json:"code"`     // of a Responses API "error" event

	// Azure OpenAI's content filter: an event before a stream's chunks
	PromptFilterResults json.RawMessage `json:"prompt_filter_results"`

	// Batch output files (batch.go)
	CustomID   *string   `json:"custom_id"`
	StatusCode *int      `json:"status_code"`
	Body       *response `json:"body"`

	multi bool // name rows <id>/<index> even for one choice (a streamed response some of whose choices were rejected)
}

// optString is a JSON string that tells an explicit null (set, value nil)
// from a missing field (not set).
type optString struct {
	set   bool
	value *string
}

func (o *optString) UnmarshalJSON(b []byte) error {
	o.set = true
	if string(b) == "null" {
		o.value = nil
		return nil
	}
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	o.value = &v
	return nil
}

type sampling struct {
	Temperature *float64 `json:"temperature"`
	TopP        *float64 `json:"top_p"`
}

type choice struct {
	Index    int       `json:"index"`
	Finish   optString `json:"finish_reason"`
	Logprobs *logprobs `json:"logprobs"`
	// Azure OpenAI's asynchronous content filter annotates a stream with
	// chunks of its own: offsets, no delta, no logprobs.
	ContentFilterOffsets json.RawMessage `json:"content_filter_offsets"`
	Delta                json.RawMessage `json:"delta"`

	joined *joinedSteps // the steps of a streamed choice (stream.go), instead of Logprobs
}

type logprobs struct {
	// chat completions
	Content *[]step `json:"content"`
	// chat completions that refused (structured outputs): the refusal's tokens
	Refusal *[]step `json:"refusal"`
	// legacy completions
	TokenLogprobs *[]*float64          `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
}

type step struct {
	Logprob     *float64 `json:"logprob"`
	TopLogprobs []alt    `json:"top_logprobs"`
}

type alt struct {
	Logprob *float64 `json:"logprob"`
}

// createdMillis reads "created" (Unix seconds or milliseconds, see
// schemas.EpochMillis) as milliseconds since the epoch.
func createdMillis(n json.Number) (int64, error) {
	if v, err := n.Float64(); err == nil {
		if ms, ok := schemas.EpochMillis(v); ok {
			return ms, nil
		}
	}
	return 0, fmt.Errorf(`"created" is %s: created must be Unix seconds (or milliseconds) between 2000-01-01 and 2100-01-01, e.g. 1760000000`, n)
}

// row is one trace.v1 row before it is appended to the builder.
type row struct {
	traceID      string
	ts           int64 // ms since epoch
	model        string
	provider     string
	logprobsMode string
	temperature  float32
	topP         float32
	domain       *string
	prompt       *string
	attrKeys     []string
	attrVals     []string
	finish       string
	correct      *bool
	noLogprobs   bool
	chosen       []float64
	top          [][]float64
}

// sharedBytes is the size of what every row of a response repeats: prompt,
// attributes, domain, model and the other per-response strings.
func (r *row) sharedBytes() int {
	n := len(r.model) + len(r.provider) + len(r.logprobsMode) + 64
	if r.prompt != nil {
		n += len(*r.prompt)
	}
	if r.domain != nil {
		n += len(*r.domain)
	}
	for i := range r.attrKeys {
		n += len(r.attrKeys[i]) + len(r.attrVals[i])
	}
	return n
}

// bytes estimates what the row takes in a batch being built.
func (r *row) bytes() int {
	n := r.sharedBytes() + len(r.traceID) + len(r.finish) + 8*len(r.chosen)
	for _, t := range r.top {
		n += 8 * len(t)
	}
	return n
}

func (resp *response) toRows(cfg Config) ([]row, error) {
	if resp.Object == responseObject {
		ch, err := resp.asChoice()
		if err != nil {
			return nil, err
		}
		resp.Choices = []choice{ch}
		resp.adoptResponsesFields()
	}
	if len(resp.Choices) == 0 {
		return nil, errors.New(`no "choices": not an OpenAI-compatible response`)
	}
	base := row{
		model:        resp.Model,
		provider:     or(resp.Provider, cfg.Provider),
		logprobsMode: or(resp.LogprobsMode, cfg.LogprobsMode),
		temperature:  float32(math.NaN()),
		topP:         float32(math.NaN()),
		domain:       resp.Domain,
	}
	if resp.ID == "" {
		return nil, errors.New(`no "id": every response needs an id (the idempotency key)`)
	}
	if len(resp.ID) > schemas.MaxTraceIDBytes {
		return nil, fmt.Errorf(`"id" of %d bytes, more than the maximum %d: ids name responses in labels and queries`, len(resp.ID), schemas.MaxTraceIDBytes)
	}
	if resp.Created != "" {
		ms, err := createdMillis(resp.Created)
		if err != nil {
			return nil, err
		}
		base.ts = ms
	} else {
		base.ts = time.Now().UnixMilli()
	}
	if t := pick(resp.Temperature, resp.Sampling, func(s *sampling) *float64 { return s.Temperature }); t != nil {
		base.temperature = float32(*t)
	}
	if t := pick(resp.TopP, resp.Sampling, func(s *sampling) *float64 { return s.TopP }); t != nil {
		base.topP = float32(*t)
	}
	if p, err := textOf(resp.Prompt); err != nil {
		return nil, fmt.Errorf(`"prompt": %w`, err)
	} else {
		base.prompt = p
	}
	if len(resp.Attributes) > 0 {
		for _, k := range slices.Sorted(maps.Keys(resp.Attributes)) {
			base.attrKeys = append(base.attrKeys, k)
			base.attrVals = append(base.attrVals, attrString(resp.Attributes[k]))
		}
	}
	c, err := boolOf(resp.Correct)
	if err != nil {
		return nil, fmt.Errorf(`"correct": %w`, err)
	}
	base.correct = c

	if n := len(resp.Choices); n > cfg.MaxChoices {
		return nil, &reasonError{schemas.ReasonTooLong, fmt.Errorf("%d choices, more than the maximum %d (ingest.max_choices)", n, cfg.MaxChoices)}
	} else if shared := base.sharedBytes(); n > 1 && int64(n)*int64(shared) > int64(cfg.MaxLineBytes) {
		return nil, &reasonError{schemas.ReasonTooLong, fmt.Errorf("%d choices, each a row carrying the prompt and attributes (%d bytes): %d bytes in all, over ingest.max_line_bytes (%d)",
			n, shared, int64(n)*int64(shared), cfg.MaxLineBytes)}
	}
	if len(resp.Choices) > 1 {
		seen := make(map[int]bool, len(resp.Choices))
		for _, ch := range resp.Choices {
			if seen[ch.Index] {
				return nil, fmt.Errorf(`"choices" hold "index": %d twice: each choice needs its own index (its row is named <id>/<index>)`, ch.Index)
			}
			seen[ch.Index] = true
		}
	}
	rows := make([]row, 0, len(resp.Choices))
	for _, ch := range resp.Choices {
		r := base
		r.traceID = resp.ID
		if len(resp.Choices) > 1 || resp.multi {
			r.traceID = resp.ID + "/" + strconv.Itoa(ch.Index)
		}
		if ch.Finish.value != nil {
			r.finish = *ch.Finish.value
		}
		if err := ch.steps(&r); err != nil {
			return nil, fmt.Errorf("choice %d: %w", ch.Index, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func (ch *choice) steps(r *row) error {
	if ch.joined != nil {
		return ch.joined.steps(r)
	}
	lp := ch.Logprobs
	switch {
	case lp == nil || (lp.Content == nil && lp.Refusal == nil && lp.TokenLogprobs == nil):
		r.noLogprobs = true
	case lp.Content != nil || lp.Refusal != nil:
		content := append(derefSteps(lp.Content), derefSteps(lp.Refusal)...)
		r.chosen = make([]float64, len(content))
		r.top = make([][]float64, len(content))
		for t, st := range content {
			r.chosen[t] = valueOf(st.Logprob)
			alts := make([]float64, len(st.TopLogprobs))
			for i, a := range st.TopLogprobs {
				alts[i] = valueOf(a.Logprob)
			}
			r.top[t] = alts
		}
	default:
		tl := *lp.TokenLogprobs
		if len(lp.TopLogprobs) == 0 && len(tl) > 0 {
			return errNoLegacyTop()
		}
		if len(lp.TopLogprobs) != len(tl) {
			return fmt.Errorf("legacy logprobs: %d token_logprobs but %d top_logprobs", len(tl), len(lp.TopLogprobs))
		}
		if len(tl) > 0 && tl[0] == nil && lp.TopLogprobs[0] == nil {
			// The first token of a text has no logprob: the prompt's own first
			// token, which echo=true puts in front of the generated ones.
			return errEcho()
		}
		r.chosen = make([]float64, len(tl))
		r.top = make([][]float64, len(tl))
		for t, v := range tl {
			r.chosen[t] = valueOf(v)
			m := lp.TopLogprobs[t]
			alts := make([]float64, 0, len(m))
			for _, v := range m {
				alts = append(alts, v)
			}
			// Go's map order is random: without a fixed order the features'
			// last bits would change from run to run. Most probable first.
			slices.SortFunc(alts, func(a, b float64) int { return cmp.Compare(b, a) })
			r.top[t] = alts
		}
	}
	return nil
}

// errEcho is the error of legacy logprobs that begin with the prompt's.
// errNoLegacyTop: a legacy completion whose logprobs have token_logprobs
// but top_logprobs null or absent, as when it was requested without
// alternatives.
func errNoLegacyTop() error {
	return &reasonError{schemas.ReasonNoLogprobs, errors.New(
		"legacy logprobs without top_logprobs: request alternatives (legacy completions: logprobs=N gives N per step; OpenAI allows 5, vLLM 20)")}
}

func errEcho() error {
	return &reasonError{schemas.ReasonNaNLogprob, errors.New("legacy logprobs start with a null token_logprob and null top_logprobs: " +
		"the response was made with echo=true, so its logprobs begin with the prompt's tokens; request the completion without echo")}
}

func derefSteps(s *[]step) []step {
	if s == nil {
		return nil
	}
	return *s
}

// valueOf maps a missing logprob to NaN: the profile rejects it as nan_logprob.
func valueOf(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func pick(top *float64, s *sampling, f func(*sampling) *float64) *float64 {
	if top != nil {
		return top
	}
	if s != nil {
		return f(s)
	}
	return nil
}

// textOf reads a prompt (schemas.PromptText); nil when absent or null.
func textOf(raw json.RawMessage) (*string, error) {
	s, ok, err := schemas.PromptText(raw)
	if !ok || err != nil {
		return nil, err
	}
	return &s, nil
}

// boolOf reads a label ("correct"): JSON true/false or 1/0 (1.0/0.0), or a
// string spelled as the correct column of a labelled CSV (operators/estimate
// ReadCSV): "1"/"0", "true"/"false", "t"/"f", "yes"/"no", "1.0"/"0.0",
// case-insensitive, blanks trimmed. null, an absent field and an empty
// string are no label.
func boolOf(raw json.RawMessage) (*bool, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%s is not a label: %w", raw, err)
		}
		if s = strings.TrimSpace(s); s == "" {
			return nil, nil
		}
	}
	var v bool
	switch strings.ToLower(s) {
	case "true", "t", "yes", "1", "1.0":
		v = true
	case "false", "f", "no", "0", "0.0":
		v = false
	default:
		return nil, fmt.Errorf(`%s is not a label; want true/false, 1/0, or one of the strings "true"/"false", "t"/"f", "yes"/"no", "1"/"0" (null or "" for unlabelled)`, raw)
	}
	return &v, nil
}

func attrString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// builder accumulates rows into a trace.v1 (or Trace64) batch.
type builder struct {
	schema *arrow.Schema
	rb     *array.RecordBuilder
	rows   int
	f64    bool
}

func newBuilder(mem memory.Allocator, f64 bool) *builder {
	s := schemas.Trace
	if f64 {
		s = schemas.Trace64
	}
	return &builder{schema: s, rb: array.NewRecordBuilder(mem, s), f64: f64}
}

func (b *builder) release() { b.rb.Release() }

func (b *builder) finish() arrow.RecordBatch {
	b.rows = 0
	return b.rb.NewRecordBatch()
}

func (b *builder) append(r *row) {
	b.rows++
	fb := b.rb.Fields()
	s := schemas.Trace
	str := func(col string, v string) { fb[schemas.MustIndex(s, col)].(*array.StringBuilder).Append(v) }
	nstr := func(col string, v *string) {
		sb := fb[schemas.MustIndex(s, col)].(*array.StringBuilder)
		if v == nil {
			sb.AppendNull()
		} else {
			sb.Append(*v)
		}
	}
	str(schemas.ColTraceID, r.traceID)
	fb[schemas.MustIndex(s, schemas.ColTS)].(*array.TimestampBuilder).Append(arrow.Timestamp(r.ts))
	str(schemas.ColModel, r.model)
	str(schemas.ColProvider, r.provider)
	str(schemas.ColLogprobsMode, r.logprobsMode)
	fb[schemas.MustIndex(s, schemas.ColTemperature)].(*array.Float32Builder).Append(r.temperature)
	fb[schemas.MustIndex(s, schemas.ColTopP)].(*array.Float32Builder).Append(r.topP)
	nstr(schemas.ColDomain, r.domain)
	nstr(schemas.ColPrompt, r.prompt)
	mb := fb[schemas.MustIndex(s, schemas.ColAttributes)].(*array.MapBuilder)
	mb.Append(true)
	kb, ib := mb.KeyBuilder().(*array.StringBuilder), mb.ItemBuilder().(*array.StringBuilder)
	for i, k := range r.attrKeys {
		kb.Append(k)
		ib.Append(r.attrVals[i])
	}
	tok := fb[schemas.MustIndex(s, schemas.ColTokenLogprob)].(*array.ListBuilder)
	top := fb[schemas.MustIndex(s, schemas.ColTopLogprobs)].(*array.ListBuilder)
	if r.noLogprobs {
		tok.AppendNull()
		top.AppendNull()
	} else {
		tok.Append(true)
		top.Append(true)
		inner := top.ValueBuilder().(*array.ListBuilder)
		if b.f64 {
			tv := tok.ValueBuilder().(*array.Float64Builder)
			tv.AppendValues(r.chosen, nil)
			iv := inner.ValueBuilder().(*array.Float64Builder)
			for _, alts := range r.top {
				inner.Append(true)
				iv.AppendValues(alts, nil)
			}
		} else {
			tv := tok.ValueBuilder().(*array.Float32Builder)
			for _, v := range r.chosen {
				tv.Append(logprob32(v))
			}
			iv := inner.ValueBuilder().(*array.Float32Builder)
			for _, alts := range r.top {
				inner.Append(true)
				for _, v := range alts {
					iv.Append(logprob32(v))
				}
			}
		}
	}
	str(schemas.ColFinishReason, r.finish)
	fb[schemas.MustIndex(s, schemas.ColSeq)].(*array.Int32Builder).Append(0)
	fb[schemas.MustIndex(s, schemas.ColFinal)].(*array.BooleanBuilder).Append(true)
	cb := fb[schemas.MustIndex(s, schemas.ColCorrect)].(*array.BooleanBuilder)
	if r.correct == nil {
		cb.AppendNull()
	} else {
		cb.Append(*r.correct)
	}
}

// logprob32 rounds a logprob to float32 without changing how the profile
// judges it: a finite value beyond float32's range is clamped to the largest
// float32 of its sign instead of becoming ±Inf (nan_logprob). A positive one
// stays a positive_logprob; a negative one (a probability of 0, e.g. -1e39)
// stays finite and accepted, as in float64.
func logprob32(v float64) float32 {
	switch {
	case v > math.MaxFloat32 && !math.IsInf(v, 1):
		return math.MaxFloat32
	case v < -math.MaxFloat32 && !math.IsInf(v, -1):
		return -math.MaxFloat32
	}
	return float32(v)
}

// trimLine trims a line's surrounding whitespace and a byte-order mark at its
// start: concatenated files (cat a.jsonl b.jsonl) carry one wherever a file
// began, not only at the start of the input.
func trimLine(raw []byte) []byte {
	return bytes.TrimSpace(bytes.TrimPrefix(bytes.TrimSpace(raw), []byte("\ufeff")))
}
