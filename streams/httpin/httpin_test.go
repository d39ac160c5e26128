package httpin

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/ipc"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

var testBroker *broker.Broker

func TestMain(m *testing.M) {
	b, err := broker.Start(broker.DefaultConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testBroker = b
	code := m.Run()
	_ = b.Close(context.Background())
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func response(id string) string {
	return `{"id":"` + id + `","model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[` +
		`{"token":"a","logprob":-0.1,"top_logprobs":[{"token":"a","logprob":-0.1},{"token":"b","logprob":-2.5}]},` +
		`{"token":"c","logprob":-0.3,"top_logprobs":[{"token":"c","logprob":-0.3},{"token":"d","logprob":-1.5}]}]}}]}`
}

// streamed is response(id) as a stream=true server sends it: server-sent
// events of chat.completion.chunk objects, a token each, then [DONE].
func streamed(id string) string {
	ev := func(logprobs, finish string) string {
		return `data: {"id":"` + id + `","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"logprobs":` +
			logprobs + `,"finish_reason":` + finish + `}]}` + "\n\n"
	}
	return ev("null", "null") +
		ev(`{"content":[{"token":"a","logprob":-0.1,"top_logprobs":[{"token":"a","logprob":-0.1},{"token":"b","logprob":-2.5}]}]}`, "null") +
		ev(`{"content":[{"token":"c","logprob":-0.3,"top_logprobs":[{"token":"c","logprob":-0.3},{"token":"d","logprob":-1.5}]}]}`, "null") +
		ev("null", `"stop"`) + "data: [DONE]\n\n"
}

// streamedArray is streamed(id) as an SDK user forwards it: the chunk
// objects collected into one JSON array.
func streamedArray(id string) string {
	var objs []string
	for _, l := range strings.Split(streamed(id), "\n") {
		if p, ok := strings.CutPrefix(l, "data: "); ok && p != "[DONE]" {
			objs = append(objs, p)
		}
	}
	return "[" + strings.Join(objs, ",") + "]"
}

// server starts the endpoint producing to topic and returns its URL.
func server(t *testing.T, topic string, mut func(*Config)) (string, *Handler) {
	t.Helper()
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{testBroker.Addr()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, kafka.EnsureTopics(ctx, conn, 1, topic))
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = topic
	p, err := kafka.NewProducer(conn, pcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	cfg := DefaultConfig()
	cfg.LabelsTopic = topic + "-labels"
	if mut != nil {
		mut(&cfg)
	}
	var lp *kafka.Producer
	if cfg.LabelsTopic != "" {
		require.NoError(t, kafka.EnsureTopics(ctx, conn, 1, cfg.LabelsTopic))
		lcfg := pcfg
		lcfg.Topic = cfg.LabelsTopic
		lp, err = kafka.NewProducer(conn, lcfg, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
	}
	h, err := New(cfg, ingest.DefaultConfig(), p, lp, memory.NewGoAllocator(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		require.NoError(t, p.Close())
		if lp != nil {
			require.NoError(t, lp.Close())
		}
	})
	return srv.URL + cfg.Path, h
}

func post(t *testing.T, url, token string, body io.Reader) (int, Reply) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, body)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}

// do sends req and decodes the endpoint's answer.
func do(t *testing.T, req *http.Request) (int, Reply) {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var r Reply
	require.NoError(t, json.NewDecoder(res.Body).Decode(&r))
	return res.StatusCode, r
}

// consumed reads n rows' trace_ids from a one-partition topic.
func consumed(t *testing.T, topic string, n int) []string {
	t.Helper()
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{testBroker.Addr()}, Topic: topic, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var ids []string
	for len(ids) < n {
		m, err := r.ReadMessage(ctx)
		require.NoError(t, err)
		require.Equal(t, schemas.Tag(schemas.TraceName), string(m.Headers[0].Value))
		rec, err := ipc.Decode(m.Value, memory.NewGoAllocator())
		require.NoError(t, err)
		col := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
		for i := 0; i < col.Len(); i++ {
			ids = append(ids, col.Value(i))
		}
		rec.Release()
	}
	return ids
}

func TestAccepts(t *testing.T) {
	url, _ := server(t, "http-ok", nil)
	pretty := "{\n  " + strings.TrimPrefix(response("single"), "{")
	for _, tc := range []struct {
		name, body string
		n          int
	}{
		{"jsonl", response("l1") + "\n" + response("l2") + "\n", 2},
		{"object", pretty, 1},
		{"object on one line", response("o1"), 1},
		{"object in another layout", strings.Replace(response("o2"), ",", ",\n   ", 1) + "\n", 1},
		{"array", "[" + response("a1") + "," + response("a2") + "," + response("a3") + "]", 3},
		{"streamed (server-sent events)", streamed("s1"), 1},
		{"streamed (JSON array of chunks)", streamedArray("s2"), 1},
		{"pretty objects one after another", "{\n" + strings.TrimPrefix(response("p1"), "{") + "\n{\n" + strings.TrimPrefix(response("p2"), "{") + "\n", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, r := post(t, url, "", strings.NewReader(tc.body))
			require.Equal(t, http.StatusAccepted, code, r.Error)
			require.Equal(t, tc.n, r.Accepted)
		})
	}
	require.Equal(t, []string{"l1", "l2", "single", "o1", "o2", "a1", "a2", "a3", "s1", "s2", "p1", "p2"}, consumed(t, "http-ok", 12))
}

func TestRejects(t *testing.T) {
	url, _ := server(t, "http-bad", func(c *Config) { c.MaxBodyBytes = 4096 })
	code, r := post(t, url, "", strings.NewReader(response("good")+"\n{\"id\": \"broken\", \n"))
	require.Equal(t, http.StatusBadRequest, code)
	require.Len(t, r.Rejects, 1)
	require.Equal(t, schemas.ReasonMalformedJSON, r.Rejects[0].Reason)
	require.EqualValues(t, 2, r.Rejects[0].Line)
	require.Contains(t, r.Error, "nothing was produced")

	// A broken object on one line (passed to the reader as it is).
	code, r = post(t, url, "", strings.NewReader(`{"id": "cut", "choices": [`))
	require.Equal(t, http.StatusBadRequest, code)
	require.Len(t, r.Rejects, 1)
	require.Equal(t, schemas.ReasonMalformedJSON, r.Rejects[0].Reason)
	require.Equal(t, "cut", r.Rejects[0].ID)

	// An array element that is not a response is reported by its position.
	code, r = post(t, url, "", strings.NewReader("["+response("good")+", 5]"))
	require.Equal(t, http.StatusBadRequest, code)
	require.Len(t, r.Rejects, 1)
	require.Equal(t, schemas.ReasonMalformedJSON, r.Rejects[0].Reason)
	require.EqualValues(t, 2, r.Rejects[0].Line)

	// A stream's first chunk alone: the endpoint keeps nothing between
	// requests, and says so.
	code, r = post(t, url, "", strings.NewReader(`data: {"id":"s1","object":"chat.completion.chunk","model":"m",`+
		`"choices":[{"index":0,"delta":{"content":"4"},"logprobs":{"content":[{"token":"4","logprob":-0.1,"top_logprobs":[{"token":"4","logprob":-0.1}]}]},"finish_reason":null}]}`+"\n\n"))
	require.Equal(t, http.StatusBadRequest, code)
	require.Len(t, r.Rejects, 1)
	require.Equal(t, schemas.ReasonIncomplete, r.Rejects[0].Reason)
	require.Equal(t, "s1", r.Rejects[0].ID)
	require.Contains(t, r.Rejects[0].Detail, "post all of a stream's chunks in one body")

	code, r = post(t, url, "", strings.NewReader(""))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, r.Error, "empty body")

	code, r = post(t, url, "", strings.NewReader(strings.Repeat(response("big")+"\n", 20)))
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
	require.Contains(t, r.Error, "4096")

	res, err := http.Get(url)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, res.StatusCode)
}

