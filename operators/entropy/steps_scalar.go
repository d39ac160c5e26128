//go:build !(goexperiment.simd && amd64)

package entropy

// useVector is false: this build has no vectorised kernel (build with
// GOEXPERIMENT=simd on amd64 for one).
const useVector = false

func stepsVec32(values []float32, offs []int32, h []float64, maxLogprob float64) (float64, int, Bad) {
	return stepsScalar(values, offs, h, maxLogprob)
}

func stepsVec64(values []float64, offs []int32, h []float64, maxLogprob float64) (float64, int, Bad) {
	return stepsScalar(values, offs, h, maxLogprob)
}
