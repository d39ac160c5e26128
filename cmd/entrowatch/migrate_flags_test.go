package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestClickHouseConnFlags: migrate, alarms and labels share --tls-ca and
// --read-timeout; bad values are refused before connecting.
func TestClickHouseConnFlags(t *testing.T) {
	_, errOut, code := runCLI(t, "migrate", "--clickhouse", "clickhouse://127.0.0.1:1/db", "--read-timeout", "0s")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "--read-timeout 0s: want > 0")

	missing := filepath.Join(t.TempDir(), "ca.pem")
	_, errOut, code = runCLI(t, "migrate", "--clickhouse", "clickhouse://127.0.0.1:1/db", "--tls-ca", missing)
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "tls_ca_file")
	require.Contains(t, errOut, "ca.pem")

	out, errOut, _ := runCLI(t, "labels", "requests", "-h")
	require.Contains(t, out+errOut, "-read-timeout")
	require.Contains(t, out+errOut, "-tls-ca")
	require.Contains(t, out+errOut, "(default 5m0s)")

	// migrate's help gives the timeout it uses: a migration may copy a large
	// table, so it waits at least 30 minutes (it said 5m, which it ignored).
	out, errOut, _ = runCLI(t, "migrate", "-h")
	require.Contains(t, out+errOut, "at least 30m0s, since a migration may copy a large table (default 30m0s)")
}
