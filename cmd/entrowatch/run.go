package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	chgo "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"gopkg.in/yaml.v3"

	"github.com/entrowatch/entrowatch/internal/dirlock"
	"github.com/entrowatch/entrowatch/operators/estimate"
	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/sinks/file"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/httpin"
	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/kafka"
	"github.com/entrowatch/entrowatch/streams/runner"
)

const runSynopsis = `[--config FILE] [--print-config] [--log-level LEVEL]

Runs the stream processor: consumes trace.v1 batches from Kafka, scores them
(profile, then estimate and clustertag when configured), writes them to the
sink and commits the offsets only after the sink confirmed. Rows that cannot be
processed go to the dead-letter topic with a reason header.

Without --config (or with kafka.brokers empty) it starts the embedded broker on
127.0.0.1:9092. The default sink, "auto", is ClickHouse: a managed local
clickhouse-server under data_dir/clickhouse (or the server clickhouse.conn.dsn
names); when no server is installed it writes Arrow IPC files under data_dir
instead, with a warning. sink: file or sink: clickhouse picks one explicitly.
SIGTERM or Ctrl-C: /readyz answers 503, HTTP ingest keeps serving for
http.shutdown_delay, then stops; the stream drains in-flight work, flushes
the sink and commits within stream.drain_timeout (with kafka.brokers set at
once, leaving the rest to the other replicas; with the embedded broker after
HTTP ingest stopped). See deploy/entrowatch.yaml for every setting and
docs/streams.md for the guarantees.`

