package ipc_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	arrowipc "github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ipc"
)

func synth(mem memory.Allocator, traces, steps int) arrow.RecordBatch {
	return profile.Synthetic(mem, profile.SynthConfig{Traces: traces, Steps: steps, K: 20, Seed: 9, Model: "m"})
}

func TestEncodeDecodeRoundTripAndSplit(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := synth(mem, 40, 100) // ~40 x 100 x 21 x 4 B = 336 KB
	defer rec.Release()
	for _, limit := range []int{1 << 20, 100 << 10, 20 << 10} {
		msgs, err := ipc.Encode(rec, limit)
		require.NoError(t, err)
		var rows int64
		var ids []string
		for _, m := range msgs {
			require.LessOrEqual(t, len(m), limit)
			got, err := ipc.Decode(m, mem)
			require.NoError(t, err)
			rows += got.NumRows()
			col := got.Column(schemas.MustIndex(got.Schema(), schemas.ColTraceID)).(*array.String)
			for i := range col.Len() {
				ids = append(ids, col.Value(i))
			}
			got.Release()
		}
		require.Equal(t, rec.NumRows(), rows, "limit %d", limit)
		want := rec.Column(schemas.MustIndex(schemas.Trace, schemas.ColTraceID)).(*array.String)
		for i, id := range ids {
			require.Equal(t, want.Value(i), id, "order kept")
		}
		if limit < 1<<20 {
			require.Greater(t, len(msgs), 1)
		}
	}
	_, err := ipc.Encode(rec, 1024)
	require.ErrorIs(t, err, ipc.ErrTooLarge)
}

