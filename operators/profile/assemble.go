package profile

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/schemas"
)

// AssemblerConfig bounds the chunk reassembly state.
type AssemblerConfig struct {
	// Timeout is how long an open trace waits for its next chunk before it
	// is emitted as incomplete. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxOpen is the most traces held open at once; beyond it the trace
	// idle the longest is emitted as incomplete. Default 10000.
	MaxOpen int `yaml:"max_open"`
	// MaxSteps is the most steps one trace may gather; a trace that grows
	// past it is emitted at once as too_long. Default 32768 (as profile's).
	MaxSteps int `yaml:"max_steps"`
	// MaxHeldSteps bounds the steps held over all open traces (each step
	// holds up to 21 logprobs, about 90 bytes as float32, twice that when the
	// chunks are float64); beyond it the traces idle the longest are emitted
	// as incomplete. Default 1000000 (about 90 MB of float32 chunks).
	MaxHeldSteps int `yaml:"max_held_steps"`
	// Remember is how many emitted trace ids are kept to drop chunks that
	// arrive after their trace was emitted: copies of a completed trace's
	// (redelivery), the rest of a rejected one's. A chunk with seq 0 is
	// never dropped so: it starts the trace anew, as when the response is
	// sent again (to be rescored with a new estimator, say) or requeued
	// from the dead letters; a completed trace's first chunk alone again,
	// with nothing more before the timeout, was a late copy, and is dropped
	// then instead of dead-lettered. Default 65536.
	Remember int `yaml:"remember"`
}

// DefaultAssemblerConfig returns the documented defaults.
func DefaultAssemblerConfig() AssemblerConfig {
	return AssemblerConfig{Timeout: 30 * time.Second, MaxOpen: 10000, MaxSteps: 32768, MaxHeldSteps: 1000000, Remember: 65536}
}

// Validate reports a configuration that cannot work.
func (c AssemblerConfig) Validate() error {
	var errs []error
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("assemble.timeout must be > 0, got %v", c.Timeout))
	}
	if c.MaxOpen < 1 {
		errs = append(errs, fmt.Errorf("assemble.max_open must be at least 1, got %d", c.MaxOpen))
	}
	if c.MaxSteps < 1 {
		errs = append(errs, fmt.Errorf("assemble.max_steps must be at least 1, got %d", c.MaxSteps))
	}
	if c.MaxHeldSteps < c.MaxSteps {
		errs = append(errs, fmt.Errorf("assemble.max_held_steps must be at least max_steps (%d), got %d", c.MaxSteps, c.MaxHeldSteps))
	}
	if c.Remember < 0 {
		errs = append(errs, fmt.Errorf("assemble.remember must be >= 0, got %d", c.Remember))
	}
	return errors.Join(errs...)
}

// Assembled is what one call to the Assembler emits. All batches are trace.v1
// and belong to the caller, who releases them (Release does it). A
// reassembled trace keeps the precision of its chunks: float32 chunks give a
// schemas.Trace row, float64 (schemas.Trace64) chunks a schemas.Trace64 row,
// so that it is scored exactly as the same response sent as one row. (A trace
// whose chunks mix the two is float64: widening float32 is exact.)
type Assembled struct {
	// Complete holds whole responses: rows that were never chunked (seq 0
	// and final), passed through as slices of the input, and reassembled
	// traces (seq 0, final true, steps in seq order).
	Complete []arrow.RecordBatch
	// CompleteFirst is, for each Complete batch, the input row its first
	// row was (a slice of whole rows), or -1 (reassembled traces).
	CompleteFirst []int
	// Rejected holds traces that cannot be completed, one row each, with
	// final=false and the chunks that did arrive; Reasons[i] is the reason
	// of row i over all Rejected batches (incomplete or too_long).
	Rejected []arrow.RecordBatch
	Reasons  []string
	// HasFirst[i] says whether rejected row i holds its trace's first
	// chunk (seq 0). One that does not may be the rest of a trace written
	// before a restart (a remnant); one that does is not.
	HasFirst []bool
	// Origin[i] and OriginRow[i] say where rejected row i's trace began:
	// the origin (the message offset given to Add) and the row within that
	// message of the earliest chunk held. A trace given up again after its
	// messages are redelivered has the same, whenever it is given up.
	Origin    []int64
	OriginRow []int
	// Duplicates counts chunks dropped because they were seen before: a
	// chunk of an open trace that it holds already, a chunk other than the
	// first (seq 0) of a trace completed recently (Remember), or a first
	// chunk alone again after its trace completed, when the rest does not
	// come within Timeout (a late copy).
	Duplicates int
	// AfterReject counts chunks dropped because their trace was rejected
	// recently (Remember): the rest of a trace too long, or of one given up
	// as incomplete. Its rejected row holds the chunks that came before.
	AfterReject int
}