// runConfig is the file read by entrowatch run. Every section has documented
// defaults (see the package of each section); keys are snake_case.
type runConfig struct {
	// DataDir holds the local sink's files. Default ".entrowatch".
	DataDir string `yaml:"data_dir"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json (one object per line). Default text.
	LogFormat string `yaml:"log_format"`
	// Broker is the embedded broker, started when kafka.brokers is empty.
	Broker broker.Config `yaml:"broker"`
	// Kafka is how to reach the cluster (brokers, TLS, SASL).
	Kafka kafka.Config `yaml:"kafka"`
	// CreateTopics creates the source, dead-letter and labels topics when
	// missing, with Partitions partitions; while Kafka cannot be reached at
	// start it is retried (the brokers refusing ends run). Default true.
	CreateTopics bool `yaml:"create_topics"`
	Partitions   int  `yaml:"partitions"`
	// LabelsTopic carries labels (label.v1 as Arrow or JSON): POST
	// http.labels_path produces to it, and with the ClickHouse sink this
	// process stores what it carries in the labels table (consumer group
	// "entrowatch-labels"; replicas share its partitions). "" turns both
	// off. Default "labels".
	LabelsTopic string `yaml:"labels_topic"`
	// Source is the consumed topic and consumer group.
	Source kafka.SourceConfig `yaml:"source"`
	// DeadLetter is the dead-letter producer; its topic defaults to
	// "<source topic>.dead".
	DeadLetter kafka.ProducerConfig `yaml:"dead_letter"`
	// Stream is the runner: workers, commits, drain, backoff, chunk assembly.
	Stream runner.Config `yaml:"stream"`
	// Profile bounds the profile operator.
	Profile profile.Config `yaml:"profile"`
	// Estimator is an estimator artifact (entrowatch train); "" leaves
	// p_correct null. Default "".
	Estimator string `yaml:"estimator"`
	// Clusters is a topic-cluster artifact (entrowatch cluster fit); ""
	// leaves the cluster columns null. Default "".
	Clusters string `yaml:"clusters"`
	// ClustersDomainFrom is the domain the estimates are sliced by when
	// Clusters is set: caller, cluster or caller_else_cluster (docs/clusters.md).
	// Default caller_else_cluster.
	ClustersDomainFrom clusterDomainFrom `yaml:"clusters_domain_from"`
	// Sink is "file" (Arrow IPC files under data_dir), "clickhouse" (the
	// scored table; a managed local server unless clickhouse.conn.dsn is set)
	// or "auto": clickhouse when a DSN is set or clickhouse-server is
	// installed, else file (with a warning). Default "auto".
	Sink string `yaml:"sink"`
	// File configures the file sink; its path defaults to
	// "<data_dir>/scored-<start time>.arrow" (a new file per run).
	File file.Config `yaml:"file"`
	// ClickHouse configures the ClickHouse sink (sink: clickhouse).
	ClickHouse runClickHouse `yaml:"clickhouse"`
	// HTTP is the ingest endpoint; off unless http.listen is set.
	HTTP runHTTP `yaml:"http"`
	// Ingest tunes the JSON adapter behind the HTTP endpoint.
	Ingest ingest.Config `yaml:"ingest"`
	// Metrics serves /metrics, /healthz and /readyz; "" turns it off.
	// Default listen "127.0.0.1:9464".
	Metrics struct {
		Listen string `yaml:"listen"`
	} `yaml:"metrics"`
}

// runHTTP is the http section: the ingest endpoint's settings and how it
// stops.
type runHTTP struct {
	httpin.Config `yaml:",inline"`
	// ShutdownDelay is how long, after SIGTERM, HTTP ingest keeps serving
	// while /readyz and /readyz/ingest answer 503, so that load balancers
	// (a Kubernetes Service) stop sending before the listener closes; then
	// ingest finishes its requests in flight and the stream drains. Only
	// with http.listen set. Default 5s.
	ShutdownDelay time.Duration `yaml:"shutdown_delay"`
}

// ingestShutdownTimeout bounds how long HTTP ingest waits for its requests
// in flight at shutdown (after http.shutdown_delay, before the drain).
const ingestShutdownTimeout = 10 * time.Second

// runClickHouse is the ClickHouse sink section.
type runClickHouse struct {
	// Conn is how to reach the server; its dsn "" starts a managed local
	// clickhouse-server under <data_dir>/clickhouse. Default "".
	Conn clickhouse.Config `yaml:"conn"`
	// PasswordEnv names the environment variable holding the password; it
	// overrides conn.password. Default "ENTROWATCH_CLICKHOUSE_PASSWORD".
	PasswordEnv string `yaml:"password_env"`
	// Migrate applies pending schema migrations at start. Default true.
	Migrate bool `yaml:"migrate"`
}

func defaultRunConfig() runConfig {
	c := runConfig{
		DataDir:      ".entrowatch",
		LogLevel:     "info",
		LogFormat:    "text",
		Broker:       broker.DefaultConfig(),
		Kafka:        kafka.DefaultConfig(),
		CreateTopics: true,
		Partitions:   4,
		LabelsTopic:  "labels",
		Source:       kafka.DefaultSourceConfig(),
		DeadLetter:   kafka.DefaultProducerConfig(),
		Stream:       runner.DefaultConfig(),
		Profile:      profile.DefaultConfig(),
		Sink:         "auto",
		ClickHouse:   runClickHouse{Conn: clickhouse.DefaultConfig(), PasswordEnv: "ENTROWATCH_CLICKHOUSE_PASSWORD", Migrate: true},
		HTTP:         runHTTP{Config: httpin.DefaultConfig(), ShutdownDelay: 5 * time.Second},
		Ingest:       ingest.DefaultConfig(),
	}
	c.Broker.Listen = "127.0.0.1:9092"
	c.DeadLetter.Topic = ""
	c.Metrics.Listen = "127.0.0.1:9464"
	c.ClickHouse.Conn.DSN = ""
	return c
}

// loadRunConfig reads path over the defaults (unknown keys are errors) and
// fills the secrets from the environment.
func loadRunConfig(path string, getenv func(string) string) (runConfig, error) {
	c := defaultRunConfig()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("reading config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return c, fmt.Errorf("config %s: %w (see deploy/entrowatch.yaml for the keys)", path, explainYAML(b, err))
		}
	}
	if c.DeadLetter.Topic == "" {
		c.DeadLetter.Topic = c.Source.Topic + ".dead"
	}
	if len(c.Kafka.Brokers) == 0 && c.Broker.DataDir == "" && !c.Broker.InMemory && c.DataDir != "" {
		// What the embedded broker acknowledged survives a restart (and a
		// crash of this process: segments are written as produced).
		c.Broker.DataDir = filepath.Join(c.DataDir, "broker")
	}
	if c.Kafka.SASL.Mechanism != "" && c.Kafka.SASL.PasswordEnv != "" {
		c.Kafka.SASL.Password = kafka.Secret(getenv(c.Kafka.SASL.PasswordEnv))
	}
	if c.HTTP.TokenEnv != "" {
		c.HTTP.Token = kafka.Secret(getenv(c.HTTP.TokenEnv))
	}
	if c.ClickHouse.PasswordEnv != "" {
		if pw := getenv(c.ClickHouse.PasswordEnv); pw != "" {
			c.ClickHouse.Conn.Password = pw
		}
	}
	return c, c.validate()
}

func (c *runConfig) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is empty"))
	}
	if len(c.Kafka.Brokers) == 0 {
		errs = append(errs, c.Broker.Validate())
		// The producers send record batches of up to their batch_bytes:
		// an embedded broker taking less refuses the largest messages for
		// ever, and the others whenever several share a batch.
		for _, p := range []struct {
			key string
			n   int64
		}{{"dead_letter.batch_bytes", c.DeadLetter.TopicMessageBytes()}, {"the batches of HTTP ingest and entrowatch ingest", kafka.DefaultProducerConfig().TopicMessageBytes()}} {
			if int64(c.Broker.MaxMessageBytes) < p.n {
				errs = append(errs, fmt.Errorf("broker.max_message_bytes %d is below what %s need (%d: record batches of up to batch_bytes, plus their header): the broker would refuse them; raise it to at least %d",
					c.Broker.MaxMessageBytes, p.key, p.n, p.n))
				break
			}
		}
	} else {
		errs = append(errs, c.Kafka.Validate())
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partitions %d: want >= 1", c.Partitions))
	}
	errs = append(errs, c.Source.Validate(), c.DeadLetter.Validate(), c.Stream.Validate(), c.Profile.Validate(), c.Ingest.Validate())
	// Responses of more than about 11,000 steps travel as chunks (a message
	// holds at most 1 MiB), and the assembler gives up on a chunked trace
	// over its own max_steps: a higher profile.max_steps alone takes none.
	if a := c.Stream.Assemble.MaxSteps; c.Profile.MaxSteps > a {
		errs = append(errs, fmt.Errorf("profile.max_steps %d is above stream.assemble.max_steps %d: long responses travel as chunks, and a chunked trace over stream.assemble.max_steps is dead-lettered as too_long; set stream.assemble.max_steps to %d too (and max_held_steps to at least that)",
			c.Profile.MaxSteps, a, c.Profile.MaxSteps))
	}
	// The stream produces its dead letters to dead_letter.topic: the source
	// topic would feed every bad message back to itself, for ever.
	if c.DeadLetter.Topic == c.Source.Topic {
		errs = append(errs, fmt.Errorf("dead_letter.topic must differ from source.topic (both %q): dead letters would be consumed again and dead-lettered again, for ever; leave dead_letter.topic out for %q", c.Source.Topic, c.Source.Topic+".dead"))
	}
	if c.LabelsTopic != "" && (c.LabelsTopic == c.Source.Topic || c.LabelsTopic == c.DeadLetter.Topic) {
		errs = append(errs, fmt.Errorf("labels_topic %q must differ from source.topic and dead_letter.topic: labels are not traces", c.LabelsTopic))
	}
	if c.HTTP.Listen != "" {
		errs = append(errs, c.HTTP.Validate())
		if c.HTTP.ShutdownDelay < 0 {
			errs = append(errs, fmt.Errorf("http.shutdown_delay %v: want >= 0", c.HTTP.ShutdownDelay))
		}
	}
	for _, a := range []struct{ key, addr string }{{"http.listen", c.HTTP.Listen}, {"metrics.listen", c.Metrics.Listen}} {
		if err := checkListenAddr(a.addr); a.addr != "" && err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.key, a.addr, err))
		}
	}
	if c.HTTP.Listen != "" && c.HTTP.Listen == c.Metrics.Listen {
		errs = append(errs, fmt.Errorf("http.listen and metrics.listen are both %q: give them different ports", c.HTTP.Listen))
	}
	switch c.Sink {
	case "file", "auto":
	case "clickhouse":
		if c.ClickHouse.Conn.DSN != "" {
			errs = append(errs, c.ClickHouse.Conn.Validate())
		}
	default:
		errs = append(errs, fmt.Errorf("sink %q: want auto, file or clickhouse", c.Sink))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log_format %q: want text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log_level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", runSynopsis, stderr)
	cfgPath := fs.String("config", "", "YAML config file (see deploy/entrowatch.yaml); none: embedded broker and the auto sink (managed local ClickHouse, else Arrow files)")
	printCfg := fs.Bool("print-config", false, "print the effective configuration as YAML and exit, after reading the files it names (estimator, clusters, TLS): exit 1 when one is missing or malformed (secrets are never printed)")
	level := fs.String("log-level", "", "override log_level: debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *level != "" {
		if _, err := parseLevel(*level); err != nil {
			return badFlag("--log-level %q: want debug, info, warn or error", *level)
		}
	}
	cfg, err := loadRunConfig(*cfgPath, os.Getenv)
	if *level != "" {
		cfg.LogLevel = *level
		if err == nil {
			err = cfg.validate()
		}
	}
	if err != nil {
		return err
	}
	if *printCfg {
		if cfg.ClickHouse.Conn.Password != "" {
			cfg.ClickHouse.Conn.Password = "[redacted]"
		}
		if cfg.ClickHouse.Conn.DSN != "" {
			cfg.ClickHouse.Conn.DSN = redactDSN(cfg.ClickHouse.Conn.DSN)
		}
		if err := yaml.NewEncoder(stdout).Encode(cfg); err != nil {
			return err
		}
		// A preflight too: the files the configuration names are read.
		return preflight(cfg)
	}
	if err := preflight(cfg); err != nil {
		return err
	}
	lv, _ := parseLevel(cfg.LogLevel)
	log := slog.New(logHandler(stderr, cfg.LogFormat, lv))
	err = run(ctx, cfg, log)
	if err != nil {
		// In the log too, as its last line: a log pipeline (JSON) sees why
		// the process stopped, not only the plain line that follows.
		log.Error("run stopped on an error", "err", err)
	}
	return err
}

// logHandler writes text or JSON log lines at level and above. Durations are
// written as strings ("24h0m0s"), also in JSON, where slog would write
// nanoseconds (86400000000000).
func logHandler(w io.Writer, format string, level slog.Level) slog.Handler {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.StringValue(a.Value.Duration().String())
		}
		return a
	}}
	if format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// retryDebug records a component's own retries at DEBUG: the stream retries
// the sink's failed writes and logs each of its attempts at WARN, so the
// sink's inner retries of the same write would say the same thing five
// times more.
type retryDebug struct{ slog.Handler }

func (h retryDebug) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		r.Level = slog.LevelDebug
		if !h.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h retryDebug) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelWarn {
		l = slog.LevelDebug
	}
	return h.Handler.Enabled(ctx, l)
}

func (h retryDebug) WithAttrs(as []slog.Attr) slog.Handler {
	return retryDebug{h.Handler.WithAttrs(as)}
}
func (h retryDebug) WithGroup(n string) slog.Handler { return retryDebug{h.Handler.WithGroup(n)} }

// exposedWithoutToken says whether HTTP ingest at listen accepts requests
// from other hosts (not a loopback address) with no bearer token.
func exposedWithoutToken(listen string, token kafka.Secret) bool {
	if listen == "" || token != "" {
		return false
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// run wires the components. Start order: metrics (/healthz answers, /readyz
// says "starting" and what it waits for), broker, topics (retried while
// Kafka is unreachable), HTTP ingest (it needs only Kafka), sink (retried
// while unreachable), dead-letter producer, source, runner.
//
// Stop order (on ctx done, i.e. SIGTERM): /readyz and /readyz/ingest answer
// 503 at once; HTTP ingest keeps serving for http.shutdown_delay so that load
// balancers stop sending first, then stops accepting and finishes its
// requests in flight; then the runner drains (finishes in-flight messages,
// writes the sink, commits). Then producers and source close, the sink
// closes (flush + sync), the broker closes, and the metrics server (it
// answered 503 all along the drain) stops last.
func run(ctx context.Context, cfg runConfig, log *slog.Logger) (err error) {
	mem := memory.NewGoAllocator()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Which build each replica runs (after a rollout, or a rollback).
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "entrowatch_build_info",
		Help: "1, labelled with the build (version), the schema migrations it carries (schema) and the Go version."}, []string{"version", "schema", "goversion"})
	buildInfo.WithLabelValues(version, fmt.Sprintf("%03d", lastMigration()), runtime.Version()).Set(1)
	reg.MustRegister(buildInfo)
	// Which estimator each replica scores with: replicas that disagree
	// blend two estimators in every slice, by partition.
	estimatorInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "entrowatch_estimator_info",
		Help: "1, labelled with the version of the estimator artifact the stream scores with (the version of the log line \"estimator loaded\"; \"none\" without an estimator), once the stream has loaded it. Replicas of one deployment that disagree blend two estimators in the views."}, []string{"version"})
	reg.MustRegister(estimatorInfo)
	closeCtx := context.WithoutCancel(ctx)
	var closers []func() error // run in reverse order on return
	defer func() {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		err = errors.Join(append([]error{err}, errs...)...)
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	unlock, err := dirlock.Lock(cfg.DataDir, "data_dir")
	if err != nil {
		return err
	}
	closers = append(closers, unlock)
	// Bind the listeners first: a port in use fails now, not after the
	// broker and ClickHouse have started.
	var metricsLn, httpLn net.Listener
	if cfg.Metrics.Listen != "" {
		if metricsLn, err = listen("metrics", cfg.Metrics.Listen, "metrics.listen"); err != nil {
			return err
		}
		closers = append(closers, func() error { metricsLn.Close(); return nil })
	}
	if cfg.HTTP.Listen != "" {
		if httpLn, err = listen("ingest", cfg.HTTP.Listen, "http.listen"); err != nil {
			return err
		}
		httpLn = limitListener(httpLn, cfg.HTTP.MaxConnections)
		closers = append(closers, func() error { httpLn.Close(); return nil })
		if exposedWithoutToken(cfg.HTTP.Listen, cfg.HTTP.Token) {
			log.Warn("HTTP ingest listens beyond this host without a bearer token: anyone who reaches it can produce traces and labels; export a token in the variable named by http.token_env, or listen on 127.0.0.1",
				"listen", cfg.HTTP.Listen, "token_env", cfg.HTTP.TokenEnv)
		}
	}
	if cfg.Estimator == "" {
		estimatorInfo.WithLabelValues("none").Set(1)
		log.Warn("no estimator configured: p_correct stays null, so the accuracy views, accuracy alarms, the labeling queue and calibration stay empty; " +
			"train one with entrowatch train and set estimator: FILE (profiles are stored meanwhile; re-ingest to estimate them)")
	}

	// Health: the stream's (/readyz) and HTTP ingest's (/readyz/ingest),
	// each "" when ready, else why not; entrowatch_ready{component} says
	// the same to Prometheus, which cannot probe an endpoint itself.
	var (
		stream   atomic.Pointer[runner.Runner]
		starting atomic.Pointer[string] // what the stream waits for before it exists
		draining atomic.Bool
		kafkaOK  atomic.Bool // the brokers answer for the source topic (ingest's produce path)
		kafkaBad atomic.Bool // the last check found they do not (false before the first check)
		ingestH  atomic.Pointer[httpin.Handler]
	)
	setStarting := func(why string) { starting.Store(&why) }
	setStarting("starting (creating the topics on Kafka)")
	streamUnready := func() string {
		r := stream.Load()
		switch {
		case draining.Load():
			return "draining"
		case r == nil:
			return *starting.Load()
		}
		return r.Unready()
	}
	ingestUnready := func() string {
		switch {
		case cfg.HTTP.Listen == "":
			return "HTTP ingest is off (http.listen is empty)"
		case draining.Load():
			return "draining"
		case !kafkaOK.Load():
			return "Kafka does not answer for topic " + cfg.Source.Topic
		}
		if h := ingestH.Load(); h != nil && h.ProduceFailing(time.Now()) {
			return "producing to topic " + cfg.Source.Topic + " fails although Kafka answers (a broker out of disk space? see the log: http ingest produce failed)"
		}
		return ""
	}
	readyGauge := func(component string, unready func() string) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "entrowatch_ready",
			Help:        "1 while the component is ready, 0 while not: the stream as /readyz answers, HTTP ingest (only with http.listen set) as /readyz/ingest answers; their bodies say why not.",
			ConstLabels: prometheus.Labels{"component": component}},
			func() float64 {
				if unready() == "" {
					return 1
				}
				return 0
			})
	}
	reg.MustRegister(readyGauge("stream", streamUnready))
	if cfg.HTTP.Listen != "" {
		reg.MustRegister(readyGauge("ingest", ingestUnready))
	}
	if cfg.Metrics.Listen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		readyz := func(unready func() string) http.HandlerFunc {
			return func(w http.ResponseWriter, _ *http.Request) {
				if why := unready(); why != "" {
					http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
					return
				}
				fmt.Fprintln(w, "ready")
			}
		}
		mux.HandleFunc("/readyz", readyz(streamUnready))
		mux.HandleFunc("/readyz/ingest", readyz(ingestUnready))
		ms := startServer("metrics", metricsLn, mux, log)
		closers = append(closers, func() error { return ms.shutdown(closeCtx, ingestShutdownTimeout) })
	}

	embedded := len(cfg.Kafka.Brokers) == 0
	if embedded {
		brk, err := broker.Start(cfg.Broker, log)
		if err != nil {
			return err
		}
		closers = append(closers, func() error { return brk.Close(closeCtx) })
		cfg.Kafka.Brokers = []string{brk.Addr()}
	}
	topicsReady := createTopics
	if !cfg.CreateTopics {
		topicsReady = checkTopics
	}
	if err := topicsReady(ctx, cfg, log, setStarting); err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before the stream started", "err", err)
			return nil
		}
		return err
	}
	resetPastEnd(ctx, cfg, log)
	setStarting("starting (connecting to the sink)")

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(sctx)
	// streamCtx ends the stream; the shutdown sequence below cancels it
	// once HTTP ingest has stopped.
	streamCtx, stopStream := context.WithCancel(context.WithoutCancel(gctx))
	defer stopStream()
	fail := func(err error) error { // stop what already started
		stop()
		_ = g.Wait()
		return err
	}
	var ingest *server
	if cfg.HTTP.Listen != "" {
		pcfg := kafka.DefaultProducerConfig()
		pcfg.Topic = cfg.Source.Topic
		pcfg.BatchTimeout = cfg.HTTP.BatchTimeout
		hp, err := kafka.NewProducer(cfg.Kafka, pcfg, log)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, hp.Close)
		var lp *kafka.Producer
		hc := cfg.HTTP.Config
		hc.LabelsTopic = cfg.LabelsTopic
		hc.Profile = cfg.Profile // the endpoint refuses what the stream would dead-letter
		if cfg.LabelsTopic != "" {
			lcfg := pcfg
			lcfg.Topic = cfg.LabelsTopic
			if lp, err = kafka.NewProducer(cfg.Kafka, lcfg, log); err != nil {
				return fail(err)
			}
			closers = append(closers, lp.Close)
		}
		h, err := httpin.New(hc, httpIngest(cfg.Ingest, cfg.Profile), hp, lp, mem, log, reg)
		if err != nil {
			return fail(err)
		}
		h.FailFast(kafkaBad.Load)
		ingestH.Store(h)
		ingest = startServer("ingest", httpLn, h, log)
		g.Go(ingest.wait)
		g.Go(func() error { watchKafka(gctx, cfg, &kafkaOK, &kafkaBad, log); return nil })
	}
	g.Go(func() error {
		<-gctx.Done()
		draining.Store(true)
		signalled := ctx.Err() != nil // not a component failing
		if ingest != nil && signalled && cfg.HTTP.ShutdownDelay > 0 {
			log.Info("shutting down: /readyz and /readyz/ingest answer 503; HTTP ingest keeps serving for http.shutdown_delay so that load balancers stop sending first",
				"shutdown_delay", cfg.HTTP.ShutdownDelay)
			if !embedded {
				// The other replicas consume what ingest accepts meanwhile:
				// the stream leaves the group now, so that a rebalance in
				// the delay (another replica stopping) does not hand
				// partitions to a replica about to go, and the drain runs
				// beside the delay instead of after it. With the embedded
				// broker nobody else would read them: the stream goes on.
				stopStream()
			}
			time.Sleep(cfg.HTTP.ShutdownDelay)
		} else {
			log.Info("shutting down: /readyz answers 503")
		}
		var err error
		if ingest != nil {
			log.Info("HTTP ingest stops accepting and finishes its requests in flight", "timeout", ingestShutdownTimeout)
			err = ingest.shutdown(closeCtx, ingestShutdownTimeout)
		}
		stopStream() // the runner drains
		return err
	})

	connectErrs := prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_sink_connect_errors_total",
		Help: "Failed attempts to reach the sink (ClickHouse) at start; the stream's metrics exist only once it is reached."})
	reg.MustRegister(connectErrs)
	sink, where, err := newRunSink(gctx, cfg, mem, log, &closers, runSinkHooks{connectErr: connectErrs.Inc, managed: func(sup *clickhouse.Supervisor) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "entrowatch_clickhouse_managed_exits_total",
			Help: "Times the managed clickhouse-server exited on its own and was started again (killed, crashed, out of memory): a crash loop shows here."},
			func() float64 { return float64(sup.Exits()) }))
	}})
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before the stream started", "err", err)
			return fail(nil)
		}
		return fail(err)
	}
	closers = append(closers, func() error { return sink.Close(closeCtx) })
	if cs, ok := sink.(*clickhouse.Sink); ok {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "entrowatch_sink_insert_retries_total",
			Help: "ClickHouse inserts that failed and were retried (a hung server shows here after clickhouse.conn.read_timeout; entrowatch_stream_sink_errors_total counts the writes that failed after every retry)."},
			func() float64 { return float64(cs.Retries()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "entrowatch_sink_rejected_kept_scored_total",
			Help: "Rejected rows (dead-lettered) not written to ClickHouse because the table holds their trace scored: a broken copy of a response does not replace its estimate."},
			func() float64 { return float64(cs.KeptScored()) }))
	}

	dlq, err := kafka.NewProducer(cfg.Kafka, cfg.DeadLetter, log)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, dlq.Close)
	src, err := kafka.NewSource(cfg.Kafka, cfg.Source, log)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, src.Close)

	chain := runChain(cfg, mem, log)
	ops, err := chain() // fail before joining the group
	if err != nil {
		return fail(err)
	}
	for _, op := range ops {
		if e, ok := op.(*estimate.Operator); ok {
			names, fb := e.Models()
			estimatorInfo.WithLabelValues(e.Version()).Set(1)
			log.Info("estimator loaded", "file", cfg.Estimator, "version", e.Version(), "models", strings.Join(names, ","), "fallback", fb,
				"model_versions", modelVersions(e))
		}
	}
	r, err := runner.New(cfg.Stream, runner.Parts{Source: src, DeadLetter: dlq, Chain: chain, Sink: sink, Watermarks: src.Watermarks}, mem, log, reg)
	if err != nil {
		return fail(err)
	}
	stream.Store(r)

	g.Go(func() error {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		p := progressLog{log: log, json: cfg.LogFormat == "json"}
		for {
			select {
			case <-streamCtx.Done():
				return nil
			case <-t.C:
				p.tick(r.Stats())
			}
		}
	})
	log.Info("stream running", "brokers", strings.Join(cfg.Kafka.Brokers, ","), "topic", cfg.Source.Topic,
		"group", cfg.Source.Group, "dead_letter", cfg.DeadLetter.Topic, "sink", where, "metrics", cfg.Metrics.Listen, "http", cfg.HTTP.Listen)
	if cs, ok := sink.(*clickhouse.Sink); ok && cfg.LabelsTopic != "" {
		if err := followLabels(g, streamCtx, cfg, cs, mem, log, reg); err != nil {
			return fail(err)
		}
	} else if cfg.LabelsTopic != "" && cfg.HTTP.Listen != "" {
		log.Warn("labels posted to the ingest endpoint are kept in their topic but not stored: only the ClickHouse sink has a labels table (entrowatch labels import --topic stores them later)",
			"topic", cfg.LabelsTopic, "path", cfg.HTTP.LabelsPath)
	}
	g.Go(func() error {
		err := r.Run(streamCtx)
		// Drained and committed: leave the group now, so that the other
		// replicas take its partitions at once, not when the process ends
		// (after http.shutdown_delay and ingest's shutdown, while ingest
		// may still be producing to those partitions).
		return errors.Join(err, src.Close())
	})
	err = g.Wait()
	st := r.Stats()
	level := slog.LevelInfo
	if err != nil { // e.g. a drain that timed out: in-flight messages abandoned
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "stream stopped", "messages", st.Messages, "rows", st.Rows, "written", st.SinkRows,
		deadLetteredAttr(st.DeadLettered, cfg.LogFormat == "json"), "commits", st.Commits)
	return err
}

// labelsGroup is the consumer group that stores the labels topic's labels.
const labelsGroup = "entrowatch-labels"

// resetPastEnd moves the groups' committed offsets that lie past their
// partition's end back to the log start, before the consumers join: the
// broker lost the partition's log (the embedded broker killed after
// retention emptied the partition: its offsets are kept only by a clean
// stop), and the messages produced since would never be read. A group with
// members (other replicas running) refuses it: the stream then logs the
// position past the end at ERROR, with how to reset by hand.
func resetPastEnd(ctx context.Context, cfg runConfig, log *slog.Logger) {
	groups := [][2]string{{cfg.Source.Topic, cfg.Source.Group}}
	if cfg.LabelsTopic != "" {
		groups = append(groups, [2]string{cfg.LabelsTopic, labelsGroup})
	}
	for _, tg := range groups {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		resets, err := kafka.ResetPastEnd(cctx, cfg.Kafka, tg[0], tg[1])
		cancel()
		for _, r := range resets {
			log.Error("the group's committed offset was past the end of the partition (the broker lost its log: the embedded broker killed after retention emptied it, or the topic deleted and created again): the group resumes at the log start, so that the messages produced since are read",
				"topic", tg[0], "group", tg[1], "partition", r.Partition, "committed", r.From, "end", r.End, "resume_at", r.To, "reset", err == nil)
		}
		if err != nil && len(resets) > 0 {
			log.Error("could not move the group's offsets past the partitions' end", "topic", tg[0], "group", tg[1], "err", err)
		}
	}
}

// runTopics are the topics run uses: the source, the dead-letter and,
// unless off, the labels topic.
func runTopics(cfg runConfig) []string {
	topics := []string{cfg.Source.Topic, cfg.DeadLetter.Topic}
	if cfg.LabelsTopic != "" {
		topics = append(topics, cfg.LabelsTopic)
	}
	return topics
}

// checkTopics is createTopics with create_topics off: the topics must exist
// already. One missing ends run at once, naming it: the stream would wait
// on a missing source or labels topic quietly, and on a missing
// dead-letter topic hold the partition of the first bad response, good
// responses too, maybe days after the rollout. While Kafka cannot be
// reached it retries, as createTopics does.
func checkTopics(ctx context.Context, cfg runConfig, log *slog.Logger, unready func(string)) error {
	topics := runTopics(cfg)
	brokers := strings.Join(cfg.Kafka.Brokers, ",")
	var missing []string
	_, err := retryAtStart(ctx, cfg.Stream, log, startRetry{
		what:  "Kafka",
		final: func(err error) bool { return kafka.Answered(err) || errors.Is(err, kafka.ErrUnknownTopic) },
		onErr: func(err error) {
			unready("starting (checking the topics): Kafka not reachable, retrying: " + err.Error())
		},
		attrs: []any{"brokers", brokers, "checking", strings.Join(topics, ",")},
	}, func() (struct{}, error) {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		missing = nil
		for _, t := range topics {
			err := kafka.CheckTopic(tctx, cfg.Kafka, t)
			switch {
			case errors.Is(err, kafka.ErrUnknownTopic):
				missing = append(missing, t)
			case err != nil:
				return struct{}{}, err
			}
		}
		if len(missing) > 0 {
			return struct{}{}, fmt.Errorf("%w: %s", kafka.ErrUnknownTopic, strings.Join(missing, ", "))
		}
		return struct{}{}, nil
	})
	if errors.Is(err, kafka.ErrUnknownTopic) {
		what, it := "a topic run uses does not", "it"
		if len(missing) > 1 {
			what, it = fmt.Sprintf("%d topics run uses do not", len(missing)), "them"
		}
		need := max(cfg.DeadLetter.TopicMessageBytes(), kafka.DefaultProducerConfig().TopicMessageBytes())
		hint := fmt.Sprintf(" with max.message.bytes of at least %d (the producers' record batches, batch_bytes, plus a header)", need)
		return fmt.Errorf("create_topics is false and %s exist on %s: %w; create %s%s, or set create_topics: true", what, brokers, err, it, hint)
	}
	if err != nil {
		return fmt.Errorf("checking the topics %s on %s: %w", strings.Join(topics, ", "), brokers, err)
	}
	return nil
}

// createTopics creates the source, dead-letter and labels topics where
// they are missing (create_topics). While Kafka cannot be reached it
// retries (retryAtStart, as the ClickHouse connect does) and unready says
// why for /readyz; an error the brokers answered ends it at once, with the
// hint to turn create_topics off when they refused to create a topic.
func createTopics(ctx context.Context, cfg runConfig, log *slog.Logger, unready func(string)) error {
	topics := runTopics(cfg)
	brokers := strings.Join(cfg.Kafka.Brokers, ",")
	_, err := retryAtStart(ctx, cfg.Stream, log, startRetry{
		what:  "Kafka",
		final: kafka.Answered,
		onErr: func(err error) {
			unready("starting (creating the topics): Kafka not reachable, retrying: " + err.Error())
		},
		attrs: []any{"brokers", brokers, "creating", strings.Join(topics, ",")},
	}, func() (struct{}, error) {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return struct{}{}, kafka.EnsureTopics(tctx, cfg.Kafka, cfg.Partitions, topics...)
	})
	if err == nil {
		return nil
	}
	hint := ""
	if errors.Is(err, kafka.ErrTopicRefused) {
		hint = " (when the topics exist and this user may not create topics, set create_topics: false)"
	}
	return fmt.Errorf("create_topics: creating %s on %s: %w%s", strings.Join(topics, ", "), brokers, err, hint)
}

// modelVersions lists, for the log, the estimator_version each model of
// the estimator writes to its rows (its content hash, not the artifact's
// version): "model-a=sha256:…,*=sha256:…", sorted by model.
func modelVersions(e *estimate.Operator) string {
	vs := e.ModelVersions()
	parts := make([]string, 0, len(vs))
	for _, name := range slices.Sorted(maps.Keys(vs)) {
		parts = append(parts, name+"="+vs[name])
	}
	return strings.Join(parts, ",")
}

// runChain returns the builder of the stream's operator chain, called once
// per worker: profile, then estimate and clustertag when configured. The
// estimate operators of all workers share one logger that says a warning
// about a model once (each worker's operator warned once per model).
func runChain(cfg runConfig, mem memory.Allocator, log *slog.Logger) func() ([]streams.Operator, error) {
	estLog := slog.New(oncePerModel{Handler: log.Handler(), seen: &onceSet{m: map[string]bool{}}})
	return func() ([]streams.Operator, error) {
		p, err := profile.New(cfg.Profile, mem, log)
		if err != nil {
			return nil, err
		}
		ops := []streams.Operator{p}
		if cfg.Estimator != "" {
			op, err := newEstimateOperator(cfg.Estimator, mem, estLog)
			if err != nil {
				return nil, fmt.Errorf("estimator %s: %w", cfg.Estimator, err)
			}
			ops = append(ops, op)
		}
		if cfg.Clusters != "" {
			op, err := newClusterOperator(cfg.Clusters, string(cfg.ClustersDomainFrom), mem, log)
			if err != nil {
				return nil, fmt.Errorf("clusters %s: %w", cfg.Clusters, err)
			}
			ops = append(ops, op)
		}
		return ops, nil
	}
}

// oncePerModel passes a warning that names a model (the attribute "model")
// once per message and model, whichever logger of the handler's copies
// writes it; other records pass.
type oncePerModel struct {
	slog.Handler
	seen *onceSet
}

// onceSet is the warnings oncePerModel passed, up to maxOnce of them
// (beyond, every warning passes: the operators bound theirs too).
type onceSet struct {
	mu sync.Mutex
	m  map[string]bool
}

const maxOnce = 10000

// first records key and reports whether it is new.
func (s *onceSet) first(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[key] {
		return false
	}
	if len(s.m) < maxOnce {
		s.m[key] = true
	}
	return true
}

func (h oncePerModel) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		model, named := "", false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "model" {
				model, named = a.Value.String(), true
				return false
			}
			return true
		})
		if named && !h.seen.first(r.Message+"\x00"+model) {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h oncePerModel) WithAttrs(as []slog.Attr) slog.Handler {
	return oncePerModel{h.Handler.WithAttrs(as), h.seen}
}

func (h oncePerModel) WithGroup(n string) slog.Handler {
	return oncePerModel{h.Handler.WithGroup(n), h.seen}
}

// progressLog writes the "stream progress" line at each tick, unless
// nothing changed since the line before (an idle replica wrote the same
// line every 30 s).
type progressLog struct {
	log    *slog.Logger
	json   bool // log_format json: the dead-letter counts as an object
	last   runner.Stats
	logged bool
}

func (p *progressLog) tick(st runner.Stats) {
	if p.logged && st.Messages == p.last.Messages && st.Rows == p.last.Rows && st.SinkRows == p.last.SinkRows &&
		maps.Equal(st.DeadLettered, p.last.DeadLettered) {
		return
	}
	p.last, p.logged = st, true
	p.log.Info("stream progress", "messages", st.Messages, "rows", st.Rows, "written", st.SinkRows, deadLetteredAttr(st.DeadLettered, p.json))
}

// deadLetteredAttr is the dead-letter counts by reason of a log line:
// dead_lettered="3 (empty 1, nan_logprob 2)" in text, and in JSON an object
// that log pipelines can aggregate:
// "dead_lettered":{"total":3,"by_reason":{"empty":1,"nan_logprob":2}}.
func deadLetteredAttr(m map[string]int64, json bool) slog.Attr {
	if !json {
		return slog.String("dead_lettered", countsText(m))
	}
	var total int64
	reasons := make([]string, 0, len(m))
	for k, v := range m {
		total += v
		if v > 0 {
			reasons = append(reasons, k)
		}
	}
	slices.Sort(reasons)
	by := make([]any, len(reasons))
	for i, k := range reasons {
		by[i] = slog.Int64(k, m[k])
	}
	return slog.Group("dead_lettered", slog.Int64("total", total), slog.Group("by_reason", by...))
}

// watchKafka checks every few seconds that the brokers answer for the
// source topic, the produce path of HTTP ingest, until ctx is done, and
// logs the changes.
func watchKafka(ctx context.Context, cfg runConfig, ok, bad *atomic.Bool, log *slog.Logger) {
	const every = 5 * time.Second
	first := true
	for {
		cctx, cancel := context.WithTimeout(ctx, every)
		err := kafka.CheckTopic(cctx, cfg.Kafka, cfg.Source.Topic)
		cancel()
		if ctx.Err() != nil {
			return
		}
		bad.Store(err != nil)
		switch was := ok.Swap(err == nil); {
		case err != nil && (was || first):
			log.Warn("HTTP ingest not ready: Kafka does not answer for the topic it produces to", "topic", cfg.Source.Topic, "err", err)
		case err == nil && !was && !first:
			log.Info("HTTP ingest ready again: Kafka answers", "topic", cfg.Source.Topic)
		}
		first = false
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// followLabels stores the labels topic's labels through the ClickHouse sink's
// connection until ctx ends.
func followLabels(g *errgroup.Group, ctx context.Context, cfg runConfig, cs *clickhouse.Sink, mem memory.Allocator, log *slog.Logger, reg prometheus.Registerer) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	if err := kafka.CheckTopic(cctx, cfg.Kafka, cfg.LabelsTopic); err != nil {
		// The consumer would wait quietly; say it once, and wait anyway (the
		// topic may be created later).
		log.Warn("labels topic not usable yet; labels will be stored once it is (create it, or set labels_topic: \"\" to turn labels off)",
			"topic", cfg.LabelsTopic, "err", err)
	}
	cancel()
	sc := cfg.Source
	sc.Topic, sc.Group = cfg.LabelsTopic, labelsGroup
	src, err := kafka.NewSource(cfg.Kafka, sc, log)
	if err != nil {
		return fmt.Errorf("labels topic: %w", err)
	}
	stored := prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_labels_stored_total",
		Help: "Labels from the labels topic stored in ClickHouse."})
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_labels_dropped_messages_total",
		Help: "Messages of the labels topic of which no label was stored: not labels, or no valid label (logged and skipped)."})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "entrowatch_labels_refused_total",
		Help: "Invalid labels of labels topic messages, by reason (the field at fault, or malformed): logged with their offset and line or row, not stored; the message's valid labels are."}, []string{"reason"})
	for _, r := range clickhouse.LabelRefusalReasons() {
		refused.WithLabelValues(r) // every reason's series from the start, at 0
	}
	insertErrs := prometheus.NewCounter(prometheus.CounterOpts{Name: "entrowatch_labels_insert_errors_total",
		Help: "Failed inserts of labels into ClickHouse (each retried until it succeeds; nothing is committed meanwhile)."})
	// The labels consumer's lag: labels not yet stored and committed
	// (assigned partitions' high watermark minus the group's committed
	// offset), refreshed every stream.lag_interval like the stream's.
	lag := prometheus.NewGauge(prometheus.GaugeOpts{Name: "entrowatch_labels_lag_messages",
		Help: "Messages of the labels topic not yet stored and committed by this replica's labels consumer (its partitions' high watermark minus the group's committed offset)."})
	for _, c := range []prometheus.Collector{stored, dropped, refused, insertErrs, lag} {
		if err := reg.Register(c); err != nil {
			src.Close()
			return err
		}
	}
	g.Go(func() error {
		defer src.Close()
		err := cs.FollowLabels(ctx, src, mem, log, clickhouse.FollowCounters{
			Stored: func(n int) { stored.Add(float64(n)) }, Dropped: dropped.Inc, Errors: insertErrs.Inc,
			Refused: func(reason string, n int) { refused.WithLabelValues(reason).Add(float64(n)) }})
		if err != nil { // the brokers refuse the consumer: run stops, as for the stream's
			return fmt.Errorf("topic %s, group %s: %w", cfg.LabelsTopic, labelsGroup, err)
		}
		return nil
	})
	g.Go(func() error {
		t := time.NewTicker(cfg.Stream.LagInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			w, err := src.Watermarks(ctx)
			if err != nil {
				continue // a rebalance or an outage: the next tick tries again
			}
			var n int64
			for _, p := range w {
				n += max(0, p.High-p.Next)
			}
			lag.Set(float64(n))
		}
	})
	log.Info("storing labels", "topic", cfg.LabelsTopic, "group", sc.Group)
	return nil
}

// runSinkHooks tell run about the sink newRunSink opens: connectErr on each
// failed attempt to reach ClickHouse at start, managed with the supervisor of
// a managed clickhouse-server. Either may be nil.
type runSinkHooks struct {
	connectErr func()
	managed    func(*clickhouse.Supervisor)
}

// newRunSink opens the configured sink; what it starts besides (a managed
// ClickHouse server) is appended to closers. Adding a sink is one case here.
func newRunSink(ctx context.Context, cfg runConfig, mem memory.Allocator, log *slog.Logger, closers *[]func() error, hooks runSinkHooks) (streams.Sink, string, error) {
	if cfg.Sink == "auto" {
		cfg.Sink = "file"
		if _, err := clickhouse.FindServerBinary(); cfg.ClickHouse.Conn.DSN != "" || err == nil {
			cfg.Sink = "clickhouse"
		} else {
			log.Warn("no clickhouse-server installed and no clickhouse.conn.dsn: writing scored rows to Arrow files under data_dir instead (make deps installs the server; sink: file silences this)")
		}
	}
	switch cfg.Sink {
	case "file":
		fc := cfg.File
		if fc.Path == "" {
			fc.Path = filepath.Join(cfg.DataDir, "scored-"+time.Now().UTC().Format("20060102T150405Z")+".arrow")
		}
		if fc.Path != "-" {
			if err := os.MkdirAll(filepath.Dir(fc.Path), 0o755); err != nil {
				return nil, "", fmt.Errorf("file sink directory: %w", err)
			}
		}
		// A fixed path keeps what earlier runs wrote there: their offsets
		// are committed, so those rows would never come back.
		fc.Append = true
		s, err := file.New(fc, mem)
		if err != nil {
			return nil, "", err
		}
		return s, fc.Path, nil
	case "clickhouse":
		cc := cfg.ClickHouse.Conn
		if cc.DSN == "" {
			lc := clickhouse.DefaultLocalConfig()
			lc.Dir = filepath.Join(cfg.DataDir, "clickhouse")
			srv, err := clickhouse.StartLocal(ctx, lc, log)
			if err != nil {
				return nil, "", fmt.Errorf("starting the managed clickhouse-server (set clickhouse.conn.dsn to use your own): %w", err)
			}
			sup := clickhouse.Supervise(srv, lc, log) // restarted on the same ports if it dies
			*closers = append(*closers, sup.Stop)
			if hooks.managed != nil {
				hooks.managed(sup)
			}
			cc.DSN = srv.DSN()
			log.Info("managed clickhouse-server ready (its ports stay the same across restarts while free)", "dsn", cc.DSN,
				"query_with", fmt.Sprintf("clickhouse-client --port %d", srv.TCPPort()), "dir", srv.Dir())
		}
		s, err := connectClickHouse(ctx, cfg, cc, log, hooks.connectErr)
		if err != nil {
			return nil, "", err
		}
		where := redactDSN(cc.DSN)
		if cc.Database != "" {
			where += " (database " + cc.Database + ")"
		}
		return s, where, nil
	}
	return nil, "", fmt.Errorf("sink %q: want file or clickhouse", cfg.Sink)
}

// connectClickHouse migrates (when configured) and opens the sink. While
// the server cannot be reached it retries (retryAtStart) until ctx ends: at
// start a ClickHouse outage is what it is mid-stream, not a crash loop. An
// error the server answered (wrong password, unknown database, missing
// table: run entrowatch migrate) ends it at once.
func connectClickHouse(ctx context.Context, cfg runConfig, cc clickhouse.Config, log *slog.Logger, onErr func()) (*clickhouse.Sink, error) {
	connect := func() (*clickhouse.Sink, error) {
		var newer uint32
		if cfg.ClickHouse.Migrate {
			res, err := clickhouse.Migrate(ctx, cc, log)
			if err != nil {
				return nil, err
			}
			newer = res.Newer
		} else {
			// Replicas leave migrating to a job: one that did not run
			// (or not yet) is an error that says so, not a start on a
			// schema this build does not know (labels then failed for
			// ever while /readyz said ready).
			var err error
			if newer, err = clickhouse.CheckSchemaAt(ctx, cc); err != nil {
				return nil, err
			}
		}
		if newer > 0 {
			log.Warn("the database was migrated by a newer entrowatch: this build writes and reads it with its own migrations' columns and views (see docs/deploy.md, Upgrades and rollback)",
				"database_version", newer, "build_version", lastMigration())
		}
		// The stream retries failed writes and logs each attempt: the
		// sink's own retries of one write go to DEBUG.
		return clickhouse.NewSink(ctx, cc, slog.New(retryDebug{log.Handler()}))
	}
	return retryAtStart(ctx, cfg.Stream, log, startRetry{
		what:  "clickhouse",
		final: func(err error) bool { return answered(err) || errors.Is(err, clickhouse.ErrNotMigrated) },
		onErr: func(error) {
			if onErr != nil {
				onErr()
			}
		},
	}, connect)
}

// startRetry says what retryAtStart waits for: what is named in its log
// lines ("<what> not reachable; retrying", "<what> reachable"), final tells
// the errors retrying cannot fix (nil: none), onErr (optional) hears of
// each failed attempt before the wait, attrs are added to the WARN lines.
type startRetry struct {
	what  string
	final func(error) bool
	onErr func(error)
	attrs []any
}

// retryAtStart calls try until it succeeds, ctx ends or an error is final.
// After each failure it logs the attempt at WARN with the error and waits
// stream.sink_backoff_min, doubling up to sink_backoff_max (the backoff of
// the stream's own retries); a success after failures is logged at INFO.
// A dependency that is down when run starts (ClickHouse, Kafka) is waited
// for as it is mid-stream, with /readyz at 503, not a crash loop; SIGTERM
// (ctx) ends the wait at once.
func retryAtStart[T any](ctx context.Context, sc runner.Config, log *slog.Logger, r startRetry, try func() (T, error)) (T, error) {
	wait := sc.SinkBackoffMin
	for attempt := 1; ; attempt++ {
		v, err := try()
		if err == nil {
			if attempt > 1 {
				log.Info(r.what+" reachable", "attempts", attempt)
			}
			return v, nil
		}
		if ctx.Err() != nil || (r.final != nil && r.final(err)) {
			return v, err
		}
		if r.onErr != nil {
			r.onErr(err)
		}
		log.Warn(r.what+" not reachable; retrying (/readyz answers 503 meanwhile)",
			append([]any{"attempt", attempt, "backoff", wait, "err", err}, r.attrs...)...)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, fmt.Errorf("waiting for %s: %w (last error: %v)", r.what, ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, sc.SinkBackoffMax)
	}
}

// answered reports an error the ClickHouse server itself returned (an
// exception: authentication, unknown database or table...): retrying the
// same connection cannot fix it.
func answered(err error) bool {
	var ex *chgo.Exception
	return errors.As(err, &ex)
}

// redactDSN hides the password of a DSN for logs.
func redactDSN(dsn string) string {
	// The userinfo's password and the password query parameter alike
	// (url.URL.Redacted leaves ?password= as it is).
	return clickhouse.RedactDSN(dsn)
}

// listen binds addr for the named server; key is its config key, for the
// message when the address is taken.
func listen(name, addr, key string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		hint := ""
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = fmt.Sprintf(" (another process, perhaps another entrowatch run, listens there: set %s to a free address, or \"\" to turn the %s server off)", key, name)
		}
		return nil, fmt.Errorf("%s server: listen %s: %w%s", name, addr, err, hint)
	}
	return ln, nil
}

// newHTTPServer bounds what a client may hold without sending anything: 10 s
// for the headers of a request (handlers bound their bodies: http.body_timeout)
// and a minute for an idle keep-alive connection.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
}

// server is one HTTP server of run.
type server struct {
	name string
	srv  *http.Server
	done chan error
}

// startServer serves h on ln until shutdown.
func startServer(name string, ln net.Listener, h http.Handler, log *slog.Logger) *server {
	s := &server{name: name, srv: newHTTPServer(h), done: make(chan error, 1)}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else if err != nil {
			err = fmt.Errorf("%s server: %w", name, err)
		}
		s.done <- err
	}()
	log.Info(name+" server listening", "addr", ln.Addr().String())
	return s
}

// wait returns when the server stopped serving.
func (s *server) wait() error {
	err := <-s.done
	s.done <- err // for shutdown
	return err
}

// shutdown closes the listener and waits up to timeout for the requests in
// flight to finish.
func (s *server) shutdown(ctx context.Context, timeout time.Duration) error {
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close()
		return fmt.Errorf("%s server: shutdown: %w", s.name, err)
	}
	return s.wait()
}

// countsText renders counts by reason for a log line: "0", or
// "3 (empty 1, nan_logprob 2)".
func countsText(m map[string]int64) string {
	var total int64
	for _, v := range m {
		total += v
	}
	if total == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", total, reasonsText(m))
}

// reasonsText lists the non-zero counts by reason, sorted: "empty 1,
// nan_logprob 2".
func reasonsText(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v > 0 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// httpIngest is the ingest configuration of the HTTP endpoint: a streamed
// response is never cut short while its chunks are joined when the profile
// operator would accept its length (profile.max_steps above ingest.max_steps).
func httpIngest(in ingest.Config, prof profile.Config) ingest.Config {
	in.MaxSteps = max(in.MaxSteps, prof.MaxSteps)
	in.MaxHeldSteps = max(in.MaxHeldSteps, in.MaxSteps)
	return in
}

// yamlLine matches one message of a yaml.TypeError.
var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// explainYAML names the key of each type error in a config file (yaml.v3
// gives the line and Go's type: "line 12: cannot unmarshal !!int `30` into
// time.Duration") and says what a duration or a number looks like.
func explainYAML(src []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var root yaml.Node
	if yaml.Unmarshal(src, &root) != nil {
		return err
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		sub := yamlLine.FindStringSubmatch(m)
		if sub == nil {
			msgs = append(msgs, m)
			continue
		}
		line, _ := strconv.Atoi(sub[1])
		msg := "line " + sub[1]
		key := yamlKeyAt(&root, line, "")
		if u := unknownField.FindStringSubmatch(sub[2]); u != nil {
			if key == "" {
				key = u[1]
			}
			msg += ": unknown key " + key
			if near := nearestKey(key, u[1]); near != "" {
				msg += " (did you mean " + strings.TrimSuffix(key, u[1]) + near + "?)"
			}
			msgs = append(msgs, msg)
			continue
		}
		if key != "" {
			msg += ", " + key
		}
		msg += ": " + sub[2]
		switch {
		case strings.Contains(sub[2], "time.Duration"):
			msg += " (a duration needs a unit: 30s, 5m, 1h)"
		case strings.Contains(sub[2], "into int") || strings.Contains(sub[2], "into uint") || strings.Contains(sub[2], "into float"):
			msg += " (want a number)"
		case strings.Contains(sub[2], "into bool"):
			msg += " (want true or false)"
		}
		msgs = append(msgs, msg)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// unknownField matches yaml's error for a key that the config does not have.
var unknownField = regexp.MustCompile(`^field (\S+) not found in type .+$`) // the type may be an anonymous struct, with blanks

// nearestKey returns the config key next to the unknown one at the dotted
// path key that is closest to name in spelling (at most a third of its
// letters changed), or "".
func nearestKey(key, name string) string {
	b, err := yaml.Marshal(defaultRunConfig())
	if err != nil {
		return ""
	}
	var tree map[string]any
	if yaml.Unmarshal(b, &tree) != nil {
		return ""
	}
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		sub, ok := tree[p].(map[string]any)
		if !ok {
			return ""
		}
		tree = sub
	}
	best, bestD := "", len(name)/3+1
	for k := range tree {
		if d := editDistance(k, name); d < bestD || (d == bestD && best != "" && k < best) {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// yamlKeyAt returns the dotted key whose value starts at line, or "".
func yamlKeyAt(n *yaml.Node, line int, prefix string) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if k := yamlKeyAt(c, line, prefix); k != "" {
				return k
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			name := key.Value
			if prefix != "" {
				name = prefix + "." + name
			}
			if val.Line == line && val.Kind == yaml.ScalarNode {
				return name
			}
			if k := yamlKeyAt(val, line, name); k != "" {
				return k
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if c.Line == line && c.Kind == yaml.ScalarNode {
				return fmt.Sprintf("%s[%d]", prefix, i)
			}
			if k := yamlKeyAt(c, line, fmt.Sprintf("%s[%d]", prefix, i)); k != "" {
				return k
			}
		}
	}
	return ""
}

// checkListenAddr checks a host:port to listen on before anything starts.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, e.g. 0.0.0.0:8080 (%w)", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q: want a number from 0 to 65535", port)
	}
	return nil
}

// lastMigration is the version of this build's newest schema migration.
func lastMigration() uint32 {
	ms, err := clickhouse.Migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}
