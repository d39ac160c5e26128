package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/kafka"
	"github.com/entrowatch/entrowatch/streams/runner"
)

const benchPipelineSynopsis = `[--traces N] [--steps N] [--k N] [--partitions N] [--workers N] [--concurrent] [--estimator FILE] [--clusters FILE] [--cpuprofile FILE]

Measures the stream end to end on this machine: synthetic traces (400 steps x
20 logprobs by default) are produced to the embedded broker as Arrow IPC
messages under 1 MiB, then one replica consumes them, decodes, profiles
(then estimates and tags clusters with --estimator / --clusters), writes the
scored rows to an Arrow file and commits. Prints "tokens/s: N",
"traces/s: N" for the consume side (broker fetch included; with --concurrent
the production runs at the same time and is timed too), the CPU used and the
share of worker time per stage.

The embedded broker holds the topic in memory: about 90 KB per trace of 400
steps besides 180 MB of its own (the default 20,000 traces need about 1.9 GB;
8,000 took 0.9 GB). Lower --traces where memory is tight (a 1 GiB pod).`

// benchStallAfter is how long bench pipeline waits without progress before
// it gives up and says why.
const benchStallAfter = time.Minute

// stallWatch tells when a count has not moved for after.
type stallWatch struct {
	after time.Duration
	n     int64
	at    time.Time // when n last changed
}

// stuck records n, seen at now, and reports whether it has stayed the same
// for longer than after.
func (w *stallWatch) stuck(n int64, now time.Time) bool {
	if n != w.n {
		w.n, w.at = n, now
		return false
	}
	return now.Sub(w.at) > w.after
}

