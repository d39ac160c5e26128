package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams"
)

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func TestMigrateTwice(t *testing.T) {
	cfg := needServer(t)
	ctx := context.Background()
	ms, err := Migrations()
	require.NoError(t, err)
	first, err := Migrate(ctx, cfg, nil)
	require.NoError(t, err)
	require.Len(t, first.Applied, len(ms))
	require.Equal(t, ms[len(ms)-1].Version, first.Version)
	second, err := Migrate(ctx, cfg, nil)
	require.NoError(t, err)
	require.Empty(t, second.Applied)
	require.Equal(t, first.Version, second.Version)

	conn, err := Open(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	var n uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".schema_migrations").Scan(&n))
	require.Equal(t, uint64(len(ms)), n)
	var settings uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".alarm_settings").Scan(&settings))
	require.Equal(t, uint64(1), settings, "a second run must not insert the default settings again")
}

func TestMigrateRefusesChangedFile(t *testing.T) {
	cfg := needServer(t)
	ctx := context.Background()
	conn, db, err := openServer(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	ms := []Migration{{Version: 1, Name: "001_a.sql", Checksum: "x", Statements: []string{"CREATE TABLE IF NOT EXISTS {db}.a (x UInt8) ENGINE = Memory"}}}
	_, err = migrate(ctx, conn, db, ms, nil)
	require.NoError(t, err)
	ms[0].Checksum = "y"
	_, err = migrate(ctx, conn, db, ms, nil)
	require.ErrorContains(t, err, "001_a.sql changed after it was applied")
}

// The scored table's columns are the ones schemas.Scored implies, in order.
func TestScoredTableFollowsSchema(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	for _, tc := range []struct {
		table  string
		schema *arrow.Schema
	}{{"scored", schemas.Scored}, {"labels", schemas.Label}} {
		want, err := schemas.ClickHouseColumns(tc.schema)
		require.NoError(t, err)
		// DESCRIBE lists columns in table order (18.16's system.columns has no position).
		rows, err := conn.Query(ctx, "DESCRIBE TABLE "+cfg.Database+"."+tc.table)
		require.NoError(t, err)
		var got []schemas.CHColumn
		for rows.Next() {
			var c schemas.CHColumn
			var kind, expr string
			dest := []any{&c.Name, &c.Type, &kind, &expr}
			for range rows.Columns()[4:] {
				dest = append(dest, new(string))
			}
			require.NoError(t, rows.Scan(dest...))
			if kind == "" { // inserted_at and other defaulted columns are not in the schema
				got = append(got, c)
			}
		}
		require.NoError(t, rows.Err())
		require.Len(t, got, len(want), tc.table)
		for i := range want {
			require.Equal(t, want[i].Name, got[i].Name, tc.table)
			require.Equal(t, want[i].Type, got[i].Type, tc.table)
		}
	}
}

func TestSinkReadBack(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	rows := []row{
		{id: "a", ts: t0.Add(1500 * time.Millisecond), domain: "math", attrs: map[string]string{"tenant": "acme", "route": "/chat"}, p: 0.8, correct: 1, clusterID: 3, cluster: "algebra", mean: 0.4, max: 2.5, q50: 0.3},
		{id: "b", ts: t0.Add(2 * time.Second), p: -1, correct: -1, clusterID: -2, status: schemas.ReasonEmpty},
		{id: "c", ts: t0.Add(3 * time.Second), model: "m2", p: 0.25, correct: 0, clusterID: -1, mean: 1.2},
	}
	write(t, cfg, rows)

	type got struct {
		id, model, status string
		ts                time.Time
		ms                uint16
		domain            *string
		keys, vals        []string
		p                 *float64
		correct           *uint8
		cluster           *int32
		mean              float64
	}
	q := "SELECT trace_id, model, status, ts, ts_ms, domain, attributes_keys, attributes_values, p_correct, correct, cluster_id, mean FROM " + cfg.Database + ".scored ORDER BY trace_id"
	r, err := conn.Query(ctx, q)
	require.NoError(t, err)
	var out []got
	for r.Next() {
		var g got
		require.NoError(t, r.Scan(&g.id, &g.model, &g.status, &g.ts, &g.ms, &g.domain, &g.keys, &g.vals, &g.p, &g.correct, &g.cluster, &g.mean))
		out = append(out, g)
	}
	require.NoError(t, r.Err())
	require.Len(t, out, 3)
	a, b, c := out[0], out[1], out[2]
	require.Equal(t, "a", a.id)
	require.True(t, a.ts.Equal(t0.Add(time.Second)), a.ts)
	require.Equal(t, uint16(500), a.ms)
	require.Equal(t, "math", *a.domain)
	require.Equal(t, []string{"route", "tenant"}, a.keys)
	require.Equal(t, []string{"/chat", "acme"}, a.vals)
	require.InDelta(t, 0.8, *a.p, 1e-12)
	require.Equal(t, uint8(1), *a.correct)
	require.Equal(t, int32(3), *a.cluster)
	require.InDelta(t, 0.4, a.mean, 1e-12)

	require.Nil(t, b.domain)
	require.Nil(t, b.p)
	require.Nil(t, b.correct)
	require.Nil(t, b.cluster)
	require.Equal(t, schemas.ReasonEmpty, b.status)
	require.Empty(t, b.keys)

	require.Equal(t, "m2", c.model)
	require.Equal(t, int32(-1), *c.cluster)
	require.Equal(t, uint8(0), *c.correct)

	// scored_ok keeps valid estimated rows; the effective domain falls back
	// to the cluster label, then ''.
	r, err = conn.Query(ctx, "SELECT trace_id, domain FROM "+cfg.Database+".scored_ok ORDER BY trace_id")
	require.NoError(t, err)
	var doms []string
	for r.Next() {
		var id, d string
		require.NoError(t, r.Scan(&id, &d))
		doms = append(doms, id+"="+d)
	}
	require.Equal(t, []string{"a=math", "c="}, doms)
}

func TestSinkRejectsOtherSchemas(t *testing.T) {
	cfg, _ := migrated(t)
	ctx := context.Background()
	s, err := NewSink(ctx, cfg, nil)
	require.NoError(t, err)
	defer s.Close(ctx)
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	b := array.NewRecordBuilder(mem, schemas.Label)
	defer b.Release()
	b.Field(0).(*array.StringBuilder).Append("x")
	b.Field(1).(*array.BooleanBuilder).Append(true)
	b.Field(2).(*array.StringBuilder).Append("human")
	b.Field(3).(*array.TimestampBuilder).Append(0)
	rec := b.NewRecordBatch()
	defer rec.Release()
	err = s.Write(ctx, rec)
	require.True(t, errors.Is(err, ErrSchema), err)
}

func TestSinkNeedsMigration(t *testing.T) {
	cfg := needServer(t)
	ctx := context.Background()
	conn, _, err := openServer(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.Exec(ctx, "CREATE DATABASE "+cfg.Database))
	_, err = NewSink(ctx, cfg, nil)
	require.ErrorContains(t, err, "entrowatch migrate")
}

// A redelivered trace changes no count or estimate: views read scored FINAL.
func TestSinkRedeliveryIsIdempotent(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	var rows []row
	for i := range 200 {
		rows = append(rows, row{id: fmt.Sprintf("r%03d", i), ts: t0.Add(time.Duration(i) * 10 * time.Second), domain: "d", p: float64(i%10) / 10, correct: -1, clusterID: 1, cluster: "c"})
	}
	snapshot := func() string {
		var n uint64
		var acc, se float64
		require.NoError(t, conn.QueryRow(ctx, "SELECT sum(n), sum(accuracy * n) / sum(n), sum(se) FROM "+cfg.Database+".accuracy WHERE window_s = 3600").Scan(&n, &acc, &se))
		return fmt.Sprintf("n=%d acc=%.12f se=%.12f", n, acc, se)
	}
	write(t, cfg, rows)
	before := snapshot()
	write(t, cfg, rows[50:120]) // redelivery of part of the stream
	write(t, cfg, rows[:10])
	var raw uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".scored").Scan(&raw))
	require.Equal(t, uint64(280), raw, "the duplicates are stored (not yet merged)")
	require.Equal(t, before, snapshot())
	require.Contains(t, before, "n=200 ")
}

