//go:build goexperiment.simd && amd64

package entropy

import (
	"math"
	"simd/archsimd"
)

// useVector says whether the AVX-512 kernel runs; without AVX-512 the scalar
// StepOf loop does.
var useVector = archsimd.X86.AVX512()

// The vector kernel works on 8 float64 lanes, one alternative per lane. Its
// exp reduces x = (k/16) ln2 + r with |r| <= ln2/32, looks 2^((k mod 16)/16)
// up in a 16-entry table held in two registers (VPERMI2PD), evaluates a
// degree-7 Taylor polynomial for e^r (truncation error 1.2e-18) and adds
// floor(k/16) to the exponent: relative error below 5e-16, like Exp
// (steps_simd_test.go measures it against math.Exp).
//
// Each step leaves three vectors: the lane sums of p*l and the lane-wise top
// two p. Eight steps at a time are reduced together by a transposing tree, so
// that no step pays for horizontal operations of its own.
const (
	inv16Ln2 = 16 / math.Ln2
	ln2Hi16  = 6.93147180369123816490e-01 / 16
	ln2Lo16  = 1.90821492927058770002e-10 / 16
)

// vc holds the kernel's constants broadcast to 8 lanes. The kernel loads
// them where it uses them (one instruction each) instead of holding them in
// registers: Go's register allocator gives vectors 15 registers and spills
// the loop's accumulators otherwise.
var vc = func() (c [cN][8]float64) {
	for i, v := range [cN]float64{
		cMin: expMin, cInv: inv16Ln2, cLn2Hi: -ln2Hi16, cLn2Lo: -ln2Lo16,
		c7: 1.0 / 5040, c6: 1.0 / 720, c5: 1.0 / 120, c4: 1.0 / 24, c3: 1.0 / 6, c2: 1.0 / 2, c1: 1,
	} {
		for j := range c[i] {
			c[i][j] = v
		}
	}
	for j := range 16 {
		c[cTab+j/8][j%8] = math.Exp2(float64(j) / 16)
	}
	return c
}()

const (
	cMin = iota
	cInv
	cLn2Hi
	cLn2Lo
	c7
	c6
	c5
	c4
	c3
	c2
	c1
	cTab // 2^(j/16), j = 0..7
	cTab2
	cN
)

func ld(i int) archsimd.Float64x8 { return archsimd.LoadFloat64x8(&vc[i]) }

// Index vectors of the transposing reduction (VPERMI2PD picks from x:y, 0-15).
var (
	idxL2a = [8]uint64{0, 1, 8, 9, 4, 5, 12, 13}
	idxL2b = [8]uint64{2, 3, 10, 11, 6, 7, 14, 15}
	idxL3a = [8]uint64{0, 1, 2, 3, 8, 9, 10, 11}
	idxL3b = [8]uint64{4, 5, 6, 7, 12, 13, 14, 15}
)

// exp8 is e^x for x in [expMin, 1].
func exp8(x archsimd.Float64x8) archsimd.Float64x8 {
	kf := x.Mul(ld(cInv)).RoundToEvenScaled(0)
	r := kf.MulAdd(ld(cLn2Hi), x)
	r = kf.MulAdd(ld(cLn2Lo), r)
	q := ld(c7).MulAdd(r, ld(c6))
	q = q.MulAdd(r, ld(c5))
	q = q.MulAdd(r, ld(c4))
	q = q.MulAdd(r, ld(c3))
	q = q.MulAdd(r, ld(c2))
	q = q.MulAdd(r, ld(c1))
	q = q.MulAdd(r, ld(c1))
	k := kf.ConvertToInt64()
	// VPERMI2PD reads the low 4 bits of k: k mod 16. The exponent field gets
	// floor(k/16), at least -1021 for x >= -708, so the result stays normal.
	t := ld(cTab).ConcatPermute(ld(cTab2), k.AsUint64x8()).Mul(q)
	return t.AsInt64x8().Add(k.ShiftAllRight(4).ShiftAllLeft(52)).AsFloat64x8()
}