// unscorable is a response whose choice carries the given logprobs content
// steps, or no logprobs at all when content is "".
func unscorable(id, content string) string {
	logprobs := "null"
	if content != "" {
		logprobs = `{"content":[` + content + `]}`
	}
	return `{"id":"` + id + `","model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":` + logprobs + `}]}`
}

// Responses that can be read but never scored get 400 at once, with the
// profile operator's reason and detail, and nothing of the body is produced,
// as for a line that cannot be read.
func TestRejectsUnscorable(t *testing.T) {
	url, h := server(t, "http-unscorable", nil)
	step := func(lp, alt string) string {
		return `{"token":"a","logprob":` + lp + `,"top_logprobs":[{"token":"a","logprob":` + alt + `},{"token":"b","logprob":-2.5}]}`
	}
	body := strings.Join([]string{
		response("good-1"),
		unscorable("nolp", ""),
		`{"id":"empty","model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[]}}]}`,
		unscorable("nan", step("-0.1", "-0.1")+","+step("NaN", "-0.2")),
		response("good-2"),
		unscorable("pos", step("-0.1", "-0.1")+","+step("-0.2", "-0.2")+","+step("-0.3", "-0.3")+","+step("-0.4", "0.7")),
		`{"id": "broken", `,
	}, "\n") + "\n"
	code, r := post(t, url, "", strings.NewReader(body))
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, r.Error, "nothing was produced")
	require.Zero(t, r.Accepted)
	type rej struct {
		Line       int64
		ID, Reason string
	}
	var got []rej
	for _, rj := range r.Rejects {
		got = append(got, rej{rj.Line, rj.ID, rj.Reason})
		require.NotEmpty(t, rj.Detail, rj.ID)
	}
	require.Equal(t, []rej{
		{2, "nolp", schemas.ReasonNoLogprobs},
		{3, "empty", schemas.ReasonEmpty},
		{4, "nan", schemas.ReasonNaNLogprob},
		{6, "pos", schemas.ReasonPositiveLogprob},
		{7, "broken", schemas.ReasonMalformedJSON},
	}, got)
	require.Equal(t, "step 2: chosen-token logprob is NaN", r.Rejects[2].Detail)
	require.Equal(t, "step 4, alternative 1: logprob 0.7 is positive", r.Rejects[3].Detail)
	require.Contains(t, r.Rejects[0].Detail, "top_logprobs")
	require.Equal(t, 1.0, testutil.ToFloat64(h.rejects.WithLabelValues(schemas.ReasonPositiveLogprob)))

	// One unscorable response alone, sent as one JSON object.
	code, r = post(t, url, "", strings.NewReader(unscorable("nolp-alone", "")))
	require.Equal(t, http.StatusBadRequest, code)
	require.Len(t, r.Rejects, 1)
	require.Equal(t, Reject{Line: 1, ID: "nolp-alone", Reason: schemas.ReasonNoLogprobs, Detail: r.Rejects[0].Detail}, r.Rejects[0])

	// The operator's bounds are the stream's: max_steps.
	url2, _ := server(t, "http-unscorable-long", func(c *Config) { c.Profile.MaxSteps = 1 })
	code, r = post(t, url2, "", strings.NewReader(response("long")))
	require.Equal(t, http.StatusBadRequest, code)
	require.Len(t, r.Rejects, 1)
	require.Equal(t, schemas.ReasonTooLong, r.Rejects[0].Reason)

	// Nothing of the rejected bodies reached the topic: the next accepted
	// response is the first record.
	code, r = post(t, url, "", strings.NewReader(response("after")))
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, []string{"after"}, consumed(t, "http-unscorable", 1))
}

