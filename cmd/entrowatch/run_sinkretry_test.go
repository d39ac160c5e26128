package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/internal/freezeproxy"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

// TestRunCountsSinkRetries: a ClickHouse that stops answering mid-stream
// (kill -STOP; here a proxy that stops forwarding) used to show in the
// metrics only once a write had failed after every retry, about 2 minutes
// with the defaults. Each failed insert attempt is now counted in
// entrowatch_sink_insert_retries_total as soon as read_timeout ends it (the
// log has them at DEBUG only, as the stream logs its own retry); once
// the server answers again, the rows are stored.
func TestRunCountsSinkRetries(t *testing.T) {
	if _, err := clickhouse.FindServerBinary(); err != nil {
		t.Skip("clickhouse-server is not installed (make deps installs it): ", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lc := clickhouse.DefaultLocalConfig()
	lc.Dir = filepath.Join(t.TempDir(), "ch")
	srv, err := clickhouse.StartLocal(ctx, lc, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer srv.Stop()
	proxy, err := freezeproxy.Start(fmt.Sprintf("127.0.0.1:%d", srv.TCPPort()))
	require.NoError(t, err)
	defer proxy.Close()

	dir := t.TempDir()
	httpAddr, metrics := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`data_dir: %s
broker:
  listen: %s
sink: clickhouse
clickhouse:
  conn:
    dsn: clickhouse://%s/default
    read_timeout: 300ms
    retries: 20
    retry_backoff: 50ms
    max_backoff: 200ms
http:
  listen: %s
  shutdown_delay: 0s
metrics:
  listen: %s
`, dir, freeAddr(t), proxy.Addr(), httpAddr, metrics)
	runErr, done := startRun(t, ctx, dir, cfg)
	waitLog(t, runErr, "stream running")
	waitStatus(t, "http://"+metrics+"/readyz", http.StatusOK, runErr)
	_, body := get("http://" + metrics + "/metrics")
	require.Contains(t, body, "entrowatch_sink_insert_retries_total 0")

	proxy.Freeze()
	code, body := postResponses(t, httpAddr)
	require.Equal(t, http.StatusAccepted, code, body)
	retried := regexp.MustCompile(`entrowatch_sink_insert_retries_total [1-9]`)
	deadline := time.Now().Add(30 * time.Second) // a guard against hanging, not a speed assertion
	for {
		_, body = get("http://" + metrics + "/metrics")
		if retried.MatchString(body) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no insert retry counted while ClickHouse did not answer:\n%s", runErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Not ready from the first failed attempt: /readyz said 200 until every
	// retry had failed (about 6 minutes with the default read_timeout).
	waitStatus(t, "http://"+metrics+"/readyz", http.StatusServiceUnavailable, runErr)
	require.Contains(t, runErr.String(), "level=ERROR msg=\"clickhouse insert failed; retrying, and not ready until an insert succeeds\"")

	proxy.Thaw()
	conn, err := clickhouse.Open(ctx, clickhouse.Config{DSN: srv.DSN()})
	require.NoError(t, err)
	defer conn.Close()
	deadline = time.Now().Add(30 * time.Second)
	for {
		var n uint64
		require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM scored").Scan(&n))
		if n >= 33 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 33 rows stored after ClickHouse answered again:\n%s", n, runErr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitStatus(t, "http://"+metrics+"/readyz", http.StatusOK, runErr)
	cancel()
	stopped(t, done, runErr)
}