// fold adds 8 alternatives x, all in (expMin, maxLogprob], to a step.
func fold(x, acc, top1, top2 archsimd.Float64x8) (archsimd.Float64x8, archsimd.Float64x8, archsimd.Float64x8) {
	p := exp8(x)
	return p.MulAdd(x, acc), top1.Max(p), top2.Max(top1.Min(p))
}

// group holds the accumulators of up to 8 steps until they are reduced.
type group struct {
	acc, top1, top2 [8][8]float64
}

// put stores step j's accumulators.
func (g *group) put(j int, acc, top1, top2 archsimd.Float64x8) {
	acc.Store(&g.acc[j])
	top1.Store(&g.top1[j])
	top2.Store(&g.top2[j])
}

// putStep stores a step computed by StepOf.
func (g *group) putStep(j int, st Step) {
	g.acc[j] = [8]float64{-st.H}
	g.top1[j] = [8]float64{st.Margin}
	g.top2[j] = [8]float64{}
}

// reduce returns, for the 8 steps of g (lane j for step j), H and the margin.
func (g *group) reduce() (h, margin archsimd.Float64x8) {
	l2a, l2b := archsimd.LoadUint64x8(&idxL2a), archsimd.LoadUint64x8(&idxL2b)
	l3a, l3b := archsimd.LoadUint64x8(&idxL3a), archsimd.LoadUint64x8(&idxL3b)

	// Sums: pairs of steps first (lane 2i: step a, 2i+1: step b, per 128-bit
	// group i), then groups of four, then all eight.
	s01 := sumPair(archsimd.LoadFloat64x8(&g.acc[0]), archsimd.LoadFloat64x8(&g.acc[1]))
	s23 := sumPair(archsimd.LoadFloat64x8(&g.acc[2]), archsimd.LoadFloat64x8(&g.acc[3]))
	s45 := sumPair(archsimd.LoadFloat64x8(&g.acc[4]), archsimd.LoadFloat64x8(&g.acc[5]))
	s67 := sumPair(archsimd.LoadFloat64x8(&g.acc[6]), archsimd.LoadFloat64x8(&g.acc[7]))
	s03 := s01.ConcatPermute(s23, l2a).Add(s01.ConcatPermute(s23, l2b))
	s47 := s45.ConcatPermute(s67, l2a).Add(s45.ConcatPermute(s67, l2b))
	sum := s03.ConcatPermute(s47, l3a).Add(s03.ConcatPermute(s47, l3b))

	// Top two, merging (hi, lo) pairs along the same tree.
	h01, o01 := topPair(archsimd.LoadFloat64x8(&g.top1[0]), archsimd.LoadFloat64x8(&g.top2[0]), archsimd.LoadFloat64x8(&g.top1[1]), archsimd.LoadFloat64x8(&g.top2[1]))
	h23, o23 := topPair(archsimd.LoadFloat64x8(&g.top1[2]), archsimd.LoadFloat64x8(&g.top2[2]), archsimd.LoadFloat64x8(&g.top1[3]), archsimd.LoadFloat64x8(&g.top2[3]))
	h45, o45 := topPair(archsimd.LoadFloat64x8(&g.top1[4]), archsimd.LoadFloat64x8(&g.top2[4]), archsimd.LoadFloat64x8(&g.top1[5]), archsimd.LoadFloat64x8(&g.top2[5]))
	h67, o67 := topPair(archsimd.LoadFloat64x8(&g.top1[6]), archsimd.LoadFloat64x8(&g.top2[6]), archsimd.LoadFloat64x8(&g.top1[7]), archsimd.LoadFloat64x8(&g.top2[7]))
	h03, o03 := merge2(h01.ConcatPermute(h23, l2a), o01.ConcatPermute(o23, l2a), h01.ConcatPermute(h23, l2b), o01.ConcatPermute(o23, l2b))
	h47, o47 := merge2(h45.ConcatPermute(h67, l2a), o45.ConcatPermute(o67, l2a), h45.ConcatPermute(h67, l2b), o45.ConcatPermute(o67, l2b))
	p1, p2 := merge2(h03.ConcatPermute(h47, l3a), o03.ConcatPermute(o47, l3a), h03.ConcatPermute(h47, l3b), o03.ConcatPermute(o47, l3b))
	var zero archsimd.Float64x8
	return zero.Sub(sum), p1.Sub(p2)
}

