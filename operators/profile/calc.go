package profile

import (
	"fmt"
	"math"

	"github.com/entrowatch/entrowatch/operators/entropy"
	"github.com/entrowatch/entrowatch/schemas"
)

// Profile is one response's entropy profile and white-box baselines, in the
// order of schemas.ProfileFeatures and schemas.Baselines.
type Profile struct {
	N         int
	Features  [schemas.NumProfile]float64
	Baselines [schemas.NumBaselines]float64
}

// Indices into Profile.Features and Profile.Baselines.
const (
	FMean = iota
	FStd
	FMax
	FQ10
	FQ25
	FQ50
	FQ75
	FQ90
	FSkew
	FKurt
	FSea
)

const (
	BNLLMean = iota
	BNLLMax
	BNLLSum
	BPerplexity
	BMinTokenProb
	BMarginMean
	BHTop5
)

// Reject says why a trace has no profile. Reason is one of the schemas.Reason*
// values; Detail names the step and value for people.
type Reject struct {
	Reason string
	Detail string
}

func (r *Reject) Error() string { return r.Reason + ": " + r.Detail }

// Calc computes profiles. It owns reusable buffers: zero allocations per trace
// in steady state. A Calc is not safe for concurrent use; use one per worker.
type Calc struct {
	maxSteps   int
	maxLogprob float64
	h          []float64
}

// NewCalc returns a Calc for cfg, which must be valid.
func NewCalc(cfg Config) *Calc {
	return &Calc{maxSteps: cfg.MaxSteps, maxLogprob: cfg.MaxLogprob}
}

// Trace computes the profile of one response whose logprobs are float32.
func (c *Calc) Trace(chosen []float32, offs []int32, values []float32) (Profile, *Reject) {
	return Compute(c, chosen, offs, values)
}

// Compute computes the profile of one response. chosen holds the chosen
// token's logprob per step; step t's alternatives are values[offs[t]:offs[t+1]],
// so len(offs) == len(chosen)+1. It returns a *Reject for invalid input.
func Compute[F entropy.Float](c *Calc, chosen []F, offs []int32, values []F) (Profile, *Reject) {
	var p Profile
	n := len(chosen)
	switch {
	case n == 0:
		return p, &Reject{schemas.ReasonEmpty, "no generated steps"}
	case n > c.maxSteps:
		return p, &Reject{schemas.ReasonTooLong, fmt.Sprintf("%d steps, more than the maximum %d", n, c.maxSteps)}
	case len(offs) != n+1:
		return p, &Reject{schemas.ReasonMismatch, fmt.Sprintf("%d chosen-token logprobs but %d steps of top_logprobs", n, len(offs)-1)}
	}
	if cap(c.h) < n {
		c.h = make([]float64, n, max(n, 2*cap(c.h)))
	}
	h := c.h[:n]

	var sum, hmax, margins float64
	var nllSum, nllMax float64
	hmax = math.Inf(-1)
	for t := range n {
		l := float64(chosen[t])
		if !(l <= c.maxLogprob) || math.IsInf(l, -1) {
			return p, c.badChosen(t, l)
		}
		nll := -l
		nllSum += nll
		nllMax = max(nllMax, nll)

		lo, hi := offs[t], offs[t+1]
		if lo >= hi {
			return p, &Reject{schemas.ReasonNoLogprobs, fmt.Sprintf("step %d has no top_logprobs", t+1)}
		}
		st, bad := entropy.StepOf(values[lo:hi], c.maxLogprob)
		if bad != entropy.OK {
			return p, badAlt(c, t, values[lo:hi], bad)
		}
		h[t] = st.H
		sum += st.H
		hmax = max(hmax, st.H)
		margins += st.Margin
	}

	fn := float64(n)
	mean := sum / fn
	var m2, m3, m4 float64
	for _, v := range h {
		d := v - mean
		d2 := d * d
		m2 += d2
		m3 += d2 * d
		m4 += d2 * d2
	}
	f := &p.Features
	f[FMean], f[FMax], f[FSea] = mean, hmax, sum
	if n > 1 {
		s := math.Sqrt(m2 / (fn - 1))
		s2 := s * s
		f[FStd] = s
		f[FSkew] = (m3 / fn) / (s2*s + 1e-8)
		f[FKurt] = (m4 / fn) / (s2*s2 + 1e-8)
	}
	top := quantiles(h, f)

	nllMean := nllSum / fn
	b := &p.Baselines
	b[BNLLMean], b[BNLLMax], b[BNLLSum] = nllMean, nllMax, nllSum
	b[BPerplexity] = math.Exp(nllMean)
	b[BMinTokenProb] = math.Exp(-nllMax)
	b[BMarginMean] = margins / fn
	b[BHTop5] = top
	p.N = n
	return p, nil
}