// Release releases every batch.
func (a *Assembled) Release() {
	for _, r := range a.Complete {
		r.Release()
	}
	for _, r := range a.Rejected {
		r.Release()
	}
	a.Complete, a.Rejected, a.Reasons, a.HasFirst, a.Origin, a.OriginRow = nil, nil, nil, nil, nil, nil
}

// Assembler reassembles responses that producers sent as several chunk rows
// (same trace_id, seq 0..n, final on the last). Chunks may arrive out of order
// and more than once. Memory is bounded by MaxOpen traces of MaxSteps steps.
//
// Each chunk is added with an origin (the Kafka offset it came from); Oldest
// tells the stream which offsets are still needed, so that it never commits
// past a chunk it holds. Not safe for concurrent use: one per partition.
type Assembler struct {
	cfg  AssemblerConfig
	mem  memory.Allocator
	open map[string]*pending
	held int // steps over all open traces

	doneSet  map[string]done // model and id -> its slot in doneRing and how it ended
	doneRing []string
	doneNext int
}

// done is how a remembered trace ended.
type done struct {
	slot     int
	rejected bool // emitted as rejected (too_long, incomplete), not complete
}

// NewAssembler returns an empty assembler. A nil mem means
// memory.DefaultAllocator.
func NewAssembler(cfg AssemblerConfig, mem memory.Allocator) (*Assembler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	return &Assembler{
		cfg:      cfg,
		mem:      mem,
		open:     make(map[string]*pending),
		doneSet:  make(map[string]done, cfg.Remember),
		doneRing: make([]string, cfg.Remember),
	}, nil
}

// Open is the number of traces waiting for chunks.
func (a *Assembler) Open() int { return len(a.open) }

// Oldest returns the smallest origin among the chunks held, and false when
// nothing is held.
func (a *Assembler) Oldest() (int64, bool) {
	low, ok := int64(math.MaxInt64), false
	for _, p := range a.open {
		if p.origin < low {
			low, ok = p.origin, true
		}
	}
	return low, ok
}

// pending is one trace being reassembled. The per-row columns are copied from
// the lowest seq seen (ts from the final chunk, the latest chunk's until it comes); the per-step lists are kept
// per chunk as plain slices, so no input batch is retained.
type pending struct {
	id        string
	key       string // model and id: traces are told apart by both, as the store does
	origin    int64
	originRow int // the row of the earliest chunk within the message at origin
	last      time.Time
	finalSeq  int32 // -1 until the final chunk arrived
	steps     int
	metaSeq   int32
	meta      rowMeta
	chunks    map[int32]chunk
	wide      bool // some chunk came as float64: the trace is built as Trace64
	// again: the trace was completed recently and started anew by its
	// first chunk. If nothing more comes before the timeout, that chunk was
	// a late copy (a producer's retry), not a new sending: it is dropped as
	// a duplicate, not dead-lettered as incomplete.
	again bool
}

type chunk struct {
	tok  []float32
	offs []int32 // steps+1 offsets into vals (or vals64), starting at 0
	vals []float32
	// tok64 and vals64 hold the logprobs instead of tok and vals when the
	// chunk came as float64: they are kept at full precision, not narrowed.
	tok64, vals64 []float64
	wide          bool // the chunk came as float64
}

// steps is the number of steps the chunk holds.
func (c *chunk) steps() int { return len(c.offs) - 1 }