func TestGzip(t *testing.T) {
	url, _ := server(t, "http-gzip", func(c *Config) { c.MaxBodyBytes = 4096 })
	gz := func(s string) *bytes.Buffer {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(s))
		require.NoError(t, zw.Close())
		return &b
	}
	send := func(body io.Reader, enc string) (int, Reply) {
		req, err := http.NewRequest(http.MethodPost, url, body)
		require.NoError(t, err)
		req.Header.Set("Content-Encoding", enc)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var r Reply
		require.NoError(t, json.NewDecoder(res.Body).Decode(&r))
		return res.StatusCode, r
	}
	code, r := send(gz(response("z1")+"\n"+response("z2")), "gzip")
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, 2, r.Accepted)
	// Small on the wire, over the limit once inflated.
	code, _ = send(gz(strings.Repeat(response("bomb")+"\n", 50)), "gzip")
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
	code, _ = send(strings.NewReader(response("b")), "br")
	require.Equal(t, http.StatusUnsupportedMediaType, code)
	require.Equal(t, []string{"z1", "z2"}, consumed(t, "http-gzip", 2))
}

func TestToken(t *testing.T) {
	url, _ := server(t, "http-auth", func(c *Config) { c.Token = "s3cret" })
	code, _ := post(t, url, "", strings.NewReader(response("x")))
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = post(t, url, "wrong", strings.NewReader(response("x")))
	require.Equal(t, http.StatusUnauthorized, code)
	code, r := post(t, url, "s3cret", strings.NewReader(response("x")))
	require.Equal(t, http.StatusAccepted, code, r.Error)
}

