package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"golang.org/x/sync/errgroup"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams"
)

// Sink writes scored.v1 batches into the scored table, one INSERT per batch,
// column by column. It implements streams.Sink and is safe for concurrent use.
type Sink struct {
	cfg    Config
	conn   driver.Conn
	log    *slog.Logger
	table  string
	cols   []schemas.CHColumn
	insert string

	rows    atomic.Int64
	retries atomic.Int64
	kept    atomic.Int64 // rejected rows left out: their trace is stored scored (keepScored)
	// failing is set by a failed insert attempt and cleared by a successful
	// one: the server is down or hung while an insert is being retried.
	failing atomic.Bool
}

var (
	_ streams.Sink           = (*Sink)(nil)
	_ streams.Holder         = (*Sink)(nil)
	_ streams.HealthReporter = (*Sink)(nil)
)

// ErrSchema is returned by Write for a batch that is not scored.v1.
var ErrSchema = errors.New("batch is not scored.v1")

// NewSink connects to ClickHouse and checks that the scored table exists.
func NewSink(ctx context.Context, cfg Config, log *slog.Logger) (*Sink, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cols, err := schemas.ClickHouseColumns(schemas.Scored)
	if err != nil {
		return nil, err
	}
	conn, err := Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	o, _ := cfg.options()
	s := &Sink{cfg: cfg, conn: conn, log: log, cols: cols, table: o.Auth.Database + ".scored"}
	s.insert = "INSERT INTO " + s.table + " (" + schemas.ClickHouseColumnList(cols) + ")"
	if err := conn.Exec(ctx, "SELECT 1 FROM "+s.table+" LIMIT 0"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse sink: table %s: %w; run `entrowatch migrate --clickhouse DSN` first", s.table, err)
	}
	return s, nil
}

// Rows is the number of rows written so far; Retries the insert retries.
func (s *Sink) Rows() int64 { return s.rows.Load() }

// Retries is how many times a failed insert was retried so far, over all
// inserts.
func (s *Sink) Retries() int64 { return s.retries.Load() }

// KeptScored is how many rejected rows (status other than ok) Write left
// out so far because the table holds their trace scored (status ok) under
// the same key, or the same batch scores it: written, they would have
// replaced the estimate (the table keeps the last row of a key). The stream
// dead-letters them as usual.
func (s *Sink) KeptScored() int64 { return s.kept.Load() }

// Healthy reports whether the last insert attempt succeeded (true before
// the first). While an insert is retried it is false: a hung server makes
// each attempt wait read_timeout, and the stream, which learns of a failed
// write only when every retry has failed, would otherwise say ready for
// minutes (streams.HealthReporter).
func (s *Sink) Healthy() bool { return !s.failing.Load() }

// Write inserts rec. nil means the rows are stored. Large batches are split
// into up to InsertParallelism INSERTs that run concurrently. Transient
// failures are retried with exponential backoff; a retried insert that had
// partly landed leaves duplicates that the views collapse by trace_id. A
// rejected row whose trace is already stored scored is left out
// (KeptScored): a broken copy never replaces an estimate.
func (s *Sink) Write(ctx context.Context, rec arrow.RecordBatch) error {
	if rec == nil {
		return errors.New("clickhouse sink: Write of a nil batch")
	}
	n := rec.NumRows()
	if n == 0 {
		return nil
	}
	if err := checkSchema(rec.Schema(), s.cols); err != nil {
		return err
	}
	rec, dropped, release, err := s.keepScored(ctx, rec)
	if err != nil {
		return err
	}
	defer release()
	if dropped > 0 {
		s.kept.Add(int64(dropped))
		s.log.Info("rejected copies of traces stored scored were not written: the stored estimate stays (the copies are dead-lettered)", "table", s.table, "rows", dropped)
	}
	if n = rec.NumRows(); n == 0 {
		return nil
	}
	parts := int64(min(max(s.cfg.InsertParallelism, 1), int((n+minChunkRows-1)/minChunkRows)))
	if parts <= 1 {
		return s.insertRetrying(ctx, rec)
	}
	g, gctx := errgroup.WithContext(ctx)
	for p := range parts {
		lo, hi := n*p/parts, n*(p+1)/parts
		g.Go(func() error {
			part := rec.NewSlice(lo, hi)
			defer part.Release()
			return s.insertRetrying(gctx, part)
		})
	}
	return g.Wait()
}

// minChunkRows is the smallest INSERT a batch is split into: ClickHouse
// prefers few large inserts.
const minChunkRows = 20_000

