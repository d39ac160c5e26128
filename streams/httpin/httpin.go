// Package httpin is the HTTP ingest endpoint: clients POST OpenAI/vLLM
// responses (one JSON object, a JSON array of them, or JSON Lines; or
// trace.v1 rows as an Arrow IPC stream, ArrowContentType) and the
// handler converts them to trace.v1 batches and produces them to the traces
// topic. It answers 202 once the broker has acknowledged every row, 400 with
// the reasons when a body holds anything it cannot convert or that the
// profile operator would reject (nothing is produced then), 401 without the
// configured bearer token, 408 when the body is too slow to arrive, 413 over
// the size limit (compressed or not; Content-Encoding gzip is accepted), 415
// for other encodings, 429 when the topic cannot keep up (too many
// requests in flight or bodies held, or the broker does not acknowledge
// within the produce timeout), and 503 when producing fails outright; both
// carry Retry-After.
package httpin

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/ipc"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// Config configures the endpoint.
type Config struct {
	// Listen is the host:port to serve on; "" turns the endpoint off.
	// Default "".
	Listen string `yaml:"listen"`
	// Path is the URL path that accepts POSTs. Default "/v1/responses".
	Path string `yaml:"path"`
	// LabelsPath accepts labels (label.v1 as JSON: trace_id, correct, and
	// optionally source and ts), produced to LabelsTopic for `entrowatch
	// labels import --topic`. Default "/v1/labels".
	LabelsPath string `yaml:"labels_path"`
	// LabelsTopic is where LabelsPath produces; "" turns it off. The
	// command sets it from its top-level labels_topic. Default "labels".
	LabelsTopic string `yaml:"-"`
	// TokenEnv names the environment variable holding the bearer token
	// clients must send; when the variable is empty or unset, no token is
	// required. Default "ENTROWATCH_HTTP_TOKEN".
	TokenEnv string `yaml:"token_env"`
	// Token is filled from TokenEnv by the command; never logged.
	Token kafka.Secret `yaml:"-"`
	// MaxBodyBytes bounds one request body. Default 16 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxInFlight bounds the requests being converted and produced at once.
	// Default 16.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxConnections bounds the open connections to the endpoint; beyond it
	// new ones wait to be accepted (in the kernel's backlog) until one
	// closes, so that connections that send nothing cannot grow memory
	// without bound (about 20 KB each). Default 16384.
	MaxConnections int `yaml:"max_connections"`
	// QueueWait is how long a request beyond MaxInFlight waits for a slot
	// (or, while MaxInFlight x MaxBodyBytes of bodies are held, for room to
	// read its own) before it gets 429. 0 sheds at once. Default 1s.
	QueueWait time.Duration `yaml:"queue_wait"`
	// BodyTimeout bounds how long a request may take to send its body after
	// its headers; a slower one gets 408. Bodies are read before a request
	// takes a slot, so a slow upload holds its connection and the bytes it
	// sent, never a slot. Default 30s.
	BodyTimeout time.Duration `yaml:"body_timeout"`
	// ProduceTimeout is how long a request waits for the broker's
	// acknowledgement before it gets 429. Default 10s.
	ProduceTimeout time.Duration `yaml:"produce_timeout"`
	// BatchTimeout is how long the producer waits for other requests'
	// messages to send them to the broker together. Every request waits for
	// it once, so it is short; concurrent requests still share a produce
	// request. Default 1ms (the stream's 5ms halved the throughput of a
	// client posting one response at a time).
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	// Profile is what the stream's profile operator accepts: a response it
	// would reject (no_logprobs, empty, nan_logprob, positive_logprob,
	// too_long) is refused with 400 rather than produced and dead-lettered.
	// The command sets it from its top-level profile section. Default
	// profile.DefaultConfig().
	Profile profile.Config `yaml:"-"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Path:           "/v1/responses",
		LabelsPath:     "/v1/labels",
		LabelsTopic:    "labels",
		TokenEnv:       "ENTROWATCH_HTTP_TOKEN",
		MaxBodyBytes:   16 << 20,
		MaxInFlight:    16,
		MaxConnections: 16384,
		QueueWait:      time.Second,
		BodyTimeout:    30 * time.Second,
		ProduceTimeout: 10 * time.Second,
		BatchTimeout:   time.Millisecond,
		Profile:        profile.DefaultConfig(),
	}
}

// The upper bounds of MaxBodyBytes and MaxInFlight keep their product, the
// body budget, far from overflowing int64.
const (
	maxBodyBytesLimit = 1 << 30
	maxInFlightLimit  = 4096
)

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case !strings.HasPrefix(c.Path, "/"):
		return fmt.Errorf("http.path %q: want an absolute URL path like /v1/responses", c.Path)
	case c.LabelsTopic != "" && (!strings.HasPrefix(c.LabelsPath, "/") || c.LabelsPath == c.Path):
		return fmt.Errorf("http.labels_path %q: want an absolute URL path like /v1/labels, other than http.path", c.LabelsPath)
	case c.MaxBodyBytes < 1024 || c.MaxBodyBytes > maxBodyBytesLimit:
		return fmt.Errorf("http.max_body_bytes %d: want 1024 to %d (1 GiB); a body is held in memory whole, about 3.5 times over while decoded", c.MaxBodyBytes, int64(maxBodyBytesLimit))
	case c.MaxInFlight < 1 || c.MaxInFlight > maxInFlightLimit:
		return fmt.Errorf("http.max_in_flight %d: want 1 to %d", c.MaxInFlight, maxInFlightLimit)
	case c.MaxConnections < c.MaxInFlight:
		return fmt.Errorf("http.max_connections %d: want >= http.max_in_flight (%d)", c.MaxConnections, c.MaxInFlight)
	case c.QueueWait < 0:
		return fmt.Errorf("http.queue_wait %v: want >= 0", c.QueueWait)
	case c.BodyTimeout <= 0:
		return fmt.Errorf("http.body_timeout %v: want > 0", c.BodyTimeout)
	case c.ProduceTimeout <= 0:
		return fmt.Errorf("http.produce_timeout %v: want > 0", c.ProduceTimeout)
	case c.BatchTimeout <= 0:
		return fmt.Errorf("http.batch_timeout %v: want > 0 (e.g. 1ms)", c.BatchTimeout)
	}
	return c.Profile.Validate()
}

// Handler serves the ingest path.
type Handler struct {
	cfg     Config
	icfg    ingest.Config
	p       *kafka.Producer
	lp      *kafka.Producer // labels; nil when LabelsTopic is ""
	mem     memory.Allocator
	log     *slog.Logger
	slots   chan struct{}
	bodies  *semaphore.Weighted // bytes of request bodies held: MaxInFlight x MaxBodyBytes
	reqs    *prometheus.CounterVec
	rows    prometheus.Counter
	rejects *prometheus.CounterVec
	queued  prometheus.Gauge
	held    prometheus.Gauge // bytes taken from bodies
	labels  prometheus.Counter
	// down, when set, says the brokers are known not to answer: requests
	// get 503 at once instead of waiting out a produce that will fail.
	down func() bool
	// failLog limits "produce failed" lines to one per failLogEvery: in a
	// Kafka outage every request fails, and the lines would flood the log.
	failMu    sync.Mutex
	failLast  time.Time
	failQuiet int // failures not logged since failLast
	// lastFail and lastOK are when a produce to the traces topic last
	// failed (503) and last succeeded (UnixNano, 0: never): ProduceFailing.
	lastFail, lastOK atomic.Int64
	// refused logs the bodies refused with 400 for their responses, at
	// most streams.RejectLogLimit per reason per minute: a producer that
	// breaks (stops asking for logprobs) was only seen by its own client.
	refused *streams.RejectLog
}

// failLogEvery is the least time between two "produce failed" log lines.
const failLogEvery = 10 * time.Second

// New returns the handler; metrics are registered on reg. p produces to the
// traces topic, lp to cfg.LabelsTopic (nil when that is "").
func New(cfg Config, icfg ingest.Config, p, lp *kafka.Producer, mem memory.Allocator, log *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if (lp == nil) != (cfg.LabelsTopic == "") {
		return nil, fmt.Errorf("http.labels_topic %q needs a labels producer exactly when it is set", cfg.LabelsTopic)
	}
	if err := icfg.Validate(); err != nil {
		return nil, err
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry() // metrics kept, not exported
	}
	h := &Handler{
		cfg: cfg, icfg: icfg, p: p, lp: lp, mem: mem, log: log,
		refused: streams.NewRejectLog(log, "http ingest refused a request (400): nothing of it was produced",
			"http ingest refusals not logged (over the limit per reason per minute; see entrowatch_http_rejects_total)"),
		slots:  make(chan struct{}, cfg.MaxInFlight),
		bodies: semaphore.NewWeighted(int64(cfg.MaxInFlight) * cfg.MaxBodyBytes),
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "entrowatch_http_requests_total",
			Help: "Ingest requests by HTTP status code."}, []string{"code"}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_http_produced_rows_total",
			Help: "Responses produced to the topic by the HTTP endpoint."}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "entrowatch_http_rejects_total",
			Help: "Responses in rejected bodies, by reason."}, []string{"reason"}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{Name: "entrowatch_http_queued_requests",
			Help: "Requests waiting for an in-flight slot (http.max_in_flight, http.queue_wait)."}),
		labels: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_http_labels_total",
			Help: "Labels produced to the labels topic by the HTTP endpoint."}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "entrowatch_http_body_bytes",
			Help: "Bytes of request bodies being received or processed (at most http.max_in_flight x http.max_body_bytes)."}),
	}
	for _, c := range []prometheus.Collector{h.reqs, h.rows, h.rejects, h.queued, h.labels, h.held} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering http metrics: %w", err)
		}
	}
	// The series of every code and reason the endpoint answers with exist
	// from the start, at 0: one born between two scrapes loses its first
	// burst to rate() and increase().
	for _, code := range answerCodes {
		h.reqs.WithLabelValues(strconv.Itoa(code))
	}
	for _, reason := range rejectReasons {
		h.rejects.WithLabelValues(reason)
	}
	return h, nil
}

// answerCodes are the HTTP status codes the endpoint answers with.
var answerCodes = []int{
	http.StatusAccepted, http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound,
	http.StatusMethodNotAllowed, http.StatusRequestTimeout, http.StatusRequestEntityTooLarge,
	http.StatusUnsupportedMediaType, http.StatusTooManyRequests, http.StatusInternalServerError,
	http.StatusServiceUnavailable,
}

// rejectReasons are the reasons a response of a body is refused for: the
// converter's and the profile operator's.
var rejectReasons = []string{
	schemas.ReasonMalformedJSON, schemas.ReasonFailedRequest, schemas.ReasonIncomplete, schemas.ReasonTooLong,
	schemas.ReasonEmpty, schemas.ReasonNoLogprobs, schemas.ReasonNaNLogprob, schemas.ReasonPositiveLogprob,
	schemas.ReasonMismatch,
}

// Reply is the JSON body of every answer.
type Reply struct {
	Accepted int    `json:"accepted"`        // responses (or labels) produced to the topic; 0 unless 202
	Error    string `json:"error,omitempty"` // why the request was refused; "" on 202
	// Rejects lists, by line, the first maxRejects responses of a refused
	// body that cannot be read or scored.
	Rejects []Reject `json:"rejects,omitempty"`
	// Reasons counts all of them by reason; Truncated says Rejects lists
	// only the first.
	Reasons   map[string]int `json:"reasons,omitempty"`
	Truncated bool           `json:"truncated,omitempty"`
	// Unlabelled counts the rows of a labels body without correct
	// (skipped); Duplicates the labels of a trace that a later one of the
	// body supersedes (not produced): Accepted counts the labels produced.
	Unlabelled int `json:"unlabelled,omitempty"`
	Duplicates int `json:"duplicates,omitempty"`
}

// maxRejects bounds the rejects a reply lists, so that a small body of many
// bad lines (5.6M lines of "{}" in a 16 KB gzip) cannot make the handler
// hold and send a reject for each.
const maxRejects = 100

// maxDetail bounds the id and the detail of a listed reject, in bytes.
const maxDetail = 512

// Reject is one response of the body that could not be converted, or that
// the profile operator would reject.
type Reject struct {
	// Line is the response's line in the body, from 1, the body read as
	// JSON Lines (a JSON array or pretty-printed objects count one value
	// per line); of an Arrow body, its row, from 1 through the batches (a
	// chunked trace's: that of its earliest chunk).
	Line   int64  `json:"line"`
	ID     string `json:"id,omitempty"` // the response's id when it could be read, at most 512 bytes
	Reason string `json:"reason"`       // one of the schemas.Reason* values
	Detail string `json:"detail"`       // what is wrong, for people, at most 512 bytes
}

// Retry-After, in seconds, of the answers a client should retry: 429 when
// the endpoint is busy (a slot or the broker's acknowledgement is a moment
// away), 503 when producing failed outright (the broker is unreachable or
// refused), which takes longer to heal.
const (
	retryAfterBusy        = "1"
	retryAfterUnavailable = "5"
)

func (h *Handler) reply(w http.ResponseWriter, code int, r Reply) {
	h.reqs.WithLabelValues(strconv.Itoa(code)).Inc()
	w.Header().Set("Content-Type", "application/json")
	switch code {
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", retryAfterBusy)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", retryAfterUnavailable)
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	labels := h.lp != nil && r.URL.Path == h.cfg.LabelsPath
	if r.URL.Path != h.cfg.Path && !labels {
		msg := "POST responses to " + h.cfg.Path
		if h.lp != nil {
			msg += ", labels to " + h.cfg.LabelsPath
		}
		h.reply(w, http.StatusNotFound, Reply{Error: msg})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.reply(w, http.StatusMethodNotAllowed, Reply{Error: "use POST with a JSON or JSON Lines body (or an Arrow IPC stream of trace.v1 rows, Content-Type " + ArrowContentType + ")"})
		return
	}
	if h.cfg.Token != "" {
		got, ok := bearer(r.Header.Get("Authorization"))
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(h.cfg.Token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="entrowatch"`)
			h.reply(w, http.StatusUnauthorized, Reply{Error: "missing or wrong bearer token (Authorization: Bearer ...)"})
			return
		}
	}
	if h.down != nil && h.down() {
		h.reply(w, http.StatusServiceUnavailable, Reply{Error: "Kafka does not answer (the endpoint checks every few seconds); retry later"})
		return
	}
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	if enc != "" && enc != "identity" && enc != "gzip" {
		h.reply(w, http.StatusUnsupportedMediaType, Reply{Error: errEncoding.Error()})
		return
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		h.tooLarge(w)
		return
	}
	// The body is read before the request takes a slot: a slow upload holds
	// its connection and the bytes it sent, never a slot. The connection's
	// read deadline bounds it (the server's ReadHeaderTimeout bounds the
	// headers), and h.bodies the bytes of all bodies held at once.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.cfg.BodyTimeout))
	wire, held, err := h.readBody(r.Context(), http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	defer h.give(held)
	if err != nil {
		switch {
		case errors.Is(err, errBusy):
			h.reply(w, http.StatusTooManyRequests, Reply{Error: fmt.Sprintf("%d bytes of request bodies held already (http.max_in_flight x http.max_body_bytes) and none freed within %v; retry shortly",
				int64(h.cfg.MaxInFlight)*h.cfg.MaxBodyBytes, h.cfg.QueueWait)})
		case errors.Is(err, os.ErrDeadlineExceeded):
			w.Header().Set("Connection", "close")
			h.reply(w, http.StatusRequestTimeout, Reply{Error: fmt.Sprintf("the body did not arrive within %v (http.body_timeout)", h.cfg.BodyTimeout)})
		case errors.As(err, new(*http.MaxBytesError)):
			h.tooLarge(w)
		default:
			h.reply(w, http.StatusBadRequest, Reply{Error: "reading body: " + err.Error()})
		}
		return
	}
	if !h.acquire(r.Context()) {
		h.reply(w, http.StatusTooManyRequests, Reply{Error: fmt.Sprintf("%d requests in flight already and no slot freed within %v; retry shortly", h.cfg.MaxInFlight, h.cfg.QueueWait)})
		return
	}
	defer func() { <-h.slots }()
	body, err := h.inflate(wire, enc)
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			h.tooLarge(w)
			return
		}
		h.reply(w, http.StatusBadRequest, Reply{Error: err.Error()})
		return
	}
	var msgs []kafka.Message
	var n int
	var rs rejects
	if arrowBody(r.Header.Get("Content-Type")) {
		if labels {
			h.reply(w, http.StatusUnsupportedMediaType, Reply{Error: "labels are posted as JSON, JSON Lines or CSV, not Arrow"})
			return
		}
		msgs, n, rs, err = h.convertArrow(body)
	} else {
		if looksArrow(body) {
			// Read as JSON Lines it would be one malformed_json reject per
			// "line" of binary, saying nothing of the cause.
			what := "Arrow IPC"
			if labels {
				what += "; labels are posted as JSON, JSON Lines or CSV"
			} else {
				what += ": send trace.v1 rows as an Arrow IPC stream with Content-Type: " + ArrowContentType
			}
			h.reply(w, http.StatusUnsupportedMediaType, Reply{Error: fmt.Sprintf("the body is %s (Content-Type %q is read as JSON or JSON Lines)", what, r.Header.Get("Content-Type"))})
			return
		}
		var lines []byte
		if lines, err = toLines(body); err != nil {
			h.reply(w, http.StatusBadRequest, Reply{Error: err.Error()})
			return
		}
		if labels {
			h.serveLabels(w, r, lines)
			return
		}
		msgs, n, rs, err = h.convert(lines)
	}
	if errors.Is(err, errExpanded) {
		h.reply(w, http.StatusRequestEntityTooLarge, Reply{Error: err.Error()})
		return
	}
	if err != nil {
		h.reply(w, http.StatusBadRequest, Reply{Error: err.Error()})
		return
	}
	if rs.n > 0 {
		for reason, n := range rs.reasons {
			h.rejects.WithLabelValues(reason).Add(float64(n))
		}
		list := rs.sorted()
		msg := fmt.Sprintf("%d responses cannot be read or scored; nothing was produced, fix them and resend", rs.n)
		if rs.n == 1 {
			msg = "1 response cannot be read or scored; nothing was produced, fix it and resend"
		}
		if rs.n > len(list) {
			msg += fmt.Sprintf(" (rejects lists the first %d by line, reasons counts all)", len(list))
		}
		now := time.Now()
		for _, reason := range slices.Sorted(maps.Keys(rs.reasons)) {
			args := []any{"responses", rs.reasons[reason], "of", rs.n, "remote", r.RemoteAddr}
			if i := slices.IndexFunc(list, func(rj Reject) bool { return rj.Reason == reason }); i >= 0 {
				args = append(args, "first_line", list[i].Line, "first_id", list[i].ID, "detail", list[i].Detail)
			}
			h.refused.Note(now, reason, args...)
		}
		h.reply(w, http.StatusBadRequest, Reply{Error: msg, Rejects: list, Reasons: rs.reasons, Truncated: rs.n > len(list)})
		return
	}
	if n == 0 {
		h.reply(w, http.StatusBadRequest, Reply{Error: "empty body: send one JSON response, a JSON array of them, JSON Lines, or an Arrow IPC stream of trace.v1 rows"})
		return
	}
	if h.produce(w, r, h.p, msgs) {
		h.rows.Add(float64(n))
		h.reply(w, http.StatusAccepted, Reply{Accepted: n})
	}
}