func TestTooManyInFlight(t *testing.T) {
	// hold takes every slot, as requests being converted and produced do;
	// release frees them.
	hold := func(h *Handler) (release func()) {
		for range cap(h.slots) {
			h.slots <- struct{}{}
		}
		return func() {
			for range cap(h.slots) {
				<-h.slots
			}
		}
	}
	t.Run("shed after queue_wait", func(t *testing.T) {
		url, h := server(t, "http-busy", func(c *Config) { c.MaxInFlight, c.QueueWait = 1, 50*time.Millisecond })
		release := hold(h)
		start := time.Now()
		code, r := post(t, url, "", strings.NewReader(response("fast")))
		require.Equal(t, http.StatusTooManyRequests, code)
		require.Contains(t, r.Error, "in flight")
		require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "answered before queue_wait")
		release()
		code, r = post(t, url, "", strings.NewReader(response("later")))
		require.Equal(t, http.StatusAccepted, code, r.Error)
	})
	t.Run("queued until a slot frees", func(t *testing.T) {
		url, h := server(t, "http-queue", func(c *Config) { c.MaxInFlight, c.QueueWait = 1, time.Minute })
		release := hold(h)
		second := make(chan int, 1)
		go func() {
			code, _ := post(t, url, "", strings.NewReader(response("queued")))
			second <- code
		}()
		for testutil.ToFloat64(h.queued) == 0 { // the second request waits for the slot
			time.Sleep(time.Millisecond)
		}
		release()
		require.Equal(t, http.StatusAccepted, <-second)
		require.Zero(t, testutil.ToFloat64(h.queued))
		require.Equal(t, []string{"queued"}, consumed(t, "http-queue", 1))
	})
	t.Run("a stalled body times out", func(t *testing.T) {
		url, h := server(t, "http-stall", func(c *Config) { c.MaxInFlight, c.BodyTimeout = 1, 100*time.Millisecond })
		pr, pw := io.Pipe()
		defer pw.Close()
		stalled := make(chan int, 1)
		go func() {
			code, _ := post(t, url, "", pr)
			stalled <- code
		}()
		_, err := pw.Write([]byte(response("stalled")[:10])) // and nothing more
		require.NoError(t, err)
		require.Equal(t, http.StatusRequestTimeout, <-stalled)
		code, r := post(t, url, "", strings.NewReader(response("next")))
		require.Equal(t, http.StatusAccepted, code, r.Error)
		require.Equal(t, []string{"next"}, consumed(t, "http-stall", 1))
		require.Len(t, h.slots, 0)
		require.Zero(t, testutil.ToFloat64(h.held))
	})
	t.Run("queue_wait 0 sheds at once", func(t *testing.T) {
		url, h := server(t, "http-shed", func(c *Config) { c.MaxInFlight, c.QueueWait = 1, 0 })
		release := hold(h)
		defer release()
		code, _ := post(t, url, "", strings.NewReader(response("fast")))
		require.Equal(t, http.StatusTooManyRequests, code)
	})
}

// slowUpload opens a connection to url and sends the headers of a POST of a
// body of size bytes, then nothing yet: the slow client of the audit.
// Closing the connection ends it.
func slowUpload(t *testing.T, url string, size int) net.Conn {
	t.Helper()
	u, err := neturl.Parse(url)
	require.NoError(t, err)
	c, err := net.Dial("tcp", u.Host)
	require.NoError(t, err)
	_, err = fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", u.Path, u.Host, size)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSlowUploadsHoldNoSlot: clients dribbling their bodies once held every
// slot while they did, and a normal request got 429 after queue_wait.
// Bodies are now read before a request takes a slot.
func TestSlowUploadsHoldNoSlot(t *testing.T) {
	_, h := server(t, "http-slow", func(c *Config) { c.MaxInFlight, c.QueueWait, c.BodyTimeout = 2, 200*time.Millisecond, time.Minute })
	arrived := make(chan struct{}, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close) // after the slow connections are closed
	url := srv.URL + h.cfg.Path
	for range 2 * h.cfg.MaxInFlight {
		slowUpload(t, url, 100000)
		<-arrived // in the handler
	}
	code, r := post(t, url, "", strings.NewReader(response("normal")))
	<-arrived
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, []string{"normal"}, consumed(t, "http-slow", 1))
}

