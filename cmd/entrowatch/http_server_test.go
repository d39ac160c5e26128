package main

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// TestHTTPServerTimeouts: a client cannot hold a connection of the ingest or
// metrics server forever by sending nothing: neither headers nor, once
// answered, another request (keep-alive connections were never closed).
func TestHTTPServerTimeouts(t *testing.T) {
	srv := newHTTPServer(http.NotFoundHandler())
	require.Positive(t, srv.ReadHeaderTimeout)
	require.Positive(t, srv.IdleTimeout)
}

// TestHTTPIngestFollowsProfileMaxSteps: raising profile.max_steps above
// ingest.max_steps does not make the endpoint cut long streamed responses
// short (they would be refused as too_long before the profile saw them).
func TestHTTPIngestFollowsProfileMaxSteps(t *testing.T) {
	in, prof := ingest.DefaultConfig(), profile.DefaultConfig()
	require.Equal(t, in.MaxSteps, httpIngest(in, prof).MaxSteps)
	prof.MaxSteps = 2 * in.MaxSteps
	got := httpIngest(in, prof)
	require.Equal(t, prof.MaxSteps, got.MaxSteps)
	require.GreaterOrEqual(t, got.MaxHeldSteps, got.MaxSteps)
	require.NoError(t, got.Validate())
	in.MaxSteps = 3 * prof.MaxSteps // a larger ingest limit is kept
	require.Equal(t, in.MaxSteps, httpIngest(in, prof).MaxSteps)
}

// TestLimitListener: beyond n open connections Accept waits until one
// closes; closing the listener ends a waiting Accept.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := limitListener(inner, 2)
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		require.NoError(t, err)
		defer c.Close()
	}
	first, second := <-accepted, <-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted while two were open")
	case <-time.After(100 * time.Millisecond):
	}
	require.NoError(t, first.Close())
	_ = first.Close() // a second Close (an error) gives no second slot back
	third := <-accepted
	require.NotNil(t, third)
	require.NoError(t, second.Close())
	require.NoError(t, third.Close())
	require.NoError(t, ln.Close())
	for range accepted {
	}
}
