package file_test

import (
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/sinks/file"
)

func TestCSV(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	b2 := array.NewRecordBuilder(mem, schemas.Scored)
	defer b2.Release()
	for i, f := range schemas.Scored.Fields() {
		switch f.Name {
		case schemas.ColTraceID:
			b2.Field(i).(*array.StringBuilder).AppendValues([]string{"a,1", `q"x`, "rejected"}, nil)
		case schemas.ColStatus:
			// CSV keeps ok rows only: the third is a rejected row.
			b2.Field(i).(*array.StringBuilder).AppendValues([]string{"ok", "ok", "empty"}, nil)
		case schemas.ColDomain:
			b2.Field(i).(*array.StringBuilder).AppendValues([]string{"math", "", ""}, []bool{true, false, false})
		case schemas.ColCorrect:
			b2.Field(i).(*array.BooleanBuilder).AppendValues([]bool{true, false, false}, []bool{true, false, false})
		case "mean":
			b2.Field(i).(*array.Float64Builder).AppendValues([]float64{0.1, 1e-300, 0}, nil)
		case schemas.ColPCorrect:
			b2.Field(i).(*array.Float64Builder).AppendValues([]float64{0.25, 0, 0}, []bool{true, false, false})
		case schemas.ColClusterID:
			b2.Field(i).(*array.Int32Builder).AppendValues([]int32{3, -1, -1}, nil)
		default:
			b2.Field(i).AppendEmptyValues(3)
		}
	}
	rec2 := b2.NewRecordBatch()
	defer rec2.Release()

	path := filepath.Join(t.TempDir(), "out.csv")
	s, err := file.New(file.Config{Path: path, CSVEstimate: true, CSVClusters: true}, mem)
	require.NoError(t, err)
	require.NoError(t, s.Write(context.Background(), rec2))
	require.NoError(t, s.Close(context.Background()))
	require.EqualValues(t, 3, s.Rows())
	b3, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b3)), "\n")
	require.Len(t, lines, 3)
	require.Equal(t, strings.Join(file.CSVHeader(file.Config{CSVEstimate: true, CSVClusters: true}), ","), lines[0])
	require.True(t, strings.HasPrefix(lines[0], "id,model,domain,correct,n_tokens,mean,std,max,q10,q25,q50,q75,q90,skew,kurt,sea,nll_mean,nll_max,nll_sum,perplexity,min_token_prob,margin_mean,h_top5,p_correct,cluster_id,cluster_label"))
	require.True(t, strings.HasPrefix(lines[1], `"a,1",,math,1,0,0.1,`), lines[1])
	require.True(t, strings.HasSuffix(lines[1], ",0.25,3,"), lines[1])
	require.True(t, strings.HasPrefix(lines[2], `"q""x",,,,0,1e-300,`), lines[2])
	require.True(t, strings.HasSuffix(lines[2], ",,-1,"), lines[2])
}

func TestArrowRoundTripAndSchemaCheck(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	scored, traces := scoredBatch(t, mem, 7, 5, 1)
	defer traces.Release()
	defer scored.Release()

	path := filepath.Join(t.TempDir(), "out.arrow")
	s, err := file.New(file.Config{Path: path}, mem)
	require.NoError(t, err)
	require.Error(t, s.Write(context.Background(), traces), "a trace.v1 batch is not scored.v1")
	require.NoError(t, s.Write(context.Background(), scored))
	require.NoError(t, s.Write(context.Background(), scored))
	require.NoError(t, s.Close(context.Background()))

	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	r, err := ipc.NewReader(f, ipc.WithAllocator(mem))
	require.NoError(t, err)
	defer r.Release()
	require.True(t, r.Schema().Equal(schemas.Scored))
	n := 0
	for r.Next() {
		n += int(r.RecordBatch().NumRows())
	}
	require.Equal(t, 14, n)
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg    file.Config
		format string
		err    bool
	}{
		{file.Config{Path: "x.csv"}, "csv", false},
		{file.Config{Path: "x.CSV"}, "csv", false},
		{file.Config{Path: "x.arrow"}, "arrow", false},
		{file.Config{Path: "x.csv.gz"}, "csv", false},
		{file.Config{Path: "x.CSV.GZ"}, "csv", false},
		{file.Config{Path: "x.out", Format: "csv"}, "csv", false},
		{file.Config{Path: "x.out", Format: "parquet"}, "", true},
		{file.Config{}, "", true},
	} {
		err := tc.cfg.Validate()
		got, rerr := tc.cfg.Resolved()
		require.Equal(t, err, rerr)
		if tc.err {
			require.Error(t, err)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.format, got.Format)
		require.Equal(t, strings.HasSuffix(strings.ToLower(tc.cfg.Path), ".gz"), got.Gzip, tc.cfg.Path)
	}
	_, err := file.New(file.Config{Path: filepath.Join(t.TempDir(), "no", "such", "dir.csv")}, memory.NewGoAllocator())
	require.Error(t, err)
}