// A large batch is split into concurrent INSERTs; every row lands once.
func TestSinkSplitsLargeBatches(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	const n = 45_000
	rows := make([]row, n)
	for i := range rows {
		rows[i] = row{id: fmt.Sprintf("s%06d", i), ts: t0.Add(time.Duration(i) * time.Second), domain: "d",
			attrs: map[string]string{"tenant": fmt.Sprintf("t%d", i%3)}, p: 0.5, correct: -1, clusterID: 1, cluster: "c"}
	}
	write(t, cfg, rows)
	var cnt, ids, tenants uint64
	var last string
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(), uniqExact(trace_id), sum(length(attributes_keys)), max(trace_id) FROM "+cfg.Database+".scored").Scan(&cnt, &ids, &tenants, &last))
	require.Equal(t, uint64(n), cnt)
	require.Equal(t, uint64(n), ids)
	require.Equal(t, uint64(n), tenants)
	require.Equal(t, "s044999", last)
	var v string
	require.NoError(t, conn.QueryRow(ctx, "SELECT attributes_values[1] FROM "+cfg.Database+".scored WHERE trace_id = 's030001'").Scan(&v))
	require.Equal(t, "t1", v) // 30001 % 3, from the second INSERT (a sliced map array)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		err string
	}{
		{Config{DSN: "clickhouse://127.0.0.1:9000/db"}, ""},
		{Config{}, "empty DSN"},
		{Config{DSN: "clickhouse://127.0.0.1:9000", Database: "a-b"}, "use letters, digits and _"},
		{Config{DSN: "clickhouse://127.0.0.1:9000", Compression: "gzip"}, "use lz4, zstd or none"},
		{Config{DSN: "clickhouse://127.0.0.1:9000", Retries: -1}, "retries"},
	} {
		err := tc.cfg.Validate()
		if tc.err == "" {
			require.NoError(t, err)
			continue
		}
		require.ErrorContains(t, err, tc.err)
	}
	require.Equal(t, "db", Config{DSN: "clickhouse://127.0.0.1:9000/db"}.DatabaseName())
	require.Equal(t, "x", Config{DSN: "clickhouse://127.0.0.1:9000/db", Database: "x"}.DatabaseName())
	require.Equal(t, "default", Config{DSN: "clickhouse://127.0.0.1:9000"}.DatabaseName())
	c := DefaultConfig().withDefaults()
	require.Equal(t, 200*time.Millisecond, c.backoff(1))
	require.Equal(t, 400*time.Millisecond, c.backoff(2))
	require.Equal(t, 10*time.Second, c.backoff(20))
}

