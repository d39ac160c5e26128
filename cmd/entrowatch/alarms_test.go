package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

// alarms --list shows what fires now: the state of each alarm's latest
// evaluated window. Domain A's accuracy fell in hour 47; hour 48 has just
// begun (20 responses, min_n is 50), which must not hide the drop (before,
// the list read the newest window and said "0 alarms firing").
func TestAlarmsListPartialWindow(t *testing.T) {
	dsn := migratedServer(t)
	ctx := context.Background()
	cfg := clickhouse.DefaultConfig()
	cfg.DSN = dsn
	conn, err := clickhouse.Open(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.Exec(ctx, `INSERT INTO default.scored (trace_id, ts, model, domain, p_correct, status)
SELECT concat('r', toString(number)), toDateTime('2026-03-01 00:00:00', 'UTC') + intDiv(number, 100) * 3600 + number % 100 * 30, 'm1', 'A',
    if(intDiv(number, 100) >= 47, 0.3, 0.8) + number % 5 / 50, 'ok'
FROM system.numbers LIMIT 4820`))

	stdout, stderr, code := runCLI(t, "alarms", "--clickhouse", dsn, "--list")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Equal(t, "2 alarms firing", lines[len(lines)-1], stdout)
	require.Contains(t, stdout, "accuracy_drop  m1     A")
	require.Contains(t, stdout, "2026-03-02T23:00:00Z", "the window of hour 47, the newest one evaluated")
	require.Contains(t, stdout, "cusum")
}
