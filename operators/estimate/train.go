package estimate

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
)

// Families and calibrations.
const (
	FamilyLogreg = "logreg"
	FamilyForest = "forest"
	FamilyMLP    = "mlp"

	CalPlatt    = "platt"
	CalIsotonic = "isotonic"
	CalNone     = "none"
)

// TrainConfig selects how a model is fitted.
type TrainConfig struct {
	Family      string // logreg (default) | forest | mlp
	Calibration string // isotonic (default) | platt | none
	Balance     bool   // weight classes to equal total weight (default false)
	Folds       int    // cross-validation folds for hyper-parameters and calibration (default 5)
	// Screen keeps the Screen features whose correctness AUROC, measured
	// inside each training domain and averaged over domains, is furthest from
	// 0.5; 0 keeps them all. Default 2: signals that separate right from wrong
	// within a domain transfer to new domains better than the full profile,
	// which also learns how the training domains differ (see docs/estimator.md).
	Screen int
	Seed   uint64 // fold assignment and MLP initialisation (default 1)
}

// DefaultTrainConfig is the method `entrowatch train` uses unless told otherwise.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{Family: FamilyLogreg, Calibration: CalIsotonic, Folds: 5, Screen: 2, Seed: 1}
}

// Validate checks the configuration.
func (c TrainConfig) Validate() error {
	switch c.Family {
	case FamilyLogreg, FamilyForest, FamilyMLP:
	default:
		return fmt.Errorf("family %q: want logreg, forest or mlp", c.Family)
	}
	switch c.Calibration {
	case CalPlatt, CalIsotonic, CalNone:
	default:
		return fmt.Errorf("calibration %q: want platt, isotonic or none", c.Calibration)
	}
	if c.Folds < 2 {
		return fmt.Errorf("folds = %d, want >= 2", c.Folds)
	}
	if c.Screen < 0 {
		return fmt.Errorf("screen = %d, want >= 0", c.Screen)
	}
	return nil
}

// ErrOneClass is returned when training rows are all correct or all wrong.
var ErrOneClass = errors.New("training rows are all correct or all incorrect: nothing to learn; add rows of the other class")

// Fit trains one model on t (rows of one LLM, or pooled) and names it name.
func Fit(t *Table, name string, cfg TrainConfig) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pos := 0
	for _, y := range t.Y {
		if y > 0.5 {
			pos++
		}
	}
	if pos == 0 || pos == t.N() {
		return nil, fmt.Errorf("model %q: %w", name, ErrOneClass)
	}
	candidates := t.Features
	if cfg.Screen > 0 && cfg.Screen < t.D() {
		keep := screen(t, cfg.Screen)
		var err error
		if t, err = t.Select(keep); err != nil {
			return nil, err
		}
	}
	d := t.D()
	mean, scale := standardise(t)
	z := make([]float64, len(t.X))
	for i := range t.N() {
		for j := range d {
			z[i*d+j] = (t.X[i*d+j] - mean[j]) / scale[j]
		}
	}
	var w []float64
	if cfg.Balance {
		w = balanceWeights(t.Y)
	}
	folds := foldsOf(t.N(), cfg.Folds, cfg.Seed)
	grid := hyperGrid(cfg.Family)
	best, bestLoss := grid[0], math.Inf(1)
	oof := make([]float64, t.N())
	var bestOOF []float64
	for _, h := range grid {
		if err := crossScores(z, d, t.Y, w, folds, cfg, h, oof); err != nil {
			return nil, err
		}
		l := logLoss(oof, t.Y, w)
		if l < bestLoss {
			best, bestLoss = h, l
			bestOOF = append(bestOOF[:0], oof...)
		}
	}
	m := &Model{Model: name, Features: append([]string(nil), t.Features...), Mean: mean, Scale: scale,
		Family: cfg.Family, Calibration: cfg.Calibration, Balance: cfg.Balance, Hyper: hyperName(cfg.Family, best),
		TrainDomains: t.Domains(), Rows: t.N(), Positives: pos}
	if len(candidates) != len(m.Features) {
		m.Candidates = append([]string(nil), candidates...)
	}
	if err := fitFamily(m, z, d, t.Y, w, cfg, best); err != nil {
		return nil, err
	}
	switch cfg.Calibration {
	case CalPlatt:
		m.Platt = fitPlatt(bestOOF, t.Y, w)
	case CalIsotonic:
		m.Isotonic = fitIsotonic(bestOOF, t.Y, w)
	}
	// Metrics on out-of-fold predictions, calibrated by the final map.
	p := make([]float64, t.N())
	for i, s := range bestOOF {
		p[i] = m.calibrate(s)
	}
	m.Metrics = measure(p, t.Y, t.Domain)
	return m, nil
}

