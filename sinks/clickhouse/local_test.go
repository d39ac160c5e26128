package clickhouse

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLocalSupervisedAndPortsKept: a managed server that dies is started
// again on the same ports (clients keep their DSN), and a later start under
// the same directory reuses the ports of the previous one.
func TestLocalSupervisedAndPortsKept(t *testing.T) {
	if testServer == nil {
		t.Skip(skipReason)
	}
	dir := filepath.Join(t.TempDir(), "server")
	ctx := context.Background()
	// 18.16 takes about 10 s to stop gracefully; a test need not wait.
	cfg := LocalConfig{Dir: dir, StopTimeout: 2 * time.Second}
	first, err := StartLocal(ctx, cfg, nil)
	require.NoError(t, err)
	dsn := first.DSN()
	sup := Supervise(first, cfg, nil)
	defer sup.Stop()

	require.NoError(t, first.cmd.Process.Kill()) // as the OOM killer would
	deadline := time.Now().Add(60 * time.Second)
	for sup.Server() == first && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	second := sup.Server()
	require.NotSame(t, first, second, "the server was not started again")
	require.EqualValues(t, 1, sup.Exits(), "the exit is counted (entrowatch_clickhouse_managed_exits_total)")
	require.Equal(t, dsn, second.DSN())
	c := DefaultConfig()
	c.DSN = second.DSN()
	conn, err := Open(ctx, c)
	require.NoError(t, err, "the restarted server answers on the old address")
	conn.Close()

	_ = sup.Stop() // killed after StopTimeout is fine here
	select {
	case <-second.Done():
	default:
		t.Fatal("Stop left the server running")
	}
	third, err := StartLocal(ctx, cfg, nil)
	require.NoError(t, err)
	defer third.Stop()
	require.Equal(t, dsn, third.DSN(), "a new start reuses the previous ports when free")
}

// TestLocalStopsLeftover: after kill -9 of entrowatch run, its managed
// server lives on for a while (or for ever, when it was stopped or hung)
// and holds the data directory: an immediate restart failed with "server
// exited during start" ("Another server instance in same directory is
// already running"). The new start stops the leftover, waiting StopTimeout
// for it and then killing it, and starts on the same directory.
func TestLocalStopsLeftover(t *testing.T) {
	if testServer == nil {
		t.Skip(skipReason)
	}
	dir := filepath.Join(t.TempDir(), "server")
	ctx := context.Background()
	cfg := LocalConfig{Dir: dir, StopTimeout: time.Second}
	first, err := StartLocal(ctx, cfg, nil)
	require.NoError(t, err)
	defer first.Stop()
	// A hung leftover: SIGTERM is not enough, it has to be killed.
	require.NoError(t, first.cmd.Process.Signal(syscall.SIGSTOP))
	second, err := StartLocal(ctx, cfg, nil)
	require.NoError(t, err, "the leftover holding the directory is stopped")
	defer second.Stop()
	select {
	case <-first.done:
	case <-time.After(30 * time.Second): // a guard against hanging, not a speed assertion
		t.Fatal("the leftover server still runs")
	}
	c := DefaultConfig()
	c.DSN = second.DSN()
	conn, err := Open(ctx, c)
	require.NoError(t, err)
	require.NoError(t, conn.Close())
}
