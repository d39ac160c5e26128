// Package ipc frames record batches as Arrow IPC streams: one Kafka message is
// one IPC stream holding one record batch, under the broker's message size
// limit. Decoding is defensive: bytes from a topic may be anything, and a
// corrupt message must become a dead-letter record, never a crash.
package ipc

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/schemas"
)

// Sentinels for the dead-letter reasons of undecodable messages.
var (
	ErrCorrupt  = errors.New(schemas.ReasonCorruptIPC)
	ErrSchema   = errors.New(schemas.ReasonWrongSchema)
	ErrTooLarge = errors.New("row larger than the message size limit")
)

// Encode frames rec as Arrow IPC streams of at most maxBytes each, splitting
// the batch by rows where needed. A single row over maxBytes is ErrTooLarge.
func Encode(rec arrow.RecordBatch, maxBytes int) ([][]byte, error) {
	var out [][]byte
	err := Split(rec, maxBytes, func(b []byte) error {
		out = append(out, b)
		return nil
	}, nil)
	return out, err
}

// Split frames rec as Encode does and hands the streams to emit, in row
// order. A single row that alone encodes to more than maxBytes goes to large
// instead: its index in rec, the row as a one-row slice of rec (released
// when large returns; large may retain it) and its encoded size. With a nil
// large such a row is ErrTooLarge. Split stops at the first error of emit or
// large and returns it.
func Split(rec arrow.RecordBatch, maxBytes int, emit func([]byte) error, large func(i int64, row arrow.RecordBatch, size int) error) error {
	if rec == nil {
		return errors.New("ipc: encoding a nil batch")
	}
	return split(rec, 0, maxBytes, emit, large)
}