// The managed server stops cleanly, keeps its data and comes back on new ports.
func TestLocalServerRestartKeepsData(t *testing.T) {
	if testServer == nil {
		t.Skip(skipReason)
	}
	ctx := context.Background()
	dir := t.TempDir()
	s, err := StartLocal(ctx, LocalConfig{Dir: dir}, nil)
	require.NoError(t, err)
	cfg := DefaultConfig()
	cfg.DSN = s.DSN()
	cfg.Database = "keep"
	_, err = Migrate(ctx, cfg, nil)
	require.NoError(t, err)
	require.NoError(t, s.Stop())
	require.NoError(t, s.Stop(), "Stop twice")
	<-s.Done()

	s2, err := StartLocal(ctx, LocalConfig{Dir: dir}, nil)
	require.NoError(t, err)
	defer s2.Stop()
	cfg.DSN = s2.DSN()
	res, err := Migrate(ctx, cfg, nil)
	require.NoError(t, err)
	require.Empty(t, res.Applied, "the schema survived the restart")
}

func TestPermanentErrors(t *testing.T) {
	require.True(t, permanent(fmt.Errorf("wrapped: %w", &proto.Exception{Code: 60, Message: "Table x doesn't exist"})))
	require.False(t, permanent(&proto.Exception{Code: 241, Message: "Memory limit exceeded"}))
	require.False(t, permanent(errors.New("connection reset by peer")))
}

// A write that cannot reach the server is retried, then fails naming the
// table and the attempts; a cancelled context stops the retries.
func TestSinkRetriesThenFails(t *testing.T) {
	if testServer == nil {
		t.Skip(skipReason)
	}
	ctx := context.Background()
	s, err := StartLocal(ctx, LocalConfig{Dir: t.TempDir()}, nil)
	require.NoError(t, err)
	cfg := DefaultConfig()
	cfg.DSN, cfg.Database = s.DSN(), "retry"
	cfg.Retries, cfg.RetryBackoff, cfg.MaxBackoff = 2, 10*time.Millisecond, 20*time.Millisecond
	_, err = Migrate(ctx, cfg, nil)
	require.NoError(t, err)
	sink, err := NewSink(ctx, cfg, nil)
	require.NoError(t, err)
	defer sink.Close(ctx)
	require.NoError(t, s.Stop())

	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := batch(t, mem, []row{{id: "x", ts: t0, p: 0.5, correct: -1}})
	defer rec.Release()
	err = sink.Write(ctx, rec)
	require.ErrorContains(t, err, "retry.scored (attempt 3)")
	require.Equal(t, int64(2), sink.Retries())

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.Error(t, sink.Write(cctx, rec))
}

