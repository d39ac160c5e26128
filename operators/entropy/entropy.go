// Package entropy computes the per-step truncated entropy of a decoding trace
// from the top-k log-probabilities an LLM API returns:
//
//	H(t) = -sum_i p_i ln p_i,  p_i = exp(l_i),  no renormalisation,
//
// where entries l_i <= -9999 (vLLM's stand-in for -inf) and -Inf carry no
// probability. Since ln p_i = l_i, no logarithm is needed: H(t) = -sum p_i l_i.
//
// The kernels here are the hot loop of entrowatch; they read float32 logprobs
// straight from Arrow value buffers and allocate nothing.
//
// Steps, the whole-trace kernel, has two implementations. The portable one
// loops over StepOf. Built with GOEXPERIMENT=simd on amd64 (Go 1.26's
// experimental simd/archsimd), the package also has an AVX-512 kernel that
// Steps uses when the CPU has AVX-512 (checked at run time, falling back to
// the portable loop otherwise). Its results are within 1e-12 of the portable
// ones (the package's tests check it on random traces); it is 2-3x faster.
// The fast binary:
//
//	GOEXPERIMENT=simd GOAMD64=v3 go build ./cmd/entrowatch
package entropy

import "math"

// NoProb is the logprob at or below which an alternative carries no
// probability (vLLM writes -9999 for -inf).
const NoProb = -9999

// Step is what one decoding step contributes to a profile.
type Step struct {
	H      float64 // truncated entropy of the returned alternatives
	Margin float64 // p1 - p2 of the two most probable alternatives (p2 = 0 when only one)
}

// Bad classifies a logprob that a valid trace cannot contain.
type Bad uint8

const (
	OK       Bad = iota
	NaN          // NaN, or +Inf
	Positive     // above the tolerance for rounding noise
)

// Float is the element type of logprob lists: float32 on the wire (trace.v1),
// float64 when read at full precision from JSON.
type Float interface{ ~float32 | ~float64 }

// StepOf computes H and the margin of one step's alternatives. maxLogprob is the
// largest logprob accepted as rounding noise around 0 (e.g. 1e-4). It returns
// the first invalid value's class; H and Margin are then meaningless.
func StepOf[F Float](alts []F, maxLogprob float64) (Step, Bad) {
	// The top two are tracked on p = exp(l), which is monotone in l, so the
	// margin costs no further exponentials; p = 0 for l <= expMin.
	var h, p1, p2 float64
	for _, v := range alts {
		l := float64(v)
		if !(l <= maxLogprob) {
			if l != l || math.IsInf(l, 1) {
				return Step{}, NaN
			}
			return Step{}, Positive
		}
		if l > expMin {
			p := Exp(l)
			h -= p * l
			if p > p2 {
				if p > p1 {
					p1, p2 = p, p1
				} else {
					p2 = p
				}
			}
		}
	}
	return Step{H: h, Margin: p1 - p2}, OK
}

// prob is exp(l) with the "no probability" convention.
func prob(l float64) float64 {
	if l <= expMin {
		return 0
	}
	return Exp(l)
}

// expMin is the smallest logprob given a probability: below it math.Exp is
// subnormal (< 1e-307), which contributes nothing to an entropy or a margin,
// and -9999 (NoProb) is below it too.
const expMin = -708

// Exp returns e**x for x in [-708, 1] to within a few ulps of math.Exp
// (relative error below 1e-15); callers keep x in that range. Written to fit
// Go's inlining budget: a 256-entry table of 2^(j/256) and a degree-4
// polynomial on |r| <= ln2/512 (truncation error 4e-17).
func Exp(x float64) float64 {
	// k = round(x * 256/ln2) by the 1.5*2^52 shifter trick.
	kf := (x*invLn2N + shifter) - shifter
	k := int64(kf)
	r := x - kf*ln2NHi - kf*ln2NLo
	p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24))))
	// 2^(k/256) = 2^(k>>8) * tab[k&255]; add the exponent to the bits directly.
	return math.Float64frombits(math.Float64bits(tab[k&255]*p) + uint64(k>>8)<<52)
}

const (
	invLn2N = 256 / math.Ln2
	shifter = 0x1.8p52
	// ln2/256 split (fdlibm's ln2_hi, ln2_lo over 256) so that kf*ln2NHi is
	// exact for |kf| < 2^21.
	ln2NHi = 6.93147180369123816490e-01 / 256
	ln2NLo = 1.90821492927058770002e-10 / 256
)

// tab[j] = 2^(j/256), correctly rounded.
var tab = func() (t [256]float64) {
	for j := range t {
		t[j] = math.Exp2(float64(j) / 256)
	}
	return t
}()
