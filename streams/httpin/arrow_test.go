package httpin

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	arrowipc "github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// traces converts JSON responses to one trace.v1 batch, as ingest does.
func traces(t *testing.T, responses ...string) arrow.RecordBatch {
	t.Helper()
	cfg := ingest.DefaultConfig()
	cfg.BatchRows = len(responses)
	rd := ingest.NewReader(strings.NewReader(strings.Join(responses, "\n")+"\n"), cfg, memory.NewGoAllocator())
	defer rd.Release()
	rec, err := rd.Next()
	require.NoError(t, err)
	require.Empty(t, rd.Rejects())
	require.EqualValues(t, len(responses), rec.NumRows())
	return rec
}

// asChunks returns rec with its seq and final columns replaced.
func asChunks(t *testing.T, rec arrow.RecordBatch, seq []int32, final []bool) arrow.RecordBatch {
	t.Helper()
	mem := memory.NewGoAllocator()
	cols := append([]arrow.Array{}, rec.Columns()...)
	sb := array.NewInt32Builder(mem)
	sb.AppendValues(seq, nil)
	s := sb.NewArray()
	defer s.Release()
	fb := array.NewBooleanBuilder(mem)
	fb.AppendValues(final, nil)
	f := fb.NewArray()
	defer f.Release()
	cols[schemas.MustIndex(rec.Schema(), schemas.ColSeq)] = s
	cols[schemas.MustIndex(rec.Schema(), schemas.ColFinal)] = f
	return array.NewRecordBatch(rec.Schema(), cols, rec.NumRows())
}

// arrowStream writes batches as one Arrow IPC stream.
func arrowStream(t *testing.T, recs ...arrow.RecordBatch) []byte {
	t.Helper()
	var b bytes.Buffer
	w := arrowipc.NewWriter(&b, arrowipc.WithSchema(recs[0].Schema()))
	for _, r := range recs {
		require.NoError(t, w.Write(r))
	}
	require.NoError(t, w.Close())
	return b.Bytes()
}

func postArrow(t *testing.T, url string, body []byte, gz bool) (int, Reply) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", ArrowContentType)
	if gz {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		_, err := w.Write(body)
		require.NoError(t, err)
		require.NoError(t, w.Close())
		req.Body = io.NopCloser(&z)
		req.ContentLength = int64(z.Len())
		req.Header.Set("Content-Encoding", "gzip")
	}
	return do(t, req)
}

// TestArrowBody: a body of trace.v1 rows as an Arrow IPC stream (Content-Type
// application/vnd.apache.arrow.stream, gzip or not, any number of batches)
// is produced as JSON is, checked by the same rules, with rejects naming the
// row; chunk rows are joined and a trace missing a chunk is refused.
func TestArrowBody(t *testing.T) {
	url, _ := server(t, "http-arrow", nil)
	a := traces(t, response("ar-1"), response("ar-2"))
	defer a.Release()
	b := traces(t, response("ar-3"), response("ar-4"), response("ar-5"))
	defer b.Release()

	code, r := postArrow(t, url, arrowStream(t, a, b), false)
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, 5, r.Accepted)
	g := traces(t, response("ar-gz"))
	defer g.Release()
	code, r = postArrow(t, url, arrowStream(t, g), true)
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, 1, r.Accepted)

	// A positive logprob in the second batch: 400 naming row 4, nothing
	// produced.
	step := `{"token":"a","logprob":0.5,"top_logprobs":[{"token":"a","logprob":0.5},{"token":"b","logprob":-2.5}]}`
	bad := traces(t, response("ok-1"), unscorable("pos", step))
	defer bad.Release()
	code, r = postArrow(t, url, arrowStream(t, a, bad), false)
	require.Equal(t, http.StatusBadRequest, code)
	require.Len(t, r.Rejects, 1)
	require.Equal(t, Reject{Line: 4, ID: "pos", Reason: schemas.ReasonPositiveLogprob, Detail: r.Rejects[0].Detail}, r.Rejects[0])
	require.Contains(t, r.Rejects[0].Detail, "positive")

	// Chunk rows: ck's two chunks (second first) are joined into one
	// response; open's final chunk is not in the body.
	ck := traces(t, response("ck"), response("ck"), response("open"))
	defer ck.Release()
	chunks := asChunks(t, ck, []int32{1, 0, 0}, []bool{true, false, false})
	defer chunks.Release()
	code, r = postArrow(t, url, arrowStream(t, a, chunks), false)
	require.Equal(t, http.StatusBadRequest, code)
	require.Len(t, r.Rejects, 1)
	require.Equal(t, int64(5), r.Rejects[0].Line, "open began at row 5")
	require.Equal(t, "open", r.Rejects[0].ID)
	require.Equal(t, schemas.ReasonIncomplete, r.Rejects[0].Reason)
	require.Contains(t, r.Rejects[0].Detail, "post all of a trace's chunks in one body")
	whole := asChunks(t, ck, []int32{1, 0, 0}, []bool{true, false, true})
	defer whole.Release()
	code, r = postArrow(t, url, arrowStream(t, whole), false)
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, 2, r.Accepted, "ck joined, open whole")

	require.Equal(t, []string{"ar-1", "ar-2", "ar-3", "ar-4", "ar-5", "ar-gz", "open", "ck"}, consumed(t, "http-arrow", 8))

	// Not Arrow, no batch, and Arrow to the labels endpoint.
	code, r = postArrow(t, url, []byte(response("json-as-arrow")), false)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, r.Error, "the body is not a trace.v1 Arrow IPC stream")
	var empty bytes.Buffer
	w := arrowipc.NewWriter(&empty, arrowipc.WithSchema(a.Schema()))
	require.NoError(t, w.Close())
	code, r = postArrow(t, url, empty.Bytes(), false)
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, r.Error, "empty body")
	code, r = postArrow(t, strings.TrimSuffix(url, DefaultConfig().Path)+DefaultConfig().LabelsPath, arrowStream(t, a), false)
	require.Equal(t, http.StatusUnsupportedMediaType, code)
	require.Contains(t, r.Error, "labels are posted as JSON")
}

