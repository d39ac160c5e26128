package profile

import (
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/entrowatch/entrowatch/operators/entropy"
	"github.com/entrowatch/entrowatch/schemas"
)

// Profile is one response's entropy profile and white-box baselines, in the
// order of schemas.ProfileFeatures and schemas.Baselines.
type Profile struct {
	N         int                           // generated steps (tokens) profiled, at least 1; 0 when rejected
	Features  [schemas.NumProfile]float64   // the entropy profile, indexed by FMean..FSea
	Baselines [schemas.NumBaselines]float64 // the baselines, indexed by BNLLMean..BHTop5
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

// Error returns the reason and the detail, as "reason: detail".
func (r *Reject) Error() string { return r.Reason + ": " + r.Detail }

// Calc computes profiles. It owns reusable buffers: zero allocations per trace
// in steady state. A Calc is not safe for concurrent use; use one per worker.
type Calc struct {
	maxSteps   int
	maxLogprob float64
	h          []float64
}

// NewCalc returns a Calc for cfg. An invalid cfg (see Config.Validate; the
// zero Config is invalid) is an error: start from DefaultConfig.
func NewCalc(cfg Config) (*Calc, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w (start from profile.DefaultConfig())", err)
	}
	return &Calc{maxSteps: cfg.MaxSteps, maxLogprob: cfg.MaxLogprob}, nil
}

// Trace computes the profile of one response whose logprobs are float32; it
// is Compute for float32.
func (c *Calc) Trace(chosen []float32, offs []int32, values []float32) (Profile, *Reject) {
	return Compute(c, chosen, offs, values)
}

// Compute computes the profile of one response. chosen holds the chosen
// token's logprob per step; step t's alternatives are values[offs[t]:offs[t+1]],
// so len(offs) == len(chosen)+1 (offsets into the whole value buffer, as
// Arrow list offsets are, need not start at 0). It returns a *Reject for
// invalid input, also step_mismatch for an offset outside values. The
// profile is computed without allocating once c's buffer fits the trace.
func Compute[F entropy.Float](c *Calc, chosen []F, offs []int32, values []F) (Profile, *Reject) {
	if len(offs) == len(chosen)+1 {
		// One pass over the offsets, a fraction of a percent of the kernel's
		// time; the operator, whose offsets Arrow already bounds, skips it.
		for t, o := range offs {
			if uint(int(o)) > uint(len(values)) {
				return Profile{}, &Reject{schemas.ReasonMismatch, fmt.Sprintf("offs[%d] = %d is outside the %d values of top_logprobs", t, o, len(values))}
			}
		}
	}
	return compute(c, chosen, offs, values)
}

// MaxAlternatives is the most alternatives a step may have: the top 20, and
// the sampled token that vLLM appends when it is not among them.
const MaxAlternatives = 21