// produce sends msgs through p within ProduceTimeout; when that fails it
// answers (429 on a timeout, 503 otherwise) and returns false.
func (h *Handler) produce(w http.ResponseWriter, r *http.Request, p *kafka.Producer, msgs []kafka.Message) bool {
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.ProduceTimeout)
	defer cancel()
	err := p.Produce(ctx, msgs...)
	switch {
	case err == nil:
		if p == h.p {
			h.lastOK.Store(time.Now().UnixNano())
		}
		return true
	case ctx.Err() != nil && r.Context().Err() == nil:
		h.reply(w, http.StatusTooManyRequests, Reply{Error: fmt.Sprintf("topic %s did not acknowledge within %v; retry later", p.Topic(), h.cfg.ProduceTimeout)})
	case r.Context().Err() != nil:
		// The client went away during the produce: nothing to answer, and
		// no sign that the broker fails.
	case kafka.IsMessageTooLarge(err):
		// The topic's limit is below what the producer sends: messages
		// of up to max_message_bytes, several to a partition in one
		// record batch of up to batch_bytes. A smaller body may go; the
		// broker is fine.
		h.logProduceFailed(p.Topic(), http.StatusRequestEntityTooLarge, err)
		h.reply(w, http.StatusRequestEntityTooLarge, Reply{Error: fmt.Sprintf(
			"topic %s refused a message of this body as too large: its max.message.bytes is below the %d bytes the producer sends in one record batch (messages of up to %d bytes, batched); send fewer or smaller responses per request, and raise the topic's max.message.bytes (the embedded broker's broker.max_message_bytes) to at least %d",
			p.Topic(), p.TopicMessageBytes(), p.MaxMessageBytes(), p.TopicMessageBytes())})
	default:
		if p == h.p {
			h.lastFail.Store(time.Now().UnixNano())
		}
		h.logProduceFailed(p.Topic(), http.StatusServiceUnavailable, err)
		h.reply(w, http.StatusServiceUnavailable, Reply{Error: fmt.Sprintf("producing to topic %s failed; retry later", p.Topic())})
	}
	return false
}

