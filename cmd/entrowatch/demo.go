package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	demodata "github.com/entrowatch/entrowatch/deploy/demo"
	"github.com/entrowatch/entrowatch/operators/estimate"
	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/kafka"
	"github.com/entrowatch/entrowatch/streams/runner"
)

const demoSynopsis = `[--speed N] [--events N] [--data DIR] [--keep] [--degrade DOMAIN --into DOMAIN --degrade-at DURATION --surge F] [--traces FILE] [--clickhouse DSN]

The whole loop on bundled real traces (a sample of the tinylm data: a 4 M
parameter model answering 8 task families of very different difficulty):

 1. trains an estimator of P(correct) on 40% of the prompts of every domain;
 2. starts the embedded Kafka-protocol broker, a managed local clickhouse-server
    (needs clickhouse-server; make deps-server installs it) and one stream replica
    (profile -> estimate -> ClickHouse);
 3. replays the other prompts as live traffic over a simulated day in which one
    domain degrades: from --degrade-at on, a new tenant sends (--surge - 1)
    times the domain's usual traffic, all prompts of a harder domain (--into),
    reported under the degrading domain's name;
 4. shows, refreshed every second, estimated vs true accuracy per domain over
    the last hour with 95% intervals, the alarms firing and the labeling queue;
 5. labels the 200 responses the queue asks for (from the truth it withheld)
    and reads the calibration view on them;
 6. ends with a summary (AEE and Spearman rho over domains, alarm latency in
    simulated time, throughput) and the clickhouse-client commands to explore
    the data. Ctrl-C stops everything and removes what the demo created
    (except the directory given with --data).`

