package httpin

import (
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
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