// labelsPerMessage bounds the labels of one Kafka message (about 100 bytes
// each, far under the message size limit).
const labelsPerMessage = 2000

// serveLabels checks every label of the body as `labels import` will read
// it, skips the rows without correct (unlabelled), keeps one label per
// trace (the body's last, or its newest by ts), stamps the missing source
// ("http") and time (now), and produces them as JSON Lines; nothing is
// produced when one label is wrong. The body's labels are deduplicated
// before they are cut into messages: the consumer numbers the labels of
// each message from 0, so a trace labelled in two messages of one body
// (one receipt time) could keep its first label.
func (h *Handler) serveLabels(w http.ResponseWriter, r *http.Request, lines []byte) {
	rd, err := clickhouse.ReadLabels(bytes.NewReader(lines), "http", time.Now())
	if err == nil {
		err = rd.Err()
	}
	if err != nil {
		h.reply(w, http.StatusBadRequest, Reply{Error: "labels: " + err.Error() + "; nothing was produced, fix them and resend " +
			`(JSON objects {"trace_id": "...", "correct": true|false, "source": "...", "ts": RFC 3339 or Unix seconds or ms, 2000 to 2100, not in the future}, one, an array or JSON Lines)`})
		return
	}
	ls, dups := clickhouse.OnePerTrace(rd.Labels, time.Time{})
	if len(ls) == 0 {
		msg := "empty body: send one label, a JSON array of them, or JSON Lines"
		if rd.Unlabelled > 0 {
			msg = fmt.Sprintf("no labels: the %d rows of the body have no correct (unlabelled); nothing was produced", rd.Unlabelled)
		}
		h.reply(w, http.StatusBadRequest, Reply{Error: msg, Unlabelled: rd.Unlabelled})
		return
	}
	n := len(ls)
	// Messages of at most labelsPerMessage labels and half the message
	// limit (a label is at most a few KB: trace_id and source are bounded).
	var msgs []kafka.Message
	limit := h.lp.MaxMessageBytes() / 2
	var buf bytes.Buffer
	k := 0
	for i, l := range ls {
		b, err := json.Marshal(l)
		if err != nil {
			h.reply(w, http.StatusInternalServerError, Reply{Error: err.Error()})
			return
		}
		buf.Write(b)
		buf.WriteByte('\n')
		k++
		if i == len(ls)-1 || k == labelsPerMessage || buf.Len() >= limit {
			msgs = append(msgs, kafka.Message{Value: bytes.Clone(buf.Bytes())})
			buf.Reset()
			k = 0
		}
	}
	if h.produce(w, r, h.lp, msgs) {
		h.labels.Add(float64(n))
		h.reply(w, http.StatusAccepted, Reply{Accepted: n, Unlabelled: rd.Unlabelled, Duplicates: dups})
	}
}

