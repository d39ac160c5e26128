package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
)

// TestBenchOperatorsRefusesRejectedShapes: with --k 22 (more than the 21
// alternatives the profile is defined on) or --steps above the profile's
// max_steps every synthetic trace is rejected too_long, and bench operators
// printed the rate of rejections as throughput (1e9+ tokens/s, exit 0). It
// now fails, naming the limit, and prints no figure.
func TestBenchOperatorsRefusesRejectedShapes(t *testing.T) {
	maxSteps := profile.DefaultConfig().MaxSteps
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--k", "22"}, []string{"--k 22", "at most 21 alternatives", "too_long", "use --k 21 or less"}},
		{[]string{"--k", "100", "--steps", "3"}, []string{"--k 100", "at most 21 alternatives"}},
		{[]string{"--steps", fmt.Sprint(maxSteps + 1)}, []string{fmt.Sprintf("--steps %d", maxSteps+1), fmt.Sprintf("max_steps (%d)", maxSteps), "too_long"}},
		{[]string{"--steps", "40000"}, []string{"--steps 40000", "max_steps (32768)"}},
		// It ran out of memory building the batches.
		{[]string{"--batch", "100000000"}, []string{"--batch 100000000 x --steps 400 x --k 20 is 8e+11 logprobs per batch", "4 such batches", "--batch 16777 or less"}},
		{[]string{"--batch", "9223372036854775807", "--steps", "32768"}, []string{"logprobs per batch", "--batch 204 or less"}},
	} {
		args := append([]string{"bench", "operators", "--duration", "50ms", "--batch", "2"}, tc.args...)
		stdout, stderr, code := runCLI(t, args...)
		require.Equal(t, 2, code, "a flag value that cannot work: %v: stdout %q stderr %q", tc.args, stdout, stderr)
		require.NotContains(t, stdout, "tokens/s", "%v", tc.args)
		require.NotContains(t, stdout, "traces/s", "%v", tc.args)
		for _, w := range tc.want {
			require.Contains(t, stderr, w, "%v", tc.args)
		}
	}
}

// TestBenchOperatorsLimitsAccepted: the largest accepted shape (21
// alternatives, max_steps steps) is measured, not refused.
func TestBenchOperatorsLimitsAccepted(t *testing.T) {
	stdout, stderr, code := runCLI(t, "bench", "operators", "--duration", "50ms", "--batch", "1", "--k", "21", "--steps", fmt.Sprint(profile.DefaultConfig().MaxSteps))
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `(?m)^tokens/s: [1-9]\d*$`, stdout)
	require.Regexp(t, `(?m)^traces/s: [1-9]\d*$`, stdout)
}

// TestBenchScoredOK: only rows the profile scored (status ok) count.
func TestBenchScoredOK(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	require.NoError(t, err)
	score := func(k int) int64 {
		in := profile.Synthetic(mem, profile.SynthConfig{Traces: 5, Steps: 3, K: k, Seed: 1, Model: "m"})
		defer in.Release()
		out, err := op.Process(context.Background(), in)
		require.NoError(t, err)
		var n int64
		for _, o := range out {
			n += scoredOK(o)
			o.Release()
		}
		return n
	}
	require.Equal(t, int64(5), score(profile.MaxAlternatives))
	require.Equal(t, int64(0), score(profile.MaxAlternatives+1))
}

// TestBenchPipelineRefusesRejectedShapes: bench pipeline timed the
// dead-letter path for a shape the profile rejects (--k 22: 671,201
// tokens/s of traces that were all dead-lettered); it refuses it before
// starting the broker.
func TestBenchPipelineRefusesRejectedShapes(t *testing.T) {
	for _, args := range [][]string{{"--k", "22"}, {"--steps", "40000"}} {
		stdout, stderr, code := runCLI(t, append([]string{"bench", "pipeline", "--traces", "10"}, args...)...)
		require.Equal(t, 2, code, "a flag value that cannot work: %v: %s", args, stderr)
		require.Contains(t, stderr, "Run 'entrowatch bench pipeline -h'")
		require.NotContains(t, stdout, "tokens/s")
		require.NotContains(t, stdout, "producing")
		require.Contains(t, stderr, "too_long")
	}
}
