package clickhouse

import (
	"context"
	"fmt"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/schemas"
)

// rowKey is the scored table's deduplication key: ReplacingMergeTree keeps
// the last row inserted per (model, toStartOfHour(ts), trace_id).
type rowKey struct {
	model string
	hour  int64 // Unix seconds of the hour's start, as the table stores ts
	id    string
}

// keepScored returns rec without its rejected rows (status other than ok)
// whose trace the table already holds as scored (status ok, same key), or
// that an ok row of rec itself scores. The table keeps the last row of a
// key, so such a copy (a response sent again with a broken logprob, a replay
// after the estimator lost the model) would replace the trace's estimate
// with a row the accuracy views leave out. The stream dead-letters the copy
// as usual; the stored row stays. dropped is how many rows were left out;
// release frees what keepScored allocated (a no-op when rec is returned as
// it is). A batch without rejected rows costs one pass over its status
// column and no query.
func (s *Sink) keepScored(ctx context.Context, rec arrow.RecordBatch) (out arrow.RecordBatch, dropped int, release func(), err error) {
	noop := func() {}
	sc := rec.Schema()
	idx := func(name string) int { i, _ := schemas.Index(sc, name); return i }
	status, ok := rec.Column(idx(schemas.ColStatus)).(*array.String)
	if !ok {
		return rec, 0, noop, nil
	}
	var rejected []int
	for i := range status.Len() {
		if status.Value(i) != schemas.StatusOK {
			rejected = append(rejected, i)
		}
	}
	if len(rejected) == 0 {
		return rec, 0, noop, nil
	}
	models := rec.Column(idx(schemas.ColModel)).(*array.String)
	ids := rec.Column(idx(schemas.ColTraceID)).(*array.String)
	secs, _ := timestamps(rec.Column(idx(schemas.ColTS)).(*array.Timestamp), int(rec.NumRows()))
	key := func(i int) rowKey {
		return rowKey{models.Value(i), secs[i] - secs[i]%3600, ids.Value(i)}
	}
	scored := map[rowKey]bool{}
	for i := range status.Len() {
		if status.Value(i) == schemas.StatusOK {
			scored[key(i)] = true
		}
	}
	var ask []rowKey
	for _, i := range rejected {
		if k := key(i); !scored[k] {
			ask = append(ask, k)
		}
	}
	if err := s.scoredKeys(ctx, ask, scored); err != nil {
		return nil, 0, nil, err
	}
	drop := map[int]bool{}
	for _, i := range rejected {
		if scored[key(i)] {
			drop[i] = true
		}
	}
	if len(drop) == 0 {
		return rec, 0, noop, nil
	}
	out, err = dropRows(rec, drop)
	if err != nil {
		return nil, 0, nil, err
	}
	return out, len(drop), out.Release, nil
}

// scoredKeys adds to scored those of keys the table holds with status ok:
// one query per model and chunk of heldChunk ids, on the table's primary
// key, bounded by the keys' hours.
func (s *Sink) scoredKeys(ctx context.Context, keys []rowKey, scored map[rowKey]bool) error {
	byModel := map[string][]rowKey{}
	for _, k := range keys {
		byModel[k.model] = append(byModel[k.model], k)
	}
	for model, ks := range byModel {
		for lo := 0; lo < len(ks); lo += heldChunk {
			part := ks[lo:min(lo+heldChunk, len(ks))]
			ids := make([]any, len(part))
			first, last := part[0].hour, part[0].hour
			for i, k := range part {
				ids[i] = k.id
				first, last = min(first, k.hour), max(last, k.hour)
			}
			q := "SELECT DISTINCT trace_id, toUInt32(toStartOfHour(ts)) FROM " + s.table +
				" WHERE model = ? AND trace_id IN ? AND ts >= ? AND ts < ? AND status = 'ok'"
			rows, err := s.conn.Query(ctx, q, model, ch.GroupSet{Value: ids},
				time.Unix(first, 0).UTC(), time.Unix(last+3600, 0).UTC())
			if err != nil {
				return fmt.Errorf("clickhouse sink: looking up %d rejected rows' traces: %w", len(part), err)
			}
			for rows.Next() {
				var id string
				var hour uint32
				if err := rows.Scan(&id, &hour); err != nil {
					rows.Close()
					return fmt.Errorf("clickhouse sink: looking up rejected rows' traces: %w", err)
				}
				scored[rowKey{model, int64(hour), id}] = true
			}
			err = rows.Err()
			rows.Close()
			if err != nil {
				return fmt.Errorf("clickhouse sink: looking up rejected rows' traces: %w", err)
			}
		}
	}
	return nil
}

// dropRows returns a new batch of rec's rows other than drop's, in order.
func dropRows(rec arrow.RecordBatch, drop map[int]bool) (arrow.RecordBatch, error) {
	n := int(rec.NumRows())
	var ranges [][2]int64 // kept [lo, hi)
	for i := 0; i < n; {
		if drop[i] {
			i++
			continue
		}
		j := i
		for j < n && !drop[j] {
			j++
		}
		ranges = append(ranges, [2]int64{int64(i), int64(j)})
		i = j
	}
	cols := make([]arrow.Array, rec.NumCols())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	for c := range cols {
		parts := make([]arrow.Array, len(ranges))
		for p, r := range ranges {
			parts[p] = array.NewSlice(rec.Column(c), r[0], r[1])
		}
		var err error
		if len(parts) == 0 {
			cols[c] = array.MakeArrayOfNull(memory.DefaultAllocator, rec.Column(c).DataType(), 0)
		} else {
			cols[c], err = array.Concatenate(parts, memory.DefaultAllocator)
		}
		for _, p := range parts {
			p.Release()
		}
		if err != nil {
			return nil, fmt.Errorf("clickhouse sink: leaving out rejected rows: %w", err)
		}
	}
	return array.NewRecordBatch(rec.Schema(), cols, int64(n-len(drop))), nil
}