// acquire takes an in-flight slot, waiting up to QueueWait for one.
func (h *Handler) acquire(ctx context.Context) bool {
	select {
	case h.slots <- struct{}{}:
		return true
	default:
	}
	if h.cfg.QueueWait <= 0 {
		return false
	}
	h.queued.Inc()
	defer h.queued.Dec()
	t := time.NewTimer(h.cfg.QueueWait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// bearer returns the credentials of an Authorization header of the Bearer
// scheme. The scheme is case-insensitive and separated from the token by one
// or more spaces (RFC 7235 section 2.1, RFC 6750 section 2.1).
func bearer(auth string) (string, bool) {
	scheme, token, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	return token, token != ""
}

var (
	errEncoding = errors.New("unsupported Content-Encoding: send identity or gzip")
	errBusy     = errors.New("no room for the body")
)

func (h *Handler) tooLarge(w http.ResponseWriter) {
	h.reply(w, http.StatusRequestEntityTooLarge, Reply{Error: fmt.Sprintf("body over %d bytes; split it into several requests", h.cfg.MaxBodyBytes)})
}

// readChunk is the size of the reads of a body. A connection waiting for
// its body holds one such buffer and none of h.bodies.
const readChunk = 8 << 10

// readBody reads the body as it is on the wire, taking room from h.bodies
// for the bytes that arrived, after they arrived (a request that finds none
// within QueueWait fails with errBusy): connections that send little hold
// little, however large the Content-Length they announce. held is what it
// took, to be released once the request is answered, also on error.
func (h *Handler) readBody(ctx context.Context, body io.Reader) (b []byte, held int64, err error) {
	buf := make([]byte, readChunk)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if err := h.take(ctx, int64(n)); err != nil {
				return nil, held, err
			}
			held += int64(n)
			b = append(b, buf[:n]...)
		}
		if errors.Is(rerr, io.EOF) {
			return b, held, nil
		}
		if rerr != nil {
			return nil, held, rerr
		}
	}
}