// TestWriteIsDurable: what Write accepted is in the file before Close, as
// committing offsets after Write requires (a crash must not lose it).
func TestWriteIsDurable(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	scored, traces := scoredBatch(t, mem, 3, 5, 2)
	defer traces.Release()
	defer scored.Release()
	for _, name := range []string{"out.arrow", "out.csv"} {
		path := filepath.Join(t.TempDir(), name)
		s, err := file.New(file.Config{Path: path}, mem)
		require.NoError(t, err)
		before, err := os.Stat(path)
		require.NoError(t, err)
		require.NoError(t, s.Write(context.Background(), scored))
		after, err := os.Stat(path)
		require.NoError(t, err)
		require.Greater(t, after.Size(), before.Size(), "%s: rows must be in the file when Write returns", name)
		require.NoError(t, s.Close(context.Background()))
	}
}

// TestGzipCSV: a .csv.gz path writes gzip-compressed CSV that reads back as
// the same text as the plain file, also when written batch by batch with
// flushes in between (unbuffered mode).
func TestGzipCSV(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	scored, traces := scoredBatch(t, mem, 5, 6, 3)
	defer traces.Release()
	defer scored.Release()

	dir := t.TempDir()
	write := func(path string, buffered bool) {
		writeBatches(t, file.Config{Path: path, Buffered: buffered}, mem, scored, scored)
	}
	plain := filepath.Join(dir, "out.csv")
	write(plain, true)
	want, err := os.ReadFile(plain)
	require.NoError(t, err)
	require.Len(t, strings.Split(strings.TrimSpace(string(want)), "\n"), 11)
	for _, buffered := range []bool{true, false} {
		gz := filepath.Join(dir, "out.csv.gz")
		write(gz, buffered)
		f, err := os.Open(gz)
		require.NoError(t, err)
		zr, err := gzip.NewReader(f)
		require.NoError(t, err, "not gzip")
		got, err := io.ReadAll(zr)
		require.NoError(t, err)
		f.Close()
		require.Equal(t, string(want), string(got))
	}
}

// scoredBatch profiles n synthetic traces of the given steps: the scored.v1
// batch the sink writes, and the trace.v1 batch it came from.
func scoredBatch(t *testing.T, mem memory.Allocator, n, steps int, seed uint64) (scored, traces arrow.RecordBatch) {
	t.Helper()
	traces = profile.Synthetic(mem, profile.SynthConfig{Traces: n, Steps: steps, K: 4, Seed: seed, Model: "m"})
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	require.NoError(t, err)
	out, err := op.Process(context.Background(), traces)
	require.NoError(t, err)
	require.Len(t, out, 1)
	return out[0], traces
}

// TestWriteAfterClose: a closed sink refuses writes with ErrClosed instead
// of counting rows it never writes (buffered CSV) or failing with a nil
// pointer (Arrow); Close is idempotent.
func TestWriteAfterClose(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	scored, traces := scoredBatch(t, mem, 3, 5, 4)
	defer traces.Release()
	defer scored.Release()
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		buffered bool
	}{{"out.csv", true}, {"out.csv", false}, {"out.arrow", true}, {"out.arrow", false}, {"out.csv.gz", true}} {
		t.Run(tc.name+"/buffered="+strconv.FormatBool(tc.buffered), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tc.name)
			s, err := file.New(file.Config{Path: path, Buffered: tc.buffered}, mem)
			require.NoError(t, err)
			require.NoError(t, s.Write(ctx, scored))
			require.NoError(t, s.Close(ctx))
			before, err := os.ReadFile(path)
			require.NoError(t, err)

			err = s.Write(ctx, scored)
			require.ErrorIs(t, err, file.ErrClosed)
			require.ErrorContains(t, err, "Write after Close")
			require.EqualValues(t, 3, s.Rows(), "a refused write counts no rows")
			require.NoError(t, s.Close(ctx), "Close again is a no-op")
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, before, after)
		})
	}
}

// TestNilAllocator: a nil allocator means memory.DefaultAllocator.
func TestNilAllocator(t *testing.T) {
	scored, traces := scoredBatch(t, memory.DefaultAllocator, 2, 3, 5)
	defer traces.Release()
	defer scored.Release()
	s, err := file.New(file.Config{Path: filepath.Join(t.TempDir(), "out.arrow")}, nil)
	require.NoError(t, err)
	require.NotPanics(t, func() { require.NoError(t, s.Write(context.Background(), scored)) })
	require.NoError(t, s.Close(context.Background()))
}