func (s *Sink) insertRetrying(ctx context.Context, rec arrow.RecordBatch) error {
	data, err := columns(rec, s.cols)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err = s.send(ctx, data)
		if err == nil {
			s.rows.Add(rec.NumRows())
			if s.failing.Swap(false) {
				s.log.Info("clickhouse insert succeeded again", "table", s.table, "attempts", attempt+1)
			}
			return nil
		}
		if ctx.Err() != nil || permanent(err) || attempt >= s.cfg.Retries {
			return fmt.Errorf("clickhouse sink: inserting %d rows into %s (attempt %d): %w", rec.NumRows(), s.table, attempt+1, err)
		}
		s.retries.Add(1)
		wait := s.cfg.backoff(attempt + 1)
		if !s.failing.Swap(true) {
			// The first failure of a streak is an error (the stream logs a
			// write only once every retry failed); the retries are warnings.
			s.log.Error("clickhouse insert failed; retrying, and not ready until an insert succeeds", "table", s.table, "rows", rec.NumRows(), "wait", wait, "err", err)
		} else {
			s.log.Warn("clickhouse insert failed; retrying", "table", s.table, "rows", rec.NumRows(), "attempt", attempt+1, "wait", wait, "err", err)
		}
		if err := sleep(ctx, wait); err != nil {
			return fmt.Errorf("clickhouse sink: inserting into %s: %w", s.table, err)
		}
	}
}

// checkSchema requires every field the columns derive from, with the type
// scored.v1 gives it.
func checkSchema(sc *arrow.Schema, cols []schemas.CHColumn) error {
	for _, c := range cols {
		want := schemas.Scored.Field(schemas.MustIndex(schemas.Scored, c.Field))
		idx, err := schemas.Index(sc, c.Field)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrSchema, err)
		}
		if !arrow.TypeEqual(sc.Field(idx).Type, want.Type) {
			return fmt.Errorf("%w: column %q is %s, want %s", ErrSchema, c.Field, sc.Field(idx).Type, want.Type)
		}
	}
	return nil
}

func (s *Sink) send(ctx context.Context, data []any) error {
	b, err := s.conn.PrepareBatch(ctx, s.insert)
	if err != nil {
		return err
	}
	for i, d := range data {
		if err := b.Column(i).Append(d); err != nil {
			_ = b.Abort()
			return fmt.Errorf("column %s: %w", s.cols[i].Name, err)
		}
	}
	return b.Send()
}

// permanent reports errors a retry cannot fix: the server rejected the
// statement itself (missing table or column, type mismatch).
func permanent(err error) bool {
	var ex *proto.Exception
	if errors.As(err, &ex) {
		switch ex.Code {
		case 16, 47, 53, 60, 81: // NO_SUCH_COLUMN_IN_TABLE, UNKNOWN_IDENTIFIER, TYPE_MISMATCH, UNKNOWN_TABLE, UNKNOWN_DATABASE
			return true
		}
	}
	return false
}

// heldSlack widens the time window of a Held lookup around the refs' times:
// a trace's ts is its final chunk's, and the chunks that came again may be
// older or newer than it.
const heldSlack = 24 * time.Hour

// Held returns the ids among refs that the scored table holds (any status).
// One query per model, on the table's primary key (model, hour, trace_id) and
// bounded by the refs' times when all are known.
func (s *Sink) Held(ctx context.Context, refs []streams.TraceRef) (map[string]bool, error) {
	type group struct {
		ids       []string
		lo, hi    time.Time
		unbounded bool
	}
	byModel := map[string]*group{}
	for _, r := range refs {
		g := byModel[r.Model]
		if g == nil {
			g = &group{}
			byModel[r.Model] = g
		}
		g.ids = append(g.ids, r.ID)
		switch {
		case r.TS.IsZero():
			g.unbounded = true
		case g.lo.IsZero():
			g.lo, g.hi = r.TS, r.TS
		default:
			g.lo, g.hi = minTime(g.lo, r.TS), maxTime(g.hi, r.TS)
		}
	}
	held := map[string]bool{}
	for model, g := range byModel {
		// Chunks of heldChunk ids keep the query under ClickHouse's
		// max_query_size (256 KiB) for ids of up to 400 bytes.
		for lo := 0; lo < len(g.ids); lo += heldChunk {
			part := g.ids[lo:min(lo+heldChunk, len(g.ids))]
			ids := make([]any, len(part))
			for i, id := range part {
				ids[i] = id
			}
			q := "SELECT DISTINCT trace_id FROM " + s.table + " WHERE model = ? AND trace_id IN ?"
			args := []any{model, ch.GroupSet{Value: ids}}
			if !g.unbounded {
				q += " AND ts >= ? AND ts <= ?"
				args = append(args, g.lo.Add(-heldSlack).UTC(), g.hi.Add(heldSlack).UTC())
			}
			if err := collectIDs(ctx, s.conn, held, q, args...); err != nil {
				return nil, fmt.Errorf("clickhouse sink: looking up %d traces: %w", len(part), err)
			}
		}
	}
	return held, nil
}

// heldChunk is the most ids one Held query names.
const heldChunk = 500