type rowMeta struct {
	ts                    int64
	model, provider, mode string
	temperature, topP     float32
	domain, prompt        *string
	attrKeys, attrVals    []string
	finish                string
	correct               *bool
}

// Add takes a trace.v1 batch (whole rows and/or chunks) read at origin and
// returns the responses it completes. in is not released.
func (a *Assembler) Add(in arrow.RecordBatch, origin int64, now time.Time) (Assembled, error) {
	var out Assembled
	if in == nil {
		return out, errors.New("profile: Assembler.Add of a nil batch")
	}
	v, err := newChunkView(in)
	if err != nil {
		return out, err
	}
	n := int(in.NumRows())
	start := -1 // start of the current run of whole rows
	flushRun := func(end int) {
		if start >= 0 && end > start {
			out.Complete = append(out.Complete, in.NewSlice(int64(start), int64(end)))
			out.CompleteFirst = append(out.CompleteFirst, start)
		}
		start = -1
	}
	var done []*pending
	for i := 0; i < n; i++ {
		if v.whole(i) {
			if start < 0 {
				start = i
			}
			continue
		}
		flushRun(i)
		if v.listErr != nil {
			out.Release()
			return Assembled{}, v.listErr
		}
		p, drop, rej := a.addChunk(v, i, origin, now)
		switch drop {
		case dropCopy:
			out.Duplicates++
			continue
		case dropAfterReject:
			out.AfterReject++
			continue
		}
		if rej != "" {
			if err := a.emitRejected(&out, p, rej, false); err != nil {
				out.Release()
				return Assembled{}, err
			}
			continue
		}
		if p != nil && p.complete() {
			a.close(p, false)
			done = append(done, p)
		}
	}
	flushRun(n)
	// One batch per run of traces of the same precision, in completion order.
	for len(done) > 0 {
		j := 1
		for j < len(done) && done[j].wide == done[0].wide {
			j++
		}
		rec, err := a.build(done[:j], true)
		if err != nil {
			out.Release()
			return Assembled{}, err
		}
		out.Complete = append(out.Complete, rec)
		out.CompleteFirst = append(out.CompleteFirst, -1)
		done = done[j:]
	}
	// Bound the open set: the traces idle the longest go first.
	for len(a.open) > a.cfg.MaxOpen || a.held > a.cfg.MaxHeldSteps {
		var oldest *pending
		for _, p := range a.open {
			if oldest == nil || p.last.Before(oldest.last) {
				oldest = p
			}
		}
		if err := a.emitRejected(&out, oldest, schemas.ReasonIncomplete, false); err != nil {
			out.Release()
			return Assembled{}, err
		}
	}
	return out, nil
}

// Expire emits, as incomplete, the traces whose last chunk arrived more than
// Timeout before now.
func (a *Assembler) Expire(now time.Time) (Assembled, error) {
	var out Assembled
	var late []*pending
	for _, p := range a.open {
		if now.Sub(p.last) > a.cfg.Timeout {
			late = append(late, p)
		}
	}
	for _, p := range late {
		if err := a.emitRejected(&out, p, schemas.ReasonIncomplete, true); err != nil {
			out.Release()
			return Assembled{}, err
		}
	}
	return out, nil
}

// Held is the number of steps held over all open traces.
func (a *Assembler) Held() int { return a.held }

// emitRejected emits p as rejected for reason; timedOut: by Expire. A
// completed trace's first chunk alone again, timed out, was a late copy and
// is dropped as a duplicate. Given up for room (max_open, max_held_steps) it
// is dead-lettered as any other: a new sending of the response cut short by
// the bound must not vanish, and a copy's dead letter says what it holds.
func (a *Assembler) emitRejected(out *Assembled, p *pending, reason string, timedOut bool) error {
	if p.again && timedOut && len(p.chunks) == 1 && reason == schemas.ReasonIncomplete {
		a.close(p, false) // still the completed trace it copies
		out.Duplicates++
		return nil
	}
	a.close(p, true)
	// Final when every chunk came (too long, not cut short): sent again
	// after max_steps is raised, it is a whole response.
	rec, err := a.build([]*pending{p}, p.complete())
	if err != nil {
		return err
	}
	_, first := p.chunks[0]
	out.Rejected = append(out.Rejected, rec)
	out.Reasons = append(out.Reasons, reason)
	out.HasFirst = append(out.HasFirst, first)
	out.Origin = append(out.Origin, p.origin)
	out.OriginRow = append(out.OriginRow, p.originRow)
	return nil
}