func (c *Calc) badChosen(t int, l float64) *Reject {
	if l != l || math.IsInf(l, 0) {
		return &Reject{schemas.ReasonNaNLogprob, fmt.Sprintf("step %d: chosen-token logprob is %v", t+1, l)}
	}
	return &Reject{schemas.ReasonPositiveLogprob, fmt.Sprintf("step %d: chosen-token logprob %v is positive", t+1, l)}
}

func badAlt[F entropy.Float](c *Calc, t int, alts []F, bad entropy.Bad) *Reject {
	for i, v := range alts {
		l := float64(v)
		if !(l <= c.maxLogprob) {
			if bad == entropy.NaN {
				return &Reject{schemas.ReasonNaNLogprob, fmt.Sprintf("step %d, alternative %d: logprob is %v", t+1, i+1, l)}
			}
			return &Reject{schemas.ReasonPositiveLogprob, fmt.Sprintf("step %d, alternative %d: logprob %v is positive", t+1, i+1, l)}
		}
	}
	return &Reject{schemas.ReasonNaNLogprob, fmt.Sprintf("step %d: invalid logprob", t+1)}
}

// quantiles fills q10..q90 of h (numpy's default linear interpolation) and
// returns the mean of the m = max(1, ceil(0.05 n)) largest values. It reorders h.
func quantiles(h []float64, f *[schemas.NumProfile]float64) float64 {
	n := len(h)
	m := max(1, int(math.Ceil(0.05*float64(n))))
	if n <= smallN {
		insertionSort(h)
	} else {
		// Order statistics needed, ascending: each quantile's floor position
		// and its upper neighbour, and n-m for the top-m mean. Select each in
		// turn on what lies right of the previous one.
		var ks [11]int
		nk := 0
		for _, q := range qs {
			lo := int(q * float64(n-1))
			ks[nk], ks[nk+1] = lo, lo+1
			nk += 2
		}
		ks[nk] = n - m
		nk++
		sortSmall(ks[:nk])
		left := 0
		for _, k := range ks[:nk] {
			if k < left || k >= n {
				continue
			}
			selectK(h, left, n-1, k)
			left = k + 1
		}
	}
	for i, q := range qs {
		pos := q * float64(n-1)
		lo := int(pos)
		frac := pos - float64(lo)
		v := h[lo]
		if frac > 0 && lo+1 < n {
			v += frac * (h[lo+1] - h[lo])
		}
		f[FQ10+i] = v
	}
	var top float64
	for _, v := range h[n-m:] {
		top += v
	}
	return top / float64(m)
}

var qs = [5]float64{0.10, 0.25, 0.50, 0.75, 0.90}

// smallN is the length up to which sorting beats five selections.
const smallN = 40

func insertionSort(a []float64) {
	for i := 1; i < len(a); i++ {
		v := a[i]
		j := i - 1
		for j >= 0 && a[j] > v {
			a[j+1] = a[j]
			j--
		}
		a[j+1] = v
	}
}

func sortSmall(a []int) {
	for i := 1; i < len(a); i++ {
		v := a[i]
		j := i - 1
		for j >= 0 && a[j] > v {
			a[j+1] = a[j]
			j--
		}
		a[j+1] = v
	}
}

// selectK reorders a[lo..hi] so that a[k] holds the value it would have if
// a[lo..hi] were sorted, with smaller-or-equal values left of it and
// greater-or-equal ones right of it (Hoare's quickselect, median-of-three).
func selectK(a []float64, lo, hi, k int) {
	for hi-lo > 16 {
		mid := int(uint(lo+hi) >> 1)
		if a[mid] < a[lo] {
			a[mid], a[lo] = a[lo], a[mid]
		}
		if a[hi] < a[lo] {
			a[hi], a[lo] = a[lo], a[hi]
		}
		if a[hi] < a[mid] {
			a[hi], a[mid] = a[mid], a[hi]
		}
		pivot := a[mid]
		i, j := lo, hi
		for i <= j {
			for a[i] < pivot {
				i++
			}
			for a[j] > pivot {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return // a[j+1..i-1] all equal the pivot
		}
	}
	insertionSort(a[lo : hi+1])
}
