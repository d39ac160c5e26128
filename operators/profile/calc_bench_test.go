package profile_test

import (
	"context"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
)

// threadCPU is the CPU time the calling OS thread has used. On a shared
// machine it measures the kernel's own work better than wall time does.
func threadCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		b.Skipf("getrusage(RUSAGE_THREAD): %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCalcCPU is BenchmarkProfile reporting tokens per second of the
// benchmark thread's CPU time ("cpu-tokens/s") besides wall-clock tokens/s.
func BenchmarkCalcCPU(b *testing.B) {
	for _, steps := range []int{64, 400, 2048} {
		b.Run("tokens="+strconv.Itoa(steps), func(b *testing.B) {
			mem := memory.NewGoAllocator()
			const traces = 64
			rec := profile.Synthetic(mem, profile.SynthConfig{Traces: traces, Steps: steps, K: 20, Seed: 1})
			defer rec.Release()
			tok := rec.Column(schemas.MustIndex(schemas.Trace, schemas.ColTokenLogprob)).(*array.List)
			top := rec.Column(schemas.MustIndex(schemas.Trace, schemas.ColTopLogprobs)).(*array.List)
			inner := top.ListValues().(*array.List)
			chosen := tok.ListValues().(*array.Float32).Float32Values()
			offs := inner.Offsets()
			vals := inner.ListValues().(*array.Float32).Float32Values()
			calc := newCalc(b, profile.DefaultConfig())
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.SetBytes(int64(steps * 21 * 4))
			b.ReportAllocs()
			i := 0
			cpu0 := threadCPU(b)
			for b.Loop() {
				t := i % traces
				p, _ := calc.Trace(chosen[t*steps:(t+1)*steps], offs[t*steps:(t+1)*steps+1], vals)
				benchSink = p
				i++
			}
			cpu := threadCPU(b) - cpu0
			b.ReportMetric(float64(i*steps)/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric(float64(i*steps)/cpu.Seconds(), "cpu-tokens/s")
		})
	}
}

var benchSink profile.Profile

// BenchmarkOperatorCPU is BenchmarkOperator (a 256-trace batch of 400 steps x
// 20 alternatives through Process, Arrow output included) reporting
// cpu-tokens/s besides wall-clock tokens/s.
func BenchmarkOperatorCPU(b *testing.B) {
	mem := memory.NewGoAllocator()
	rec := profile.Synthetic(mem, profile.SynthConfig{Traces: 256, Steps: 400, K: 20, Seed: 1})
	defer rec.Release()
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	if err != nil {
		b.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	n := 0
	cpu0 := threadCPU(b)
	for b.Loop() {
		out, err := op.Process(context.Background(), rec)
		if err != nil {
			b.Fatal(err)
		}
		out[0].Release()
		n++
	}
	cpu := threadCPU(b) - cpu0
	b.ReportMetric(float64(n*256*400)/b.Elapsed().Seconds(), "tokens/s")
	b.ReportMetric(float64(n*256*400)/cpu.Seconds(), "cpu-tokens/s")
}