// take takes n bytes from h.bodies, waiting up to QueueWait.
func (h *Handler) take(ctx context.Context, n int64) error {
	if !h.bodies.TryAcquire(n) {
		if h.cfg.QueueWait <= 0 {
			return errBusy
		}
		wait, cancel := context.WithTimeout(ctx, h.cfg.QueueWait)
		defer cancel()
		if h.bodies.Acquire(wait, n) != nil {
			return errBusy
		}
	}
	h.held.Add(float64(n))
	return nil
}

// give returns n bytes to h.bodies.
func (h *Handler) give(n int64) {
	h.bodies.Release(n)
	h.held.Sub(float64(n))
}

// inflate gunzips a body sent with Content-Encoding: gzip; inflated, it is
// bounded by MaxBodyBytes too.
func (h *Handler) inflate(b []byte, enc string) ([]byte, error) {
	if enc != "gzip" {
		return b, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("gzip body: %w", err)
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, h.cfg.MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("gzip body: %w", err)
	}
	if int64(len(out)) > h.cfg.MaxBodyBytes {
		return nil, &http.MaxBytesError{Limit: h.cfg.MaxBodyBytes}
	}
	return out, nil
}

// toLines turns a body into JSON Lines: a single JSON object, whatever its
// layout, becomes one compact line; arrays, pretty-printed objects one after
// another, JSON Lines and server-sent events go through ingest.Framed, as
// files do.
func toLines(body []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '{' && bytes.IndexByte(trimmed, '\n') < 0 {
		// One line already (what an HTTP client's JSON encoder sends): the
		// reader parses it once; validating and compacting it first took
		// more time than converting it.
		return trimmed, nil
	}
	if len(trimmed) > 0 && trimmed[0] == '{' && json.Valid(trimmed) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, trimmed); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return io.ReadAll(ingest.Framed(bytes.NewReader(body)))
}

