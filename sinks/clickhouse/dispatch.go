package clickhouse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/kafka-go"

	ewkafka "github.com/entrowatch/entrowatch/streams/kafka"
)

// DispatchConfig configures the alarm dispatcher. At least one of Topic
// (with Brokers) or WebhookURL must be set.
type DispatchConfig struct {
	// Kafka and Topic: Kafka destination of alarm events (JSON, keyed by
	// the alarm key as in the event id). Default none.
	Kafka ewkafka.Config
	Topic string
	// WebhookURL receives each event as a JSON POST; redirects are not
	// followed (a 3xx is an error). Errors name it as scheme://host[:port]
	// only: its path, query and credentials are often a secret. Default none.
	WebhookURL string
	// WebhookRetries is how often a failed POST is retried (5xx, 429,
	// network errors); default 5, backoff from 500ms doubling to 30s.
	WebhookRetries int
	// WebhookTimeout bounds one POST; default 10s.
	WebhookTimeout time.Duration
	// Interval between polls of the alarm views; default 30s.
	Interval time.Duration
}

// DefaultDispatchConfig documents the defaults.
func DefaultDispatchConfig() DispatchConfig {
	return DispatchConfig{Kafka: ewkafka.DefaultConfig(), WebhookRetries: 5, WebhookTimeout: 10 * time.Second, Interval: 30 * time.Second}
}

// Validate reports the first bad field.
func (c DispatchConfig) Validate() error {
	if c.Topic == "" && c.WebhookURL == "" {
		return errors.New("alarms: no destination; give a Kafka topic (with brokers) and/or a webhook URL")
	}
	if c.Topic != "" && len(c.Kafka.Brokers) == 0 {
		return fmt.Errorf("alarms: topic %q needs brokers (host:port,...)", c.Topic)
	}
	if c.WebhookURL != "" {
		if !strings.HasPrefix(c.WebhookURL, "http://") && !strings.HasPrefix(c.WebhookURL, "https://") {
			return fmt.Errorf("alarms: webhook %s: want an http:// or https:// URL", hookName(c.WebhookURL))
		}
		if u, err := url.Parse(c.WebhookURL); err != nil || u.Host == "" {
			// The parse error would quote the URL, secrets and all.
			return fmt.Errorf("alarms: webhook %s: not a valid URL (want http(s)://host[:port]/path, with reserved characters in the path, query and credentials percent-encoded)", hookName(c.WebhookURL))
		}
	}
	if c.WebhookRetries < 0 || c.Interval < 0 {
		return errors.New("alarms: webhook retries and interval must not be negative")
	}
	return nil
}

// AlarmEvent is what the dispatcher publishes: an alarm key that started
// firing (a new episode) or resolved.
type AlarmEvent struct {
	ID      string `json:"id"`                // the alarm key (alarmKey.String) + "#episode:status", unique per event
	Status  string `json:"status"`            // "firing" or "resolved"
	Kind    string `json:"kind"`              // accuracy_drop, psi, cusum, calibration_gap, unclustered_surge
	Model   string `json:"model"`             // LLM model
	Domain  string `json:"domain"`            // "" for unclustered_surge, which is per model
	Feature string `json:"feature,omitempty"` // psi's entropy feature (mean, q50 or max); "" for the other kinds
	// Episode numbers the key's firing episodes from 1: a firing event
	// starts the next one, a resolved event carries the one it ends.
	Episode uint32 `json:"episode"`
	// WindowStart is the start of the key's latest evaluated window (UTC);
	// for a key resolved because no evaluated window is left in the
	// lookback, the poll's time, with N and the numbers below 0.
	WindowStart time.Time `json:"window_start"`
	N           uint64    `json:"n"` // responses in the window; labelled responses for calibration_gap
	// Value, Baseline, Statistic and Threshold are the check's numbers as
	// alarm_checks gives them; the key fires while Statistic > Threshold.
	// Per kind, Value / Baseline / Statistic are:
	//   - accuracy_drop: the window's estimated accuracy / the pooled
	//     estimate of the baseline windows / Baseline - Value;
	//   - psi: the PSI of the window against the baseline windows / 0 / the PSI;
	//   - cusum: the window's estimated accuracy / the reference estimate /
	//     the CUSUM S_t (Threshold is cusum_h);
	//   - calibration_gap: estimated / realised accuracy of the labelled
	//     responses of the lookback / |Value - Baseline|;
	//   - unclustered_surge: the window's share of unclustered responses /
	//     the baseline windows' share / Value - Baseline.
	// Baseline, Statistic and Threshold are 0 where alarm_checks has NULL
	// (no baseline).
	Value     float64 `json:"value"`
	Baseline  float64 `json:"baseline"`
	Statistic float64 `json:"statistic"`
	Threshold float64 `json:"threshold"`
	// At is when the dispatcher saw the change: the poll's time, UTC, to
	// the second.
	At time.Time `json:"at"`
}

