package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/operators/entropy"
	"github.com/entrowatch/entrowatch/operators/profile"
)

const benchSynopsis = `operators|pipeline [flags]

  operators  entropy + profile + baselines through the profile operator over
             synthetic traces (default 400 steps x 20 logprobs), on --workers
             goroutines (default 1: one core). Prints "tokens/s: N" and "traces/s: N".
  pipeline   the full chain through the embedded Kafka broker (see entrowatch bench pipeline -h).`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") || args[0] == "help" {
		fmt.Fprintf(stderr, "Usage: entrowatch bench %s\n", benchSynopsis)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return nil
		}
		return errUsage
	}
	switch args[0] {
	case "operators":
		return benchOperators(ctx, args[1:], stdout, stderr)
	case "pipeline":
		return benchPipeline(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "entrowatch bench: unknown subcommand %q (want operators or pipeline)\n", args[0])
	return errUsage
}

// startCPUProfile writes a CPU profile to path until the returned stop is
// called; with path "" it does nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func benchOperators(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench operators", "[--steps N] [--k N] [--batch N] [--duration D] [--workers N]", stderr)
	steps := fs.Int("steps", 400, "steps per synthetic trace")
	k := fs.Int("k", 20, "logprobs per step")
	batch := fs.Int("batch", 256, "traces per record batch")
	dur := fs.Duration("duration", 5*time.Second, "how long to measure (after a short warm-up)")
	workers := fs.Int("workers", 1, "goroutines, each with its own operator (1 = one core)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *steps < 1 || *k < 1 || *batch < 1 || *workers < 1 || *dur <= 0 {
		return fmt.Errorf("--steps, --k, --batch, --workers and --duration must be positive")
	}
	mem := memory.NewGoAllocator()
	// A few distinct batches so that caches see realistic traffic.
	recs := make([]arrow.RecordBatch, 4)
	for i := range recs {
		recs[i] = profile.Synthetic(mem, profile.SynthConfig{Traces: *batch, Steps: *steps, K: *k, Seed: uint64(i + 1), Model: "bench"})
		defer recs[i].Release()
	}
	fmt.Fprintf(stderr, "bench operators: %d workers, batches of %d traces x %d steps x %d logprobs, %s (GOMAXPROCS %d, %s entropy kernel, load average %s)\n",
		*workers, *batch, *steps, *k, *dur, runtime.GOMAXPROCS(0), entropy.Kernel(), loadAvg())

	run := func(d time.Duration) (int64, time.Duration, error) {
		var mu sync.Mutex
		var traces int64
		var firstErr error
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(d)
		for w := range *workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				op, err := profile.New(profile.DefaultConfig(), mem, nil)
				var n int64
				for i := w; err == nil && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
					var out []arrow.RecordBatch
					out, err = op.Process(ctx, recs[i%len(recs)])
					for _, o := range out {
						o.Release()
					}
					n += int64(*batch)
				}
				mu.Lock()
				traces += n
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		return traces, time.Since(start), firstErr
	}
	if _, _, err := run(min(*dur/5, time.Second)); err != nil {
		return err
	}
	traces, el, err := run(*dur)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tps := float64(traces) / el.Seconds()
	fmt.Fprintf(stdout, "tokens/s: %.0f\n", tps*float64(*steps))
	fmt.Fprintf(stdout, "traces/s: %.0f\n", tps)
	return nil
}
