package estimate

import (
	"cmp"
	"slices"
)

// Isotonic is a non-decreasing calibration map fitted by pool-adjacent-violators:
// knots (X[i], Y[i]) with X strictly increasing; Predict interpolates linearly
// between knots and clips outside them (scikit-learn's IsotonicRegression with
// out_of_bounds="clip").
type Isotonic struct {
	X []float64 `json:"x"` // knot scores: the family's log-odds, or the members' average for Model.Recalibration
	Y []float64 `json:"y"` // P(correct) at each knot, non-decreasing, in [0,1]
}

// Predict maps a score to a probability.
func (m *Isotonic) Predict(s float64) float64 {
	n := len(m.X)
	if n == 0 {
		return 0.5
	}
	if s <= m.X[0] {
		return m.Y[0]
	}
	if s >= m.X[n-1] {
		return m.Y[n-1]
	}
	// Binary search: the first knot above s.
	lo, hi := 0, n-1
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if m.X[mid] <= s {
			lo = mid
		} else {
			hi = mid
		}
	}
	t := (s - m.X[lo]) / (m.X[hi] - m.X[lo])
	return m.Y[lo] + t*(m.Y[hi]-m.Y[lo])
}

// pava returns the non-decreasing sequence closest to y in weighted least
// squares (weights w, nil = 1), in place of y's order. It is the classic
// pool-adjacent-violators algorithm with a stack of blocks, O(n).
func pava(y, w []float64) []float64 {
	n := len(y)
	type block struct {
		sum, w float64
		n      int
	}
	st := make([]block, 0, n)
	for i := range n {
		b := block{sum: weight(w, i) * y[i], w: weight(w, i), n: 1}
		for len(st) > 0 {
			top := st[len(st)-1]
			if top.sum/top.w < b.sum/b.w {
				break
			}
			b = block{sum: top.sum + b.sum, w: top.w + b.w, n: top.n + b.n}
			st = st[:len(st)-1]
		}
		st = append(st, b)
	}
	out := make([]float64, 0, n)
	for _, b := range st {
		v := b.sum / b.w
		for range b.n {
			out = append(out, v)
		}
	}
	return out
}

// fitIsotonic fits a non-decreasing map from scores s to labels y (weights w
// optional). Equal scores are pooled first (weighted mean), as scikit-learn does.
func fitIsotonic(s, y, w []float64) *Isotonic {
	// Rows sorted by score as one contiguous slice: a generic sort of values,
	// not of indices through a reflective swapper (3x faster on 100k rows).
	type pt struct{ s, y, w float64 }
	pts := make([]pt, len(s))
	for i := range pts {
		pts[i] = pt{s[i], y[i], weight(w, i)}
	}
	slices.SortFunc(pts, func(a, b pt) int { return cmp.Compare(a.s, b.s) })
	var xs, ys, ws []float64
	for k := 0; k < len(pts); {
		x := pts[k].s
		end := k + 1 // at least one row per group, even for a NaN score
		for end < len(pts) && pts[end].s == x {
			end++
		}
		var sw, sy float64
		for ; k < end; k++ {
			sw += pts[k].w
			sy += pts[k].w * pts[k].y
		}
		if sw == 0 {
			continue
		}
		xs = append(xs, x)
		ys = append(ys, sy/sw)
		ws = append(ws, sw)
	}
	fit := pava(ys, ws)
	// Keep only the knots where the value changes (first and last of each
	// plateau); interpolation between the rest is unchanged.
	m := &Isotonic{}
	for i := range fit {
		if i > 0 && i < len(fit)-1 && fit[i] == fit[i-1] && fit[i] == fit[i+1] {
			continue
		}
		m.X = append(m.X, xs[i])
		m.Y = append(m.Y, fit[i])
	}
	return m
}