// Held finds the traces the table holds, by model and id, within a day of the
// refs' times (or anywhere when a time is unknown), whatever their status.
func TestSinkHeld(t *testing.T) {
	cfg, _ := migrated(t)
	ctx := context.Background()
	write(t, cfg, []row{
		{id: "a", ts: t0, domain: "d", p: 0.5, correct: -1, clusterID: 1, cluster: "c"},
		{id: "b", ts: t0.Add(time.Hour), domain: "d", p: 0.5, correct: -1, clusterID: 1, cluster: "c"},
		{id: "bad", ts: t0, domain: "d", p: -1, correct: -1, clusterID: 1, cluster: "c", status: "nan_logprob"},
		{id: "other", ts: t0, model: "m2", domain: "d", p: 0.5, correct: -1, clusterID: 1, cluster: "c"},
	})
	s, err := NewSink(ctx, cfg, nil)
	require.NoError(t, err)
	defer s.Close(ctx)

	got, err := s.Held(ctx, []streams.TraceRef{
		{ID: "a", Model: "m1", TS: t0.Add(30 * time.Second)},
		{ID: "bad", Model: "m1", TS: t0},
		{ID: "missing", Model: "m1", TS: t0},
		{ID: "other", Model: "m1", TS: t0}, // another model's trace
		{ID: "other", Model: "m2", TS: t0}, // found under its own model
	})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"a": true, "bad": true, "other": true}, got)

	got, err = s.Held(ctx, []streams.TraceRef{{ID: "b", Model: "m1", TS: t0.Add(-90 * time.Hour)}})
	require.NoError(t, err)
	require.Empty(t, got, "b is not within a day of the refs' times")

	got, err = s.Held(ctx, []streams.TraceRef{{ID: "b", Model: "m1"}, {ID: "a", Model: "m1", TS: t0.Add(-90 * time.Hour)}})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"a": true, "b": true}, got, "a ref without a time searches the whole table for its model")

	// Many long ids: more than one query's worth (max_query_size 256 KiB).
	var many []streams.TraceRef
	for i := range 1300 {
		many = append(many, streams.TraceRef{ID: fmt.Sprintf("%0250d", i), Model: "m1", TS: t0})
	}
	many = append(many, streams.TraceRef{ID: "a", Model: "m1", TS: t0})
	got, err = s.Held(ctx, many)
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"a": true}, got)

	got, err = s.Held(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, got)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = s.Held(cctx, []streams.TraceRef{{ID: "a", Model: "m1"}})
	require.Error(t, err)
}

// TestDedupScope pins what docs/clickhouse.md says is deduplicated: the
// key is (model, hour of ts, trace_id), so a redelivered row (same ts) and a
// client's retry that carries the same `created` count once, while a retry
// without `created` (ts = the time ingest received it) that falls into
// another hour counts twice. No view deduplicates across hours: that would
// take a GROUP BY trace_id over the whole history.
func TestDedupScope(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	r := row{id: "retry", ts: t0.Add(10*time.Hour + 58*time.Minute), domain: "X", p: 0.5, correct: -1, clusterID: 1, cluster: "c"}
	write(t, cfg, []row{r})
	write(t, cfg, []row{r})                                                                  // redelivery, or a retry with the same created
	write(t, cfg, []row{func() row { r2 := r; r2.ts = r.ts.Add(time.Minute); return r2 }()}) // same hour: replaces it
	count := func() uint64 {
		var n uint64
		require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".scored_ok WHERE trace_id = 'retry'").Scan(&n))
		return n
	}
	require.Equal(t, uint64(1), count())
	r.ts = t0.Add(11*time.Hour + time.Minute) // a retry without created, after the hour turned
	write(t, cfg, []row{r})
	require.Equal(t, uint64(2), count())
}
