package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/entropy"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

// TestBenchPipelineOwnDatabase: bench pipeline --sink clickhouse --clickhouse
// DSN wrote its synthetic rows (model bench, dated 2025) into the server's
// real scored table and left them there. They now go to a database of their
// own, dropped at the end.
func TestBenchPipelineOwnDatabase(t *testing.T) {
	if _, err := clickhouse.FindServerBinary(); err != nil {
		t.Skip("clickhouse-server is not installed (make deps installs it): ", err)
	}
	ctx := context.Background()
	lc := clickhouse.DefaultLocalConfig()
	lc.Dir = filepath.Join(t.TempDir(), "ch")
	srv, err := clickhouse.StartLocal(ctx, lc, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer srv.Stop()
	dsn := fmt.Sprintf("clickhouse://127.0.0.1:%d/entrowatch", srv.TCPPort())
	_, errs, code := runCLI(t, "migrate", "--clickhouse", dsn)
	require.Equal(t, 0, code, errs)

	_, errs, code = runCLI(t, "bench", "pipeline", "--traces", "50", "--steps", "4", "--k", "2", "--partitions", "1", "--workers", "1",
		"--sink", "clickhouse", "--clickhouse", dsn)
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "not to entrowatch.scored")
	require.Contains(t, errs, "dropped the bench database entrowatch_bench_")

	conn, err := clickhouse.Open(ctx, clickhouse.Config{DSN: dsn})
	require.NoError(t, err)
	defer conn.Close()
	var n uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM entrowatch.scored").Scan(&n))
	require.Zero(t, n, "no synthetic row in the real table")
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name LIKE 'entrowatch_bench_%'").Scan(&n))
	require.Zero(t, n, "the bench database is dropped")
}

// TestBenchOperatorsSaysKernel: bench operators did not say which entropy
// kernel the binary runs (the vector one is 2.5x the portable one) nor the
// load, so two runs could not be compared.
func TestBenchOperatorsSaysKernel(t *testing.T) {
	_, errs, code := runCLI(t, "bench", "operators", "--duration", "50ms", "--batch", "8", "--steps", "10")
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `\((GOMAXPROCS \d+), (avx512|portable) entropy kernel, load average (\d+\.\d+|\?)\)`, errs)
	require.Contains(t, errs, entropy.Kernel()+" entropy kernel")
}