// demoConfig is what the flags of entrowatch demo set.
type demoConfig struct {
	Speed      float64       // simulated seconds per real second; 0 = as fast as possible
	Events     int           // responses replayed over the simulated day
	Day        time.Duration // simulated length (24h)
	Degrade    string
	Into       string
	At         time.Duration
	Surge      float64
	TrainFrac  float64
	Traces     string // "" = the bundled sample
	DataDir    string // "" = a temporary directory, removed at the end
	Keep       bool
	DSN        string // "" = managed local clickhouse-server
	Database   string
	Refresh    time.Duration
	Plain      bool // never redraw in place
	Seed       uint64
	MinN       int // alarm_settings.min_n; 0 = derived from the traffic
	WaitTarget time.Duration
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", demoSynopsis, stderr)
	c := demoConfig{Day: 24 * time.Hour, TrainFrac: 0.4, Database: "entrowatch_demo", WaitTarget: 2 * time.Minute}
	fs.Float64Var(&c.Speed, "speed", 720, "simulated seconds per real second (720: the day takes 2 minutes); 0, or a speed that would replay the day within a quarter second, replays as fast as the stream takes it")
	fs.IntVar(&c.Events, "events", 24000, "responses replayed over the simulated day (drawn with replacement from the replay prompts)")
	fs.StringVar(&c.Degrade, "degrade", "add2", "the domain that degrades")
	fs.StringVar(&c.Into, "into", "add4", "the harder domain whose prompts the degrading domain receives")
	fs.DurationVar(&c.At, "degrade-at", 12*time.Hour, "when in the simulated day the degradation starts")
	fs.Float64Var(&c.Surge, "surge", 4, "traffic of the degrading domain once degraded, as a multiple of its usual traffic (> 1; the extra is --into prompts)")
	fs.StringVar(&c.Traces, "traces", "", "labelled responses to replay instead of the bundled sample: OpenAI JSON Lines (.gz ok) with domain and correct")
	fs.StringVar(&c.DataDir, "data", "", "directory for the estimator, ClickHouse's data and logs (default: a temporary directory, removed at the end)")
	fs.BoolVar(&c.Keep, "keep", false, "keep ClickHouse running after the summary, until Ctrl-C, to explore the data with clickhouse-client (with --data the data also stays afterwards)")
	fs.StringVar(&c.DSN, "clickhouse", "", "use this ClickHouse (clickhouse://host:9000) instead of a managed local server; the demo replaces its database entrowatch_demo")
	fs.DurationVar(&c.Refresh, "refresh", time.Second, "how often the live table is redrawn (real time)")
	fs.BoolVar(&c.Plain, "plain", false, "print the live table once per simulated hour instead of redrawing it in place (the default when stdout is not a terminal)")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed of the simulated traffic")
	fs.IntVar(&c.MinN, "min-n", 0, "fewest responses per domain and window before alarms evaluate (default: from the traffic, at most 50)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the demo to FILE (go tool pprof)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	if !(c.Speed >= 0) || math.IsInf(c.Speed, 0) { // NaN too
		return badFlag("--speed %g: want a number >= 0 (0 = as fast as possible)", c.Speed)
	}
	if c.Refresh <= 0 {
		return badFlag("--refresh %v: want > 0", c.Refresh)
	}
	if c.MinN < 0 {
		return badFlag("--min-n %d: want >= 0", c.MinN)
	}
	if !c.Plain {
		c.Plain = !isTerminal(stdout)
	}
	return demo(ctx, c, stdout, stderr)
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// demo runs the whole loop. Start order: data, estimator, ClickHouse
// (server, schema, settings), broker and topics, sink, stream replica,
// producer, then the replay and the display. Stop order (deferred, reverse):
// the replica drains and commits, producers and source close, the sink
// closes, the broker stops, ClickHouse stops, the temporary directory goes.
func demo(ctx context.Context, c demoConfig, stdout, stderr io.Writer) (err error) {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mem := memory.NewGoAllocator()
	say := func(format string, a ...any) { fmt.Fprintf(stderr, "demo: "+format+"\n", a...) }
	closeCtx := context.WithoutCancel(ctx)
	var closers []func() error
	defer func() {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		err = errors.Join(append([]error{err}, errs...)...)
	}()

	dir := c.DataDir
	if dir == "" {
		if dir, err = os.MkdirTemp(demoTempRoot(), "entrowatch-demo-"); err != nil {
			return err
		}
		closers = append(closers, func() error { return os.RemoveAll(dir) })
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--data %s: %w", dir, err)
	}

	// Data and estimator.
	pool, src, err := openDemoPool(c)
	if err != nil {
		return err
	}
	sc := scenario{Start: demoDayStart(time.Now()), Day: c.Day, Events: c.Events, Degrade: c.Degrade, Into: c.Into,
		At: c.At, Surge: c.Surge, Tenants: []string{"acme", "globex", "initech"}, Seed: c.Seed}
	if err := sc.validate(pool); err != nil {
		return err
	}
	say("%s: %d responses of %s in %d domains; training on %d, replaying the other prompts as %d responses over a simulated day",
		src, len(pool.Train)+countReplay(pool), strings.Join(pool.Models, ","), len(pool.Domains), len(pool.Train), c.Events)
	t0 := time.Now()
	set, err := demoTrain(ctx, pool, mem, log)
	if err != nil {
		return err
	}
	estPath := filepath.Join(dir, "estimator.json")
	if err := set.Save(estPath); err != nil {
		return fmt.Errorf("writing the estimator: %w", err)
	}
	for _, name := range pool.Models {
		m := set.Models[name]
		say("trained %s: %s+%s on %s, out-of-fold AUROC %.3f (%d rows, %.2fs) -> %s",
			name, m.Family, m.Calibration, strings.Join(m.Features, ","), m.Metrics.AUROC, m.Rows, time.Since(t0).Seconds(), estPath)
	}

	// ClickHouse.
	cc := clickhouse.DefaultConfig()
	cc.Database = c.Database
	chPort := 9000
	if c.DSN == "" {
		lc := clickhouse.DefaultLocalConfig()
		lc.Dir = filepath.Join(dir, "clickhouse")
		say("starting clickhouse-server under %s...", lc.Dir)
		srv, err := clickhouse.StartLocal(ctx, lc, log)
		if err != nil {
			if errors.Is(err, clickhouse.ErrNoServerBinary) {
				return fmt.Errorf("%w; `make deps-server` installs it (apt), or point --clickhouse at a running server", err)
			}
			return err
		}
		closers = append(closers, srv.Stop)
		cc.DSN = srv.DSN()
		chPort = srv.TCPPort()
	} else {
		cc.DSN = c.DSN
		if p, ok := dsnPort(c.DSN); ok {
			chPort = p
		}
	}
	admin := cc
	admin.Database = "default"
	db, err := clickhouse.Open(ctx, admin)
	if err != nil {
		return err
	}
	closers = append(closers, db.Close)
	if err := db.Exec(ctx, "DROP DATABASE IF EXISTS "+c.Database); err != nil {
		return fmt.Errorf("clickhouse: dropping the previous demo database: %w", err)
	}
	if _, err := clickhouse.Migrate(ctx, cc, log); err != nil {
		return err
	}
	minN := c.MinN
	if minN == 0 {
		perWindow := c.Events * 3600 / int(c.Day/time.Second) / len(pool.Domains)
		minN = max(10, min(50, perWindow/2))
	}
	if err := db.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.alarm_settings (updated_at, window_s, baseline_windows, lookback_windows, min_n,
    drop_k, min_drop, psi_bin_width, psi_threshold, cusum_k, cusum_h, calib_k, calib_min_gap,
    calib_min_labels, surge_k, surge_min_increase, queue_lookback_s)
SELECT toDateTime(%d, 'UTC'), 3600, 6, 48, %d, 3, 0.05, 0.1, 0.25, 0.5, 5, 3, 0.05, 30, 4, 0.1, 10800`,
		c.Database, sc.Start.Unix(), minN)); err != nil {
		return fmt.Errorf("clickhouse: writing the demo's alarm settings: %w", err)
	}

	// The truth about every replayed response, kept aside: production traffic
	// carries no labels, but the demo knows them and shows them.
	if err := db.Exec(ctx, "CREATE TABLE "+c.Database+`.demo_truth (trace_id String, ts DateTime('UTC'), domain String, served_from String, correct UInt8)
ENGINE = MergeTree ORDER BY trace_id`); err != nil {
		return fmt.Errorf("clickhouse: creating demo_truth: %w", err)
	}
	truth := func(ctx context.Context, evs []demoEvent, first int) error {
		b, err := db.PrepareBatch(ctx, "INSERT INTO "+c.Database+".demo_truth (trace_id, ts, domain, served_from, correct)")
		if err != nil {
			return err
		}
		for i, e := range evs {
			var y uint8
			if e.Src.Correct {
				y = 1
			}
			if err := b.Append(e.traceID(first+i), e.At, e.Domain, e.Src.Domain, y); err != nil {
				return err
			}
		}
		return b.Send()
	}

	// Broker, topics, sink, replica.
	bcfg := broker.DefaultConfig()
	bcfg.MinSessionTimeout = time.Second
	brk, err := broker.Start(bcfg, log)
	if err != nil {
		return err
	}
	closers = append(closers, func() error { return brk.Close(closeCtx) })
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{brk.Addr()}
	const topic, dead = "traces", "traces.dead"
	if err := kafka.EnsureTopics(ctx, conn, 2, topic, dead); err != nil {
		return err
	}
	sink, err := clickhouse.NewSink(ctx, cc, log)
	if err != nil {
		return err
	}
	closers = append(closers, func() error { return sink.Close(closeCtx) })
	dcfg := kafka.DefaultProducerConfig()
	dcfg.Topic = dead
	dlq, err := kafka.NewProducer(conn, dcfg, log)
	if err != nil {
		return err
	}
	closers = append(closers, dlq.Close)
	scfg := kafka.DefaultSourceConfig()
	scfg.Topic, scfg.Group = topic, "entrowatch-demo"
	scfg.MaxWait = 100 * time.Millisecond
	scfg.HeartbeatInterval = 300 * time.Millisecond
	scfg.SessionTimeout = 3 * time.Second
	source, err := kafka.NewSource(conn, scfg, log)
	if err != nil {
		return err
	}
	closers = append(closers, source.Close)
	chain := func() ([]streams.Operator, error) {
		p, err := profile.New(profile.DefaultConfig(), mem, log)
		if err != nil {
			return nil, err
		}
		e, err := estimate.New(estimate.Config{Set: set}, mem, log)
		if err != nil {
			return nil, err
		}
		return []streams.Operator{p, e}, nil
	}
	rcfg := runner.DefaultConfig()
	rcfg.Workers = min(2, runtime.GOMAXPROCS(0))
	r, err := runner.New(rcfg, runner.Parts{Source: source, DeadLetter: dlq, Chain: chain, Sink: sink}, mem, log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = topic
	prod, err := kafka.NewProducer(conn, pcfg, log)
	if err != nil {
		return err
	}
	closers = append(closers, prod.Close)

	// Run: the replica and the replay in an errgroup, the display here.
	rctx, stopReplica := context.WithCancel(ctx)
	defer stopReplica()
	g, gctx := errgroup.WithContext(rctx)
	g.Go(func() error { return r.Run(gctx) })
	events := sc.events(pool)
	if n := len(events); n > 0 {
		c.Speed = paceSpeed(c.Speed, events[n-1].At.Sub(events[0].At))
	}
	var rp replayProgress
	replayDone := make(chan error, 1)
	say("replaying %s from %s at %s (Ctrl-C stops and cleans up)", c.Day, sc.Start.Format("2006-01-02 15:04 MST"), speedText(c.Speed))
	wallStart := time.Now()
	go func() { replayDone <- replay(gctx, c.Speed, events, prod, truth, mem, &rp) }()

	v := &demoView{db: db, database: c.Database, sc: sc, models: pool.Models, plain: c.Plain, out: stdout, speed: c.Speed,
		firstSeen: map[alarmKey]time.Time{}}
	tick := time.NewTicker(c.Refresh)
	defer tick.Stop()
	var replayErr error
	replaying := true
	var wallEnd time.Time
	for replaying {
		select {
		case <-ctx.Done():
			say("interrupted; stopping the stream and cleaning up")
			stopReplica()
			<-replayDone
			_ = g.Wait()
			return nil
		case replayErr = <-replayDone:
			replaying = false
		case <-tick.C:
			if err := v.refresh(gctx, rp.produced.Load(), r.Stats().SinkRows); err != nil && gctx.Err() == nil {
				log.Warn("live table", "err", err)
			}
		}
	}
	if replayErr != nil {
		stopReplica()
		gerr := g.Wait()
		return errors.Join(fmt.Errorf("replay: %w", replayErr), gerr)
	}
	// Wait until every produced response is in ClickHouse (distinct trace
	// ids: a redelivered message is written twice).
	produced := rp.produced.Load()
	deadline := time.Now().Add(c.WaitTarget)
	for {
		var have uint64
		if err := db.QueryRow(ctx, "SELECT uniqExact(trace_id) FROM "+c.Database+".scored").Scan(&have); err != nil {
			stopReplica()
			_ = g.Wait()
			return fmt.Errorf("counting the scored responses: %w", err)
		}
		if int64(have) >= produced {
			break
		}
		if time.Now().After(deadline) {
			stopReplica()
			_ = g.Wait()
			return fmt.Errorf("the stream wrote %d of %d responses within %v; see the log above", have, produced, c.WaitTarget)
		}
		select {
		case <-ctx.Done():
			stopReplica()
			_ = g.Wait()
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
	wallEnd = time.Now()
	if err := v.refresh(gctx, produced, r.Stats().SinkRows); err != nil {
		log.Warn("live table", "err", err)
	}
	st := r.Stats()
	stopReplica()
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	sum, err := v.summary(ctx, wallEnd.Sub(wallStart), st, produced, rp.rejected.Load())
	if err != nil {
		return err
	}
	truthByID := make(map[string]bool, len(events))
	for i, e := range events {
		truthByID[e.traceID(i)] = e.Src.Correct
	}
	newest, err := v.newest(ctx)
	if err != nil {
		return err
	}
	if sum.Round, err = v.label(ctx, truthByID, 200, newest); err != nil {
		return fmt.Errorf("labeling round: %w", err)
	}
	sum.write(stdout, chPort, c.Database)
	if c.Keep {
		note := ""
		if c.DataDir == "" {
			note = " (a temporary directory, removed then; --data DIR keeps the data)"
		}
		fmt.Fprintf(stdout, "\nClickHouse keeps running on 127.0.0.1:%d with the data in %s. Ctrl-C stops it%s.\n", chPort, dir, note)
		<-ctx.Done()
	}
	return nil
}

// demoTempRoot is where the demo's temporary directory goes: /dev/shm when
// it is a writable directory (ClickHouse's many small parts are written and
// removed much faster in memory, and the data is only a few MB), else the
// system's temporary directory.
func demoTempRoot() string {
	const shm = "/dev/shm"
	if st, err := os.Stat(shm); err == nil && st.IsDir() {
		if f, err := os.CreateTemp(shm, "entrowatch-probe-"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return shm
		}
	}
	return ""
}

// demoDayStart is the start of the simulated day: yesterday, 00:00 UTC.
func demoDayStart(now time.Time) time.Time {
	return now.UTC().Truncate(24*time.Hour).AddDate(0, 0, -1)
}

func speedText(s float64) string {
	if s == 0 {
		return "full speed"
	}
	return fmt.Sprintf("%gx (one simulated hour every %.1fs)", s, 3600/s)
}

func countReplay(p *demoPool) int {
	n := 0
	for _, rs := range p.Replay {
		n += len(rs)
	}
	return n
}

// openDemoPool reads the bundled sample or --traces.
func openDemoPool(c demoConfig) (*demoPool, string, error) {
	if c.Traces == "" {
		rc, err := gzipReader(bytes.NewReader(demodata.Traces))
		if err != nil {
			return nil, "", fmt.Errorf("bundled sample: %w", err)
		}
		defer rc.Close()
		p, err := loadDemoPool(rc, c.TrainFrac)
		if err != nil {
			return nil, "", fmt.Errorf("bundled sample: %w", err)
		}
		return p, "bundled tinylm sample", nil
	}
	rc, err := ingest.Open(c.Traces)
	if err != nil {
		return nil, "", fmt.Errorf("--traces: %w", err)
	}
	defer rc.Close()
	p, err := loadDemoPool(rc, c.TrainFrac)
	if err != nil {
		return nil, "", fmt.Errorf("--traces %s: %w", c.Traces, err)
	}
	return p, c.Traces, nil
}

// demoTrain profiles the training responses and fits one estimator per LLM
// model with the default method of entrowatch train.
func demoTrain(ctx context.Context, p *demoPool, mem memory.Allocator, log *slog.Logger) (*estimate.Set, error) {
	var buf bytes.Buffer
	for _, r := range p.Train {
		buf.Write(r.Line)
		buf.WriteByte('\n')
	}
	rd := ingest.NewReader(&buf, ingest.DefaultConfig(), mem)
	defer rd.Release()
	op, err := profile.New(profile.DefaultConfig(), mem, log)
	if err != nil {
		return nil, err
	}
	tbl := &estimate.Table{Features: schemas.ProfileFeatures}
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("training data: %w", err)
		}
		outs, err := op.Process(ctx, rec)
		rec.Release()
		if err != nil {
			return nil, fmt.Errorf("training data: %w", err)
		}
		for _, out := range outs {
			err = appendTraining(tbl, out)
			out.Release()
			if err != nil {
				return nil, err
			}
		}
	}
	if rj := rd.Rejects(); len(rj) > 0 {
		return nil, fmt.Errorf("training data: line %d (%s): %s: %v", rj[0].Line, rj[0].ID, rj[0].Reason, rj[0].Err)
	}
	set, err := estimate.Train(ctx, tbl, estimate.DefaultTrainConfig(), estimate.TrainOptions{Models: p.Models})
	if err != nil {
		return nil, fmt.Errorf("training: %w", err)
	}
	return set, nil
}

// appendTraining adds the valid rows of a scored batch to tbl.
func appendTraining(tbl *estimate.Table, rec arrow.RecordBatch) error {
	get := func(name string) (arrow.Array, error) {
		i, err := schemas.Index(rec.Schema(), name)
		if err != nil {
			return nil, fmt.Errorf("training data: %w", err)
		}
		return rec.Column(i), nil
	}
	var cols [4]arrow.Array
	for i, n := range []string{schemas.ColStatus, schemas.ColModel, schemas.ColDomain, schemas.ColCorrect} {
		a, err := get(n)
		if err != nil {
			return err
		}
		cols[i] = a
	}
	status, model, domain := cols[0].(*array.String), cols[1].(*array.String), cols[2].(*array.String)
	correct := cols[3].(*array.Boolean)
	feats := make([]*array.Float64, len(tbl.Features))
	for j, f := range tbl.Features {
		a, err := get(f)
		if err != nil {
			return err
		}
		feats[j] = a.(*array.Float64)
	}
	for i := range int(rec.NumRows()) {
		if status.Value(i) != schemas.StatusOK || correct.IsNull(i) {
			continue
		}
		for _, f := range feats {
			tbl.X = append(tbl.X, f.Value(i))
		}
		y := 0.0
		if correct.Value(i) {
			y = 1
		}
		tbl.Y = append(tbl.Y, y)
		tbl.Model = append(tbl.Model, model.Value(i))
		tbl.Domain = append(tbl.Domain, domain.Value(i))
	}
	return nil
}

// replayProgress counts what the replay produced, read by the display.
type replayProgress struct {
	produced atomic.Int64
	rejected atomic.Int64
}

// replay produces the events as trace.v1 batches, paced so that simulated
// time runs speed times faster than real time (speed 0: no pacing; see
// replayTick for the largest useful speed).
// Before producing a batch it records the events' truth with truth.
// replayTick is the pace of a paced replay: one message (one ClickHouse
// insert) per tick at most.
const replayTick = 250 * time.Millisecond

// paceSpeed is the speed to replay a day of span at when asked for speed:
// 0 (as fast as possible) when the whole day would pass within one tick,
// where pacing only slows it down (all of it in one batch) and a large
// enough speed overflows the simulated clock.
func paceSpeed(speed float64, span time.Duration) float64 {
	if speed > 0 && float64(span)/speed < float64(replayTick) {
		return 0
	}
	return speed
}

func replay(ctx context.Context, speed float64, evs []demoEvent, prod *kafka.Producer,
	truth func(ctx context.Context, evs []demoEvent, first int) error, mem memory.Allocator, rp *replayProgress) error {
	if len(evs) == 0 {
		return nil
	}
	start := time.Now()
	simStart := evs[0].At
	const tick = replayTick
	var buf []byte
	icfg := ingest.DefaultConfig()
	icfg.BatchRows = 1024
	next := 0
	var lastSend time.Time
	for next < len(evs) {
		var until int
		if speed > 0 {
			simNow := simStart.Add(time.Duration(float64(time.Since(start)) * speed))
			until = next
			for until < len(evs) && !evs[until].At.After(simNow) {
				until++
			}
			if until == next {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(tick):
				}
				continue
			}
			if until < len(evs) && time.Since(lastSend) < tick { // gather a tick's worth
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(tick - time.Since(lastSend)):
				}
				continue
			}
			lastSend = time.Now()
		} else {
			until = min(len(evs), next+1024)
		}
		if err := truth(ctx, evs[next:until], next); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("recording the truth: %w", err)
		}
		buf = buf[:0]
		for i := next; i < until; i++ {
			buf = evs[i].appendJSON(buf, i)
		}
		rd := ingest.NewReader(bytes.NewReader(buf), icfg, mem)
		for {
			rec, err := rd.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rd.Release()
				return err
			}
			_, err = prod.ProduceBatch(ctx, rec, nil)
			n := rec.NumRows()
			rec.Release()
			if err != nil {
				rd.Release()
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			rp.produced.Add(n)
		}
		rp.rejected.Add(int64(len(rd.Rejects())))
		rd.Release()
		next = until
	}
	return nil
}