// sumPair adds adjacent lanes: per 128-bit group i, a[2i]+a[2i+1], b[2i]+b[2i+1].
func sumPair(a, b archsimd.Float64x8) archsimd.Float64x8 {
	return a.SelectFromPairGrouped(0, 2, b).Add(a.SelectFromPairGrouped(1, 3, b))
}

// topPair is sumPair for (top1, top2) pairs: a1, a2 of one step, b1, b2 of another.
func topPair(a1, a2, b1, b2 archsimd.Float64x8) (archsimd.Float64x8, archsimd.Float64x8) {
	return merge2(a1.SelectFromPairGrouped(0, 2, b1), a2.SelectFromPairGrouped(0, 2, b2),
		a1.SelectFromPairGrouped(1, 3, b1), a2.SelectFromPairGrouped(1, 3, b2))
}

// merge2 returns the top two of the union of two lane-wise top-two pairs.
func merge2(a1, a2, b1, b2 archsimd.Float64x8) (hi, lo archsimd.Float64x8) {
	return a1.Max(b1), a1.Min(b1).Max(a2.Max(b2))
}

// hsum is the sum of x's lanes.
func hsum(x archsimd.Float64x8) float64 {
	y := x.GetLo().Add(x.GetHi())
	z := y.GetLo().Add(y.GetHi())
	return z.Add(z.SelectFromPair(1, 1, z)).GetElem(0)
}

func stepsVec32(values []float32, offs []int32, h []float64, maxLogprob float64) (float64, int, Bad) {
	mx := [8]float64{maxLogprob, maxLogprob, maxLogprob, maxLogprob, maxLogprob, maxLogprob, maxLogprob, maxLogprob}
	var margins archsimd.Float64x8
	var g group
	n := len(offs) - 1
	h = h[:n]
	for t0 := 0; t0 < n; t0 += 8 {
		m := min(8, n-t0)
		if m < 8 {
			g = group{}
		}
		for j := range m {
			t := t0 + j
			lo, hi := offs[t], offs[t+1]
			if lo >= hi {
				return 0, t, Empty
			}
			alts := values[lo:hi]
			var acc, top1, top2 archsimd.Float64x8
			a := alts
			// Whole vectors of alternatives that all have a probability.
			for ; len(a) >= 8; a = a[8:] {
				x := archsimd.LoadFloat32x8Slice(a).ConvertToFloat64()
				if x.LessEqual(archsimd.LoadFloat64x8(&mx)).ToBits()&x.Greater(ld(cMin)).ToBits() != 0xff {
					break
				}
				acc, top1, top2 = fold(x, acc, top1, top2)
			}
			// The rest, with lane masks: the last partial vector (read whole
			// when the buffer extends past it), and after a value without
			// probability or an invalid one, everything from there on.
			ok := true
			for ; len(a) > 0; a = a[min(8, len(a)):] {
				var x archsimd.Float64x8
				if cap(a) >= 8 {
					x = archsimd.LoadFloat32x8Slice(a[:8]).ConvertToFloat64()
				} else {
					// Through a full array: the race detector's pointer
					// checks abort on archsimd's partial loads.
					var buf [8]float32
					copy(buf[:], a)
					x = archsimd.LoadFloat32x8(&buf).ConvertToFloat64()
				}
				live := uint8(1)<<min(8, len(a)) - 1
				if x.LessEqual(archsimd.LoadFloat64x8(&mx)).ToBits()&live != live {
					ok = false
					break
				}
				// As fold, with p = 0 in the lanes not kept.
				keep := archsimd.Mask64x8FromBits(x.Greater(ld(cMin)).ToBits() & live)
				// x too: a lane past the step holds whatever follows it in
				// the buffer (the next response's values), and 0 x +Inf is NaN.
				x = x.Max(ld(cMin)).Masked(keep)
				p := exp8(x).Masked(keep)
				acc, top1, top2 = p.MulAdd(x, acc), top1.Max(p), top2.Max(top1.Min(p))
			}
			if !ok {
				// Classify the invalid value. (With maxLogprob < 0 it can
				// be a lane StepOf handles fine.)
				st, b := StepOf(alts, maxLogprob)
				if b != OK {
					return 0, t, b
				}
				g.putStep(j, st)
				continue
			}
			g.put(j, acc, top1, top2)
		}
		hv, mv := g.reduce()
		if m == 8 {
			hv.StoreSlice(h[t0:])
		} else {
			var buf [8]float64 // not StoreSlicePart: see the partial loads
			hv.Store(&buf)
			copy(h[t0:], buf[:m])
		}
		margins = margins.Add(mv)
	}
	return hsum(margins), n, OK
}

