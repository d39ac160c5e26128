package clickhouse

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/entrowatch/entrowatch/schemas"
)

// testServer is the one clickhouse-server of this test package; nil when the
// binary is absent.
var (
	testServer *Server
	skipReason string
	dbSeq      atomic.Int64
)

func TestMain(m *testing.M) {
	flag.Parse()
	fuzzing := flag.Lookup("test.fuzz").Value.String() != "" || flag.Lookup("test.fuzzworker").Value.String() == "true"
	code := func() int {
		removeStale(filepath.Join(os.TempDir(), "entrowatch-ch-*"), 6*time.Hour)
		dir, err := os.MkdirTemp("", "entrowatch-ch-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if _, err := FindServerBinary(); err != nil {
			skipReason = "clickhouse-server not installed (make deps installs it): " + err.Error()
		} else if fuzzing {
			skipReason = "no clickhouse-server while fuzzing"
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			testServer, err = StartLocal(ctx, LocalConfig{Dir: filepath.Join(dir, "server")}, nil)
			cancel()
			if err != nil {
				fmt.Fprintln(os.Stderr, "starting clickhouse-server:", err)
				return 1
			}
			defer testServer.Stop()
		}
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// removeStale removes what a killed test run left (its deferred cleanup
// never ran): directories matching pattern untouched for longer than age.
func removeStale(pattern string, age time.Duration) {
	old, _ := filepath.Glob(pattern)
	for _, d := range old {
		if st, err := os.Stat(d); err == nil && st.IsDir() && time.Since(st.ModTime()) > age {
			os.RemoveAll(d)
		}
	}
}

// needServer skips t without a server and returns a config for a fresh,
// migrated database of its own.
func needServer(t testing.TB) Config {
	t.Helper()
	if testServer == nil {
		t.Skip(skipReason)
	}
	cfg := DefaultConfig()
	cfg.DSN = testServer.DSN()
	cfg.Database = fmt.Sprintf("t%d_%s", dbSeq.Add(1), sanitize(t.Name()))
	return cfg
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	out := b.String()
	if len(out) > 40 {
		out = out[:40]
	}
	return out
}

// migrated is needServer plus migrations and an open connection.
func migrated(t testing.TB) (Config, driver.Conn) {
	t.Helper()
	cfg := needServer(t)
	ctx := context.Background()
	_, err := Migrate(ctx, cfg, nil)
	require.NoError(t, err)
	conn, err := Open(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return cfg, conn
}

// row is one scored response for test batches.
type row struct {
	id          string
	ts          time.Time
	model       string
	domain      string // "" = null, unless emptyDomain
	emptyDomain bool   // domain is '' (a caller that sent "domain": "")
	attrs       map[string]string
	p           float64 // < 0 = null
	correct     int     // -1 null, 0, 1
	clusterID   int32   // -2 = null
	cluster     string
	status      string // "" = ok
	mean, max   float64
	q50         float64
}

// batch builds a scored.v1 record from rows with schemas.Scored builders.
func batch(t testing.TB, mem memory.Allocator, rows []row) arrow.RecordBatch {
	t.Helper()
	b := array.NewRecordBuilder(mem, schemas.Scored)
	defer b.Release()
	sc := schemas.Scored
	f := func(name string) array.Builder { return b.Field(schemas.MustIndex(sc, name)) }
	for _, r := range rows {
		f(schemas.ColTraceID).(*array.StringBuilder).Append(r.id)
		f(schemas.ColTS).(*array.TimestampBuilder).Append(arrow.Timestamp(r.ts.UnixMilli()))
		model := r.model
		if model == "" {
			model = "m1"
		}
		f(schemas.ColModel).(*array.StringBuilder).Append(model)
		f(schemas.ColProvider).(*array.StringBuilder).Append("vllm")
		f(schemas.ColLogprobsMode).(*array.StringBuilder).Append("raw_logprobs")
		f(schemas.ColTemperature).(*array.Float32Builder).Append(0.7)
		f(schemas.ColTopP).(*array.Float32Builder).Append(1)
		if r.domain == "" && !r.emptyDomain {
			f(schemas.ColDomain).AppendNull()
		} else {
			f(schemas.ColDomain).(*array.StringBuilder).Append(r.domain)
		}
		f(schemas.ColPrompt).(*array.StringBuilder).Append("prompt of " + r.id)
		mb := f(schemas.ColAttributes).(*array.MapBuilder)
		mb.Append(true)
		for _, k := range slices.Sorted(maps.Keys(r.attrs)) {
			mb.KeyBuilder().(*array.StringBuilder).Append(k)
			mb.ItemBuilder().(*array.StringBuilder).Append(r.attrs[k])
		}
		f(schemas.ColFinishReason).(*array.StringBuilder).Append("stop")
		if r.correct < 0 {
			f(schemas.ColCorrect).AppendNull()
		} else {
			f(schemas.ColCorrect).(*array.BooleanBuilder).Append(r.correct == 1)
		}
		f(schemas.ColNTokens).(*array.Int32Builder).Append(100)
		for _, n := range schemas.ProfileFeatures {
			v := 0.5
			switch n {
			case "mean":
				v = r.mean
			case "max":
				v = r.max
			case "q50":
				v = r.q50
			}
			f(n).(*array.Float64Builder).Append(v)
		}
		for _, n := range schemas.Baselines {
			f(n).(*array.Float64Builder).Append(1.5)
		}
		if r.p < 0 {
			f(schemas.ColPCorrect).AppendNull()
		} else {
			f(schemas.ColPCorrect).(*array.Float64Builder).Append(r.p)
		}
		f(schemas.ColEstimatorVersion).(*array.StringBuilder).Append("test-1")
		if r.clusterID == -2 {
			f(schemas.ColClusterID).AppendNull()
			f(schemas.ColClusterLabel).AppendNull()
			f(schemas.ColClusterDistance).AppendNull()
		} else {
			f(schemas.ColClusterID).(*array.Int32Builder).Append(r.clusterID)
			if r.cluster == "" {
				f(schemas.ColClusterLabel).AppendNull()
			} else {
				f(schemas.ColClusterLabel).(*array.StringBuilder).Append(r.cluster)
			}
			f(schemas.ColClusterDistance).(*array.Float32Builder).Append(0.25)
		}
		st := r.status
		if st == "" {
			st = schemas.StatusOK
		}
		f(schemas.ColStatus).(*array.StringBuilder).Append(st)
	}
	return b.NewRecordBatch()
}

// write inserts rows through a Sink of cfg.
func write(t testing.TB, cfg Config, rows []row) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ctx := context.Background()
	s, err := NewSink(ctx, cfg, nil)
	require.NoError(t, err)
	defer s.Close(ctx)
	rec := batch(t, mem, rows)
	defer rec.Release()
	require.NoError(t, s.Write(ctx, rec))
}
