package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// batchedSource joins the batches of src into batches of up to rows rows,
// as long as their schemas agree, so that a file written one response per
// batch is not produced one message (and one broker round trip) per
// response; a batch of more rows than that is cut into batches of rows
// rows, as JSON input is read (--rate paces by them).
type batchedSource struct {
	src  scoreSource
	rows int
	mem  memory.Allocator

	held    arrow.RecordBatch // read, not joined yet: the next call starts with it
	heldLab []label
	heldRej []pendingReject
	err     error // returned once what was read before it has been handed out

	labels []label // of the batch handed out last
	rej    []pendingReject
}

type label struct {
	line  int64
	where string
}

func (b *batchedSource) next() (arrow.RecordBatch, error) {
	b.labels, b.rej = b.labels[:0], nil
	var parts []arrow.RecordBatch
	defer func() {
		for _, r := range parts {
			r.Release()
		}
	}()
	n := 0
	take := func(rec arrow.RecordBatch, labs []label) {
		parts = append(parts, rec)
		b.labels = append(b.labels, labs...)
		n += int(rec.NumRows())
	}
	// cut hands out the first b.rows rows of a batch larger than that and
	// holds the rest for the next call: --batch-rows bounds what goes out
	// at once (and --rate paces by it).
	cut := func(rec arrow.RecordBatch, labs []label, rej []pendingReject) arrow.RecordBatch {
		head, rest := rec.NewSlice(0, int64(b.rows)), rec.NewSlice(int64(b.rows), rec.NumRows())
		rec.Release()
		b.held, b.heldLab, b.heldRej = rest, labs[b.rows:], nil
		b.labels = append(b.labels, labs[:b.rows]...)
		b.rej = append(b.rej, rej...)
		return head
	}
	if b.held != nil {
		rec, labs, rej := b.held, b.heldLab, b.heldRej
		b.held, b.heldLab, b.heldRej = nil, nil, nil
		if int(rec.NumRows()) > b.rows {
			return cut(rec, labs, rej), nil
		}
		take(rec, labs)
		b.rej = append(b.rej, rej...)
	}
	for n < b.rows && b.err == nil {
		rec, err := b.src.next()
		rej := append([]pendingReject(nil), b.src.rejects()...)
		if err != nil {
			b.rej = append(b.rej, rej...)
			b.err = err
			break
		}
		labs := make([]label, rec.NumRows())
		for i := range labs {
			labs[i].line, labs[i].where = b.src.rowLabel(i)
		}
		if len(parts) > 0 && (!rec.Schema().Equal(parts[0].Schema()) || n+int(rec.NumRows()) > b.rows) {
			b.held, b.heldLab, b.heldRej = rec, labs, rej
			break
		}
		if int(rec.NumRows()) > b.rows { // and nothing taken yet
			return cut(rec, labs, rej), nil
		}
		b.rej = append(b.rej, rej...)
		take(rec, labs)
	}
	switch len(parts) {
	case 0:
		if b.err != nil {
			return nil, b.err
		}
		return nil, io.EOF // not reached: a read adds a part or sets err
	case 1:
		rec := parts[0]
		parts = nil
		return rec, nil
	}
	return joinBatches(parts, b.mem)
}

// joinBatches concatenates batches of one schema.
func joinBatches(parts []arrow.RecordBatch, mem memory.Allocator) (arrow.RecordBatch, error) {
	cols := make([]arrow.Array, parts[0].NumCols())
	var rows int64
	for _, r := range parts {
		rows += r.NumRows()
	}
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for c := range cols {
		col := make([]arrow.Array, len(parts))
		for i, r := range parts {
			col[i] = r.Column(c)
		}
		a, err := array.Concatenate(col, mem)
		if err != nil {
			return nil, fmt.Errorf("joining batches: %w", err)
		}
		cols[c] = a
	}
	return array.NewRecordBatch(parts[0].Schema(), cols, rows), nil
}

func (b *batchedSource) rowLabel(row int) (int64, string) {
	return b.labels[row].line, b.labels[row].where
}

func (b *batchedSource) rejects() []pendingReject { return b.rej }

func (b *batchedSource) close() error {
	if b.held != nil {
		b.held.Release()
		b.held = nil
	}
	return b.src.close()
}

// errNoTS is the error for --rate on batches without the ts column it
// rewrites.
var errNoTS = errors.New("--rate stamps each response's ts with its send time, and this input's batches have no ts column (add one to the file, or leave --rate out)")