// split is Split of rec, which starts at row base of the caller's batch.
func split(rec arrow.RecordBatch, base int64, maxBytes int, emit func([]byte) error, large func(int64, arrow.RecordBatch, int) error) error {
	b, err := encodeOne(rec)
	if err != nil {
		return err
	}
	if len(b) <= maxBytes {
		return emit(b)
	}
	n := rec.NumRows()
	if n <= 1 {
		if large == nil || n == 0 {
			return fmt.Errorf("%w: one row encodes to %d bytes, limit %d", ErrTooLarge, len(b), maxBytes)
		}
		return large(base, rec, len(b))
	}
	// Split proportionally to the overshoot, so a batch 3x too large becomes
	// about three messages instead of a cascade of halvings.
	parts := int64(len(b)/maxBytes) + 1
	step := max(1, n/parts)
	for lo := int64(0); lo < n; lo += step {
		part := rec.NewSlice(lo, min(n, lo+step))
		err := split(part, base+lo, maxBytes, emit, large)
		part.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

func encodeOne(rec arrow.RecordBatch) ([]byte, error) {
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
	if err := w.Write(rec); err != nil {
		return nil, fmt.Errorf("encoding ipc: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encoding ipc: %w", err)
	}
	return buf.Bytes(), nil
}

// CheckBounds checks that the framing and flatbuffer metadata of an Arrow
// IPC stream lie inside b, so that arrow-go's reader can be given untrusted
// bytes of any schema without being made to allocate what is not there.
// Errors wrap ErrCorrupt.
func CheckBounds(b []byte) error {
	if err := checkBounds(b); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil
}

// Decode reads one trace.v1 record batch (float32 or float64 logprobs) from
// an Arrow IPC stream. Errors wrap ErrCorrupt or ErrSchema; it never panics,
// and allocates from mem at most DecodeLimit(len(b)) bytes (a message whose
// compressed buffers claim more wraps ErrCorrupt and ErrMemoryLimit). The
// caller releases the batch.
func Decode(b []byte, mem memory.Allocator) (arrow.RecordBatch, error) {
	frames, err := checkFrames(b, true)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	bounded := NewBoundedAllocator(mem, DecodeLimit(len(b)))
	recs, err := decode(frames, bounded, false)
	if err != nil {
		bounded.Reclaim()
		return nil, err
	}
	return recs[0], nil
}

// DecodeStream reads every trace.v1 record batch of an Arrow IPC stream
// (one schema, float32 or float64 logprobs), checked as Decode checks one:
// errors wrap ErrCorrupt or ErrSchema, it never panics, and all the batches
// together take at most limit bytes from mem (0: DecodeLimit(len(b))); a
// stream whose compressed buffers claim more wraps ErrCorrupt and
// ErrMemoryLimit. A stream of no batch returns none and no error. The
// caller releases the batches.
func DecodeStream(b []byte, mem memory.Allocator, limit int) ([]arrow.RecordBatch, error) {
	frames, err := checkFrames(b, true)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if limit <= 0 {
		limit = DecodeLimit(len(b))
	}
	bounded := NewBoundedAllocator(mem, limit)
	recs, err := decode(frames, bounded, true)
	if err != nil {
		bounded.Reclaim()
	}
	return recs, err
}

// decode reads the batches of frames: exactly one, or with all any number.
func decode(frames []frame, mem memory.Allocator, all bool) (recs []arrow.RecordBatch, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = corrupt(r)
		}
		if err != nil {
			for _, rec := range recs {
				rec.Release()
			}
			recs = nil
		}
	}()
	// The reader owns the frame reader and releases it.
	rd, err := ipc.NewReaderFromMessageReader(newFrameReader(frames), ipc.WithAllocator(mem), ipc.WithDelayReadSchema(false))
	if err != nil {
		return nil, corrupt(err)
	}
	defer rd.Release()
	if err := CheckTrace(rd.Schema()); err != nil {
		return nil, err
	}
	for rd.Next() {
		rec := rd.RecordBatch()
		rec.Retain()
		recs = append(recs, rec)
		if !all && len(recs) > 1 {
			return recs, fmt.Errorf("%w: stream holds more than one record batch; send one per message", ErrCorrupt)
		}
		if err := Validate(rec); err != nil {
			return recs, err
		}
		if err := checkIDs(rec); err != nil {
			return recs, err
		}
	}
	if err := rd.Err(); err != nil { // nil at a clean end
		return recs, corrupt(err)
	}
	if !all && len(recs) == 0 {
		return nil, fmt.Errorf("%w: stream holds no record batch", ErrCorrupt)
	}
	return recs, nil
}

// checkIDs reports a trace_id that is null, empty or longer than
// schemas.MaxTraceIDBytes: trace.v1 declares the column non-nullable, the id
// is the idempotency key (rows without one were stored under "" and
// deduplicated into one), and labels name at most that many bytes. Errors
// wrap ErrSchema.
func checkIDs(rec arrow.RecordBatch) error {
	ids, ok := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
	if !ok {
		return nil // CheckTrace checked the type
	}
	for i := range ids.Len() {
		switch {
		case ids.IsNull(i):
			return fmt.Errorf("%w: column %q is null at row %d of %d; trace.v1 requires an id on every row (the idempotency key)", ErrSchema, schemas.ColTraceID, i, ids.Len())
		case ids.ValueLen(i) == 0:
			return fmt.Errorf("%w: column %q is empty at row %d of %d; trace.v1 requires an id on every row (the idempotency key)", ErrSchema, schemas.ColTraceID, i, ids.Len())
		case ids.ValueLen(i) > schemas.MaxTraceIDBytes:
			return fmt.Errorf("%w: column %q holds %d bytes at row %d of %d, more than the %d an id may have (no label could name it)", ErrSchema, schemas.ColTraceID, ids.ValueLen(i), i, ids.Len(), schemas.MaxTraceIDBytes)
		}
	}
	return nil
}

// corrupt wraps an error or recovered panic from arrow-go's reader in
// ErrCorrupt, keeping ErrMemoryLimit visible to errors.Is.
func corrupt(v any) error {
	if err, ok := v.(error); ok {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, v)
}

