package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams/runner"
)

const alarmsSynopsis = `--clickhouse DSN (--webhook URL | --topic T --brokers H:P,.. | both) [--interval 30s] [--once] [--metrics ADDR]
       entrowatch alarms --clickhouse DSN --list

Dispatches drift alarms: polls the alarm_checks view (accuracy_drop, psi,
cusum, calibration_gap, unclustered_surge) and publishes an event once when an
alarm starts firing (a new episode) and once when it resolves, as JSON to a
Kafka topic (acks from all replicas) and/or POSTed to a webhook (retried on
5xx, 429 and network errors; a redirect is an error, not followed; messages
name the webhook by scheme://host:port only). One destination is required.
The dispatch state lives in the alarm_state table, so a restarted dispatcher
does not announce an episode twice. Events are also printed on stdout, one
JSON object per line. An alarm's state is that of its latest evaluated window
(one with min_n responses and a baseline); a younger window with fewer
responses changes nothing.

An event that does not reach every destination (the webhook refuses it or
stays unreachable) does not hold back the others: they are published and
recorded, the failure is reported on stderr, and the event is sent again at
the next poll or --once run: by the same process only to the destinations it
missed, after a restart to all (with the same id, to deduplicate by). --once
exits with status 1 when an event was not delivered.

--metrics ADDR serves, while polling, Prometheus /metrics (polls, failed
polls, events published, time of the last successful poll), /healthz and
/readyz (503 when no poll succeeded for 3 intervals): the dispatcher is what
pages on accuracy drift, so its own death or a failing webhook must show
(deploy/prometheus/alerts.yml: EntrowatchAlarmsStale, EntrowatchAlarmsDown).
A ClickHouse that cannot be reached when polling starts is waited for (logged
at each attempt, /readyz 503 meanwhile); an error the server answers (wrong
password, a database not migrated) ends it.

--list prints the alarms firing now and exits. Thresholds and windows are the
alarm_settings table (see docs/clickhouse.md).

Kafka with TLS or SASL: --kafka-tls, --kafka-tls-ca FILE, --kafka-sasl MECH,
--kafka-sasl-user USER (password from $ENTROWATCH_KAFKA_PASSWORD); --tls is
ClickHouse's. The topic is created when missing and checked at start.`

