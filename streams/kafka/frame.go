package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ipc"
)

// HeaderSchema is the header naming a message's schema, e.g. "trace.v1".
const HeaderSchema = schemas.MetaKey

// Messages encodes rec as Arrow IPC messages of at most maxBytes each (rows
// are split across messages as needed), each with the schema header and key.
// The values are copies: rec is not released and not referenced afterwards.
//
// A whole trace.v1 response (seq 0, final) that alone encodes to more than
// maxBytes is sent as chunk rows instead: the same trace_id and per-row
// columns, consecutive ranges of its steps sized to fit, seq 0..k-1 and final
// on the last, one per message, each keyed by the trace_id (not by key)
// so that they share a partition, where the stream reassembles them. A row
// that cannot be sent that way (another schema, a chunk row already, lists
// that cannot be split exactly, per-row columns that alone fill a message)
// is left out: the messages of the other rows come back with a
// *TooLargeError naming it, which wraps ipc.ErrTooLarge. Any other error
// comes with no messages.
func Messages(rec arrow.RecordBatch, key []byte, maxBytes int) ([]Message, error) {
	if rec == nil {
		return nil, errors.New("kafka: messages of a nil batch")
	}
	tag := []byte(schemas.NameOf(rec.Schema()))
	var msgs []Message
	var tooLarge *TooLargeError
	err := ipc.Split(rec, maxBytes, func(b []byte) error {
		msgs = append(msgs, Message{Key: key, Value: b, Headers: []Header{{Key: HeaderSchema, Value: tag}}})
		return nil
	}, func(i int64, row arrow.RecordBatch, size int) error {
		chunks, why := chunkRow(row, maxBytes)
		if why != "" {
			if tooLarge == nil {
				tooLarge = &TooLargeError{Limit: maxBytes}
			}
			tooLarge.Rows = append(tooLarge.Rows, RowTooLarge{Row: int(i), Bytes: size, Steps: steps(row), Why: why})
			return nil
		}
		for _, m := range chunks {
			m.Headers = []Header{{Key: HeaderSchema, Value: tag}}
			msgs = append(msgs, m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if tooLarge != nil {
		return msgs, tooLarge
	}
	return msgs, nil
}

// TooLargeError names the rows Messages left out because they do not fit
// one message, not even as chunks. errors.Is(err, ipc.ErrTooLarge) holds.
type TooLargeError struct {
	Limit int           // the message size limit, bytes
	Rows  []RowTooLarge // the rows left out, at least one
}

// RowTooLarge is one row Messages left out.
type RowTooLarge struct {
	Row   int    // index in the batch
	Bytes int    // what the row alone encodes to
	Steps int    // its steps (token_logprob entries), when it has that column
	Why   string // why it was not sent as chunk rows
}

// Error describes the first row left out and counts the others.
func (e *TooLargeError) Error() string {
	r := e.Rows[0]
	steps := ""
	if r.Steps > 0 {
		steps = fmt.Sprintf(" (%d steps)", r.Steps)
	}
	s := fmt.Sprintf("%v: row %d%s encodes to %d bytes, over the limit of %d, and cannot be sent as chunks: %s",
		ipc.ErrTooLarge, r.Row, steps, r.Bytes, e.Limit, r.Why)
	if len(e.Rows) > 1 {
		s += fmt.Sprintf(" (and %d more rows)", len(e.Rows)-1)
	}
	return s
}

// Unwrap returns ipc.ErrTooLarge.
func (e *TooLargeError) Unwrap() error { return ipc.ErrTooLarge }

// IsMessageTooLarge reports whether a produce error says that a message is
// over a size limit of kafka-go (the producer's batch_bytes) or of the
// broker (the topic's max.message.bytes): retrying the same message cannot
// succeed. Produce's own refusal of a value over max_message_bytes is not
// among them; check sizes against MaxMessageBytes before producing.
func IsMessageTooLarge(err error) bool {
	var we kafkago.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && errors.Is(e, kafkago.MessageSizeTooLarge) {
				return true
			}
		}
		return false
	}
	return errors.Is(err, kafkago.MessageSizeTooLarge)
}

// chunkSlack covers what the size estimate of a chunk leaves out: the
// padding of its buffers and the flatbuffer metadata of longer lists.
const chunkSlack = 1024

// chunkRow splits row, a one-row trace.v1 batch, into chunk rows of at most
// maxBytes each, encoded and keyed by the trace_id; or says why it cannot.
func chunkRow(row arrow.RecordBatch, maxBytes int) ([]Message, string) {
	c, why := newChunker(row)
	if why != "" {
		return nil, why
	}
	empty, err := c.encode(0, 0, 0, true, maxBytes)
	switch {
	case errors.Is(err, ipc.ErrTooLarge):
		return nil, fmt.Sprintf("its per-row columns alone (prompt, attributes, ...) encode to more than %d bytes", maxBytes)
	case err != nil:
		return nil, err.Error()
	}
	budget := maxBytes - len(empty) - chunkSlack
	// The estimate holds but for padding; should a chunk still come out too
	// large, the budget shrinks and the row is cut again.
	for range 4 {
		bounds, why := c.bounds(budget)
		if why != "" {
			return nil, why
		}
		msgs := make([]Message, 0, len(bounds)-1)
		for j := 0; j+1 < len(bounds); j++ {
			b, err := c.encode(bounds[j], bounds[j+1], int32(j), j+2 == len(bounds), maxBytes)
			if errors.Is(err, ipc.ErrTooLarge) {
				msgs = nil
				break
			}
			if err != nil {
				return nil, err.Error()
			}
			msgs = append(msgs, Message{Key: []byte(c.id), Value: b})
		}
		if msgs != nil {
			return msgs, ""
		}
		budget -= budget / 8
	}
	return nil, "its chunks did not come out under the limit"
}

// chunker cuts the per-step lists of one whole trace.v1 row.
type chunker struct {
	row          arrow.RecordBatch
	id           string
	tok, top     *array.List // token_logprob, top_logprobs
	step         *array.List // top's values: one list per step
	t0, s0       int64       // row 0's first chosen logprob and first step
	n            int64       // steps
	elem         int         // bytes per logprob
	iTok, iTop   int
	iSeq, iFinal int
}

func newChunker(row arrow.RecordBatch) (*chunker, string) {
	s := row.Schema()
	if tag := schemas.NameOf(s); tag != schemas.Tag(schemas.TraceName) {
		return nil, fmt.Sprintf("its schema is %q, not trace.v1: only trace.v1 rows are split into chunks", tag)
	}
	if err := ipc.CheckTrace(s); err != nil {
		return nil, err.Error()
	}
	if row.NumRows() != 1 {
		return nil, fmt.Sprintf("%d rows, want one", row.NumRows())
	}
	col := func(name string) (int, arrow.Array) {
		if i := s.FieldIndices(name); len(i) > 0 {
			return i[0], row.Column(i[0])
		}
		return -1, nil
	}
	c := &chunker{row: row}
	var seq, final, id, tok, top arrow.Array
	c.iSeq, seq = col(schemas.ColSeq)
	c.iFinal, final = col(schemas.ColFinal)
	_, id = col(schemas.ColTraceID)
	c.iTok, tok = col(schemas.ColTokenLogprob)
	c.iTop, top = col(schemas.ColTopLogprobs)
	seqs, ok1 := seq.(*array.Int32)
	finals, ok2 := final.(*array.Boolean)
	if !ok1 || !ok2 {
		return nil, "it has no int32 seq and boolean final columns to number chunks with"
	}
	if (seqs.IsValid(0) && seqs.Value(0) != 0) || (finals.IsValid(0) && !finals.Value(0)) {
		return nil, fmt.Sprintf("it is a chunk already (seq %d, final %v); send smaller chunks", seqs.Value(0), finals.Value(0))
	}
	ids := id.(*array.String) // CheckTrace checked the type
	if ids.IsNull(0) || ids.Value(0) == "" {
		return nil, "it has no trace_id to key and join its chunks by"
	}
	c.id = ids.Value(0)
	c.tok, c.top = tok.(*array.List), top.(*array.List)
	if c.tok.IsNull(0) || c.top.IsNull(0) {
		return nil, "its logprob lists are null"
	}
	c.step = c.top.ListValues().(*array.List)
	var t1, s1 int64
	c.t0, t1 = c.tok.ValueOffsets(0)
	c.s0, s1 = c.top.ValueOffsets(0)
	if t1-c.t0 != s1-c.s0 {
		return nil, fmt.Sprintf("token_logprob has %d steps but top_logprobs %d", t1-c.t0, s1-c.s0)
	}
	c.n = t1 - c.t0
	if c.n < 2 {
		return nil, fmt.Sprintf("%d steps cannot be split", c.n)
	}
	c.elem = 4
	if c.tok.ListValues().DataType().ID() == arrow.FLOAT64 {
		c.elem = 8
	}
	// The stream's assembler reads null logprobs as values and a null step
	// as an empty one; the profile of the whole row rejects them. Such a row
	// is not split, so that its chunks score as the row would.
	a0, _ := c.step.ValueOffsets(int(c.s0))
	_, a1 := c.step.ValueOffsets(int(s1 - 1))
	if nulls(c.tok.ListValues(), c.t0, t1) || nulls(c.step, c.s0, s1) || nulls(c.step.ListValues(), a0, a1) {
		return nil, "its logprob lists hold nulls"
	}
	return c, ""
}

// nulls reports whether a[lo:hi] holds a null.
func nulls(a arrow.Array, lo, hi int64) bool {
	if a.NullN() == 0 {
		return false
	}
	s := array.NewSlice(a, lo, hi)
	defer s.Release()
	return s.NullN() > 0
}

// steps is the number of chosen logprobs of the one-row batch row, 0 when it
// has none.
func steps(row arrow.RecordBatch) int {
	i := row.Schema().FieldIndices(schemas.ColTokenLogprob)
	if len(i) == 0 || row.NumRows() != 1 {
		return 0
	}
	l, ok := row.Column(i[0]).(*array.List)
	if !ok || l.IsNull(0) {
		return 0
	}
	lo, hi := l.ValueOffsets(0)
	return int(hi - lo)
}

// bounds cuts the steps into runs whose lists take at most budget bytes:
// bounds[j] to bounds[j+1] are chunk j's steps.
func (c *chunker) bounds(budget int) ([]int64, string) {
	bounds := []int64{0}
	size := 0
	for t := range c.n {
		a, b := c.step.ValueOffsets(int(c.s0 + t))
		// The chosen logprob and the alternatives, the step's list offset,
		// validity bits.
		cost := c.elem*int(1+b-a) + 4 + 1
		if cost > budget {
			return nil, fmt.Sprintf("step %d alone (%d logprobs) does not fit beside the per-row columns", t+1, b-a)
		}
		if size+cost > budget {
			bounds = append(bounds, t)
			size = 0
		}
		size += cost
	}
	return append(bounds, c.n), ""
}

// encode encodes steps [lo, hi) as the chunk seq.
func (c *chunker) encode(lo, hi int64, seq int32, final bool, maxBytes int) ([]byte, error) {
	cols := make([]arrow.Array, c.row.NumCols())
	for i := range cols {
		switch i {
		case c.iTok:
			cols[i] = subList(c.tok, c.t0+lo, c.t0+hi)
		case c.iTop:
			cols[i] = subList(c.top, c.s0+lo, c.s0+hi)
		case c.iSeq:
			cols[i] = scalar(arrow.PrimitiveTypes.Int32, arrow.Int32Traits.CastToBytes([]int32{seq}))
		case c.iFinal:
			var b byte
			if final {
				b = 1
			}
			cols[i] = scalar(arrow.FixedWidthTypes.Boolean, []byte{b})
		default:
			cols[i] = c.row.Column(i)
			cols[i].Retain()
		}
	}
	rec := array.NewRecordBatch(c.row.Schema(), cols, 1)
	for _, a := range cols {
		a.Release()
	}
	defer rec.Release()
	parts, err := ipc.Encode(rec, maxBytes)
	if err != nil {
		return nil, err
	}
	return parts[0], nil
}

// subList is a one-row list holding the values [lo, hi) of l's values.
func subList(l *array.List, lo, hi int64) arrow.Array {
	vals := array.NewSlice(l.ListValues(), lo, hi)
	defer vals.Release()
	offs := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes([]int32{0, int32(hi - lo)}))
	d := array.NewData(l.DataType(), 1, []*memory.Buffer{nil, offs}, []arrow.ArrayData{vals.Data()}, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

// scalar is a one-value array of a fixed-width type without nulls.
func scalar(t arrow.DataType, value []byte) arrow.Array {
	d := array.NewData(t, 1, []*memory.Buffer{nil, memory.NewBufferBytes(value)}, nil, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

// ProduceBatch encodes rec into messages under the producer's message size
// limit (see Messages) and produces them; it returns the number of
// messages. A row that cannot be sent fails the whole batch: nothing is
// produced. It does not release rec and keeps no reference to it once it
// returns (the messages hold encoded copies): the caller still owns rec and
// releases it.
func (p *Producer) ProduceBatch(ctx context.Context, rec arrow.RecordBatch, key []byte) (int, error) {
	msgs, err := Messages(rec, key, p.cfg.MaxMessageBytes)
	if err != nil {
		return 0, fmt.Errorf("encoding %d rows for %s: %w", rec.NumRows(), p.cfg.Topic, err)
	}
	return len(msgs), p.Produce(ctx, msgs...)
}
