package httpin

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// postAuth posts body with the Authorization header auth as given and
// returns the status code.
func postAuth(t *testing.T, url, auth, body string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	return res.StatusCode
}

// TestBearerSchemeCaseInsensitive: the auth scheme is case-insensitive (RFC
// 7235 section 2.1) and may be followed by several spaces; the token itself
// is compared exactly.
func TestBearerSchemeCaseInsensitive(t *testing.T) {
	url, _ := server(t, "http-auth-scheme", func(c *Config) { c.Token = "s3cret" })
	for auth, want := range map[string]int{
		"Bearer s3cret":   http.StatusAccepted,
		"bearer s3cret":   http.StatusAccepted,
		"BEARER s3cret":   http.StatusAccepted,
		"bEaReR s3cret":   http.StatusAccepted,
		"Bearer   s3cret": http.StatusAccepted,
		"bearer S3CRET":   http.StatusUnauthorized, // the token is case-sensitive
		"Bearers3cret":    http.StatusUnauthorized,
		"Bearer":          http.StatusUnauthorized,
		"Bearer ":         http.StatusUnauthorized,
		"Basic s3cret":    http.StatusUnauthorized,
		"s3cret":          http.StatusUnauthorized,
		"Bearer s3cret x": http.StatusUnauthorized,
	} {
		require.Equal(t, want, postAuth(t, url, auth, response("x")), "Authorization: %q", auth)
	}
}

func TestBearer(t *testing.T) {
	for in, want := range map[string]string{"Bearer a": "a", "bearer  a": "a", "BEARER a b": "a b"} {
		got, ok := bearer(in)
		require.True(t, ok, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "Bearer", "Bearer ", "Bearer   ", "Basic a", "Bearera", "Token a"} {
		_, ok := bearer(in)
		require.False(t, ok, in)
	}
}

// TestUnavailableRetryAfter: when producing fails outright (the brokers
// cannot be reached) the answer is 503 with Retry-After, so that clients and
// proxies back off instead of retrying at once; 429 carries it too.
func TestUnavailableRetryAfter(t *testing.T) {
	p := unreachableProducer(t, "http-unreachable")
	cfg := DefaultConfig()
	h := newTestHandler(t, cfg, p)
	srv := httptest.NewServer(h)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), cfg.ProduceTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+cfg.Path, strings.NewReader(response("x")))
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	require.Equal(t, retryAfterUnavailable, res.Header.Get("Retry-After"))
	// Readiness hears of it (/readyz/ingest said ready while a broker out
	// of disk space refused every write), and forgets it after the window.
	now := time.Now()
	require.True(t, h.ProduceFailing(now))
	require.False(t, h.ProduceFailing(now.Add(failWindow+time.Second)))
	h.lastOK.Store(now.Add(time.Millisecond).UnixNano())
	require.False(t, h.ProduceFailing(now), "a produce that succeeded since")

	// 429 (no slot within queue_wait) says when to retry as well.
	cfg.QueueWait = 0
	h2 := newTestHandler(t, cfg, p)
	for range cap(h2.slots) {
		h2.slots <- struct{}{}
	}
	rec := httptest.NewRecorder()
	h2.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, cfg.Path, strings.NewReader(response("x"))))
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, retryAfterBusy, rec.Header().Get("Retry-After"))
}

// TestProduceFailedLogLimited: in a Kafka outage every request fails; the
// WARN line comes at most once per failLogEvery, with the count of the
// failures not logged (50 requests logged 50 lines).
func TestProduceFailedLogLimited(t *testing.T) {
	var buf bytes.Buffer
	h := &Handler{log: slog.New(slog.NewTextHandler(&buf, nil))}
	for range 50 {
		h.logProduceFailed("traces", http.StatusServiceUnavailable, errors.New("dial tcp: connection refused"))
	}
	require.Equal(t, 1, strings.Count(buf.String(), "produce failed"), buf.String())
	h.failLast = time.Now().Add(-failLogEvery)
	h.logProduceFailed("traces", http.StatusServiceUnavailable, errors.New("dial tcp: connection refused"))
	require.Equal(t, 2, strings.Count(buf.String(), "produce failed"))
	require.Contains(t, buf.String(), "not_logged_since_last=49")
}

// TestFailFast: while the brokers are known not to answer, a request gets
// 503 with Retry-After at once, without a produce that would take seconds to
// fail and hold an in-flight slot; once they answer again it is produced.
func TestFailFast(t *testing.T) {
	p := unreachableProducer(t, "http-failfast")
	cfg := DefaultConfig()
	h := newTestHandler(t, cfg, p)
	var down atomic.Bool
	down.Store(true)
	h.FailFast(down.Load)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, cfg.Path, strings.NewReader(response("x"))))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Equal(t, retryAfterUnavailable, rec.Header().Get("Retry-After"))
	require.Contains(t, rec.Body.String(), "Kafka does not answer")
	require.Len(t, h.slots, 0, "no in-flight slot taken")
	// Authentication still comes first: no hint to an unauthenticated client.
	cfg.Token = "secret"
	h2 := newTestHandler(t, cfg, p)
	h2.FailFast(down.Load)
	rec = httptest.NewRecorder()
	h2.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, cfg.Path, strings.NewReader(response("x"))))
	require.Equal(t, http.StatusUnauthorized, rec.Code)
}

// TestRejectMessageSingular: one bad response reads "1 response cannot be
// read", not "1 responses".
func TestRejectMessageSingular(t *testing.T) {
	cfg := DefaultConfig()
	h := newTestHandler(t, cfg, unreachableProducer(t, "http-singular"))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, cfg.Path, strings.NewReader(`{"id":"x","model":"m","choices":[{"index":0}]}`)))
	require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), "1 response cannot be read or scored")
}

// unreachableProducer produces to topic on an address where nothing listens
// (connections are refused); the test closes it.
func unreachableProducer(t *testing.T, topic string) *kafka.Producer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{dead}
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = topic
	p, err := kafka.NewProducer(conn, pcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// newTestHandler is a handler of cfg producing through p, without labels.
func newTestHandler(t *testing.T, cfg Config, p *kafka.Producer) *Handler {
	t.Helper()
	cfg.LabelsTopic = ""
	h, err := New(cfg, ingest.DefaultConfig(), p, nil, memory.NewGoAllocator(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	return h
}