// TestBodyBytesBounded: bodies being received are bounded in all by
// max_in_flight x max_body_bytes; past that a request gets 429 after
// queue_wait, and what the others held is given back.
func TestBodyBytesBounded(t *testing.T) {
	url, h := server(t, "http-bytes", func(c *Config) {
		c.MaxInFlight, c.MaxBodyBytes, c.QueueWait, c.BodyTimeout = 1, 64<<10, 50*time.Millisecond, time.Minute
	})
	const sent = 32700 // of 60000 announced: two of them leave 136 bytes of the 64 KiB
	a, b := slowUpload(t, url, 60000), slowUpload(t, url, 60000)
	for _, c := range []net.Conn{a, b} {
		_, err := c.Write(bytes.Repeat([]byte(" "), sent))
		require.NoError(t, err)
	}
	for testutil.ToFloat64(h.held) < 2*sent {
		time.Sleep(time.Millisecond)
	}
	code, r := post(t, url, "", strings.NewReader(response("third")))
	require.Equal(t, http.StatusTooManyRequests, code)
	require.Contains(t, r.Error, "bytes of request bodies")
	a.Close()
	b.Close()
	for testutil.ToFloat64(h.held) > 0 {
		time.Sleep(time.Millisecond)
	}
	code, r = post(t, url, "", strings.NewReader(response("fourth")))
	require.Equal(t, http.StatusAccepted, code, r.Error)
}

// TestIdleUploadsHoldNoBudget: a connection that announces a body and sends
// nothing holds none of the body budget (each once reserved 32 KiB ahead of
// its read, so a few thousand idle connections locked every client out).
func TestIdleUploadsHoldNoBudget(t *testing.T) {
	_, h := server(t, "http-idle", func(c *Config) {
		c.MaxInFlight, c.MaxBodyBytes, c.QueueWait, c.BodyTimeout = 2, 32<<10, 100*time.Millisecond, time.Minute
	})
	arrived := make(chan struct{}, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close) // after the idle connections are closed
	url := srv.URL + h.cfg.Path
	for range 20 {
		slowUpload(t, url, 30000)
		<-arrived // in the handler, waiting for its body
	}
	require.Zero(t, testutil.ToFloat64(h.held))
	code, r := post(t, url, "", strings.NewReader(response("normal")))
	<-arrived
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, []string{"normal"}, consumed(t, "http-idle", 1))
}

// TestManyRejects: a small gzip body of many bad lines (the audit's 16 KB
// of 5.6M "{}" lines drove the server to 3.2 GB and a 580 MB answer) gets a
// short answer: the first maxRejects by line, and counts of all.
func TestManyRejects(t *testing.T) {
	url, h := server(t, "http-many-rejects", nil)
	const lines = 1 << 18
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(response("good") + "\n"))
	_, _ = zw.Write(bytes.Repeat([]byte("{}\n"), lines))
	require.NoError(t, zw.Close())
	req, err := http.NewRequest(http.MethodPost, url, &gz)
	require.NoError(t, err)
	req.Header.Set("Content-Encoding", "gzip")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, res.StatusCode)
	require.Less(t, len(raw), 64<<10, "answer of %d bytes", len(raw))
	var r Reply
	require.NoError(t, json.Unmarshal(raw, &r))
	require.Len(t, r.Rejects, maxRejects)
	require.True(t, r.Truncated)
	require.Equal(t, map[string]int{schemas.ReasonMalformedJSON: lines}, r.Reasons)
	require.EqualValues(t, 2, r.Rejects[0].Line)
	require.EqualValues(t, maxRejects+1, r.Rejects[maxRejects-1].Line)
	require.Contains(t, r.Error, fmt.Sprint(lines))
	require.Equal(t, float64(lines), testutil.ToFloat64(h.rejects.WithLabelValues(schemas.ReasonMalformedJSON)))
}

// TestRejectsListed: the rejects kept are the first by line, whichever
// check (the reader's or the profile operator's) found them, with ids and
// details clipped.
func TestRejectsListed(t *testing.T) {
	var rs rejects
	long := strings.Repeat("é", maxDetail)
	for line := int64(3 * maxRejects); line > 0; line-- {
		if rs.count(line, "r") {
			rs.keep(Reject{Line: line, ID: long, Reason: "r", Detail: "d"})
		}
	}
	list := rs.sorted()
	require.Len(t, list, maxRejects)
	require.EqualValues(t, 1, list[0].Line)
	require.EqualValues(t, maxRejects, list[maxRejects-1].Line)
	require.LessOrEqual(t, len(list[0].ID), maxDetail)
	require.True(t, utf8.ValidString(list[0].ID))
	require.Equal(t, 3*maxRejects, rs.n)
}

