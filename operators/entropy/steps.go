package entropy

// Empty classifies a step that has no alternatives at all; only Steps
// returns it.
const Empty Bad = Positive + 1

// Steps runs StepOf over every step of a trace: step t's alternatives are
// values[offs[t]:offs[t+1]], its entropy goes to h[t], and the margins are
// summed. It stops at the first step that has no alternatives or an invalid
// one and returns its index and class; bad == len(offs)-1 (and why == OK)
// when every step is valid. h must have len(offs)-1 elements.
//
// Where the build and the CPU allow it (GOEXPERIMENT=simd on amd64 with
// AVX-512), float32 and float64 values take a vectorised path whose results
// are within 1e-12 (relative, H) and 1e-15 (absolute, margin) of StepOf's.
func Steps[F Float](values []F, offs []int32, h []float64, maxLogprob float64) (margins float64, bad int, why Bad) {
	if useVector {
		switch v := any(values).(type) {
		case []float32:
			return stepsVec32(v, offs, h, maxLogprob)
		case []float64:
			return stepsVec64(v, offs, h, maxLogprob)
		}
	}
	return stepsScalar(values, offs, h, maxLogprob)
}

func stepsScalar[F Float](values []F, offs []int32, h []float64, maxLogprob float64) (margins float64, bad int, why Bad) {
	n := len(offs) - 1
	h = h[:n]
	for t := range h {
		lo, hi := offs[t], offs[t+1]
		if lo >= hi {
			return margins, t, Empty
		}
		st, b := StepOf(values[lo:hi], maxLogprob)
		if b != OK {
			return margins, t, b
		}
		h[t] = st.H
		margins += st.Margin
	}
	return margins, n, OK
}

// Kernel names the entropy kernel this binary runs: "avx512" (built with
// GOEXPERIMENT=simd on amd64, on a CPU with AVX-512) or "portable".
func Kernel() string {
	if useVector {
		return "avx512"
	}
	return "portable"
}