// rejects gathers the rejected responses of a body: all of them counted by
// reason, and the first maxRejects by line kept for the reply.
type rejects struct {
	n       int
	reasons map[string]int
	list    []Reject
	cut     int64 // with list trimmed to maxRejects, the last line it lists
}

// count counts a reject and reports whether it may be listed; only then is
// it worth building with keep.
func (rs *rejects) count(line int64, reason string) bool {
	rs.n++
	if rs.reasons == nil {
		rs.reasons = map[string]int{}
	}
	rs.reasons[reason]++
	return rs.cut == 0 || line < rs.cut
}

func (rs *rejects) keep(rj Reject) {
	rj.ID, rj.Detail = clip(rj.ID), clip(rj.Detail)
	rs.list = append(rs.list, rj)
	if len(rs.list) >= 2*maxRejects {
		rs.sorted()
	}
}

// sorted returns the first maxRejects rejects by line.
func (rs *rejects) sorted() []Reject {
	slices.SortStableFunc(rs.list, func(a, b Reject) int { return cmp.Compare(a.Line, b.Line) })
	if len(rs.list) >= maxRejects {
		clear(rs.list[maxRejects:])
		rs.list = rs.list[:maxRejects]
		rs.cut = rs.list[maxRejects-1].Line
	}
	return rs.list
}