// TestNotAnObject: a JSON array of non-objects is refused element by
// element with a detail that says what is wanted.
func TestNotAnObject(t *testing.T) {
	url, _ := server(t, "http-not-object", nil)
	code, r := post(t, url, "", strings.NewReader("[1,2,3]"))
	require.Equal(t, http.StatusBadRequest, code)
	require.Len(t, r.Rejects, 3)
	for _, rj := range r.Rejects {
		require.Contains(t, rj.Detail, "response object")
		require.NotContains(t, rj.Detail, "field :")
	}
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, DefaultConfig().Validate())
	c := DefaultConfig()
	c.Path = "v1"
	require.ErrorContains(t, c.Validate(), "http.path")
	// Sizes whose product, the body budget, overflowed int64: the endpoint
	// panicked at start ("semaphore: size < 0") after the config passed.
	c = DefaultConfig()
	c.MaxBodyBytes = math.MaxInt64
	require.ErrorContains(t, c.Validate(), "http.max_body_bytes 9223372036854775807: want 1024 to 1073741824")
	c = DefaultConfig()
	c.MaxInFlight = math.MaxInt
	require.ErrorContains(t, c.Validate(), "http.max_in_flight")
	c = DefaultConfig()
	c.MaxBodyBytes, c.MaxInFlight, c.MaxConnections = maxBodyBytesLimit, maxInFlightLimit, maxInFlightLimit
	c.LabelsTopic = ""
	require.NoError(t, c.Validate())
	_, err := New(c, ingest.DefaultConfig(), nil, nil, memory.NewGoAllocator(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err, "the largest sizes allowed start")
}

// Labels posted to /v1/labels reach the labels topic in the form
// `labels import --topic` decodes, with the missing source and time filled
// in; a wrong label gets 400 and nothing is produced.
func TestLabels(t *testing.T) {
	url, _ := server(t, "http-labels", nil)
	lurl := strings.TrimSuffix(url, "/v1/responses") + "/v1/labels"
	before := time.Now().Add(-time.Second)
	code, r := post(t, lurl, "", strings.NewReader(`[{"trace_id": "a", "correct": true},
	  {"trace_id": "b", "correct": 0, "source": "review", "ts": "2026-11-20T10:00:00Z"}]`))
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, 2, r.Accepted)
	code, r = post(t, lurl, "", strings.NewReader(`{"trace_id": "c", "correct": "false", "ts": 1795000000000}`))
	require.Equal(t, http.StatusAccepted, code, r.Error)

	// Wrong labels: nothing of the body is produced.
	for _, body := range []string{
		`{"trace_id": "d", "correct": true}` + "\n" + `{"trace_id": "", "correct": true}`,
		`{"trace_id": "e", "correct": "maybe"}`,
		`{"trace_id": "f", "correct": true, "ts": "yesterday"}`,
		`[5]`,
		``,
	} {
		code, r = post(t, lurl, "", strings.NewReader(body))
		require.Equal(t, http.StatusBadRequest, code, body)
		require.NotEmpty(t, r.Error, body)
	}

	rd := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{testBroker.Addr()}, Topic: "http-labels-labels", MaxWait: 50 * time.Millisecond})
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []clickhouse.Label
	for len(got) < 3 {
		m, err := rd.ReadMessage(ctx)
		require.NoError(t, err)
		rd, err := clickhouse.DecodeLabels(m.Value, "import", memory.NewGoAllocator())
		require.NoError(t, err)
		got = append(got, rd.Labels...)
	}
	require.Len(t, got, 3)
	require.Equal(t, "a", got[0].TraceID)
	require.True(t, got[0].Correct)
	require.Equal(t, "http", got[0].Source)
	require.WithinRange(t, got[0].TS, before, time.Now().Add(time.Second))
	require.Equal(t, clickhouse.Label{TraceID: "b", Correct: false, Source: "review", TS: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)}, got[1])
	require.Equal(t, "c", got[2].TraceID)
	require.False(t, got[2].Correct)
	require.Equal(t, int64(1795000000000), got[2].TS.UnixMilli())
	// Nothing else arrived: the next read times out.
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	_, err := rd.ReadMessage(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Responses still go to the traces topic; labels off means 404 there.
	url2, _ := server(t, "http-nolabels", func(c *Config) { c.LabelsTopic = "" })
	code, r = post(t, strings.TrimSuffix(url2, "/v1/responses")+"/v1/labels", "", strings.NewReader(`{"trace_id": "a", "correct": true}`))
	require.Equal(t, http.StatusNotFound, code)
	require.NotContains(t, r.Error, "labels to")
}

