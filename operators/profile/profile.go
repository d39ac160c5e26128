// Package profile turns decoding traces (trace.v1) into scored rows
// (scored.v1): per response, the 11-number profile of its truncated-entropy
// trajectory and the white-box baselines. The definitions, with the formulas
// and the reference implementation they are tested against, are in the
// README of the repository, section "The entropy profile (exact
// definitions)"; the column order is schemas.ProfileFeatures and
// schemas.Baselines.
//
// The operator profiles whole responses. Producers that stream a response
// as several chunk rows (same trace_id, seq 0, 1, ..., final on the last)
// must have them joined by an Assembler first, as the stream and entrowatch
// score do; the operator gives a chunk row status incomplete.
//
// The operator reads the list value buffers of the Arrow batch directly and
// passes every other column through without copying.
package profile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/operators/entropy"
	"github.com/entrowatch/entrowatch/schemas"
)

// Config bounds what a trace may hold.
type Config struct {
	// MaxSteps is the longest trajectory accepted; longer ones are rejected
	// with reason too_long. Default 32768.
	MaxSteps int `yaml:"max_steps"`
	// MaxLogprob is the largest logprob accepted as rounding noise around 0
	// (float32 log-softmax can return tiny positive values). Larger values are
	// rejected with reason positive_logprob. Default 1e-4.
	MaxLogprob float64 `yaml:"max_logprob"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config { return Config{MaxSteps: 32768, MaxLogprob: 1e-4} }

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.MaxSteps < 1 {
		errs = append(errs, fmt.Errorf("profile.max_steps must be at least 1, got %d", c.MaxSteps))
	}
	if !(c.MaxLogprob >= 0 && c.MaxLogprob < 1) {
		errs = append(errs, fmt.Errorf("profile.max_logprob must be in [0, 1), got %v", c.MaxLogprob))
	}
	return errors.Join(errs...)
}

// Operator computes scored.v1 rows from trace.v1 rows, one for one, in order.
// Invalid traces become rows whose status is the reject reason, with zero
// features. Every row must be a whole response (seq 0 and final true, or no
// seq/final columns): a chunk row (final false, or seq above 0) becomes a row
// with status incomplete, since its profile would be that of a fragment.
// Join chunks with an Assembler before the operator. Not safe for concurrent
// use: the stream runs one per worker.
type Operator struct {
	calc *Calc
	mem  memory.Allocator
	log  *slog.Logger
}

// New returns a profile operator. An invalid cfg is an error; a nil mem means
// memory.DefaultAllocator, a nil log discards.
func New(cfg Config, mem memory.Allocator, log *slog.Logger) (*Operator, error) {
	calc, err := NewCalc(cfg)
	if err != nil {
		return nil, err
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Operator{calc: calc, mem: mem, log: log}, nil
}

// Name implements streams.Operator.
func (o *Operator) Name() string { return "profile" }

// Process implements streams.Operator: one scored.v1 batch per trace.v1 batch.
// It does not release in; the returned batch belongs to the caller, who
// releases it (it shares in's pass-through columns, which stay valid after in
// is released).
func (o *Operator) Process(_ context.Context, in arrow.RecordBatch) ([]arrow.RecordBatch, error) {
	out, err := o.Score(in, nil)
	if err != nil {
		return nil, err
	}
	return []arrow.RecordBatch{out}, nil
}

// Score is Process for callers that want each rejection's detail: onReject,
// when not nil, is called with the row index and why it was rejected; the
// *Reject is valid during the call only. Score does not release in; the
// returned scored.v1 batch belongs to the caller, who must Release it. It
// holds references to in's pass-through columns (trace_id, model, ...), not
// copies, so it stays valid after in is released.
func (o *Operator) Score(in arrow.RecordBatch, onReject func(row int, r *Reject)) (arrow.RecordBatch, error) {
	if in == nil {
		return nil, errors.New("profile: Score of a nil batch")
	}
	lists, err := logprobLists(in)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	ch := newChunkCols(in)
	b := newScoredBuilder(o.mem, int(in.NumRows()))
	defer b.release()
	switch lists[0].ListValues().DataType().ID() {
	case arrow.FLOAT32:
		scoreRows(o.calc, newTraceView[float32](lists), ch, b, onReject)
	default:
		scoreRows(o.calc, newTraceView[float64](lists), ch, b, onReject)
	}
	return b.finish(in)
}

// chunkCols reads the seq and final columns of a trace.v1 batch, when it
// has them, to tell chunk rows from whole responses as the Assembler does
// (a null seq is 0, a null final is true).
type chunkCols struct {
	seqs   *array.Int32
	finals *array.Boolean
}

func newChunkCols(in arrow.RecordBatch) chunkCols {
	var c chunkCols
	s := in.Schema()
	if i := s.FieldIndices(schemas.ColSeq); len(i) > 0 {
		c.seqs, _ = in.Column(i[0]).(*array.Int32)
	}
	if i := s.FieldIndices(schemas.ColFinal); len(i) > 0 {
		c.finals, _ = in.Column(i[0]).(*array.Boolean)
	}
	return c
}

// reject returns the incomplete reject of row i when it is a chunk.
func (c chunkCols) reject(i int) *Reject {
	var seq int32
	final := true
	if c.seqs != nil && c.seqs.IsValid(i) {
		seq = c.seqs.Value(i)
	}
	if c.finals != nil && c.finals.IsValid(i) {
		final = c.finals.Value(i)
	}
	if seq == 0 && final {
		return nil
	}
	return &Reject{schemas.ReasonIncomplete, fmt.Sprintf("chunk row (seq %d, final %v) of a streamed trace: "+
		"the profile operator scores whole responses; join the chunks with profile.Assembler first", seq, final)}
}

// Check calls onReject, in row order, for every row of the trace.v1 batch in
// that an operator configured with cfg would reject, with the same reason and
// detail, without computing the profiles of the others. It is for callers
// that refuse traces before producing them (HTTP ingest). A scan decides
// whether a row is valid; the Reject of an invalid one comes from Compute,
// the operator's own code. It returns an error when cfg is invalid or when
// in's logprob columns are not those of trace.v1. Safe for concurrent use.
func Check(cfg Config, in arrow.RecordBatch, onReject func(row int, r *Reject)) error {
	if in == nil {
		return errors.New("profile: Check of a nil batch")
	}
	if onReject == nil {
		return errors.New("profile: Check without an onReject function")
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w (start from profile.DefaultConfig())", err)
	}
	lists, err := logprobLists(in)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	ch := newChunkCols(in)
	if lists[0].ListValues().DataType().ID() == arrow.FLOAT32 {
		checkRows(cfg, newTraceView[float32](lists), ch, onReject)
	} else {
		checkRows(cfg, newTraceView[float64](lists), ch, onReject)
	}
	return nil
}

func checkRows[F entropy.Float](cfg Config, tv *traceView[F], ch chunkCols, onReject func(int, *Reject)) {
	var c *Calc // only for rejected rows: its buffer is not shared
	for i := range tv.tok.Len() {
		rej := ch.reject(i)
		if rej != nil {
			onReject(i, rej)
			continue
		}
		chosen, offs, values, rej := tv.row(i)
		if rej == nil && !valid(cfg, chosen, offs, values) {
			if c == nil {
				c = &Calc{maxSteps: cfg.MaxSteps, maxLogprob: cfg.MaxLogprob} // cfg was validated
			}
			_, rej = compute(c, chosen, offs, values)
		}
		if rej != nil {
			onReject(i, rej)
		}
	}
}

// valid reports whether Compute accepts a trace, by Compute's rules: 1 to
// MaxSteps steps, as many chosen-token logprobs as steps of alternatives,
// each chosen logprob finite and at most MaxLogprob (validChosen), every
// step with 1 to MaxAlternatives alternatives and each alternative at most
// MaxLogprob (-Inf allowed; entropy.StepOf's test).
func valid[F entropy.Float](cfg Config, chosen []F, offs []int32, values []F) bool {
	n := len(chosen)
	if n == 0 || n > cfg.MaxSteps || len(offs) != n+1 {
		return false
	}
	for _, v := range chosen {
		if !validChosen(float64(v), cfg.MaxLogprob) {
			return false
		}
	}
	for t := range n {
		if offs[t] >= offs[t+1] || offs[t+1]-offs[t] > MaxAlternatives {
			return false
		}
	}
	for _, v := range values[offs[0]:offs[n]] {
		if !(float64(v) <= cfg.MaxLogprob) {
			return false
		}
	}
	return true
}

func scoreRows[F entropy.Float](c *Calc, tv *traceView[F], ch chunkCols, b *scoredBuilder, onReject func(int, *Reject)) {
	for i := range tv.tok.Len() {
		var (
			chosen, values []F
			offs           []int32
			p              Profile
		)
		rej := ch.reject(i)
		if rej == nil {
			chosen, offs, values, rej = tv.row(i)
		}
		if rej == nil {
			p, rej = compute(c, chosen, offs, values)
		}
		if rej != nil {
			if onReject != nil {
				onReject(i, rej)
			}
			b.appendReject(rej.Reason)
			continue
		}
		b.append(&p)
	}
}

// logprobLists returns the token_logprob and top_logprobs columns of a
// trace.v1 batch, checking that they are list<F> and list<list<F>> for one
// F of float32 or float64.
func logprobLists(in arrow.RecordBatch) ([2]*array.List, error) {
	var out [2]*array.List
	s := in.Schema()
	ti, err := schemas.Index(s, schemas.ColTokenLogprob)
	if err != nil {
		return out, err
	}
	pi, err := schemas.Index(s, schemas.ColTopLogprobs)
	if err != nil {
		return out, err
	}
	for _, w := range []*arrow.Schema{schemas.Trace, schemas.Trace64} {
		if arrow.TypeEqual(in.Column(ti).DataType(), w.Field(ti0).Type) &&
			arrow.TypeEqual(in.Column(pi).DataType(), w.Field(pi0).Type) {
			return [2]*array.List{in.Column(ti).(*array.List), in.Column(pi).(*array.List)}, nil
		}
	}
	return out, fmt.Errorf("columns token_logprob, top_logprobs are %s, %s; want list<float32>, list<list<float32>> (or float64 for both)",
		in.Column(ti).DataType(), in.Column(pi).DataType())
}

var (
	ti0 = schemas.MustIndex(schemas.Trace, schemas.ColTokenLogprob)
	pi0 = schemas.MustIndex(schemas.Trace, schemas.ColTopLogprobs)
)

// floatArray is the typed value slice of a float32 or float64 array.
type floatArray[F entropy.Float] interface {
	arrow.Array
	Values() []F
}

// traceView reads the per-step lists of a trace.v1 batch through their buffers.
type traceView[F entropy.Float] struct {
	tok, top     *array.List
	inner        *array.List
	tokOffs      []int32 // per row: range of chosen logprobs
	topOffs      []int32 // per row: range of steps in inner
	innerOffs    []int32 // per step: range of values
	tokVals      floatArray[F]
	topVals      floatArray[F]
	valsHaveNull bool
}

func newTraceView[F entropy.Float](lists [2]*array.List) *traceView[F] {
	tok, top := lists[0], lists[1]
	inner := top.ListValues().(*array.List)
	v := &traceView[F]{
		tok: tok, top: top, inner: inner,
		tokOffs:   tok.Offsets()[tok.Data().Offset():],
		topOffs:   top.Offsets()[top.Data().Offset():],
		innerOffs: inner.Offsets()[inner.Data().Offset():],
		tokVals:   tok.ListValues().(floatArray[F]),
		topVals:   inner.ListValues().(floatArray[F]),
	}
	v.valsHaveNull = v.tokVals.NullN() > 0 || v.topVals.NullN() > 0 || inner.NullN() > 0
	return v
}

// row returns row i's chosen logprobs, its per-step offsets into values, and
// values; or why the row cannot be profiled.
func (v *traceView[F]) row(i int) ([]F, []int32, []F, *Reject) {
	if v.tok.IsNull(i) || v.top.IsNull(i) {
		return nil, nil, nil, &Reject{schemas.ReasonNoLogprobs, "response carries no logprobs (request logprobs with top_logprobs=20; Responses API: include message.output_text.logprobs)"}
	}
	t0, t1 := v.tokOffs[i], v.tokOffs[i+1]
	s0, s1 := v.topOffs[i], v.topOffs[i+1]
	if v.valsHaveNull {
		if r := v.checkNulls(t0, t1, s0, s1); r != nil {
			return nil, nil, nil, r
		}
	}
	return v.tokVals.Values()[t0:t1], v.innerOffs[s0 : s1+1], v.topVals.Values(), nil
}

// checkNulls is the slow path for batches whose value arrays carry nulls: a
// null logprob is as unusable as a NaN one.
func (v *traceView[F]) checkNulls(t0, t1, s0, s1 int32) *Reject {
	for j := t0; j < t1; j++ {
		if v.tokVals.IsNull(int(j)) {
			return &Reject{schemas.ReasonNaNLogprob, fmt.Sprintf("step %d: chosen-token logprob is null", j-t0+1)}
		}
	}
	for s := s0; s < s1; s++ {
		if v.inner.IsNull(int(s)) {
			return &Reject{schemas.ReasonNoLogprobs, fmt.Sprintf("step %d: top_logprobs is null", s-s0+1)}
		}
		for j := v.innerOffs[s]; j < v.innerOffs[s+1]; j++ {
			if v.topVals.IsNull(int(j)) {
				return &Reject{schemas.ReasonNaNLogprob, fmt.Sprintf("step %d: a top logprob is null", s-s0+1)}
			}
		}
	}
	return nil
}
