//go:build goexperiment.simd && amd64

package entropy

import (
	"math"
	"simd/archsimd"
)

// useVector says whether the AVX-512 kernel runs; without AVX-512 the scalar
// StepOf loop does.
var useVector = archsimd.X86.AVX512()

// The vector kernel works on 8 float64 lanes. Its exp reduces x = (k/16) ln2 + r
// with |r| <= ln2/32, looks 2^((k mod 16)/16) up in a 16-entry table held in
// two registers (VPERMI2PD), evaluates a degree-7 polynomial for e^r and scales
// by 2^floor(k/16) (VSCALEFPD): relative error about 1e-16, like Exp.
const (
	inv16Ln2 = 16 / math.Ln2
	ln2Hi16  = 6.93147180369123816490e-01 / 16
	ln2Lo16  = 1.90821492927058770002e-10 / 16
)

var tab16 = func() (t [16]float64) {
	for j := range t {
		t[j] = math.Exp2(float64(j) / 16)
	}
	return t
}()

// step8 folds 8 valid logprobs x into a step's accumulators: acc += p*l, and
// the per-lane top two of p = exp(l) (0 for l <= expMin and for dead lanes).
// live marks the lanes that hold alternatives. Written with the constants as
// arguments so that it inlines and they stay in registers across the steps.
func step8(x archsimd.Float64x8, live uint8, acc, top1, top2 *archsimd.Float64x8,
	minv, inv, ln2hi, ln2lo, sixteenth, tlo, thi archsimd.Float64x8,
) {
	keep := x.Greater(minv).And(archsimd.Mask64x8FromBits(live))
	xc := x.Max(minv)
	kf := xc.Mul(inv).RoundToEvenScaled(0)
	r := kf.MulAdd(ln2hi, xc)
	r = kf.MulAdd(ln2lo, r)
	p := expPoly(r)
	t := tlo.ConcatPermute(thi, kf.ConvertToInt64().AsUint64x8())
	p = t.Mul(p).Scale(kf.Mul(sixteenth)).Masked(keep)
	*acc = p.MulAdd(xc, *acc)
	*top2 = top2.Max(top1.Min(p))
	*top1 = top1.Max(p)
}

// expPoly is e^r to within 1e-16 relative for |r| <= ln2/32 (Taylor, degree 7).
func expPoly(r archsimd.Float64x8) archsimd.Float64x8 {
	q := archsimd.BroadcastFloat64x8(1.0/5040).MulAdd(r, archsimd.BroadcastFloat64x8(1.0/720))
	q = q.MulAdd(r, archsimd.BroadcastFloat64x8(1.0/120))
	q = q.MulAdd(r, archsimd.BroadcastFloat64x8(1.0/24))
	q = q.MulAdd(r, archsimd.BroadcastFloat64x8(1.0/6))
	q = q.MulAdd(r, archsimd.BroadcastFloat64x8(1.0/2))
	one := archsimd.BroadcastFloat64x8(1)
	q = q.MulAdd(r, one)
	return q.MulAdd(r, one)
}

// reduce returns a step's H and margin from its accumulators.
func reduce(acc, top1, top2 archsimd.Float64x8) (h, margin float64) {
	h = -hsum(acc)
	p1 := hmax(top1)
	eq := top1.Equal(archsimd.BroadcastFloat64x8(p1))
	bits := eq.ToBits()
	if bits&(bits-1) != 0 {
		return h, 0 // the largest p is in two lanes
	}
	// The second largest is either in another lane's top1 or below the
	// largest in its own lane.
	return h, p1 - hmax(top2.Merge(top1, eq))
}

func hsum(x archsimd.Float64x8) float64 {
	y := x.GetLo().Add(x.GetHi())
	z := y.GetLo().Add(y.GetHi())
	return z.GetElem(0) + z.GetElem(1)
}

// hmax is the largest lane of x, which holds no NaN.
func hmax(x archsimd.Float64x8) float64 {
	y := x.GetLo().Max(x.GetHi())
	z := y.GetLo().Max(y.GetHi())
	a, b := z.GetElem(0), z.GetElem(1)
	if b > a {
		return b
	}
	return a
}

