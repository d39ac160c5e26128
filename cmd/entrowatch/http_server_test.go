package main

import (
	"net/http"
	"testing"

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