// A label's ts over HTTP is checked as labels import checks it: Unix seconds
// are seconds, and a time outside 2000..2100 gets 400 naming the trace and
// the accepted forms, nothing produced. Before, seconds were read as
// milliseconds (1970) and 2200 or -1000 were accepted, to be stored wrapped.
func TestLabelTimes(t *testing.T) {
	url, _ := server(t, "http-label-ts", nil)
	lurl := strings.TrimSuffix(url, "/v1/responses") + "/v1/labels"
	for _, tc := range []struct{ body, err string }{
		{`{"trace_id": "z1", "correct": true, "ts": "2200-01-01T00:00:00Z"}`, "line 1: trace z1: ts 2200-01-01T00:00:00Z is out of range: want RFC 3339"},
		{`{"trace_id": "z2", "correct": true, "ts": -1000}`, "line 1: trace z2: ts -1000 is out of range"},
		{`{"trace_id": "z3", "correct": true, "ts": 7258118400000}`, "line 1: trace z3: ts 7258118400000 is out of range"},
	} {
		code, r := post(t, lurl, "", strings.NewReader(tc.body))
		require.Equal(t, http.StatusBadRequest, code, tc.body)
		require.Contains(t, r.Error, tc.err)
		require.Contains(t, r.Error, "Unix seconds or milliseconds, between 2000-01-01 and 2100-01-01")
	}
	code, r := post(t, lurl, "", strings.NewReader(`{"trace_id": "s", "correct": true, "ts": 1795000000}`))
	require.Equal(t, http.StatusAccepted, code, r.Error)

	rd := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{testBroker.Addr()}, Topic: "http-label-ts-labels", MaxWait: 50 * time.Millisecond})
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := rd.ReadMessage(ctx)
	require.NoError(t, err)
	got, err := clickhouse.DecodeLabels(m.Value, "import", memory.NewGoAllocator())
	require.NoError(t, err)
	require.Equal(t, []clickhouse.Label{{TraceID: "s", Correct: true, Source: "http", TS: time.Unix(1795000000, 0).UTC()}}, got.Labels,
		"the only message: the wrong labels produced nothing")
}