func stepsVec64(values []float64, offs []int32, h []float64, maxLogprob float64) (float64, int, Bad) {
	mx := [8]float64{maxLogprob, maxLogprob, maxLogprob, maxLogprob, maxLogprob, maxLogprob, maxLogprob, maxLogprob}
	var margins archsimd.Float64x8
	var g group
	n := len(offs) - 1
	h = h[:n]
	for t0 := 0; t0 < n; t0 += 8 {
		m := min(8, n-t0)
		if m < 8 {
			g = group{}
		}
		for j := range m {
			t := t0 + j
			lo, hi := offs[t], offs[t+1]
			if lo >= hi {
				return 0, t, Empty
			}
			alts := values[lo:hi]
			var acc, top1, top2 archsimd.Float64x8
			a := alts
			// Whole vectors of alternatives that all have a probability.
			for ; len(a) >= 8; a = a[8:] {
				x := archsimd.LoadFloat64x8Slice(a)
				if x.LessEqual(archsimd.LoadFloat64x8(&mx)).ToBits()&x.Greater(ld(cMin)).ToBits() != 0xff {
					break
				}
				acc, top1, top2 = fold(x, acc, top1, top2)
			}
			// The rest, with lane masks: the last partial vector (read whole
			// when the buffer extends past it), and after a value without
			// probability or an invalid one, everything from there on.
			ok := true
			for ; len(a) > 0; a = a[min(8, len(a)):] {
				var x archsimd.Float64x8
				if cap(a) >= 8 {
					x = archsimd.LoadFloat64x8Slice(a[:8])
				} else {
					var buf [8]float64 // as in stepsVec32
					copy(buf[:], a)
					x = archsimd.LoadFloat64x8(&buf)
				}
				live := uint8(1)<<min(8, len(a)) - 1
				if x.LessEqual(archsimd.LoadFloat64x8(&mx)).ToBits()&live != live {
					ok = false
					break
				}
				// As fold, with p = 0 in the lanes not kept.
				keep := archsimd.Mask64x8FromBits(x.Greater(ld(cMin)).ToBits() & live)
				// x too: a lane past the step holds whatever follows it in
				// the buffer (the next response's values), and 0 x +Inf is NaN.
				x = x.Max(ld(cMin)).Masked(keep)
				p := exp8(x).Masked(keep)
				acc, top1, top2 = p.MulAdd(x, acc), top1.Max(p), top2.Max(top1.Min(p))
			}
			if !ok {
				// Classify the invalid value. (With maxLogprob < 0 it can
				// be a lane StepOf handles fine.)
				st, b := StepOf(alts, maxLogprob)
				if b != OK {
					return 0, t, b
				}
				g.putStep(j, st)
				continue
			}
			g.put(j, acc, top1, top2)
		}
		hv, mv := g.reduce()
		if m == 8 {
			hv.StoreSlice(h[t0:])
		} else {
			var buf [8]float64 // not StoreSlicePart: see the partial loads
			hv.Store(&buf)
			copy(h[t0:], buf[:m])
		}
		margins = margins.Add(mv)
	}
	return hsum(margins), n, OK
}
