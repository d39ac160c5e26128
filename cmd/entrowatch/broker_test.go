package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/kafka"
)

// TestBrokerCommand: entrowatch broker serves the Kafka protocol with the
// topics it was told to create, refuses a second broker on its data
// directory, and keeps the topics across a restart; a run pointed at it
// (kafka.brokers) finds them (sre F11: the broker lived only inside one run,
// and went with it).
func TestBrokerCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "broker")
	addr := freeAddr(t)
	start := func() (context.CancelFunc, chan int, *syncWriter) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		out := &syncWriter{b: &strings.Builder{}}
		go func() {
			done <- dispatch(ctx, []string{"broker", "--listen", addr, "--data-dir", dir, "--topics", "traces,labels,extra", "--partitions", "2"}, out, &syncWriter{b: &strings.Builder{}})
		}()
		waitLog(t, out, "broker listening on "+addr)
		return cancel, done, out
	}
	cancel, done, _ := start()
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{addr}
	ctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer ccancel()
	require.NoError(t, kafka.CheckTopic(ctx, conn, "extra"))

	_, errs, code := runCLI(t, "broker", "--listen", freeAddr(t), "--data-dir", dir)
	require.Equal(t, 1, code, errs)
	require.Contains(t, errs, "broker.data_dir "+dir+" is in use by another entrowatch process (pid ")

	cancel()
	select {
	case c := <-done:
		require.Zero(t, c)
	case <-time.After(30 * time.Second):
		t.Fatal("broker did not stop")
	}
	cancel, done, _ = start() // the same data directory: the topics are back
	require.NoError(t, kafka.CheckTopic(ctx, conn, "extra"))
	cancel()
	require.Zero(t, <-done)

	_, errs, code = runCLI(t, "broker", "--partitions", "0")
	require.Equal(t, 2, code, errs)
	require.Contains(t, errs, "--partitions 0: want at least 1")
}