// CheckTrace reports whether s can be read as trace.v1: the required columns
// trace_id, token_logprob and top_logprobs, and every other trace.v1 column
// it has, with the declared types. The logprob lists may be float32
// (schemas.Trace) or float64 (schemas.Trace64). Errors wrap ErrSchema.
func CheckTrace(s *arrow.Schema) error {
	for _, name := range []string{schemas.ColTraceID, schemas.ColTokenLogprob, schemas.ColTopLogprobs} {
		if len(s.FieldIndices(name)) == 0 {
			return fmt.Errorf("%w: no column %q (schema %q); trace.v1 is required", ErrSchema, name, schemas.NameOf(s))
		}
	}
	f64 := false
	if f, ok := s.FieldsByName(schemas.ColTokenLogprob); ok {
		f64 = arrow.TypeEqual(f[0].Type, schemas.Trace64.Field(schemas.MustIndex(schemas.Trace64, schemas.ColTokenLogprob)).Type)
	}
	want := schemas.Trace
	if f64 {
		want = schemas.Trace64
	}
	for _, f := range want.Fields() {
		got, ok := s.FieldsByName(f.Name)
		if !ok {
			continue
		}
		if !arrow.TypeEqual(got[0].Type, f.Type) {
			return fmt.Errorf("%w: column %q is %s, want %s", ErrSchema, f.Name, got[0].Type, f.Type)
		}
	}
	return nil
}

// Validate checks the offsets and buffer sizes of every column, so that
// readers can index them without bounds surprises. Errors wrap ErrCorrupt.
func Validate(rec arrow.RecordBatch) error {
	for i, c := range rec.Columns() {
		if int64(c.Len()) != rec.NumRows() {
			return fmt.Errorf("%w: column %s has %d rows, batch %d", ErrCorrupt, rec.Schema().Field(i).Name, c.Len(), rec.NumRows())
		}
		if err := validateArray(c); err != nil {
			return fmt.Errorf("%w: column %s: %v", ErrCorrupt, rec.Schema().Field(i).Name, err)
		}
	}
	return nil
}

func validateArray(a arrow.Array) error {
	d := a.Data()
	bufs := d.Buffers()
	end := int64(d.Offset()) + int64(d.Len())
	if d.Offset() < 0 || d.Len() < 0 {
		return fmt.Errorf("negative offset or length")
	}
	if len(bufs) > 0 && bufs[0] != nil && int64(bufs[0].Len())*8 < end {
		return fmt.Errorf("validity bitmap of %d bytes for %d slots", bufs[0].Len(), end)
	}
	if (len(bufs) == 0 || bufs[0] == nil) && d.NullN() != 0 && d.DataType().ID() != arrow.NULL {
		return fmt.Errorf("%d nulls claimed without a validity bitmap", d.NullN())
	}
	if nulls := d.NullN(); nulls < 0 || nulls > d.Len() {
		return fmt.Errorf("null count %d for %d slots", nulls, d.Len())
	}
	if fw, ok := d.DataType().(arrow.FixedWidthDataType); ok && len(bufs) > 1 {
		need := end * int64(fw.BitWidth()) / 8
		if fw.BitWidth() == 1 {
			need = (end + 7) / 8
		}
		if need > 0 && (bufs[1] == nil || int64(bufs[1].Len()) < need) {
			return fmt.Errorf("value buffer too short for %d slots", end)
		}
	}
	if v, ok := a.(interface{ ValidateFull() error }); ok {
		if err := v.ValidateFull(); err != nil {
			return err
		}
	}
	switch x := a.(type) {
	case *array.List:
		return validateArray(x.ListValues())
	case *array.Map:
		if err := validateArray(x.Keys()); err != nil {
			return err
		}
		return validateArray(x.Items())
	case *array.Struct:
		for i := range x.NumField() {
			if err := validateArray(x.Field(i)); err != nil {
				return err
			}
		}
	}
	return nil
}