func stepsVec32(values []float32, offs []int32, h []float64, maxLogprob float64) (margins float64, bad int, why Bad) {
	maxv := archsimd.BroadcastFloat64x8(maxLogprob)
	minv := archsimd.BroadcastFloat64x8(expMin)
	inv := archsimd.BroadcastFloat64x8(inv16Ln2)
	ln2hi := archsimd.BroadcastFloat64x8(-ln2Hi16)
	ln2lo := archsimd.BroadcastFloat64x8(-ln2Lo16)
	sixteenth := archsimd.BroadcastFloat64x8(1.0 / 16)
	tlo := archsimd.LoadFloat64x8((*[8]float64)(tab16[:8]))
	thi := archsimd.LoadFloat64x8((*[8]float64)(tab16[8:]))
	n := len(offs) - 1
	h = h[:n]
	for t := range h {
		lo, hi := offs[t], offs[t+1]
		if lo >= hi {
			return margins, t, Empty
		}
		alts := values[lo:hi]
		var acc, top1, top2 archsimd.Float64x8
		ok := true
		a := alts
		for ; len(a) >= 8; a = a[8:] {
			x := archsimd.LoadFloat32x8Slice(a).ConvertToFloat64()
			if x.LessEqual(maxv).ToBits() != 0xff {
				ok = false
				break
			}
			step8(x, 0xff, &acc, &top1, &top2, minv, inv, ln2hi, ln2lo, sixteenth, tlo, thi)
		}
		if ok && len(a) > 0 {
			x := archsimd.LoadFloat32x8SlicePart(a).ConvertToFloat64()
			live := uint8(1)<<len(a) - 1
			if ok = x.LessEqual(maxv).ToBits()&live == live; ok {
				step8(x, live, &acc, &top1, &top2, minv, inv, ln2hi, ln2lo, sixteenth, tlo, thi)
			}
		}
		if !ok {
			// Classify the invalid value (or, with maxLogprob < 0, a dead
			// lane that failed the check) the scalar way.
			st, b := StepOf(alts, maxLogprob)
			if b != OK {
				return margins, t, b
			}
			h[t] = st.H
			margins += st.Margin
			continue
		}
		var m float64
		h[t], m = reduce(acc, top1, top2)
		margins += m
	}
	return margins, n, OK
}

func stepsVec64(values []float64, offs []int32, h []float64, maxLogprob float64) (margins float64, bad int, why Bad) {
	maxv := archsimd.BroadcastFloat64x8(maxLogprob)
	minv := archsimd.BroadcastFloat64x8(expMin)
	inv := archsimd.BroadcastFloat64x8(inv16Ln2)
	ln2hi := archsimd.BroadcastFloat64x8(-ln2Hi16)
	ln2lo := archsimd.BroadcastFloat64x8(-ln2Lo16)
	sixteenth := archsimd.BroadcastFloat64x8(1.0 / 16)
	tlo := archsimd.LoadFloat64x8((*[8]float64)(tab16[:8]))
	thi := archsimd.LoadFloat64x8((*[8]float64)(tab16[8:]))
	n := len(offs) - 1
	h = h[:n]
	for t := range h {
		lo, hi := offs[t], offs[t+1]
		if lo >= hi {
			return margins, t, Empty
		}
		alts := values[lo:hi]
		var acc, top1, top2 archsimd.Float64x8
		ok := true
		a := alts
		for ; len(a) >= 8; a = a[8:] {
			x := archsimd.LoadFloat64x8Slice(a)
			if x.LessEqual(maxv).ToBits() != 0xff {
				ok = false
				break
			}
			step8(x, 0xff, &acc, &top1, &top2, minv, inv, ln2hi, ln2lo, sixteenth, tlo, thi)
		}
		if ok && len(a) > 0 {
			x := archsimd.LoadFloat64x8SlicePart(a)
			live := uint8(1)<<len(a) - 1
			if ok = x.LessEqual(maxv).ToBits()&live == live; ok {
				step8(x, live, &acc, &top1, &top2, minv, inv, ln2hi, ln2lo, sixteenth, tlo, thi)
			}
		}
		if !ok {
			// Classify the invalid value (or, with maxLogprob < 0, a dead
			// lane that failed the check) the scalar way.
			st, b := StepOf(alts, maxLogprob)
			if b != OK {
				return margins, t, b
			}
			h[t] = st.H
			margins += st.Margin
			continue
		}
		var m float64
		h[t], m = reduce(acc, top1, top2)
		margins += m
	}
	return margins, n, OK
}