// close removes p from the open set and remembers its id, and whether it
// was rejected.
func (a *Assembler) close(p *pending, rejected bool) {
	delete(a.open, p.key)
	a.held -= p.steps
	a.remember(p.key, rejected)
}

func (a *Assembler) remember(id string, rejected bool) {
	if a.cfg.Remember == 0 {
		return
	}
	if old := a.doneRing[a.doneNext]; old != "" && a.doneSet[old].slot == a.doneNext {
		delete(a.doneSet, old) // unless remembered again since, in a newer slot
	}
	a.doneRing[a.doneNext] = id
	a.doneSet[id] = done{slot: a.doneNext, rejected: rejected}
	a.doneNext = (a.doneNext + 1) % a.cfg.Remember
}

// What addChunk did with a chunk it dropped.
const (
	kept            = iota
	dropCopy        // seen before: Assembled.Duplicates
	dropAfterReject // its trace was rejected: Assembled.AfterReject
)

// addChunk files row i. It returns the trace, whether and why the chunk
// was dropped, and a reject reason when the trace must be emitted now.
func (a *Assembler) addChunk(v *chunkView, i int, origin int64, now time.Time) (*pending, int, string) {
	id := v.id.Value(i)
	key := v.key(i)
	seq := v.seq(i)
	d, seen := a.doneSet[key]
	again := false
	if seen {
		switch {
		case seq != 0 && d.rejected:
			return nil, dropAfterReject, "" // the rest of a trace rejected already
		case seq != 0:
			return nil, dropCopy, "" // a late copy of a chunk of a trace completed already
		}
		// The first chunk again: the response is sent anew (or all of it
		// is redelivered, or it is requeued from the dead letters), and is
		// assembled and written again.
		delete(a.doneSet, key)
		again = !d.rejected
	}
	p := a.open[key]
	if p == nil {
		p = &pending{id: id, key: key, origin: origin, originRow: i, finalSeq: -1, metaSeq: math.MaxInt32, chunks: make(map[int32]chunk), again: again}
		a.open[key] = p
	}
	if _, dup := p.chunks[seq]; dup {
		return p, dropCopy, ""
	}
	if origin < p.origin {
		p.origin, p.originRow = origin, i
	}
	p.last = now
	c := v.chunk(i)
	p.chunks[seq] = c
	p.steps += c.steps()
	a.held += c.steps()
	p.wide = p.wide || c.wide
	if seq < p.metaSeq {
		ts := p.meta.ts
		p.meta = v.meta(i)
		p.meta.ts = ts
		p.metaSeq = seq
	}
	if v.final(i) {
		p.finalSeq = seq
		p.meta.ts = v.ts(i)
	} else if p.finalSeq < 0 {
		p.meta.ts = max(p.meta.ts, v.ts(i)) // until the final chunk comes: the latest chunk's
	}
	if p.steps > a.cfg.MaxSteps {
		return p, kept, schemas.ReasonTooLong
	}
	return p, kept, ""
}

func (p *pending) complete() bool {
	if p.finalSeq < 0 || len(p.chunks) != int(p.finalSeq)+1 {
		return false
	}
	for s := int32(0); s <= p.finalSeq; s++ {
		if _, ok := p.chunks[s]; !ok {
			return false
		}
	}
	return true
}