// compute is Compute for offsets known to lie within values.
func compute[F entropy.Float](c *Calc, chosen []F, offs []int32, values []F) (Profile, *Reject) {
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
	// The profile is defined on the top-20 alternatives (21 when vLLM
	// appends the sampled token): an entropy over 50 or 100,000 is another
	// quantity, and the estimator would read it as a very uncertain answer.
	for t := range n {
		if k := offs[t+1] - offs[t]; k > MaxAlternatives {
			return p, &Reject{schemas.ReasonTooLong, fmt.Sprintf("step %d has %d alternatives, more than the %d the profile is defined on (request top_logprobs=20)", t+1, k, MaxAlternatives)}
		}
	}
	if cap(c.h) < n {
		c.h = make([]float64, n, max(n, 2*cap(c.h)))
	}
	h := c.h[:n]

	// Reject reasons follow step order, and within a step: chosen token,
	// missing alternatives, invalid alternative. The chosen tokens are checked
	// first, the entropy kernel then runs on the steps before the first bad one.
	// lmin, the smallest chosen logprob, starts at +Inf, not 0: when every
	// chosen logprob is positive (rounding noise up to maxLogprob) nll_max is
	// negative, -min_t l_t, as its definition says, not clamped at 0.
	var nllSum float64
	lmin := math.Inf(1)
	nc := n
	for t, v := range chosen {
		l := float64(v)
		if !validChosen(l, c.maxLogprob) {
			nc = t
			break
		}
		nllSum -= l
		if l < lmin {
			lmin = l
		}
	}
	nllMax := 0 - lmin // -lmin, but +0, not -0, when the smallest is ±0
	margins, tb, why := entropy.Steps(values, offs[:nc+1], h[:nc], c.maxLogprob)
	switch {
	case why == entropy.Empty:
		return p, &Reject{schemas.ReasonNoLogprobs, fmt.Sprintf("step %d has no top_logprobs (request logprobs with top_logprobs=20)", tb+1)}
	case why != entropy.OK:
		lo, hi := offs[tb], offs[tb+1]
		return p, badAlt(c, tb, values[lo:hi], why)
	case nc < n:
		return p, badChosen(nc, chosen[nc])
	}
	var sum float64
	hmax := math.Inf(-1)
	for _, v := range h {
		sum += v
		if v > hmax {
			hmax = v
		}
	}

	fn := float64(n)
	// Rounding in a long sum can put the mean of equal entropies a unit or
	// two beside them (50,000 steps: 1e-12 above the max, or below the
	// min); a mean is never outside its values. Below the min it can only
	// be when the values are within the sum's rounding error (n x 1e-16
	// relative) of each other: only then is the min looked for, so the
	// usual trace pays no second pass.
	mean := min(sum/fn, hmax)
	if hmax-mean <= fn*1e-13*(1+math.Abs(hmax)) {
		mean = max(mean, slices.Min(h))
	}
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

// validChosen is the test of a chosen token's logprob: finite, and at most
// maxLogprob (rounding noise above 0 is tolerated).
func validChosen(l, maxLogprob float64) bool {
	return l <= maxLogprob && l >= -math.MaxFloat64
}

// badChosen explains an invalid chosen-token logprob. Values print in their
// own precision (a float32 0.7 as 0.7, not 0.699999988079071).
func badChosen[F entropy.Float](t int, v F) *Reject {
	if l := float64(v); l != l || math.IsInf(l, 0) {
		return &Reject{schemas.ReasonNaNLogprob, fmt.Sprintf("step %d: chosen-token logprob is %v", t+1, v)}
	}
	return &Reject{schemas.ReasonPositiveLogprob, fmt.Sprintf("step %d: chosen-token logprob %v is positive", t+1, v)}
}

func badAlt[F entropy.Float](c *Calc, t int, alts []F, bad entropy.Bad) *Reject {
	for i, v := range alts {
		l := float64(v)
		if !(l <= c.maxLogprob) {
			if bad == entropy.NaN {
				return &Reject{schemas.ReasonNaNLogprob, fmt.Sprintf("step %d, alternative %d: logprob is %v", t+1, i+1, v)}
			}
			return &Reject{schemas.ReasonPositiveLogprob, fmt.Sprintf("step %d, alternative %d: logprob %v is positive", t+1, i+1, v)}
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
		// and its upper neighbour, and n-m for the top-m mean. One multi-way
		// selection partitions for all of them at once.
		var ks [11]int
		nk := 0
		for _, q := range qs {
			lo := int(q * float64(n-1))
			ks[nk], ks[nk+1] = lo, min(lo+1, n-1)
			nk += 2
		}
		ks[nk] = n - m
		nk++
		sortSmall(ks[:nk])
		multiSelect(h, 0, n-1, ks[:nk], 2*bits.Len(uint(n))+4)
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

// multiSelect reorders a[lo..hi] so that for each k in ks (ascending, within
// [lo, hi]) a[k] holds the value it would have if a[lo..hi] were sorted, with
// smaller-or-equal values left of it and greater-or-equal ones right of it.
// It partitions like quickselect but follows every side that holds a k. The
// partitions are branch-free: entropies compare unpredictably. After depth
// partitions it sorts what is left, so crafted inputs cannot make it quadratic.
func multiSelect(a []float64, lo, hi int, ks []int, depth int) {
	for len(ks) > 0 && hi-lo > 16 {
		if depth == 0 {
			slices.Sort(a[lo : hi+1])
			return
		}
		depth--
		pivot := median3(a[lo], a[int(uint(lo+hi)>>1)], a[hi])
		m := lo + partition(a[lo:hi+1], pivot, false)
		if m == lo {
			// Nothing is below the pivot: split off the run equal to it,
			// which is at least the pivot itself, so the range shrinks.
			m = lo + partition(a[lo:hi+1], pivot, true)
			for len(ks) > 0 && ks[0] < m {
				ks = ks[1:]
			}
			lo = m
			continue
		}
		// a[lo..m-1] < pivot <= a[m..hi]
		nl := 0
		for nl < len(ks) && ks[nl] < m {
			nl++
		}
		multiSelect(a, lo, m-1, ks[:nl], depth)
		ks = ks[nl:]
		lo = m
	}
	if len(ks) > 0 {
		insertionSort(a[lo : hi+1])
	}
}

// partition moves the values of a below pivot (or, with orEqual, not above
// it) to its front, in one branch-free pass, and returns how many there are.
func partition(a []float64, pivot float64, orEqual bool) int {
	j := 0
	if orEqual {
		for i, v := range a {
			a[i] = a[j]
			a[j] = v
			inc := 0
			if v <= pivot {
				inc = 1
			}
			j += inc
		}
		return j
	}
	for i, v := range a {
		a[i] = a[j]
		a[j] = v
		inc := 0
		if v < pivot {
			inc = 1
		}
		j += inc
	}
	return j
}

func median3(a, b, c float64) float64 {
	if a > b {
		a, b = b, a
	}
	// a <= b; the median is b clamped to [a, c] ordered.
	if c < b {
		b = max(a, c)
	}
	return b
}