// alarmKey identifies an alarm. Model and domain are tenant strings that
// may hold any character ("/" is common: meta-llama/Llama-3.1-8B), so maps
// are keyed by the four fields, never by a string joined from them.
type alarmKey struct{ kind, model, domain, feature string }

func (e AlarmEvent) key() alarmKey { return alarmKey{e.Kind, e.Model, e.Domain, e.Feature} }

// String is the key as events carry it (the id's start, the Kafka message
// key): the four fields joined by "/", each with "%", "/", "#", control
// characters and invalid UTF-8 percent-encoded (escapeKeyPart), so that two
// keys never give one string and the string prints on one line.
func (k alarmKey) String() string {
	return escapeKeyPart(k.kind) + "/" + escapeKeyPart(k.model) + "/" + escapeKeyPart(k.domain) + "/" + escapeKeyPart(k.feature)
}

// escapeKeyPart percent-encodes (%XX per byte) "%", "/", "#", control
// characters and the bytes of invalid UTF-8 in s; other characters stay.
func escapeKeyPart(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == '%' || r == '/' || r == '#' || unicode.IsControl(r) || (r == utf8.RuneError && n == 1) {
			for _, c := range []byte(s[i : i+n]) {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// quoteControl returns s, or s quoted as a Go string (strconv.Quote) when it
// holds control characters or invalid UTF-8: text from elsewhere (a
// webhook's reply) that reaches a terminal or a log line.
func quoteControl(s string) string {
	if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

var schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]{0,15}://`)

// hookName is how messages name a webhook: scheme://host[:port], plus "/…"
// when the URL has more (credentials, a path, a query), which is often a
// bearer secret (Slack's /services/T../B../XXXX, ?token=).
func hookName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		if m := schemeRE.FindString(raw); m != "" {
			return m + "…"
		}
		return "(URL not shown)"
	}
	name := u.Scheme + "://" + u.Host
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		name += "/…"
	}
	return name
}

// Dispatcher turns the alarm_checks view into events: once when an alarm key
// starts firing, once when it resolves. Its state (episode, firing or not)
// lives in the alarm_state table, so restarts and several dispatchers in
// turn do not re-announce an episode. An event is recorded there once it
// reached every destination; until then each poll computes it again and
// sends it to the destinations it has not reached yet.
type Dispatcher struct {
	conn   driver.Conn
	db     string
	cfg    DispatchConfig
	writer *ewkafka.Producer
	client *http.Client
	hook   string // the webhook in messages (hookName)
	log    *slog.Logger
	now    func() time.Time
	// sent holds, for the events not recorded yet, the destinations they
	// reached (sentTopic, sentWebhook): a retry goes only to the others.
	// It lives in this process only, so an event pending when the process
	// ends goes to every destination again (its id is the same).
	sent map[string]uint8
}

