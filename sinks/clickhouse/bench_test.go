package clickhouse

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
)

// BenchmarkSinkInsert measures scored rows/s into the local server, one
// INSERT per record batch.
func BenchmarkSinkInsert(b *testing.B) {
	for _, tc := range []struct {
		n, par int
		comp   string
	}{{10_000, 2, "lz4"}, {100_000, 1, "lz4"}, {100_000, 2, "lz4"}, {100_000, 2, "none"}} {
		n := tc.n
		b.Run(fmt.Sprintf("rows=%d/parallel=%d/compression=%s", n, tc.par, tc.comp), func(b *testing.B) {
			cfg, _ := migrated(b)
			cfg.Compression, cfg.InsertParallelism = tc.comp, tc.par
			ctx := context.Background()
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(b, 0)
			rec := batch(b, mem, benchRows(n))
			defer rec.Release()
			s, err := NewSink(ctx, cfg, nil)
			require.NoError(b, err)
			defer s.Close(ctx)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				require.NoError(b, s.Write(ctx, rec))
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkSinkInsertParallel is the stream's shape: one writer per
// partition sharing one Sink.
func BenchmarkSinkInsertParallel(b *testing.B) {
	const n = 100_000
	cfg, _ := migrated(b)
	cfg.Compression = "none"
	ctx := context.Background()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(b, 0)
	rec := batch(b, mem, benchRows(n))
	defer rec.Release()
	s, err := NewSink(ctx, cfg, nil)
	require.NoError(b, err)
	defer s.Close(ctx)
	b.SetParallelism(2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Write(ctx, rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(s.Rows())/b.Elapsed().Seconds(), "rows/s")
}

// benchRows is n scored rows over 20 domains, 7 tenants and 30 clusters,
// one millisecond apart.
func benchRows(n int) []row {
	rows := make([]row, n)
	for i := range rows {
		rows[i] = row{id: fmt.Sprintf("trace-%09d", i), ts: t0.Add(time.Duration(i) * time.Millisecond),
			domain: fmt.Sprintf("domain-%d", i%20), attrs: map[string]string{"tenant": fmt.Sprintf("t%d", i%7), "route": "/v1/chat"},
			p: float64(i%100) / 100, correct: -1, clusterID: int32(i % 30), cluster: "c", mean: 0.5, max: 2, q50: 0.4}
	}
	return rows
}