func runAlarms(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("alarms", alarmsSynopsis, stderr)
	chf := addClickHouseFlags(fs)
	brokers := fs.String("brokers", "", "comma-separated Kafka bootstrap brokers for --topic (e.g. 127.0.0.1:9092)")
	topic := fs.String("topic", "", "Kafka topic to publish alarm events to")
	kf := addKafkaFlags(fs, kafkaBesideClickHouse)
	webhook := fs.String("webhook", "", "URL to POST each alarm event to (JSON)")
	retries := fs.Int("webhook-retries", clickhouse.DefaultDispatchConfig().WebhookRetries, "retries of a failed webhook POST")
	interval := fs.Duration("interval", clickhouse.DefaultDispatchConfig().Interval, "time between polls")
	once := fs.Bool("once", false, "poll once, publish, and exit")
	list := fs.Bool("list", false, "print the alarms firing now and exit (no publishing)")
	metricsAddr := fs.String("metrics", "", "while polling, serve Prometheus /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9465); \"\" = off")
	if err := kf.parse(args); err != nil {
		return err
	}
	switch {
	case *interval <= 0:
		return badFlag("--interval %v: want > 0 (e.g. 30s)", *interval)
	case *retries < 0:
		return badFlag("--webhook-retries %d: want >= 0", *retries)
	}
	if !*list && *topic == "" && *webhook == "" {
		fmt.Fprintln(stderr, "no destination: give --webhook URL and/or --topic T --brokers H:P,.. (or --list to print the alarms firing now)")
		fs.Usage()
		return errUsage
	}
	cfg, err := chf.config(fs)
	if err != nil {
		return err
	}
	if *list {
		return listAlarms(ctx, cfg, stdout)
	}
	dc := clickhouse.DefaultDispatchConfig()
	dc.Topic, dc.WebhookURL, dc.WebhookRetries, dc.Interval = *topic, *webhook, *retries, *interval
	dc.Kafka = kf.config(*brokers, "entrowatch-alarms")
	if err := dc.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	connect := func() (*clickhouse.Dispatcher, error) {
		if err := checkSchema(ctx, cfg); err != nil {
			return nil, err
		}
		return clickhouse.NewDispatcher(ctx, cfg, dc, log)
	}
	if *once {
		d, err := connect()
		if err != nil {
			return err
		}
		defer d.Close()
		enc := json.NewEncoder(stdout)
		evs, err := d.Poll(ctx)
		for _, e := range evs {
			_ = enc.Encode(e)
		}
		var ue *clickhouse.UndeliveredError
		switch {
		case err == nil:
			fmt.Fprintf(stderr, "alarms: %d new events published\n", len(evs))
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "alarms: %d new events published, %d not delivered (the next run sends them again)\n", len(evs), len(ue.Events))
		}
		return err
	}
	// Metrics and health first: a ClickHouse that cannot be reached at
	// start is waited for, as run does, with /readyz 503 until it is
	// reached (it exited, and an orchestrator restarted it in a loop with no
	// metrics: recheck9 F3); an error the server answers (authentication,
	// no migrated database) still ends it.
	am := newAlarmMetrics(dc.Interval)
	if *metricsAddr != "" {
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics %s: %w", *metricsAddr, err)
		}
		ms := startServer("metrics", ln, am.handler(), log)
		defer ms.shutdown(context.WithoutCancel(ctx), 5*time.Second)
		log.Info("alarms: metrics on http://" + ln.Addr().String() + "/metrics")
	}
	d, err := retryAtStart(ctx, runner.DefaultConfig(), log, startRetry{
		what:  "clickhouse",
		final: func(err error) bool { return !unreachable(err) },
		attrs: []any{"dsn", redactDSN(cfg.DSN)},
	}, connect)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer d.Close()
	am.connected.Store(true)
	enc := json.NewEncoder(stdout)
	fmt.Fprintf(stderr, "alarms: polling every %s; Ctrl-C stops\n", dc.Interval)
	t := time.NewTicker(dc.Interval)
	defer t.Stop()
	for {
		evs, err := d.Poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		am.observe(time.Now(), len(evs), err)
		if err != nil {
			log.Error("alarm poll failed; retrying at the next interval", "published", len(evs), "err", err)
		}
		for _, e := range evs {
			_ = enc.Encode(e)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// listAlarms prints the alarm keys whose current state (the latest
// evaluated window, clickhouse.CurrentAlarms) is firing.
func listAlarms(ctx context.Context, cfg clickhouse.Config, stdout io.Writer) error {
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := clickhouse.CheckSchema(ctx, conn, cfg.DatabaseName()); err != nil {
		return err
	}
	cs, err := clickhouse.CurrentAlarms(ctx, conn, cfg.DatabaseName())
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tMODEL\tDOMAIN\tFEATURE\tWINDOW\tVALUE\tBASELINE\tSTATISTIC\tTHRESHOLD\tN")
	firing := 0
	for _, c := range cs {
		if !c.Firing {
			continue
		}
		firing++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.4f\t%.4f\t%.4f\t%.4f\t%d\n", printable(c.Kind), printable(c.Model), printable(c.Domain), printable(c.Feature),
			c.WindowStart.UTC().Format(time.RFC3339), c.Value, c.Baseline, c.Statistic, c.Threshold, c.N)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d alarms firing\n", firing)
	return nil
}

// printable is a tenant string (model, domain) for a terminal: s, or s
// quoted as a Go string when it holds control characters (an escape
// sequence, a newline that would forge a table row, a tab that would shift
// the columns), invalid UTF-8, or starts with a quote (which a quoted value
// would be mistaken for).
func printable(s string) string {
	if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 || strings.HasPrefix(s, `"`) {
		return strconv.Quote(s)
	}
	return s
}

// unreachable reports an error of the network between here and the server
// (refused, reset, timed out, a name not resolved): retrying may fix it,
// unlike what the server answered or a DSN that does not parse.
func unreachable(err error) bool {
	var ne net.Error
	return !answered(err) && (errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET))
}

// checkSchema connects to cfg's server and checks its database holds this
// build's migrations (clickhouse.CheckSchema).
func checkSchema(ctx context.Context, cfg clickhouse.Config) error {
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	return clickhouse.CheckSchema(ctx, conn, cfg.DatabaseName())
}

// alarmMetrics are the dispatcher's own metrics (alarms --metrics).
type alarmMetrics struct {
	reg                 *prometheus.Registry
	interval            time.Duration
	polls, errs, events prometheus.Counter
	last                prometheus.Gauge
	lastOK              atomic.Int64 // unix nanoseconds of the last successful poll; read by /readyz
	connected           atomic.Bool  // ClickHouse reached at start (polling began)
	started             time.Time
}

func newAlarmMetrics(interval time.Duration) *alarmMetrics {
	m := &alarmMetrics{reg: prometheus.NewRegistry(), interval: interval, started: time.Now(),
		polls: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_alarms_polls_total",
			Help: "Polls of the alarm_checks view by entrowatch alarms."}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_alarms_poll_errors_total",
			Help: "Polls that failed (ClickHouse unreachable, an event not delivered to every destination); retried at the next interval."}),
		events: prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_alarms_events_total",
			Help: "Alarm events (an episode starting or resolving) published."}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{Name: "entrowatch_alarms_last_success_timestamp_seconds",
			Help: "Unix time of the last poll that succeeded (0 before the first)."}),
	}
	m.reg.MustRegister(m.polls, m.errs, m.events, m.last)
	return m
}

// observe counts one poll that published events events and ended with err.
func (m *alarmMetrics) observe(now time.Time, events int, err error) {
	m.polls.Inc()
	m.events.Add(float64(events))
	if err != nil {
		m.errs.Inc()
		return
	}
	m.lastOK.Store(now.UnixNano())
	m.last.Set(float64(now.UnixMilli()) / 1000)
}

// handler serves /metrics, /healthz and /readyz: ready while a poll
// succeeded within 3 intervals (from the start, the first 3 intervals).
func (m *alarmMetrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.connected.Load() {
			http.Error(w, "not ready: starting, ClickHouse not reached yet; see the log: clickhouse not reachable; retrying", http.StatusServiceUnavailable)
			return
		}
		since := m.started
		if ns := m.lastOK.Load(); ns != 0 {
			since = time.Unix(0, ns)
		}
		if age := time.Since(since); age > 3*m.interval {
			http.Error(w, fmt.Sprintf("not ready: no poll succeeded for %v (3 intervals); see the log: alarm poll failed", age.Round(time.Second)), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}