// Destinations of an event, in Dispatcher.sent.
const (
	sentTopic uint8 = 1 << iota
	sentWebhook
)

// UndeliveredError is Poll's error when some events did not reach every
// destination. They are not recorded in alarm_state, so the next poll sends
// them again, to the destinations they missed; the other events of the poll
// were delivered and recorded.
type UndeliveredError struct {
	Events []AlarmEvent // the events that missed a destination
	Err    error        // why, one error per failure
}

// Error counts the undelivered events, lists their ids and gives Err.
func (e *UndeliveredError) Error() string {
	ids := make([]string, len(e.Events))
	for i, ev := range e.Events {
		ids[i] = ev.ID
	}
	return fmt.Sprintf("alarms: %d events not delivered, sent again at the next poll (%s): %v", len(e.Events), strings.Join(ids, ", "), e.Err)
}

// Unwrap returns Err, the failures joined by errors.Join.
func (e *UndeliveredError) Unwrap() error { return e.Err }

// NewDispatcher connects to ClickHouse (migrated) and prepares the outputs.
func NewDispatcher(ctx context.Context, chCfg Config, cfg DispatchConfig, log *slog.Logger) (*Dispatcher, error) {
	d := DefaultDispatchConfig()
	if cfg.WebhookTimeout <= 0 {
		cfg.WebhookTimeout = d.WebhookTimeout
	}
	if cfg.Interval <= 0 {
		cfg.Interval = d.Interval
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	conn, err := Open(ctx, chCfg)
	if err != nil {
		return nil, err
	}
	o, _ := chCfg.options()
	disp := &Dispatcher{conn: conn, db: o.Auth.Database, cfg: cfg, log: log, now: time.Now,
		client: &http.Client{Timeout: cfg.WebhookTimeout, CheckRedirect: noRedirects},
		hook:   hookName(cfg.WebhookURL), sent: map[string]uint8{}}
	if err := conn.Exec(ctx, "SELECT 1 FROM "+disp.db+".alarm_state LIMIT 0"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("alarms: %s.alarm_state: %w; run `entrowatch migrate --clickhouse DSN` first", disp.db, err)
	}
	if cfg.Topic != "" {
		// Created when missing (one partition keeps the events in order);
		// when this fails (no permission), publishing says what is wrong.
		_ = ewkafka.EnsureTopics(ctx, cfg.Kafka, 1, cfg.Topic)
		if err := ewkafka.CheckTopic(ctx, cfg.Kafka, cfg.Topic); err != nil {
			conn.Close()
			return nil, fmt.Errorf("alarms: %w", err) // now, not at the first alarm
		}
		pcfg := ewkafka.DefaultProducerConfig()
		pcfg.Topic = cfg.Topic
		if disp.writer, err = ewkafka.NewProducer(cfg.Kafka, pcfg, log); err != nil {
			conn.Close()
			return nil, fmt.Errorf("alarms: %w", err)
		}
	}
	return disp, nil
}

// Run polls every Interval until ctx ends. A failed poll is logged and
// retried at the next tick (nothing is recorded as sent unless it was).
func (d *Dispatcher) Run(ctx context.Context) error {
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		evs, err := d.Poll(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			d.log.Error("alarm poll failed; retrying at the next interval", "published", len(evs), "err", err)
		case len(evs) > 0:
			d.log.Info("alarm events published", "events", len(evs))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type alarmState struct {
	state   string
	episode uint32
}

// Poll runs one dispatch cycle and returns the events it published: those
// that reached every destination and are recorded in alarm_state. Events
// that did not are returned in an *UndeliveredError and sent again at the
// next poll (while the alarm is still in that state); one failing event
// does not hold back the others.
func (d *Dispatcher) Poll(ctx context.Context) ([]AlarmEvent, error) {
	latest, err := d.latestChecks(ctx)
	if err != nil {
		return nil, err
	}
	states, err := d.states(ctx)
	if err != nil {
		return nil, err
	}
	now := d.now().UTC().Truncate(time.Second)
	var evs []AlarmEvent
	for k, c := range latest {
		st := states[k]
		if c.firing && st.state != "firing" {
			e := c.event
			e.Status, e.Episode, e.At = "firing", st.episode+1, now
			evs = append(evs, e)
		} else if !c.firing && st.state == "firing" {
			e := c.event
			e.Status, e.Episode, e.At = "resolved", st.episode, now
			evs = append(evs, e)
		}
	}
	for k, st := range states { // firing keys with no evaluation left (no traffic in the lookback)
		if _, ok := latest[k]; !ok && st.state == "firing" {
			evs = append(evs, AlarmEvent{Status: "resolved", Kind: k.kind, Model: k.model, Domain: k.domain, Feature: k.feature, Episode: st.episode, WindowStart: now, At: now})
		}
	}
	pending := make(map[string]bool, len(evs))
	for i := range evs {
		evs[i].ID = fmt.Sprintf("%s#%d:%s", evs[i].key(), evs[i].Episode, evs[i].Status)
		pending[evs[i].ID] = true
	}
	for id := range d.sent { // the alarm changed state again before its event got through
		if !pending[id] {
			delete(d.sent, id)
		}
	}
	if len(evs) == 0 {
		return nil, nil
	}
	delivered, failed, perr := d.publish(ctx, evs)
	// Record what reached every destination, also when other events failed:
	// only those are sent again at the next poll.
	if len(delivered) > 0 {
		if err := d.record(ctx, delivered); err != nil {
			// Still in d.sent: the next poll records them without sending
			// them again (a restarted dispatcher would send them again).
			err = fmt.Errorf("alarms: published %d events but recording their state failed: %w", len(delivered), err)
			if perr != nil {
				err = errors.Join(&UndeliveredError{Events: failed, Err: perr}, err)
			}
			return delivered, err
		}
		for _, e := range delivered {
			delete(d.sent, e.ID)
		}
	}
	if len(failed) > 0 {
		return delivered, &UndeliveredError{Events: failed, Err: perr}
	}
	return delivered, nil
}

type check struct {
	event  AlarmEvent
	firing bool
}

func (d *Dispatcher) latestChecks(ctx context.Context) (map[alarmKey]check, error) {
	cs, err := CurrentAlarms(ctx, d.conn, d.db)
	if err != nil {
		return nil, fmt.Errorf("alarms: %w", err)
	}
	out := make(map[alarmKey]check, len(cs))
	for _, c := range cs {
		e := AlarmEvent{Kind: c.Kind, Model: c.Model, Domain: c.Domain, Feature: c.Feature, WindowStart: c.WindowStart,
			N: c.N, Value: c.Value, Baseline: c.Baseline, Statistic: c.Statistic, Threshold: c.Threshold}
		out[e.key()] = check{event: e, firing: c.Firing}
	}
	return out, nil
}

// AlarmCheck is the state of one alarm key (kind, model, domain, feature):
// its latest evaluated window in alarm_checks.
type AlarmCheck struct {
	Kind, Model, Domain, Feature string    // the key, as in AlarmEvent
	WindowStart                  time.Time // start of the latest evaluated window (UTC)
	N                            uint64    // responses in it; labelled responses for calibration_gap
	Value, Baseline, Statistic   float64   // Baseline 0 for psi, which has none
	Threshold                    float64   // see AlarmEvent.Value for the four numbers of each kind; 0 where NULL
	Firing                       bool      // that window fired: evaluated and Statistic > Threshold
}

// CurrentAlarms returns the state of every alarm key of db's alarm_checks,
// ordered by key: that of its latest evaluated window (evaluated = 1: the
// window and its baseline held min_n responses; see docs/clickhouse.md). A
// window too young or too thin to be judged leaves the state of the window
// before it, so a partial newest window neither resolves nor hides an alarm.
// A key without an evaluated window in the lookback is absent.
func CurrentAlarms(ctx context.Context, conn driver.Conn, db string) ([]AlarmCheck, error) {
	rows, err := conn.Query(ctx, `SELECT kind, model, domain, feature, max(window_start), argMax(firing, window_start),
    argMax(n, window_start), argMax(value, window_start), argMax(ifNull(baseline, 0), window_start),
    argMax(ifNull(statistic, 0), window_start), argMax(ifNull(threshold, 0), window_start)
FROM `+db+`.alarm_checks
WHERE evaluated = 1
GROUP BY kind, model, domain, feature
ORDER BY kind, model, domain, feature`)
	if err != nil {
		return nil, fmt.Errorf("reading %s.alarm_checks: %w", db, err)
	}
	defer rows.Close()
	var out []AlarmCheck
	for rows.Next() {
		var c AlarmCheck
		var f uint8
		if err := rows.Scan(&c.Kind, &c.Model, &c.Domain, &c.Feature, &c.WindowStart, &f, &c.N, &c.Value, &c.Baseline, &c.Statistic, &c.Threshold); err != nil {
			return nil, fmt.Errorf("reading %s.alarm_checks: %w", db, err)
		}
		c.Firing = f == 1
		out = append(out, c)
	}
	return out, rows.Err()
}

func (d *Dispatcher) states(ctx context.Context) (map[alarmKey]alarmState, error) {
	rows, err := d.conn.Query(ctx, `SELECT kind, model, domain, feature, argMax(state, version), argMax(episode, version)
FROM `+d.db+`.alarm_state GROUP BY kind, model, domain, feature`)
	if err != nil {
		return nil, fmt.Errorf("alarms: reading %s.alarm_state: %w", d.db, err)
	}
	defer rows.Close()
	out := map[alarmKey]alarmState{}
	for rows.Next() {
		var k alarmKey
		var st alarmState
		if err := rows.Scan(&k.kind, &k.model, &k.domain, &k.feature, &st.state, &st.episode); err != nil {
			return nil, fmt.Errorf("alarms: %w", err)
		}
		out[k] = st
	}
	return out, rows.Err()
}

// publish sends evs to the destinations each has not reached yet (d.sent):
// to the topic in one produce, then one by one to the webhook. It returns
// the events that reached every destination and those that did not, with
// the errors. A failed event does not stop the others: once one has used up
// its webhook retries, the rest are posted once each, so that a webhook
// that is down costs one round of retries per poll, not one per event.
func (d *Dispatcher) publish(ctx context.Context, evs []AlarmEvent) (delivered, failed []AlarmEvent, err error) {
	var all uint8
	var errs []error
	if d.writer != nil {
		all |= sentTopic
		var msgs []kafka.Message
		var ids []string
		for _, e := range evs {
			if d.sent[e.ID]&sentTopic != 0 {
				continue
			}
			b, _ := json.Marshal(e)
			msgs = append(msgs, kafka.Message{Key: []byte(e.key().String()), Value: b,
				Headers: []kafka.Header{{Key: "entrowatch.schema", Value: []byte("alarm.v1")}}})
			ids = append(ids, e.ID)
		}
		if len(msgs) > 0 {
			if err := d.writer.Produce(ctx, msgs...); err != nil {
				errs = append(errs, fmt.Errorf("alarms: topic %s: %d events: %w", d.cfg.Topic, len(msgs), err))
			} else {
				for _, id := range ids {
					d.sent[id] |= sentTopic
				}
			}
		}
	}
	if d.cfg.WebhookURL != "" {
		all |= sentWebhook
		retries := d.cfg.WebhookRetries
		for _, e := range evs {
			if d.sent[e.ID]&sentWebhook != 0 {
				continue
			}
			if ctx.Err() != nil {
				errs = append(errs, fmt.Errorf("alarms: webhook %s: event %s: %w", d.hook, e.ID, ctx.Err()))
				continue
			}
			if err := d.post(ctx, e, retries); err != nil {
				errs = append(errs, err)
				if !errors.Is(err, errRejected) { // the webhook is in trouble, not just this event
					retries = 0
				}
				continue
			}
			d.sent[e.ID] |= sentWebhook
		}
	}
	for _, e := range evs {
		if d.sent[e.ID] == all {
			delivered = append(delivered, e)
		} else {
			failed = append(failed, e)
		}
	}
	return delivered, failed, errors.Join(errs...)
}

// errRejected marks a webhook's refusal of one event (a 4xx other than
// 429), which is not retried within the poll.
var errRejected = errors.New("rejected")

// noRedirects is the webhook client's CheckRedirect: a redirect is answered
// as the 3xx it is, which post reports, rather than followed (re-POSTing the
// event to wherever the Location says, internal addresses included).
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// post sends one event to the webhook, retrying 5xx, 429 and network errors
// up to retries times with exponential backoff. Its errors name the webhook
// by d.hook and quote the reply's body when it holds control characters.
func (d *Dispatcher) post(ctx context.Context, e AlarmEvent, retries int) error {
	body, _ := json.Marshal(e)
	backoff := 500 * time.Millisecond
	var last error
	for attempt := 0; attempt <= retries; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, backoff); err != nil {
				return err
			}
			backoff = min(2*backoff, 30*time.Second)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.cfg.WebhookURL, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("alarms: webhook %s: %w", d.hook, hideURL(err, d.hook))
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := d.client.Do(req)
		if err != nil {
			last = hideURL(err, d.hook)
			continue
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		status, reply := quoteControl(resp.Status), quoteControl(string(bytes.TrimSpace(msg)))
		switch {
		case resp.StatusCode/100 == 2:
			return nil
		case resp.StatusCode/100 == 3:
			// Not errRejected: every event would get the same answer.
			return fmt.Errorf("alarms: webhook %s: event %s: %s: redirects are not followed; give the URL it redirects to as the webhook", d.hook, e.ID, status)
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			last = fmt.Errorf("status %s: %s", status, reply)
		default:
			return fmt.Errorf("alarms: webhook %s %w event %s: %s: %s", d.hook, errRejected, e.ID, status, reply)
		}
	}
	if retries == 0 {
		return fmt.Errorf("alarms: webhook %s: event %s not accepted, tried once (retries are spent on the first failing event of a poll): %w", d.hook, e.ID, last)
	}
	return fmt.Errorf("alarms: webhook %s: event %s not accepted after %d attempts: %w", d.hook, e.ID, retries+1, last)
}

// hideURL replaces the URL that net/http quotes in its errors (*url.Error:
// Post "https://host/path?query": ...) by name.
func hideURL(err error, name string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = name
	}
	return err
}

func (d *Dispatcher) record(ctx context.Context, evs []AlarmEvent) error {
	b, err := d.conn.PrepareBatch(ctx, "INSERT INTO "+d.db+".alarm_state (kind, model, domain, feature, episode, state, window_start, value, baseline, threshold, n, changed_at, version)")
	if err != nil {
		return err
	}
	version := uint64(d.now().UnixNano())
	for _, e := range evs {
		if err := b.Append(e.Kind, e.Model, e.Domain, e.Feature, e.Episode, e.Status, e.WindowStart, e.Value, e.Baseline, e.Threshold, e.N, e.At, version); err != nil {
			_ = b.Abort()
			return err
		}
	}
	return b.Send()
}

// Close stops the Kafka writer and the ClickHouse connection.
func (d *Dispatcher) Close() error {
	var errs []error
	if d.writer != nil {
		errs = append(errs, d.writer.Close())
	}
	d.client.CloseIdleConnections()
	errs = append(errs, d.conn.Close())
	return errors.Join(errs...)
}
