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
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/operators/entropy"
	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
)

const benchSynopsis = `operators|pipeline [flags]

  operators  entropy + profile + baselines through the profile operator over
             synthetic traces (default 400 steps x 20 logprobs), on --workers
             goroutines (default 1: one core). Prints "tokens/s: N" and "traces/s: N"
             of the traces the profile scored; a shape it rejects (--k above 21,
             --steps above its max_steps, 32768) is refused.
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
	steps := fs.Int("steps", 400, fmt.Sprintf("steps per synthetic trace (at most the profile's max_steps, %d)", profile.DefaultConfig().MaxSteps))
	k := fs.Int("k", 20, fmt.Sprintf("logprobs per step (at most %d)", profile.MaxAlternatives))
	batch := fs.Int("batch", 256, "traces per record batch")
	dur := fs.Duration("duration", 5*time.Second, "how long to measure (after a short warm-up)")
	workers := fs.Int("workers", 1, "goroutines, each with its own operator (1 = one core)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *steps < 1 || *k < 1 || *batch < 1 || *workers < 1 || *dur <= 0 {
		return badFlag("--steps, --k, --batch, --workers and --duration must be positive")
	}
	// A shape the profile rejects would measure how fast traces are
	// rejected, not scored: refuse it before building the batches (40,000
	// steps x 256 traces is gigabytes).
	pcfg := profile.DefaultConfig()
	if err := benchShape(*steps, *k, pcfg); err != nil {
		return err
	}
	if n := float64(*batch) * float64(*steps) * float64(*k); n > maxBenchLogprobs {
		// --batch 1e8 ran out of memory building the batches.
		return badFlag("--batch %d x --steps %d x --k %d is %.3g logprobs per batch, and the bench holds %d such batches in memory (about %.0f GB): "+
			"at most %d per batch (--batch %d or less with these --steps and --k)",
			*batch, *steps, *k, n, synthBatches, n*synthBatches*benchBytesPerLogprob/1e9, int64(maxBenchLogprobs), max(1, int64(maxBenchLogprobs)/int64(*steps**k)))
	}
	mem := memory.NewGoAllocator()
	// A few distinct batches so that caches see realistic traffic.
	recs := make([]arrow.RecordBatch, synthBatches)
	for i := range recs {
		recs[i] = profile.Synthetic(mem, profile.SynthConfig{Traces: *batch, Steps: *steps, K: *k, Seed: uint64(i + 1), Model: "bench"})
		defer recs[i].Release()
	}
	fmt.Fprintf(stderr, "bench operators: %d workers, batches of %d traces x %d steps x %d logprobs, %s (GOMAXPROCS %d, %s entropy kernel, load average %s)\n",
		*workers, *batch, *steps, *k, *dur, runtime.GOMAXPROCS(0), entropy.Kernel(), loadAvg())

	// Any other shape whose traces the profile rejects (none today: the
	// synthetic traces are valid) is refused as well, or its rejected traces
	// are left out of the figures.
	var total, rejected int
	var firstRej string
	for _, rec := range recs {
		total += int(rec.NumRows())
		if err := profile.Check(pcfg, rec, func(_ int, r *profile.Reject) {
			if rejected == 0 {
				firstRej = r.Error()
			}
			rejected++
		}); err != nil {
			return err
		}
	}
	switch {
	case rejected == total:
		return fmt.Errorf("the profile rejects every synthetic trace of %d steps x %d logprobs (%s): no throughput to measure", *steps, *k, firstRej)
	case rejected > 0:
		fmt.Fprintf(stderr, "bench operators: the profile rejects %d of the %d synthetic traces (%s); only the scored ones are counted\n", rejected, total, firstRej)
	}

	// run counts the traces the profile scored (status ok), not the rows it
	// returned: a rejected trace costs a fraction of a scored one.
	run := func(d time.Duration) (int64, time.Duration, error) {
		var mu sync.Mutex
		var traces, processed int64
		var firstErr error
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(d)
		for w := range *workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				op, err := profile.New(pcfg, mem, nil)
				var n, rows int64
				for i := w; err == nil && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
					var out []arrow.RecordBatch
					out, err = op.Process(ctx, recs[i%len(recs)])
					for _, o := range out {
						n += scoredOK(o) // rejected rows are not throughput
						rows += o.NumRows()
						o.Release()
					}
				}
				mu.Lock()
				traces += n
				processed += rows
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if firstErr == nil && processed > 0 && traces == 0 {
			firstErr = fmt.Errorf("the profile rejected all %d traces of %d steps x %d logprobs it was given: no throughput to measure", processed, *steps, *k)
		}
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

// The synthetic batches bench operators builds: synthBatches of them, of at
// most maxBenchLogprobs logprobs each, at about benchBytesPerLogprob bytes
// per logprob (measured: 4 x 20.5M logprobs, 400 MB resident), so at most
// about 2.6 GB.
const (
	synthBatches         = 4
	maxBenchLogprobs     = 1 << 27
	benchBytesPerLogprob = 4.9
)

// benchShape refuses a synthetic shape whose every trace the profile would
// reject (status too_long), naming the limit.
func benchShape(steps, k int, cfg profile.Config) error {
	if k > profile.MaxAlternatives {
		return badFlag("--k %d: the profile is defined on at most %d alternatives per step (the top 20, plus the sampled token vLLM appends); "+
			"every trace would be rejected as %s and no throughput measured (use --k %d or less)", k, profile.MaxAlternatives, schemas.ReasonTooLong, profile.MaxAlternatives)
	}
	if steps > cfg.MaxSteps {
		return badFlag("--steps %d: more than the profile's max_steps (%d); "+
			"every trace would be rejected as %s and no throughput measured (use --steps %d or less)", steps, cfg.MaxSteps, schemas.ReasonTooLong, cfg.MaxSteps)
	}
	return nil
}

// scoredOK counts the rows of a scored.v1 batch whose status is ok: those
// the profile scored.
func scoredOK(rec arrow.RecordBatch) int64 {
	st, ok := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColStatus)).(*array.String)
	if !ok {
		return 0
	}
	var n int64
	for i := range st.Len() {
		if st.IsValid(i) && st.Value(i) == schemas.StatusOK {
			n++
		}
	}
	return n
}