// build writes the traces as trace.v1 rows, steps in seq order; final says
// whether they are complete. The rows are schemas.Trace64 when ps[0] is wide
// (the caller passes traces of one precision; a float32 chunk of a wide
// trace is widened, exactly), schemas.Trace otherwise.
func (a *Assembler) build(ps []*pending, final bool) (arrow.RecordBatch, error) {
	wide := ps[0].wide
	schema := schemas.Trace
	if wide {
		schema = schemas.Trace64
	}
	b := array.NewRecordBuilder(a.mem, schema)
	defer b.Release()
	col := func(name string) array.Builder { return b.Field(schemas.MustIndex(schema, name)) }
	str := func(name string, s string) { col(name).(*array.StringBuilder).Append(s) }
	nstr := func(name string, s *string) {
		if s == nil {
			col(name).AppendNull()
		} else {
			col(name).(*array.StringBuilder).Append(*s)
		}
	}
	tokB := col(schemas.ColTokenLogprob).(*array.ListBuilder)
	topB := col(schemas.ColTopLogprobs).(*array.ListBuilder)
	stepB := topB.ValueBuilder().(*array.ListBuilder)
	var tokV, altV *array.Float32Builder
	var tokV64, altV64 *array.Float64Builder
	if wide {
		tokV64 = tokB.ValueBuilder().(*array.Float64Builder)
		altV64 = stepB.ValueBuilder().(*array.Float64Builder)
	} else {
		tokV = tokB.ValueBuilder().(*array.Float32Builder)
		altV = stepB.ValueBuilder().(*array.Float32Builder)
	}
	attrB := col(schemas.ColAttributes).(*array.MapBuilder)
	for _, p := range ps {
		m := &p.meta
		str(schemas.ColTraceID, p.id)
		col(schemas.ColTS).(*array.TimestampBuilder).Append(arrow.Timestamp(m.ts))
		str(schemas.ColModel, m.model)
		str(schemas.ColProvider, m.provider)
		str(schemas.ColLogprobsMode, m.mode)
		col(schemas.ColTemperature).(*array.Float32Builder).Append(m.temperature)
		col(schemas.ColTopP).(*array.Float32Builder).Append(m.topP)
		nstr(schemas.ColDomain, m.domain)
		nstr(schemas.ColPrompt, m.prompt)
		attrB.Append(true)
		for k := range m.attrKeys {
			attrB.KeyBuilder().(*array.StringBuilder).Append(m.attrKeys[k])
			attrB.ItemBuilder().(*array.StringBuilder).Append(m.attrVals[k])
		}
		tokB.Append(true)
		topB.Append(true)
		seqs := make([]int32, 0, len(p.chunks))
		for s := range p.chunks {
			seqs = append(seqs, s)
		}
		sortInt32(seqs)
		for _, s := range seqs {
			c := p.chunks[s]
			switch {
			case !wide:
				tokV.AppendValues(c.tok, nil)
			case c.wide:
				tokV64.AppendValues(c.tok64, nil)
			default:
				for _, x := range c.tok {
					tokV64.Append(float64(x))
				}
			}
			for t := range c.steps() {
				stepB.Append(true)
				lo, hi := c.offs[t], c.offs[t+1]
				switch {
				case !wide:
					altV.AppendValues(c.vals[lo:hi], nil)
				case c.wide:
					altV64.AppendValues(c.vals64[lo:hi], nil)
				default:
					for _, x := range c.vals[lo:hi] {
						altV64.Append(float64(x))
					}
				}
			}
		}
		str(schemas.ColFinishReason, m.finish)
		col(schemas.ColSeq).(*array.Int32Builder).Append(0)
		col(schemas.ColFinal).(*array.BooleanBuilder).Append(final)
		if m.correct == nil {
			col(schemas.ColCorrect).AppendNull()
		} else {
			col(schemas.ColCorrect).(*array.BooleanBuilder).Append(*m.correct)
		}
	}
	return b.NewRecordBatch(), nil
}

func sortInt32(a []int32) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// chunkView reads the columns of a trace.v1 batch by name. Optional columns
// that are missing or of another type read as their defaults.
type chunkView struct {
	id                  *array.String
	seqs                *array.Int32
	finals              *array.Boolean
	tsA                 *array.Timestamp
	model, prov, mode   *array.String
	temp, topP          *array.Float32
	domain, prompt, fin *array.String
	attrs               *array.Map
	correct             *array.Boolean
	tok                 *array.List
	top                 *array.List
	step                *array.List
	// The logprob values are float32 (trace.v1) or float64 (Trace64); a
	// chunk keeps its values in their own type (see chunk).
	tokV, alts     *array.Float32
	tokV64, alts64 *array.Float64
	listErr        error // why chunk rows cannot be read, when they cannot
}

