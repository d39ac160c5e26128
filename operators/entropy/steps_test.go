package entropy

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// randomAlts draws k logprobs the way real top-k lists look, plus the edge
// values a kernel must get right: vLLM's -9999, -Inf, values below expMin,
// exact zeros, rounding noise above zero and repeated values.
func randomAlts(rng *rand.Rand, k int) []float64 {
	alts := make([]float64, k)
	for i := range alts {
		switch r := rng.IntN(20); {
		case r == 0:
			alts[i] = NoProb
		case r == 1:
			alts[i] = math.Inf(-1)
		case r == 2:
			alts[i] = -708 - rng.Float64()*40
		case r == 3:
			alts[i] = 0
		case r == 4:
			alts[i] = rng.Float64() * 1e-4
		case r == 5 && i > 0:
			alts[i] = alts[rng.IntN(i)]
		case r == 6:
			alts[i] = -rng.Float64() * 700
		default:
			alts[i] = -rng.ExpFloat64() * 3
		}
	}
	if rng.IntN(2) == 0 { // APIs return the list sorted
		for i := 1; i < k; i++ {
			for j := i; j > 0 && alts[j] > alts[j-1]; j-- {
				alts[j], alts[j-1] = alts[j-1], alts[j]
			}
		}
	}
	return alts
}

// trace lays steps out as the kernels read them.
func trace(steps [][]float64) (offs []int32, values []float64) {
	offs = []int32{0}
	for _, s := range steps {
		values = append(values, s...)
		offs = append(offs, int32(len(values)))
	}
	return offs, values
}

func to32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// vec32 and vec64 are the vector kernels where the CPU runs them; elsewhere
// (a GOEXPERIMENT=simd build on a CPU without AVX-512, where they would fault)
// the scalar loop that Steps falls back to.
func vec32(values []float32, offs []int32, h []float64, maxLogprob float64) (float64, int, Bad) {
	if !useVector {
		return stepsScalar(values, offs, h, maxLogprob)
	}
	return stepsVec32(values, offs, h, maxLogprob)
}

func vec64(values []float64, offs []int32, h []float64, maxLogprob float64) (float64, int, Bad) {
	if !useVector {
		return stepsScalar(values, offs, h, maxLogprob)
	}
	return stepsVec64(values, offs, h, maxLogprob)
}

// checkSteps: entropies agree to 1e-12 relative; margins, differences of
// probabilities, to 1e-15 absolute.
func checkSteps(t *testing.T, what string, hv, hs []float64, mv, ms float64) {
	t.Helper()
	for i := range hs {
		if math.IsNaN(hv[i]) != math.IsNaN(hs[i]) { // a NaN difference passes the comparison below
			t.Fatalf("%s: step %d: H = %.17g, scalar %.17g", what, i, hv[i], hs[i])
		}
		if d := math.Abs(hv[i] - hs[i]); d > 1e-12*math.Max(math.Abs(hs[i]), math.Abs(hv[i])) && d > 1e-300 {
			t.Fatalf("%s: step %d: H = %.17g, scalar %.17g (diff %.3g)", what, i, hv[i], hs[i], d)
		}
	}
	if d := math.Abs(mv - ms); d > 1e-15*float64(len(hs)) || math.IsNaN(mv) != math.IsNaN(ms) {
		t.Fatalf("%s: margin sum = %.17g, scalar %.17g (diff %.3g)", what, mv, ms, d)
	}
}

// TestVectorMatchesScalar compares the vectorised kernel (when this build and
// CPU have it; otherwise both sides are the scalar loop) with StepOf, step by
// step, for k = 1..33 and the edge values.
func TestVectorMatchesScalar(t *testing.T) {
	if !useVector {
		t.Log("no vector kernel in this build or on this CPU: checking the scalar path against itself")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for k := 1; k <= 33; k++ {
		for trial := range 200 {
			n := 1 + rng.IntN(8)
			steps := make([][]float64, n)
			for i := range steps {
				steps[i] = randomAlts(rng, k-rng.IntN(min(k, 3)))
			}
			offs, vals := trace(steps)
			hs, hv := make([]float64, n), make([]float64, n)

			ms, bs, ws := stepsScalar(vals, offs, hs, 1e-4)
			mv, bv, wv := vec64(vals, offs, hv, 1e-4)
			if bs != n || ws != OK || bv != bs || wv != ws {
				t.Fatalf("k=%d trial %d float64: vector (%d, %d), scalar (%d, %d)", k, trial, bv, wv, bs, ws)
			}
			checkSteps(t, "float64", hv, hs, mv, ms)
			for i, s := range steps {
				st, _ := StepOf(s, 1e-4)
				if st.H != hs[i] {
					t.Fatalf("stepsScalar H %v, StepOf %v", hs[i], st.H)
				}
			}

			v32 := to32(vals)
			ms, bs, ws = stepsScalar(v32, offs, hs, 1e-4)
			mv, bv, wv = vec32(v32, offs, hv, 1e-4)
			if bs != n || ws != OK || bv != bs || wv != ws {
				t.Fatalf("k=%d trial %d float32: vector (%d, %d), scalar (%d, %d)", k, trial, bv, wv, bs, ws)
			}
			checkSteps(t, "float32", hv, hs, mv, ms)
		}
	}
}

// TestVectorIgnoresValuesPastStep: the kernels read a step's last partial
// vector whole when the buffer goes on (in a batch, with the next
// response's values), so whatever follows, even +Inf or NaN of a response
// that will be rejected, must not reach the step's entropy. Before, a +Inf
// there made the last step's H NaN (0 x +Inf in the masked lanes), and the
// response before a rejected one was written with NaN features.
func TestVectorIgnoresValuesPastStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	tails := []float64{math.Inf(1), math.NaN(), math.Inf(-1), 0.5, 800, 1e39, NoProb}
	for k := 1; k <= 33; k++ {
		for trial := range 40 {
			n := 1 + rng.IntN(4)
			steps := make([][]float64, n)
			for i := range steps {
				steps[i] = randomAlts(rng, k-rng.IntN(min(k, 3)))
			}
			offs, vals := trace(steps)
			hs, hv := make([]float64, n), make([]float64, n)
			ms, _, _ := stepsScalar(vals, offs, hs, 1e-4)
			tail := tails[trial%len(tails)]
			for range 8 {
				vals = append(vals, tail)
			}
			mv, bv, wv := vec64(vals, offs, hv, 1e-4)
			if bv != n || wv != OK {
				t.Fatalf("k=%d trial %d float64, %v after the trace: stopped at step %d (%d)", k, trial, tail, bv, wv)
			}
			checkSteps(t, "float64 followed by "+strconv.FormatFloat(tail, 'g', -1, 64), hv, hs, mv, ms)

			v32 := to32(vals)
			ms, _, _ = stepsScalar(v32, offs, hs, 1e-4)
			mv, bv, wv = vec32(v32, offs, hv, 1e-4)
			if bv != n || wv != OK {
				t.Fatalf("k=%d trial %d float32, %v after the trace: stopped at step %d (%d)", k, trial, tail, bv, wv)
			}
			checkSteps(t, "float32 followed by "+strconv.FormatFloat(tail, 'g', -1, 64), hv, hs, mv, ms)
		}
	}
}