// longResponse is a response of n steps, each with 20 alternatives.
func longResponse(id string, n int) string {
	var b strings.Builder
	b.WriteString(`{"id":"` + id + `","model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"token":"t","logprob":-0.1,"top_logprobs":[`)
		for j := range 20 {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"token":"a%d","logprob":-%d.5}`, j, j)
		}
		b.WriteString(`]}`)
	}
	b.WriteString(`]}}]}`)
	return b.String()
}

// TestTooLargeForChunks: a response over the topic's message limit is sent
// as chunks and accepted; one that cannot be sent even as chunks (its prompt
// alone fills a message) is a too_long reject with its line and id, like
// any other reject, and the body is refused whole. Before, the body got a
// bare error string, no rejects and no reasons, and the rejects metric did
// not count it.
func TestTooLargeForChunks(t *testing.T) {
	url, h := server(t, "http-large", nil)
	long := longResponse("long", 12000)
	require.Greater(t, len(long), 1<<20)
	code, r := post(t, url, "", strings.NewReader(response("small")+"\n"+long+"\n"))
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, 2, r.Accepted)

	huge := strings.Replace(response("huge"), `"model":"m",`, `"model":"m","prompt":"`+strings.Repeat("p", 1100000)+`",`, 1)
	code, r = post(t, url, "", strings.NewReader(response("ok")+"\n"+huge+"\n"+response("ok2")+"\n"))
	require.Equal(t, http.StatusBadRequest, code, r.Error)
	require.Zero(t, r.Accepted)
	require.Contains(t, r.Error, "1 response cannot be read or scored; nothing was produced")
	require.Len(t, r.Rejects, 1)
	require.Equal(t, schemas.ReasonTooLong, r.Rejects[0].Reason)
	require.EqualValues(t, 2, r.Rejects[0].Line)
	require.Equal(t, "huge", r.Rejects[0].ID)
	require.Contains(t, r.Rejects[0].Detail, "cannot be sent as chunks either: its per-row columns alone")
	require.Equal(t, map[string]int{schemas.ReasonTooLong: 1}, r.Reasons)
	require.Equal(t, 1.0, testutil.ToFloat64(h.rejects.WithLabelValues(schemas.ReasonTooLong)))
}

// choices is a response with n one-step choices and the given prompt.
func choices(id string, n int, prompt string) string {
	var b strings.Builder
	b.WriteString(`{"id":"` + id + `","model":"m","prompt":"` + prompt + `","choices":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"index":%d,"finish_reason":"stop","logprobs":{"content":[{"token":"a","logprob":-0.1,"top_logprobs":[{"token":"a","logprob":-0.1}]}]}}`, i)
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestBodyExpansionBounded: a 270 KB body (1,500 choices, a 100 KB prompt,
// which every choice's row repeats) took `run` to 1.48 GB and got 202. Now
// more than ingest.max_choices is a too_long reject, and a body whose
// messages would exceed 4 x http.max_body_bytes gets 413, nothing produced.
func TestBodyExpansionBounded(t *testing.T) {
	url, h := server(t, "http-expand", func(c *Config) { c.MaxBodyBytes = 1 << 20 })
	prompt := strings.Repeat("p", 100000)
	code, r := post(t, url, "", strings.NewReader(choices("amp", 1500, prompt)))
	require.Equal(t, http.StatusBadRequest, code, r.Error)
	require.Len(t, r.Rejects, 1)
	require.Equal(t, schemas.ReasonTooLong, r.Rejects[0].Reason)
	require.Contains(t, r.Rejects[0].Detail, "1500 choices, more than the maximum 128 (ingest.max_choices)")

	// 128 choices each: allowed per response, but 4 such responses are 51
	// MB of messages from a 0.4 MB body.
	var body strings.Builder
	for i := range 4 {
		body.WriteString(choices(fmt.Sprintf("wide-%d", i), 128, prompt) + "\n")
	}
	require.Less(t, body.Len(), 1<<20)
	code, r = post(t, url, "", strings.NewReader(body.String()))
	require.Equal(t, http.StatusRequestEntityTooLarge, code, r.Error)
	require.Contains(t, r.Error, "the responses encode to more than 4194304 bytes (4 x http.max_body_bytes)")
	require.Zero(t, testutil.ToFloat64(h.rows), "nothing produced")

	// One such response fits.
	code, r = post(t, url, "", strings.NewReader(choices("one-wide", 20, prompt)))
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, 20, r.Accepted)
}

// TestLabelsLongIDs: 2,000 labels of 1 KB ids made a 2 MB message, which
// the topic refused, and the client got 503 "retry later" for ever; a 2 MB
// trace_id did too. Messages are now cut at half the message limit, and an
// id longer than any response's is 400.
func TestLabelsLongIDs(t *testing.T) {
	url, _ := server(t, "http-labels-long", nil)
	lurl := strings.TrimSuffix(url, "/v1/responses") + "/v1/labels"
	var body strings.Builder
	const n = 3000
	for i := range n {
		fmt.Fprintf(&body, `{"trace_id": "%s-%04d", "correct": true}`+"\n", strings.Repeat("x", schemas.MaxTraceIDBytes-5), i)
	}
	code, r := post(t, lurl, "", strings.NewReader(body.String()))
	require.Equal(t, http.StatusAccepted, code, r.Error)
	require.Equal(t, n, r.Accepted)

	rd := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{testBroker.Addr()}, Topic: "http-labels-long-labels", MaxWait: 50 * time.Millisecond})
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, msgs := 0, 0
	for got < n {
		m, err := rd.ReadMessage(ctx)
		require.NoError(t, err)
		require.LessOrEqual(t, len(m.Value), kafka.DefaultProducerConfig().MaxMessageBytes)
		rd, err := clickhouse.DecodeLabels(m.Value, "import", memory.NewGoAllocator())
		require.NoError(t, err)
		got += len(rd.Labels)
		msgs++
	}
	require.Equal(t, n, got)
	require.Greater(t, msgs, 2, "cut by size, not only by count")

	code, r = post(t, lurl, "", strings.NewReader(`{"trace_id": "`+strings.Repeat("y", 2<<20)+`", "correct": true}`))
	require.Equal(t, http.StatusBadRequest, code, r.Error)
	require.Contains(t, r.Error, "bytes, more than the 1024 a response id may have")
}