func newChunkView(in arrow.RecordBatch) (*chunkView, error) {
	s := in.Schema()
	get := func(name string) arrow.Array {
		if i := s.FieldIndices(name); len(i) > 0 {
			return in.Column(i[0])
		}
		return nil
	}
	v := &chunkView{}
	var ok bool
	if v.id, ok = get(schemas.ColTraceID).(*array.String); !ok {
		return nil, fmt.Errorf("assembling chunks: column %s missing or not utf8", schemas.ColTraceID)
	}
	v.seqs, _ = get(schemas.ColSeq).(*array.Int32)
	v.finals, _ = get(schemas.ColFinal).(*array.Boolean)
	if v.seqs == nil && v.finals == nil {
		return v, nil // no chunk columns: every row is whole
	}
	v.tsA, _ = get(schemas.ColTS).(*array.Timestamp)
	v.model, _ = get(schemas.ColModel).(*array.String)
	v.prov, _ = get(schemas.ColProvider).(*array.String)
	v.mode, _ = get(schemas.ColLogprobsMode).(*array.String)
	v.temp, _ = get(schemas.ColTemperature).(*array.Float32)
	v.topP, _ = get(schemas.ColTopP).(*array.Float32)
	v.domain, _ = get(schemas.ColDomain).(*array.String)
	v.prompt, _ = get(schemas.ColPrompt).(*array.String)
	v.fin, _ = get(schemas.ColFinishReason).(*array.String)
	v.attrs, _ = get(schemas.ColAttributes).(*array.Map)
	v.correct, _ = get(schemas.ColCorrect).(*array.Boolean)
	if v.tok, ok = get(schemas.ColTokenLogprob).(*array.List); ok {
		v.tokV, _ = v.tok.ListValues().(*array.Float32)
		v.tokV64, _ = v.tok.ListValues().(*array.Float64)
		ok = v.tokV != nil || v.tokV64 != nil
	}
	if !ok {
		v.listErr = fmt.Errorf("assembling chunks: column %s missing or not a list of floats", schemas.ColTokenLogprob)
		return v, nil
	}
	if v.top, ok = get(schemas.ColTopLogprobs).(*array.List); ok {
		if v.step, ok = v.top.ListValues().(*array.List); ok {
			v.alts, _ = v.step.ListValues().(*array.Float32)
			v.alts64, _ = v.step.ListValues().(*array.Float64)
			ok = v.alts != nil || v.alts64 != nil
		}
	}
	if !ok {
		v.listErr = fmt.Errorf("assembling chunks: column %s missing or not a list of lists of floats", schemas.ColTopLogprobs)
	}
	return v, nil
}

// key is row i's model and trace id: one id under two models is two
// responses (the store keys rows so).
func (v *chunkView) key(i int) string {
	m := ""
	if v.model != nil && v.model.IsValid(i) {
		m = strings.TrimSpace(v.model.Value(i)) // as the store keeps it
	}
	return m + "\x00" + v.id.Value(i)
}

func (v *chunkView) seq(i int) int32 {
	if v.seqs == nil || v.seqs.IsNull(i) {
		return 0
	}
	return v.seqs.Value(i)
}

func (v *chunkView) final(i int) bool {
	if v.finals == nil || v.finals.IsNull(i) {
		return true
	}
	return v.finals.Value(i)
}

// whole reports a row that is a complete response by itself.
func (v *chunkView) whole(i int) bool { return v.seq(i) == 0 && v.final(i) }

func (v *chunkView) ts(i int) int64 {
	if v.tsA == nil || v.tsA.IsNull(i) {
		return 0
	}
	return int64(v.tsA.Value(i))
}

func strAt(a *array.String, i int) string {
	if a == nil || a.IsNull(i) {
		return ""
	}
	return a.Value(i)
}

func nstrAt(a *array.String, i int) *string {
	if a == nil || a.IsNull(i) {
		return nil
	}
	s := a.Value(i)
	return &s
}