// screen returns the k features whose within-domain AUROC is furthest from
// 0.5 on average, in table order.
func screen(t *Table, k int) []string {
	byDomain := map[string][]int{}
	for i, d := range t.Domain {
		byDomain[d] = append(byDomain[d], i)
	}
	strength := make([]float64, t.D())
	x := make([]float64, 0, t.N())
	y := make([]float64, 0, t.N())
	for j := range t.D() {
		var sum, nd float64
		for _, rows := range byDomain {
			x, y = x[:0], y[:0]
			for _, i := range rows {
				x = append(x, t.X[i*t.D()+j])
				y = append(y, t.Y[i])
			}
			a := AUROC(x, y)
			if math.IsNaN(a) {
				continue
			}
			sum += math.Abs(a - 0.5)
			nd++
		}
		if nd > 0 {
			strength[j] = sum / nd
		}
	}
	order := make([]int, t.D())
	for j := range order {
		order[j] = j
	}
	sort.SliceStable(order, func(a, b int) bool { return strength[order[a]] > strength[order[b]] })
	keep := order[:k]
	sort.Ints(keep)
	out := make([]string, k)
	for i, j := range keep {
		out[i] = t.Features[j]
	}
	return out
}

func standardise(t *Table) (mean, scale []float64) {
	d, n := t.D(), float64(t.N())
	mean = make([]float64, d)
	scale = make([]float64, d)
	for i := range t.N() {
		for j, v := range t.Row(i) {
			mean[j] += v
		}
	}
	for j := range mean {
		mean[j] /= n
	}
	for i := range t.N() {
		for j, v := range t.Row(i) {
			scale[j] += (v - mean[j]) * (v - mean[j])
		}
	}
	for j := range scale {
		scale[j] = math.Sqrt(scale[j] / n)
		if scale[j] < 1e-12 {
			scale[j] = 1 // constant feature, as scikit-learn's StandardScaler
		}
	}
	return mean, scale
}

// balanceWeights are scikit-learn's class_weight="balanced": n / (2 n_class).
func balanceWeights(y []float64) []float64 {
	var pos float64
	for _, v := range y {
		pos += v
	}
	n := float64(len(y))
	w := make([]float64, len(y))
	for i, v := range y {
		if v > 0.5 {
			w[i] = n / (2 * pos)
		} else {
			w[i] = n / (2 * (n - pos))
		}
	}
	return w
}

// foldsOf assigns rows to k folds at random (seeded), as evenly as possible.
func foldsOf(n, k int, seed uint64) []int {
	k = min(k, n)
	f := make([]int, n)
	for i := range f {
		f[i] = i % k
	}
	rng := rand.New(rand.NewPCG(seed, 0xf01d))
	rng.Shuffle(n, func(a, b int) { f[a], f[b] = f[b], f[a] })
	return f
}

func hyperGrid(family string) []float64 {
	switch family {
	case FamilyForest:
		return []float64{2, 3} // depth
	case FamilyMLP:
		return []float64{1e-2, 1} // alpha
	}
	return []float64{0.01, 1, 100} // C
}

func hyperName(family string, h float64) string {
	switch family {
	case FamilyForest:
		return "depth=" + strconv.Itoa(int(h))
	case FamilyMLP:
		return "alpha=" + strconv.FormatFloat(h, 'g', -1, 64)
	}
	return "C=" + strconv.FormatFloat(h, 'g', -1, 64)
}

// fitFamily fits the family's parameters with hyper-parameter h into m.
func fitFamily(m *Model, z []float64, d int, y, w []float64, cfg TrainConfig, h float64) error {
	var err error
	switch cfg.Family {
	case FamilyLogreg:
		m.Logreg, err = fitLogreg(z, d, y, w, h)
	case FamilyForest:
		m.Forest = fitForest(z, d, y, w, defaultForestParams(int(h)))
	case FamilyMLP:
		m.MLP, err = fitMLP(z, d, y, w, 8, h, cfg.Seed)
	}
	return err
}

// crossScores fills oof with out-of-fold scores (log-odds) for hyper-parameter h.
func crossScores(z []float64, d int, y, w []float64, folds []int, cfg TrainConfig, h float64, oof []float64) error {
	k := 0
	for _, f := range folds {
		k = max(k, f+1)
	}
	for f := range k {
		var tz, ty, tw []float64
		for i, g := range folds {
			if g != f {
				tz = append(tz, z[i*d:(i+1)*d]...)
				ty = append(ty, y[i])
				if w != nil {
					tw = append(tw, w[i])
				}
			}
		}
		m := &Model{}
		if err := fitFamily(m, tz, d, ty, tw, cfg, h); err != nil {
			return err
		}
		for i, g := range folds {
			if g == f {
				oof[i] = m.score(z[i*d : (i+1)*d])
			}
		}
	}
	return nil
}

func logLoss(score, y, w []float64) float64 {
	var l, sw float64
	for i, s := range score {
		l += weight(w, i) * (log1pexp(s) - y[i]*s)
		sw += weight(w, i)
	}
	return l / sw
}