// TestArrowBodyExpansionBounded: an Arrow body whose compressed buffers hold
// far more than the body is refused with 413 once decoding passes 4 x
// http.max_body_bytes, not decoded up to 64 times its size per request.
func TestArrowBodyExpansionBounded(t *testing.T) {
	url, _ := server(t, "http-arrow-expand", func(c *Config) { c.MaxBodyBytes = 64 << 10 })
	rec := traces(t, longResponse("big-1", 2000), longResponse("big-2", 2000)) // 2 x 2000 x 21 x 4 B = 336 KB of logprobs
	defer rec.Release()
	var b bytes.Buffer
	w := arrowipc.NewWriter(&b, arrowipc.WithSchema(rec.Schema()), arrowipc.WithZstd())
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())
	require.Less(t, b.Len(), 64<<10, "the body itself fits")
	code, r := postArrow(t, url, b.Bytes(), false)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, r.Error)
	require.Contains(t, r.Error, "the Arrow stream decodes to more than 262144 bytes")

	// A smaller one compressed is within both limits.
	one := traces(t, longResponse("big-3", 1000))
	defer one.Release()
	b.Reset()
	w = arrowipc.NewWriter(&b, arrowipc.WithSchema(one.Schema()), arrowipc.WithZstd())
	require.NoError(t, w.Write(one))
	require.NoError(t, w.Close())
	code, r = postArrow(t, url, b.Bytes(), false)
	require.Equal(t, http.StatusAccepted, code, r.Error)
}

// TestTopicLimitBelowProducer: a topic whose max.message.bytes is below the
// size messages are cut to refuses a large body's message: 413 saying so,
// and the endpoint stays ready (it answered 503 "retry later", which can
// never succeed, and turned /readyz/ingest 503 blaming disk space).
func TestTopicLimitBelowProducer(t *testing.T) {
	bcfg := broker.DefaultConfig()
	bcfg.Listen = "127.0.0.1:0"
	bcfg.MaxMessageBytes = 100 << 10
	bcfg.Topics = []string{"small"}
	bcfg.Partitions = 1
	b, err := broker.Start(bcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer b.Close(context.Background())
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{b.Addr()}
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = "small"
	p, err := kafka.NewProducer(conn, pcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer p.Close()
	cfg := DefaultConfig()
	cfg.LabelsTopic = ""
	var logs bytes.Buffer
	h, err := New(cfg, ingest.DefaultConfig(), p, nil, memory.NewGoAllocator(), slog.New(slog.NewTextHandler(&logs, nil)), prometheus.NewRegistry())
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()

	code, r := post(t, srv.URL+cfg.Path, "", strings.NewReader(longResponse("big", 2000))) // about 180 KB as trace.v1
	require.Equal(t, http.StatusRequestEntityTooLarge, code, r.Error)
	require.Contains(t, r.Error, "topic small refused a message of this body as too large")
	require.Contains(t, r.Error, "raise the topic's max.message.bytes (the embedded broker's broker.max_message_bytes) to at least 1048588",
		"the record batch the producer sends, not the largest message (1000000), which a busy topic's batches exceed")
	require.False(t, h.ProduceFailing(time.Now()), "the broker is fine")
	require.Contains(t, logs.String(), "http ingest produce failed (answered 413)")
	code, r = post(t, srv.URL+cfg.Path, "", strings.NewReader(response("small-1")))
	require.Equal(t, http.StatusAccepted, code, r.Error)
}

// TestArrowBodyWithoutArrowType: an Arrow body sent with another
// Content-Type (octet-stream, or none) is answered 415 naming the type to
// send, not read as JSON Lines (400 with 171 malformed_json rejects, which
// said nothing of the cause and counted in the rejects metric; recheck9 F6).
func TestArrowBodyWithoutArrowType(t *testing.T) {
	url, _ := server(t, "http-arrow-type", nil)
	a := traces(t, response("nt-1"), response("nt-2"))
	defer a.Release()
	for _, ct := range []string{"application/octet-stream", ""} {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(arrowStream(t, a)))
		require.NoError(t, err)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		code, r := do(t, req)
		require.Equal(t, http.StatusUnsupportedMediaType, code, r.Error)
		require.Contains(t, r.Error, "the body is Arrow IPC: send trace.v1 rows as an Arrow IPC stream with Content-Type: "+ArrowContentType)
		require.Empty(t, r.Rejects)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(append([]byte("ARROW1\x00\x00"), arrowStream(t, a)...)))
	require.NoError(t, err)
	code, r := do(t, req)
	require.Equal(t, http.StatusUnsupportedMediaType, code, "the file format's magic too: %s", r.Error)
}