func TestDecodeRejects(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := synth(mem, 2, 5)
	defer rec.Release()
	good, err := ipc.Encode(rec, 1<<20)
	require.NoError(t, err)

	other := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	b := array.NewRecordBuilder(mem, other)
	b.Field(0).(*array.Int64Builder).Append(1)
	wrong := b.NewRecordBatch()
	b.Release()
	defer wrong.Release()
	wrongBytes, err := ipc.Encode(wrong, 1<<20)
	require.NoError(t, err)

	// trace.v1 with a column of the wrong type
	f := schemas.Trace.Fields()
	f[schemas.MustIndex(schemas.Trace, schemas.ColModel)].Type = arrow.PrimitiveTypes.Int32
	badType := arrow.NewSchema(f, nil)
	cols := rec.Columns()
	ib := array.NewInt32Builder(mem)
	ib.AppendValues([]int32{1, 2}, nil)
	modelInts := ib.NewArray()
	ib.Release()
	defer modelInts.Release()
	cols2 := append([]arrow.Array{}, cols...)
	cols2[schemas.MustIndex(schemas.Trace, schemas.ColModel)] = modelInts
	badRec := array.NewRecordBatch(badType, cols2, rec.NumRows())
	defer badRec.Release()
	badTypeBytes, err := ipc.Encode(badRec, 1<<20)
	require.NoError(t, err)

	var two bytes.Buffer
	w := arrowipc.NewWriter(&two, arrowipc.WithSchema(rec.Schema()))
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())

	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ipc.ErrCorrupt},
		{"garbage", []byte("definitely not arrow"), ipc.ErrCorrupt},
		{"truncated", good[0][:len(good[0])/2], ipc.ErrCorrupt},
		{"flipped bytes", flip(good[0]), ipc.ErrCorrupt},
		{"other schema", wrongBytes[0], ipc.ErrSchema},
		{"wrong column type", badTypeBytes[0], ipc.ErrSchema},
		{"two batches", two.Bytes(), ipc.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// On some corrupt bodies arrow's reader recovers from its own
			// panic and abandons buffers; Decode reclaims them.
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			got, err := ipc.Decode(tc.data, mem)
			if got != nil {
				got.Release()
			}
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// flip corrupts the body of a message (past the schema) without touching
// its length prefixes.
func flip(b []byte) []byte {
	c := append([]byte{}, b...)
	for i := len(c) / 2; i < len(c)-16; i += 7 {
		c[i] ^= 0xff
	}
	return c
}

func TestOpenFileBothFormats(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := synth(mem, 3, 4)
	defer rec.Release()
	dir := t.TempDir()

	streamPath := filepath.Join(dir, "s.arrow")
	f, _ := os.Create(streamPath)
	w := arrowipc.NewWriter(f, arrowipc.WithSchema(rec.Schema()))
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())
	f.Close()

	filePath := filepath.Join(dir, "f.arrow")
	f, _ = os.Create(filePath)
	fw, err := arrowipc.NewFileWriter(f, arrowipc.WithSchema(rec.Schema()))
	require.NoError(t, err)
	require.NoError(t, fw.Write(rec))
	require.NoError(t, fw.Close())
	f.Close()

	for _, p := range []string{streamPath, filePath} {
		r, err := ipc.OpenFile(p, mem)
		require.NoError(t, err, p)
		got, err := r.Next()
		require.NoError(t, err)
		require.Equal(t, rec.NumRows(), got.NumRows())
		got.Release()
		_, err = r.Next()
		require.ErrorIs(t, err, io.EOF)
		require.False(t, r.Unterminated(), p)
		require.NoError(t, r.Close())
	}

	// A stream file cut between batches (here: its end-of-stream marker
	// missing, as a writer that did not finish leaves it) reads its whole
	// batches and says it is unterminated, from a regular file and from a
	// pipe alike.
	whole, err := os.ReadFile(streamPath)
	require.NoError(t, err)
	require.Equal(t, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, whole[len(whole)-8:])
	cut := filepath.Join(dir, "cut.arrows")
	require.NoError(t, os.WriteFile(cut, whole[:len(whole)-8], 0o644))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	go func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			_, _ = f.Write(whole[:len(whole)-8])
			f.Close()
		}
	}()
	for _, p := range []string{cut, fifo} {
		r, err := ipc.OpenFile(p, mem)
		require.NoError(t, err, p)
		got, err := r.Next()
		require.NoError(t, err, p)
		got.Release()
		_, err = r.Next()
		require.ErrorIs(t, err, io.EOF, p)
		require.True(t, r.Unterminated(), p)
		require.NoError(t, r.Close())
	}

	junk := filepath.Join(dir, "junk.arrow")
	require.NoError(t, os.WriteFile(junk, []byte("nope"), 0o644))
	_, err = ipc.OpenFile(junk, mem)
	require.ErrorIs(t, err, ipc.ErrCorrupt)
}

// FuzzDecode: arbitrary bytes from a topic (or an HTTP body: DecodeStream)
// never panic nor leak, and what decodes is a valid trace.v1 batch the
// profile operator can read.
func FuzzDecode(f *testing.F) {
	defer ipc.SetDecodeFloor(1 << 20)() // 1 MiB per mutated size claim, not 64
	mem := memory.NewGoAllocator()
	rec := synth(mem, 2, 3)
	msgs, _ := ipc.Encode(rec, 1<<20)
	for _, opt := range []arrowipc.Option{arrowipc.WithZstd(), arrowipc.WithLZ4()} {
		b := compressed(f, rec, opt)
		f.Add(b)
		f.Add(forge(f, b, 0, 1<<40))
	}
	rec.Release()
	f.Add(msgs[0])
	f.Add(msgs[0][:len(msgs[0])-9])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0})
	if b, err := os.ReadFile("testdata/seed-float64.arrows"); err == nil {
		f.Add(b)
	}
	op, _ := profile.New(profile.DefaultConfig(), mem, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		mem := memory.NewCheckedAllocator(mem)
		defer mem.AssertSize(t, 0)
		if recs, err := ipc.DecodeStream(data, mem, 0); err == nil {
			for _, r := range recs {
				r.Release()
			}
		}
		got, err := ipc.Decode(data, mem)
		if err != nil {
			return
		}
		defer got.Release()
		out, err := op.Score(got, nil)
		if err != nil {
			return // a type the operator refuses is an error, not a panic
		}
		out.Release()
	})
}

