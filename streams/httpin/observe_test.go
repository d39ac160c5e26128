package httpin

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// TestSeriesExistBeforeFirstRequest: the series of every code the endpoint
// answers with and of every reject reason exist at 0 before the first
// request. They were created on first use, so the first burst of 400s or
// 503s between two scrapes never showed in rate() (and the dashboard's
// requests panel was empty until the first request).
func TestSeriesExistBeforeFirstRequest(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LabelsTopic = ""
	h, err := New(cfg, ingest.DefaultConfig(), nil, nil, memory.NewGoAllocator(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	require.Equal(t, len(answerCodes), testutil.CollectAndCount(h.reqs))
	require.Equal(t, len(rejectReasons), testutil.CollectAndCount(h.rejects))
	for _, code := range []int{http.StatusAccepted, http.StatusBadRequest, http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		require.Zero(t, testutil.ToFloat64(h.reqs.WithLabelValues(strconv.Itoa(code))), "code %d", code)
	}
	require.Zero(t, testutil.ToFloat64(h.rejects.WithLabelValues(schemas.ReasonNoLogprobs)))

	// Every status the handler answers with is in answerCodes.
	src, err := os.ReadFile("httpin.go")
	require.NoError(t, err)
	status := map[string]int{
		"StatusAccepted": http.StatusAccepted, "StatusBadRequest": http.StatusBadRequest,
		"StatusUnauthorized": http.StatusUnauthorized, "StatusNotFound": http.StatusNotFound,
		"StatusMethodNotAllowed": http.StatusMethodNotAllowed, "StatusRequestTimeout": http.StatusRequestTimeout,
		"StatusRequestEntityTooLarge": http.StatusRequestEntityTooLarge, "StatusUnsupportedMediaType": http.StatusUnsupportedMediaType,
		"StatusTooManyRequests": http.StatusTooManyRequests, "StatusInternalServerError": http.StatusInternalServerError,
		"StatusServiceUnavailable": http.StatusServiceUnavailable,
	}
	replies := regexp.MustCompile(`h\.reply\(w, http\.(Status\w+)`).FindAllStringSubmatch(string(src), -1)
	require.NotEmpty(t, replies)
	for _, m := range replies {
		code, ok := status[m[1]]
		require.True(t, ok, "http.%s: add it to answerCodes and to this test", m[1])
		require.True(t, slices.Contains(answerCodes, code), "http.%s is not in answerCodes", m[1])
	}
}

// TestRefusedRequestsLogged: a body refused with 400 for its responses is
// logged (reason, count, the first one's line, id and detail, the client),
// at most streams.RejectLogLimit per reason per minute. A producer that broke
// (stopped asking for logprobs) lost all of its traffic and only its own
// client saw why: run's log had no line.
func TestRefusedRequestsLogged(t *testing.T) {
	var buf bytes.Buffer
	cfg := DefaultConfig()
	cfg.LabelsTopic = ""
	h, err := New(cfg, ingest.DefaultConfig(), nil, nil, memory.NewGoAllocator(), slog.New(slog.NewTextHandler(&buf, nil)), prometheus.NewRegistry())
	require.NoError(t, err)
	body := `{"id":"nolp-1","model":"m","choices":[{"index":0,"finish_reason":"stop"}]}` + "\n" +
		`{"id":"nolp-2","model":"m","choices":[{"index":0,"finish_reason":"stop"}]}` + "\n{not json\n"
	for range streams.RejectLogLimit + 3 {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, cfg.Path, strings.NewReader(body))
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2*streams.RejectLogLimit, "per reason, at most the limit a minute:\n%s", buf.String())
	require.Contains(t, lines[0], "level=WARN")
	require.Contains(t, lines[0], "reason=malformed_json responses=1 of=3")
	require.Contains(t, lines[1], "reason=no_logprobs responses=2 of=3")
	require.Contains(t, lines[1], "first_line=1 first_id=nolp-1")
	require.Contains(t, lines[1], "remote=192.0.2.1:1234")
}