func f32At(a *array.Float32, i int) float32 {
	if a == nil || a.IsNull(i) {
		return 0
	}
	return a.Value(i)
}

func (v *chunkView) meta(i int) rowMeta {
	m := rowMeta{
		ts:          v.ts(i),
		model:       strAt(v.model, i),
		provider:    strAt(v.prov, i),
		mode:        strAt(v.mode, i),
		temperature: f32At(v.temp, i),
		topP:        f32At(v.topP, i),
		domain:      nstrAt(v.domain, i),
		prompt:      nstrAt(v.prompt, i),
		finish:      strAt(v.fin, i),
	}
	if v.correct != nil && v.correct.IsValid(i) {
		c := v.correct.Value(i)
		m.correct = &c
	}
	if v.attrs != nil && v.attrs.IsValid(i) {
		keys, _ := v.attrs.Keys().(*array.String)
		items, _ := v.attrs.Items().(*array.String)
		if keys != nil && items != nil {
			lo, hi := v.attrs.ValueOffsets(i)
			for j := int(lo); j < int(hi); j++ {
				m.attrKeys = append(m.attrKeys, keys.Value(j))
				m.attrVals = append(m.attrVals, strAt(items, j))
			}
		}
	}
	return m
}

// chunk copies the per-step lists of row i. Float64 values are kept as they
// are, not narrowed to float32: when either list of the batch is float64 the
// chunk is wide and holds both lists as float64 (widening float32 is exact).
// A null list is an empty chunk.
func (v *chunkView) chunk(i int) chunk {
	c := chunk{wide: v.tokV64 != nil || v.alts64 != nil}
	n := 0
	if v.tok.IsValid(i) {
		lo, hi := v.tok.ValueOffsets(i)
		if c.wide {
			c.tok64 = appendFloat64s(nil, v.tokV, v.tokV64, lo, hi)
		} else {
			c.tok = append([]float32(nil), v.tokV.Float32Values()[lo:hi]...)
		}
		n = int(hi - lo)
	}
	c.offs = make([]int32, 1, n+1)
	nv := 0
	if v.top.IsValid(i) {
		lo, hi := v.top.ValueOffsets(i)
		for s := lo; s < hi && int(s-lo) < n; s++ {
			if v.step.IsValid(int(s)) {
				a, b := v.step.ValueOffsets(int(s))
				if c.wide {
					c.vals64 = appendFloat64s(c.vals64, v.alts, v.alts64, a, b)
					nv = len(c.vals64)
				} else {
					c.vals = append(c.vals, v.alts.Float32Values()[a:b]...)
					nv = len(c.vals)
				}
			}
			c.offs = append(c.offs, int32(nv))
		}
	}
	for len(c.offs) < n+1 { // fewer step lists than tokens: empty alternatives
		c.offs = append(c.offs, int32(nv))
	}
	return c
}

// appendFloat64s appends a[lo:hi] of whichever of f32 and f64 is set, as
// float64 (exact for float32).
func appendFloat64s(dst []float64, f32 *array.Float32, f64 *array.Float64, lo, hi int64) []float64 {
	if f64 != nil {
		return append(dst, f64.Float64Values()[lo:hi]...)
	}
	for _, x := range f32.Float32Values()[lo:hi] {
		dst = append(dst, float64(x))
	}
	return dst
}

// HasChunks reports whether rec holds a chunk row (seq > 0 or final false).
func HasChunks(rec arrow.RecordBatch) bool {
	sc := rec.Schema()
	if idx := sc.FieldIndices(schemas.ColFinal); len(idx) > 0 {
		if f, ok := rec.Column(idx[0]).(*array.Boolean); ok {
			for i := range f.Len() {
				if f.IsValid(i) && !f.Value(i) {
					return true
				}
			}
		}
	}
	if idx := sc.FieldIndices(schemas.ColSeq); len(idx) > 0 {
		if q, ok := rec.Column(idx[0]).(*array.Int32); ok {
			for i := range q.Len() {
				if q.IsValid(i) && q.Value(i) != 0 {
					return true
				}
			}
		}
	}
	return false
}