// TestDecodeEmptyLists: a batch whose traces all have zero steps is valid
// Arrow (the writer may omit the empty value buffers) and must decode, so that
// the profile operator can reject the rows as "empty", not as corrupt bytes.
func TestDecodeEmptyLists(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	b := array.NewRecordBuilder(mem, schemas.Trace)
	defer b.Release()
	for i, f := range schemas.Trace.Fields() {
		switch f.Name {
		case schemas.ColTraceID:
			b.Field(i).(*array.StringBuilder).AppendValues([]string{"e1", "e2"}, nil)
		case schemas.ColTokenLogprob, schemas.ColTopLogprobs:
			b.Field(i).(*array.ListBuilder).Append(true) // zero steps
			b.Field(i).(*array.ListBuilder).Append(true)
		case schemas.ColFinal: // whole responses, not chunks
			b.Field(i).(*array.BooleanBuilder).AppendValues([]bool{true, true}, nil)
		default:
			b.Field(i).AppendEmptyValues(2)
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	msgs, err := ipc.Encode(rec, 1<<20)
	require.NoError(t, err)
	got, err := ipc.Decode(msgs[0], mem)
	require.NoError(t, err)
	defer got.Release()
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	require.NoError(t, err)
	out, err := op.Process(context.Background(), got)
	require.NoError(t, err)
	defer out[0].Release()
	st := out[0].Column(schemas.MustIndex(schemas.Scored, schemas.ColStatus)).(*array.String)
	require.Equal(t, schemas.ReasonEmpty, st.Value(0))
	require.Equal(t, schemas.ReasonEmpty, st.Value(1))
}

// withIDs is rec with its trace_id column replaced (nil: a null id).
func withIDs(t *testing.T, mem memory.Allocator, rec arrow.RecordBatch, ids []*string) arrow.RecordBatch {
	t.Helper()
	b := array.NewStringBuilder(mem)
	defer b.Release()
	for _, id := range ids {
		if id == nil {
			b.AppendNull()
		} else {
			b.Append(*id)
		}
	}
	col := b.NewArray()
	defer col.Release()
	cols := append([]arrow.Array(nil), rec.Columns()...)
	cols[schemas.MustIndex(rec.Schema(), schemas.ColTraceID)] = col
	return array.NewRecordBatch(rec.Schema(), cols, rec.NumRows())
}

// TestDecodeRequiresIDs: a null or empty trace_id was decoded and stored
// under "" (every such row deduplicated into one); the message is now
// wrong_schema, from Kafka and from a file.
func TestDecodeRequiresIDs(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := synth(mem, 3, 4)
	defer rec.Release()
	a, empty, long := "a", "", strings.Repeat("x", schemas.MaxTraceIDBytes+1)
	for _, tc := range []struct {
		ids  []*string
		want string
	}{
		{[]*string{&a, nil, &a}, `column "trace_id" is null at row 1 of 3`},
		{[]*string{&a, &a, &empty}, `column "trace_id" is empty at row 2 of 3`},
		{[]*string{&long, &a, &a}, `column "trace_id" holds 1025 bytes at row 0 of 3, more than the 1024`},
	} {
		bad := withIDs(t, mem, rec, tc.ids)
		msgs, err := ipc.Encode(bad, 1<<20)
		require.NoError(t, err)
		_, err = ipc.Decode(msgs[0], mem)
		require.ErrorIs(t, err, ipc.ErrSchema)
		require.ErrorContains(t, err, tc.want)

		path := filepath.Join(t.TempDir(), "bad.arrow")
		f, err := os.Create(path)
		require.NoError(t, err)
		w := arrowipc.NewWriter(f, arrowipc.WithSchema(bad.Schema()), arrowipc.WithAllocator(mem))
		require.NoError(t, w.Write(bad))
		require.NoError(t, w.Close())
		require.NoError(t, f.Close())
		bad.Release()
		r, err := ipc.OpenFile(path, mem)
		require.NoError(t, err)
		_, err = r.Next()
		require.ErrorIs(t, err, ipc.ErrSchema)
		require.ErrorContains(t, err, tc.want)
		require.NoError(t, r.Close())
	}
}

// Decode reads the message's bytes in place: the batch's arrays view them,
// with nothing allocated for an uncompressed body, wherever the bytes start
// (a body off an 8-byte boundary is copied to one on it, for arrays that
// view their buffers as []float64); a compressed body is decompressed from
// the allocator.
func TestDecodeInPlace(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := synth(mem, 5, 50)
	defer rec.Release()
	msgs, err := ipc.Encode(rec, 1<<20)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	held := mem.CurrentAlloc() // rec's
	for shift := range 9 {
		b := make([]byte, len(msgs[0])+shift)[shift:]
		copy(b, msgs[0])
		got, err := ipc.Decode(b, mem)
		require.NoError(t, err, "shift %d", shift)
		require.Equal(t, held, mem.CurrentAlloc(), "an uncompressed body is read in place")
		require.True(t, array.RecordEqual(rec, got), "shift %d", shift)
		got.Release()
	}

	var buf bytes.Buffer
	w := arrowipc.NewWriter(&buf, arrowipc.WithSchema(rec.Schema()), arrowipc.WithZstd(), arrowipc.WithAllocator(mem))
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())
	held = mem.CurrentAlloc()
	got, err := ipc.Decode(buf.Bytes(), mem)
	require.NoError(t, err)
	require.Greater(t, mem.CurrentAlloc(), held, "a compressed body is decompressed")
	require.True(t, array.RecordEqual(rec, got))
	got.Release()
}

// TestDecodeStream: every batch of a stream decodes, each checked as Decode
// checks one; what Decode refuses, DecodeStream refuses too, without leaks.
func TestDecodeStream(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := synth(mem, 5, 4)
	defer rec.Release()
	var buf bytes.Buffer
	w := arrowipc.NewWriter(&buf, arrowipc.WithSchema(rec.Schema()))
	for lo := int64(0); lo < 5; lo += 2 {
		s := rec.NewSlice(lo, min(lo+2, 5))
		require.NoError(t, w.Write(s))
		s.Release()
	}
	require.NoError(t, w.Close())
	recs, err := ipc.DecodeStream(buf.Bytes(), mem, 0)
	require.NoError(t, err)
	var ids []string
	var sizes []int64
	for _, r := range recs {
		sizes = append(sizes, r.NumRows())
		col := r.Column(schemas.MustIndex(r.Schema(), schemas.ColTraceID)).(*array.String)
		for i := range col.Len() {
			ids = append(ids, col.Value(i))
		}
		r.Release()
	}
	require.Equal(t, []int64{2, 2, 1}, sizes)
	want := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
	require.Len(t, ids, want.Len())
	for i, id := range ids {
		require.Equal(t, want.Value(i), id)
	}

	// A schema and no batch: nothing, no error.
	var none bytes.Buffer
	w = arrowipc.NewWriter(&none, arrowipc.WithSchema(rec.Schema()))
	require.NoError(t, w.Close())
	recs, err = ipc.DecodeStream(none.Bytes(), mem, 0)
	require.NoError(t, err)
	require.Empty(t, recs)

	// A stream cut inside its last batch, or with a corrupt batch, is
	// refused whole: the batches before it are released, not returned.
	b := buf.Bytes()
	for _, bad := range [][]byte{b[:len(b)-20], flip(b), []byte("not arrow")} {
		recs, err := ipc.DecodeStream(bad, mem, 0)
		require.ErrorIs(t, err, ipc.ErrCorrupt)
		require.Empty(t, recs)
	}
}