// clip shortens s to at most maxDetail bytes, on a rune boundary.
func clip(s string) string {
	if len(s) <= maxDetail {
		return s
	}
	i := maxDetail - len("…")
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// convert reads the lines into trace.v1 batches and encodes them as the
// messages to produce (n responses; a response over the message limit goes
// as chunks). rs counts, by line, the lines the reader could not convert,
// the rows the profile operator would reject (checked on the built batches
// by the operator's own rules) and the rows too large to send even as
// chunks (too_long, the reason `entrowatch ingest` gives them). A body with
// one reject is refused whole, so from the first on no message is kept:
// msgs is then empty.
func (h *Handler) convert(lines []byte) (msgs []kafka.Message, n int, rs rejects, err error) {
	rd := ingest.NewReader(bytes.NewReader(lines), h.icfg, h.mem)
	defer rd.Release()
	defer func() {
		if rs.n > 0 {
			msgs, n = nil, 0
		}
	}()
	var ids *array.String
	onReject := func(row int, r *profile.Reject) {
		line := rd.RowLines()[row]
		if !rs.count(line, r.Reason) {
			return
		}
		rj := Reject{Line: line, Reason: r.Reason, Detail: r.Detail}
		if ids != nil && ids.IsValid(row) {
			rj.ID = strings.Clone(ids.Value(row)) // outlives the batch
		}
		rs.keep(rj)
	}
	for {
		rec, err := rd.Next()
		for _, rj := range rd.Rejects() {
			if !rs.count(rj.Line, rj.Reason) {
				continue
			}
			d := ""
			if rj.Err != nil {
				d = rj.Err.Error()
			}
			if rj.Reason == schemas.ReasonIncomplete {
				d += "; this endpoint keeps nothing between requests: post all of a stream's chunks in one body"
			}
			rs.keep(Reject{Line: rj.Line, ID: rj.ID, Reason: rj.Reason, Detail: d})
		}
		if errors.Is(err, io.EOF) {
			return msgs, n, rs, nil
		}
		if err != nil {
			return msgs, n, rs, err
		}
		ids, _ = rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
		err = profile.Check(h.cfg.Profile, rec, onReject)
		if err == nil && rs.n == 0 {
			// Only a body without rejects so far is produced; the rest are
			// read for their rejects alone.
			err = h.encode(rec, rd.RowLines(), ids, &msgs, &n, &rs)
		}
		rec.Release()
		if err != nil {
			return msgs, n, rs, err
		}
	}
}

// ArrowContentType is the media type of a body of trace.v1 rows as an
// Arrow IPC stream.
const ArrowContentType = "application/vnd.apache.arrow.stream"

// looksArrow reports a body that begins as Arrow IPC does: the stream
// format's continuation marker (0xFFFFFFFF) or the file format's magic.
func looksArrow(b []byte) bool {
	return bytes.HasPrefix(b, []byte{0xff, 0xff, 0xff, 0xff}) || bytes.HasPrefix(b, []byte("ARROW1"))
}

// arrowBody reports whether a Content-Type header names an Arrow IPC stream.
func arrowBody(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == ArrowContentType
}

// convertArrow is convert for a body of trace.v1 rows as one Arrow IPC
// stream (any number of batches). Rejects name the row, from 1 through the
// batches. Chunk rows (seq, final) are joined as the stream joins them; a
// trace whose chunks are not all in the body is refused, as in JSON.
func (h *Handler) convertArrow(body []byte) (msgs []kafka.Message, n int, rs rejects, err error) {
	// Compressed buffers may claim more than the body: what they hold is
	// bounded as the messages of a JSON body are.
	recs, err := ipc.DecodeStream(body, h.mem, int(expandFactor*h.cfg.MaxBodyBytes))
	if errors.Is(err, ipc.ErrMemoryLimit) {
		return nil, 0, rs, fmt.Errorf("%w: the Arrow stream decodes to more than %d bytes (%d x http.max_body_bytes); send fewer rows per request", errExpanded, expandFactor*h.cfg.MaxBodyBytes, expandFactor)
	}
	if err != nil {
		return nil, 0, rs, fmt.Errorf("the body is not a trace.v1 Arrow IPC stream: %w", err)
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
		if rs.n > 0 {
			msgs, n = nil, 0
		}
	}()
	// whole sends a batch of whole responses whose first row is row base+1.
	whole := func(rec arrow.RecordBatch, base int64) error {
		lines := make([]int64, rec.NumRows())
		for i := range lines {
			if base >= 0 {
				lines[i] = base + int64(i) + 1
			}
		}
		ids, _ := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
		err := profile.Check(h.cfg.Profile, rec, func(row int, r *profile.Reject) {
			if !rs.count(lines[row], r.Reason) {
				return
			}
			rj := Reject{Line: lines[row], Reason: r.Reason, Detail: r.Detail}
			if ids != nil && ids.IsValid(row) {
				rj.ID = strings.Clone(ids.Value(row))
			}
			rs.keep(rj)
		})
		if err == nil && rs.n == 0 {
			err = h.encode(rec, lines, ids, &msgs, &n, &rs)
		}
		return err
	}
	// starts[i] is the number of rows before batch i.
	starts := make([]int64, len(recs))
	for i := 1; i < len(recs); i++ {
		starts[i] = starts[i-1] + recs[i-1].NumRows()
	}
	var asm *profile.Assembler
	for i, rec := range recs {
		base := starts[i]
		if asm == nil && !profile.HasChunks(rec) {
			if err := whole(rec, base); err != nil {
				return nil, 0, rs, err
			}
			continue
		}
		if asm == nil {
			cfg := profile.DefaultAssemblerConfig()
			cfg.MaxSteps = h.cfg.Profile.MaxSteps
			cfg.MaxHeldSteps = max(cfg.MaxHeldSteps, cfg.MaxSteps)
			if asm, err = profile.NewAssembler(cfg, h.mem); err != nil {
				return nil, 0, rs, err
			}
		}
		out, err := asm.Add(rec, int64(i), time.Unix(0, 0))
		if err != nil {
			return nil, 0, rs, fmt.Errorf("batch %d: %w", i+1, err)
		}
		if err := h.assembled(out, starts, base, whole, &rs); err != nil {
			return nil, 0, rs, err
		}
	}
	if asm != nil && asm.Open() > 0 {
		out, err := asm.Expire(time.Unix(1<<40, 0)) // the body is all there is
		if err != nil {
			return nil, 0, rs, err
		}
		if err := h.assembled(out, starts, -1, whole, &rs); err != nil {
			return nil, 0, rs, err
		}
	}
	return msgs, n, rs, nil
}

// assembled sends the complete responses of out through whole and refuses
// its rejected traces; it releases out. starts[i] is the number of rows
// before batch i (Add's origin), base that before the batch out comes from.
func (h *Handler) assembled(out profile.Assembled, starts []int64, base int64, whole func(arrow.RecordBatch, int64) error, rs *rejects) error {
	defer out.Release()
	i := 0
	for _, rec := range out.Rejected {
		ids, _ := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
		for row := range int(rec.NumRows()) {
			line := starts[out.Origin[i]] + int64(out.OriginRow[i]) + 1
			reason := out.Reasons[i]
			i++
			if !rs.count(line, reason) {
				continue
			}
			d := "a chunked trace whose final chunk or a chunk before it is not in the body; this endpoint keeps nothing between requests: post all of a trace's chunks in one body"
			if reason == schemas.ReasonTooLong {
				d = fmt.Sprintf("a chunked trace of more than %d steps (the stream's profile.max_steps)", h.cfg.Profile.MaxSteps)
			}
			rj := Reject{Line: line, Reason: reason, Detail: d}
			if ids != nil && ids.IsValid(row) {
				rj.ID = strings.Clone(ids.Value(row))
			}
			rs.keep(rj)
		}
	}
	for j, rec := range out.Complete {
		from := int64(-1) // a joined trace: no row of its own
		if out.CompleteFirst[j] >= 0 {
			from = base + int64(out.CompleteFirst[j])
		}
		if err := whole(rec, from); err != nil {
			return err
		}
	}
	return nil
}

// encode appends rec's messages to msgs and its rows to n; a row too large
// to send even as chunks is a too_long reject, with its line and id.
func (h *Handler) encode(rec arrow.RecordBatch, lines []int64, ids *array.String, msgs *[]kafka.Message, n *int, rs *rejects) error {
	out, err := kafka.Messages(rec, nil, h.p.MaxMessageBytes())
	if tl := (*kafka.TooLargeError)(nil); errors.As(err, &tl) {
		for _, r := range tl.Rows {
			var line int64
			if r.Row < len(lines) {
				line = lines[r.Row]
			}
			if !rs.count(line, schemas.ReasonTooLong) {
				continue
			}
			rj := Reject{Line: line, Reason: schemas.ReasonTooLong, Detail: fmt.Sprintf(
				"the response (%d steps) encodes to %d bytes, over the topic's message limit of %d, and cannot be sent as chunks either: %s",
				r.Steps, r.Bytes, tl.Limit, r.Why)}
			if ids != nil && ids.IsValid(r.Row) {
				rj.ID = strings.Clone(ids.Value(r.Row))
			}
			rs.keep(rj)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("encoding the responses: %w", err)
	}
	*msgs = append(*msgs, out...)
	*n += int(rec.NumRows())
	var size int64
	for _, m := range *msgs {
		size += int64(len(m.Value))
	}
	if limit := expandFactor * h.cfg.MaxBodyBytes; size > limit {
		*msgs = nil
		return fmt.Errorf("%w: the responses encode to more than %d bytes (%d x http.max_body_bytes) once each choice carries its own copy of the prompt and attributes; send fewer choices or shorter prompts per request", errExpanded, limit, expandFactor)
	}
	return nil
}

// expandFactor bounds what a body's messages may take against the body:
// trace.v1 is smaller than the JSON it comes from, unless many choices
// repeat one prompt.
const expandFactor = 4

// errExpanded is a body whose messages would be far larger than the body.
var errExpanded = errors.New("body too large once decoded")

// logProduceFailed logs a failed produce, at most once per failLogEvery,
// with the number of failures not logged since the last line.
func (h *Handler) logProduceFailed(topic string, code int, err error) {
	h.failMu.Lock()
	now := time.Now()
	if now.Sub(h.failLast) < failLogEvery {
		h.failQuiet++
		h.failMu.Unlock()
		return
	}
	quiet := h.failQuiet
	h.failLast, h.failQuiet = now, 0
	h.failMu.Unlock()
	h.log.Warn(fmt.Sprintf("http ingest produce failed (answered %d)", code), "topic", topic, "err", err, "not_logged_since_last", quiet)
}

// failWindow is how long after a failed produce, with none succeeding
// since, ProduceFailing says so.
const failWindow = 30 * time.Second

// ProduceFailing reports that producing requests' responses to the traces
// topic fails: the latest produce failed (answered 503), within the last
// 30 s, and none succeeded since. The brokers may answer metadata requests
// and still refuse every write (a broker whose disk is full): /readyz/ingest
// should say so, so that a load balancer sends the traffic elsewhere. Past
// the window it says ready again, and the next requests try again.
func (h *Handler) ProduceFailing(now time.Time) bool {
	f := h.lastFail.Load()
	return f != 0 && f > h.lastOK.Load() && now.Sub(time.Unix(0, f)) < failWindow
}

// FailFast makes requests answer 503 (Retry-After) at once while down
// reports the brokers known not to answer, instead of each one waiting for
// a produce to fail (about 6.5 s, holding an in-flight slot). down is called
// once per request; it must be cheap. Call before serving.
func (h *Handler) FailFast(down func() bool) { h.down = down }