// collectIDs adds the first (string) column of a query's rows to ids.
func collectIDs(ctx context.Context, conn driver.Conn, ids map[string]bool, q string, args ...any) error {
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		ids[id] = true
	}
	return rows.Err()
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Close closes the connection.
func (s *Sink) Close(ctx context.Context) error {
	if err := s.conn.Close(); err != nil {
		return fmt.Errorf("clickhouse sink: close: %w", err)
	}
	return nil
}

// columns converts rec into one Go slice per ClickHouse column, in cols order.
// Columns are found by name, so extra or reordered fields are fine; a missing
// field or a different type is an ErrSchema error.
func columns(rec arrow.RecordBatch, cols []schemas.CHColumn) ([]any, error) {
	sc := rec.Schema()
	n := int(rec.NumRows())
	out := make([]any, 0, len(cols))
	for i := 0; i < len(cols); i++ {
		c := cols[i]
		want := schemas.Scored.Field(schemas.MustIndex(schemas.Scored, c.Field))
		idx, err := schemas.Index(sc, c.Field)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSchema, err)
		}
		arr := rec.Column(idx)
		switch a := arr.(type) {
		case *array.Timestamp:
			secs, ms := timestamps(a, n)
			out = append(out, secs, ms)
			i++ // the _ms column
		case *array.Map:
			keys, vals := stringMap(a, n)
			out = append(out, keys, vals)
			i++ // the _values column
		case *array.String:
			vals := make([]string, n)
			for j := range n {
				if a.IsValid(j) {
					vals[j] = a.Value(j)
				}
			}
			out = append(out, nullable(vals, a, want.Nullable))
		case *array.Float64:
			out = append(out, nullable(copyValues(a.Float64Values(), a), a, want.Nullable))
		case *array.Float32:
			out = append(out, nullable(copyValues(a.Float32Values(), a), a, want.Nullable))
		case *array.Int32:
			out = append(out, nullable(copyValues(a.Int32Values(), a), a, want.Nullable))
		case *array.Boolean:
			vals := make([]uint8, n)
			for j := range n {
				if a.IsValid(j) && a.Value(j) {
					vals[j] = 1
				}
			}
			out = append(out, nullable(vals, a, want.Nullable))
		default:
			return nil, fmt.Errorf("%w: column %q has unsupported type %s", ErrSchema, c.Field, arr.DataType())
		}
	}
	return out, nil
}

// copyValues copies v, zeroing null slots (whose bytes are unspecified).
func copyValues[T any](v []T, a arrow.Array) []T {
	out := make([]T, len(v))
	copy(out, v)
	if a.NullN() > 0 {
		var zero T
		for j := range out {
			if a.IsNull(j) {
				out[j] = zero
			}
		}
	}
	return out
}

// nullable returns vals, or for a nullable column pointers into vals with
// nil where a is null.
func nullable[T any](vals []T, a arrow.Array, isNullable bool) any {
	if !isNullable {
		return vals
	}
	ptrs := make([]*T, len(vals))
	for j := range vals {
		if a.IsValid(j) {
			ptrs[j] = &vals[j]
		}
	}
	return ptrs
}

func timestamps(a *array.Timestamp, n int) ([]int64, []uint16) {
	unit := a.DataType().(*arrow.TimestampType).Unit
	secs := make([]int64, n)
	ms := make([]uint16, n)
	for j := range n {
		if a.IsNull(j) {
			continue
		}
		v := int64(a.Value(j))
		var m int64
		switch unit {
		case arrow.Second:
			m = v * 1000
		case arrow.Millisecond:
			m = v
		case arrow.Microsecond:
			m = v / 1000
		case arrow.Nanosecond:
			m = v / 1_000_000
		}
		s := m / 1000
		r := m % 1000
		if r < 0 {
			s, r = s-1, r+1000
		}
		if s < 0 { // DateTime cannot hold times before 1970
			s, r = 0, 0
		}
		secs[j], ms[j] = s, uint16(r)
	}
	return secs, ms
}

func stringMap(a *array.Map, n int) ([][]string, [][]string) {
	keys := make([][]string, n)
	vals := make([][]string, n)
	ks, _ := a.Keys().(*array.String)
	vs, _ := a.Items().(*array.String)
	offs := a.Offsets()
	if ks == nil || vs == nil || len(offs) < n+1 {
		for j := range n {
			keys[j], vals[j] = []string{}, []string{}
		}
		return keys, vals
	}
	// One backing array per side; rows are sub-slices of it.
	first, last := int(offs[0]), int(offs[n])
	flatK := make([]string, last-first)
	flatV := make([]string, last-first)
	for e := first; e < last; e++ {
		flatK[e-first] = ks.Value(e)
		if vs.IsValid(e) {
			flatV[e-first] = vs.Value(e)
		}
	}
	for j := range n {
		lo, hi := int(offs[j])-first, int(offs[j+1])-first
		if a.IsNull(j) {
			lo = hi
		}
		keys[j], vals[j] = flatK[lo:hi:hi], flatV[lo:hi:hi]
	}
	return keys, vals
}