func benchPipeline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench pipeline", benchPipelineSynopsis, stderr)
	traces := fs.Int("traces", 20000, "traces to produce and consume")
	steps := fs.Int("steps", 400, "generated steps per trace")
	k := fs.Int("k", 20, fmt.Sprintf("logprobs per step (at most %d)", profile.MaxAlternatives))
	partitions := fs.Int("partitions", 4, "partitions of the bench topic")
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "stream workers (partition goroutines)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the consume phase to FILE (go tool pprof)")
	estimator := fs.String("estimator", "", "estimator artifact: add the estimate operator to the chain")
	clusters := fs.String("clusters", "", "topic-cluster artifact: add the clustertag operator to the chain")
	concurrent := fs.Bool("concurrent", false, "produce while consuming and time both (default: produce first, time the consume side)")
	sinkKind := fs.String("sink", "file", "where scored rows go: file (Arrow IPC in a temp dir) or clickhouse")
	chDSN := fs.String("clickhouse", "", "with --sink clickhouse: clickhouse://host:9000 of a server to use; the rows go to a database of their own (entrowatch_bench_<time>), dropped at the end (default: a managed local clickhouse-server in a temp dir)")
	fetchBytes := fs.Int("fetch-max-bytes", kafka.DefaultSourceConfig().MaxBytes, "largest fetch response (source.max_bytes)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *traces < 1 || *steps < 1 || *k < 1 || *partitions < 1 || *workers < 1 {
		return badFlag("--traces, --steps, --k, --partitions and --workers must be at least 1")
	}
	if *fetchBytes < 1 {
		return badFlag("--fetch-max-bytes %d: want at least 1 (default %d)", *fetchBytes, kafka.DefaultSourceConfig().MaxBytes)
	}
	// A shape the profile rejects would time the dead-letter path, not the
	// stream: --k 22 printed 671,201 tokens/s of traces all dead-lettered.
	if err := benchShape(*steps, *k, profile.DefaultConfig()); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mem := memory.NewGoAllocator()

	dir, err := os.MkdirTemp("", "entrowatch-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// Shutdown order (deferred, reverse): replica, producers, sink, broker.
	bcfg := broker.DefaultConfig()
	bcfg.Partitions = *partitions
	brk, err := broker.Start(bcfg, log)
	if err != nil {
		return err
	}
	defer brk.Close(context.WithoutCancel(ctx))
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{brk.Addr()}
	const topic, dead = "bench-traces", "bench-traces.dead"
	if err := kafka.EnsureTopics(ctx, conn, *partitions, topic, dead); err != nil {
		return err
	}

	// Produce: a pool of distinct synthetic batches, each one message under
	// the limit, cycled until --traces rows are on the topic; the last batch
	// is cut to size.
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = topic
	prod, err := kafka.NewProducer(conn, pcfg, log)
	if err != nil {
		return err
	}
	defer prod.Close()
	perMsg := max(1, pcfg.MaxMessageBytes*9/10/(*steps*(*k+1)*4+64))
	sizes := benchBatches(*traces, perMsg)
	synth := func(n int, seed uint64) ([]kafka.Message, error) {
		rec := profile.Synthetic(mem, profile.SynthConfig{Traces: n, Steps: *steps, K: *k, Seed: seed, Model: "bench"})
		defer rec.Release()
		return kafka.Messages(rec, nil, pcfg.MaxMessageBytes)
	}
	var pool [][]kafka.Message
	for seed := range min(8, len(sizes)) {
		msgs, err := synth(sizes[seed], uint64(seed+1))
		if err != nil {
			return err
		}
		pool = append(pool, msgs)
	}
	var last []kafka.Message
	if n := sizes[len(sizes)-1]; n != perMsg && len(sizes) > len(pool) {
		if last, err = synth(n, uint64(len(pool)+1)); err != nil {
			return err
		}
	}
	total := *traces
	produce := func() error {
		start := time.Now()
		for g := 0; g < len(sizes); {
			var batch []kafka.Message
			for j := 0; j < 32 && g < len(sizes); j, g = j+1, g+1 {
				if last != nil && g == len(sizes)-1 {
					batch = append(batch, last...)
				} else {
					batch = append(batch, pool[g%len(pool)]...)
				}
			}
			if err := prod.Produce(ctx, batch...); err != nil {
				return err
			}
		}
		d := time.Since(start)
		fmt.Fprintf(stderr, "produced %d traces in %v (%.0f traces/s)\n", total, d.Round(time.Millisecond), float64(total)/d.Seconds())
		return nil
	}
	fmt.Fprintf(stderr, "producing %d traces (up to %d per message) to the embedded broker at %s...\n", total, perMsg, brk.Addr())
	if !*concurrent {
		if err := produce(); err != nil {
			return err
		}
	}

	// Consume: one replica, the full chain, the sink.
	scfg := kafka.DefaultSourceConfig()
	scfg.Topic, scfg.Group = topic, "bench"
	scfg.MaxWait = 50 * time.Millisecond
	scfg.MaxBytes = *fetchBytes
	scfg.HeartbeatInterval = 500 * time.Millisecond
	scfg.SessionTimeout = 6 * time.Second
	src, err := kafka.NewSource(conn, scfg, log)
	if err != nil {
		return err
	}
	defer src.Close()
	dcfg := kafka.DefaultProducerConfig()
	dcfg.Topic = dead
	dlq, err := kafka.NewProducer(conn, dcfg, log)
	if err != nil {
		return err
	}
	defer dlq.Close()
	sinkCfg := defaultRunConfig()
	sinkCfg.DataDir, sinkCfg.Sink = dir, *sinkKind
	sinkCfg.File.Path = filepath.Join(dir, "scored.arrow")
	sinkCfg.ClickHouse.Conn.DSN = *chDSN
	if *sinkKind != "file" && *sinkKind != "clickhouse" {
		return badFlag("--sink %q: want file or clickhouse", *sinkKind)
	}
	var sinkClosers []func() error
	defer func() {
		for i := len(sinkClosers) - 1; i >= 0; i-- {
			sinkClosers[i]()
		}
	}()
	if *sinkKind == "clickhouse" && *chDSN != "" {
		// The synthetic rows go to a database of their own, dropped at the
		// end: never into the server's real scored table.
		db := "entrowatch_bench_" + time.Now().UTC().Format("20060102T150405")
		fmt.Fprintf(stderr, "synthetic rows go to database %s (dropped at the end), not to %s.scored\n", db, sinkCfg.ClickHouse.Conn.DatabaseName())
		sinkCfg.ClickHouse.Conn.Database = db
		sinkClosers = append(sinkClosers, func() error {
			return dropBenchDatabase(sinkCfg.ClickHouse.Conn, db, stderr)
		})
	}
	sink, where, err := newRunSink(ctx, sinkCfg, mem, log, &sinkClosers, runSinkHooks{})
	if err != nil {
		return err
	}
	defer sink.Close(context.WithoutCancel(ctx))
	fmt.Fprintf(stderr, "sink: %s\n", where)
	rcfg := runner.DefaultConfig()
	rcfg.Workers = *workers
	chain := func() ([]streams.Operator, error) {
		op, err := profile.New(profile.DefaultConfig(), mem, log)
		if err != nil {
			return nil, err
		}
		ops := []streams.Operator{op}
		if *estimator != "" {
			op, err := newEstimateOperator(*estimator, mem, log)
			if err != nil {
				return nil, fmt.Errorf("--estimator: %w", err)
			}
			ops = append(ops, op)
		}
		if *clusters != "" {
			op, err := newClusterOperator(*clusters, "", mem, log)
			if err != nil {
				return nil, fmt.Errorf("--clusters: %w", err)
			}
			ops = append(ops, op)
		}
		return ops, nil
	}
	r, err := runner.New(rcfg, runner.Parts{Source: src, DeadLetter: dlq, Chain: chain, Sink: sink}, mem, log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	fmt.Fprintf(stderr, "consuming with %d workers over %d partitions...\n", *workers, *partitions)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	cpu0 := cpuTime()
	go func() { done <- r.Run(rctx) }()
	prodDone := make(chan error, 1)
	if *concurrent {
		go func() { prodDone <- produce() }()
	} else {
		prodDone <- nil
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var elapsed, cpu time.Duration
	var rows0 int64
	// With the topic filled first, the clock starts at the first message:
	// joining the consumer group is start-up, not throughput.
	started := *concurrent
	// A stream that stops making progress (traces dead-lettered or dropped
	// instead of written) is reported, not waited for forever.
	watch := stallWatch{after: benchStallAfter, at: time.Now()}
wait:
	for {
		select {
		case <-tick.C:
			st := r.Stats()
			if !started && st.Messages > 0 {
				fmt.Fprintf(stderr, "joined the group, first message after %v\n", time.Since(start).Round(time.Millisecond))
				start, cpu0, rows0, started = time.Now(), cpuTime(), st.SinkRows, true
			}
			if watch.stuck(st.Messages+st.SinkRows, time.Now()) {
				cancel()
				<-done
				return fmt.Errorf("no progress for %v: %d of %d traces written, %d messages consumed, dead-lettered %s, %d duplicate chunks dropped",
					watch.after, st.SinkRows, total, st.Messages, countsText(st.DeadLettered), st.DupChunks)
			}
			if st.SinkRows >= int64(total) {
				elapsed = time.Since(start)
				cpu = cpuTime() - cpu0
				break wait
			}
		case err := <-done:
			cancel()
			return fmt.Errorf("stream stopped before consuming everything: %v", err)
		case <-ctx.Done():
			cancel()
			<-done
			return ctx.Err()
		}
	}
	cancel()
	if err := errors.Join(<-done, <-prodDone); err != nil {
		return err
	}
	st := r.Stats()
	timed := st.SinkRows - rows0
	tokens := float64(timed) * float64(*steps)
	fmt.Fprintf(stdout, "tokens/s: %.0f\n", tokens/elapsed.Seconds())
	fmt.Fprintf(stdout, "traces/s: %.0f\n", float64(timed)/elapsed.Seconds())
	mode := "consume side, topic filled first"
	if *concurrent {
		mode = "produce and consume concurrently"
	}
	fmt.Fprintf(stdout, "traces: %d in %v (%s; %d messages, %d workers, %d partitions, MB/s consumed: %.0f)\n",
		timed, elapsed.Round(time.Millisecond), mode, st.Messages, *workers, *partitions,
		float64(st.Bytes)/1e6/elapsed.Seconds())
	fmt.Fprintf(stdout, "cpu: %.2f core-seconds for %.2f s wall (%.0f tokens per core-second; the machine has %d cores, load average %s)\n",
		cpu.Seconds(), elapsed.Seconds(), tokens/cpu.Seconds(), runtime.NumCPU(), loadAvg())
	var staged time.Duration
	names := make([]string, 0, len(st.Stages))
	for n, d := range st.Stages {
		names = append(names, n)
		staged += d
	}
	sort.Slice(names, func(i, j int) bool { return st.Stages[names[i]] > st.Stages[names[j]] })
	busy := elapsed * time.Duration(*workers)
	fmt.Fprintf(stdout, "worker time by stage (of %v = %d workers x wall):\n", busy.Round(time.Millisecond), *workers)
	for _, n := range names {
		fmt.Fprintf(stdout, "  %-12s %5.1f%%  %v\n", n, 100*float64(st.Stages[n])/float64(busy), st.Stages[n].Round(time.Millisecond))
	}
	fmt.Fprintf(stdout, "  %-12s %5.1f%%  (waiting for fetch, queueing, commits)\n", "other", 100*float64(busy-staged)/float64(busy))
	return nil
}

// benchBatches splits n traces into synthetic batches of per traces, the
// last one smaller when per does not divide n: exactly n traces in all.
func benchBatches(n, per int) []int {
	sizes := make([]int, 0, (n+per-1)/per)
	for ; n > per; n -= per {
		sizes = append(sizes, per)
	}
	return append(sizes, n)
}

// cpuTime is the CPU time (user + system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg is the 1-minute load average, or "?" where /proc is absent: the
// bench shares the machine, and the number says with how much.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// dropBenchDatabase drops the database bench pipeline wrote into.
func dropBenchDatabase(cc clickhouse.Config, db string, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cc.Database = "default"
	conn, err := clickhouse.Open(ctx, cc)
	if err == nil {
		defer conn.Close()
		err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db)
	}
	if err != nil {
		fmt.Fprintf(stderr, "dropping the bench database %s: %v (drop it by hand)\n", db, err)
		return err
	}
	fmt.Fprintf(stderr, "dropped the bench database %s\n", db)
	return nil
}