// TestVectorRejectsLikeScalar plants one invalid value and checks that both
// kernels stop at the same step with the same class.
func TestVectorRejectsLikeScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	bad := []struct {
		v    float64
		want Bad
	}{{math.NaN(), NaN}, {math.Inf(1), NaN}, {0.5, Positive}, {2e-4, Positive}}
	for trial := range 2000 {
		k := 1 + rng.IntN(24)
		n := 1 + rng.IntN(6)
		steps := make([][]float64, n)
		for i := range steps {
			steps[i] = randomAlts(rng, k)
		}
		at := rng.IntN(n)
		b := bad[trial%len(bad)]
		steps[at][rng.IntN(k)] = b.v
		empty := trial%7 == 0 && at > 0
		if empty {
			steps[at-1] = nil
		}
		offs, vals := trace(steps)
		wantAt, wantWhy := at, b.want
		if empty {
			wantAt, wantWhy = at-1, Empty
		}
		h := make([]float64, n)
		for _, run := range []struct {
			name string
			f    func() (float64, int, Bad)
		}{
			{"scalar64", func() (float64, int, Bad) { return stepsScalar(vals, offs, h, 1e-4) }},
			{"vector64", func() (float64, int, Bad) { return vec64(vals, offs, h, 1e-4) }},
			{"scalar32", func() (float64, int, Bad) { return stepsScalar(to32(vals), offs, h, 1e-4) }},
			{"vector32", func() (float64, int, Bad) { return vec32(to32(vals), offs, h, 1e-4) }},
			{"Steps", func() (float64, int, Bad) { return Steps(vals, offs, h, 1e-4) }},
		} {
			_, gotAt, gotWhy := run.f()
			if gotAt != wantAt || gotWhy != wantWhy {
				t.Fatalf("trial %d %s: stopped at step %d (%d), want %d (%d)", trial, run.name, gotAt, gotWhy, wantAt, wantWhy)
			}
		}
	}
}

// A negative maxLogprob makes the zero-filled dead lanes of a partial vector
// fail the check; the kernel must then fall back, not reject.
func TestVectorNegativeMaxLogprob(t *testing.T) {
	steps := [][]float64{{-1, -2, -3}, {-0.5}, {-9999, -0.1}}
	offs, vals := trace(steps)
	hs, hv := make([]float64, 3), make([]float64, 3)
	ms, bs, ws := stepsScalar(vals, offs, hs, -0.05)
	mv, bv, wv := vec64(vals, offs, hv, -0.05)
	if bs != 3 || ws != OK || bv != bs || wv != ws {
		t.Fatalf("vector (%d, %d), scalar (%d, %d)", bv, wv, bs, ws)
	}
	checkSteps(t, "float64", hv, hs, mv, ms)
}

func BenchmarkSteps(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	steps := make([][]float64, 400)
	for i := range steps {
		steps[i] = make([]float64, 20)
		for j := range steps[i] {
			steps[i][j] = -rng.ExpFloat64() * 3
		}
	}
	offs, vals := trace(steps)
	v32 := to32(vals)
	h := make([]float64, len(steps))
	for _, run := range []struct {
		name string
		f    func()
	}{
		{"scalar", func() { stepsScalar(v32, offs, h, 1e-4) }},
		{"vector", func() { stepsVec32(v32, offs, h, 1e-4) }},
	} {
		b.Run(run.name, func(b *testing.B) {
			if run.name == "vector" && !useVector {
				b.Skip("no vector kernel in this build")
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU(b)
			for b.Loop() {
				run.f()
			}
			cpu := threadCPU(b) - cpu0
			b.ReportMetric(float64(b.N*len(steps))/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric(float64(b.N*len(steps))/cpu.Seconds(), "cpu-tokens/s")
		})
	}
}

// threadCPU is the CPU time the calling OS thread has used, a steadier
// measure than wall time on a shared machine.
func threadCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		b.Skipf("getrusage(RUSAGE_THREAD): %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
