package estimate

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
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

// TrainConfig selects how a model is fitted. The defaults named on the
// fields are DefaultTrainConfig's; the zero value is not valid (Family,
// Calibration and Folds must be set).
type TrainConfig struct {
	Family      string // logreg (default) | forest | mlp
	Calibration string // isotonic (default) | platt | none
	Balance     bool   // weight classes to equal total weight (default false)
	Folds       int    // cross-validation folds for hyper-parameters and calibration (default 5)
	// Screen, used when Ensemble is 0, keeps the Screen features whose
	// correctness AUROC, measured inside each training domain and averaged
	// over domains, is furthest from 0.5; 0 keeps them all. Default 0.
	// Signals that separate right from wrong within a domain transfer to new
	// domains better than the full profile, which also learns how the
	// training domains differ (measured in docs/estimator.md).
	Screen int
	Seed   uint64 // fold assignment and MLP initialisation (default 1)
	// CalibrateOn is "oof" (fit the calibration map on out-of-fold scores),
	// "train" (on the final model's scores of the training rows), or "" for
	// the family's default (the default): "train" for logreg, whose few
	// parameters do not overfit their in-sample scores while out-of-fold
	// scores mix the slightly different scales of the fold models, and
	// "oof" for forest and mlp, which do overfit them (measured in
	// docs/estimator.md).
	CalibrateOn string
	// Offset blends the calibrated probability half and half with a shifted
	// probability feature, x - (mean(x) - accuracy) on the training rows,
	// when one of the features is a probability (all values in [0,1], higher
	// on correct answers). Its domain mean tracks the shift of x between
	// domains (difference of confidences). Default false: it helped on the
	// development LLMs but not on held-out ones (docs/estimator.md).
	Offset bool
	// Ensemble, when > 0, averages single-feature models (each one this
	// family and calibration) on the Ensemble features ranked first by the
	// within-domain AUROC of Screen; Screen is then ignored. Default 3.
	Ensemble int
	// Recalibrate, with Ensemble, fits an isotonic map from the members'
	// average to correctness on the training rows (Model.Recalibration):
	// the plain average of calibrated single-feature models shrinks toward
	// the training accuracy when several of them carry signal. An ensemble of
	// one member needs none and gets none.
	Recalibrate bool
	// Hyper fixes the family's hyper-parameter (C, depth or alpha); 0 chooses
	// it by cross-validation over a small grid.
	Hyper float64

	// predictOnly skips what only the training report needs: the
	// cross-fitted metrics, and the out-of-fold scores when nothing else uses
	// them (one hyper-parameter, calibration on the training scores). eval
	// sets it: it reads the predictions only. The model is the same.
	predictOnly bool
}

// DefaultTrainConfig is the method `entrowatch train` uses unless told otherwise.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{Family: FamilyLogreg, Calibration: CalIsotonic, Folds: 5, Seed: 1, Ensemble: 3, Recalibrate: true}
}

// calibrateOn is CalibrateOn, the family's default when empty.
func (c TrainConfig) calibrateOn() string {
	if c.CalibrateOn != "" {
		return c.CalibrateOn
	}
	if c.Family == FamilyLogreg {
		return "train"
	}
	return "oof"
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
	if c.CalibrateOn != "" && c.CalibrateOn != "oof" && c.CalibrateOn != "train" {
		return fmt.Errorf("calibrate-on %q: want oof or train", c.CalibrateOn)
	}
	if c.Ensemble < 0 {
		return fmt.Errorf("ensemble = %d: want 0 (one model) or more (that many single-feature models)", c.Ensemble)
	}
	if c.Hyper < 0 || math.IsNaN(c.Hyper) || math.IsInf(c.Hyper, 0) {
		return fmt.Errorf("hyper = %g: want > 0, or 0 to choose by cross-validation", c.Hyper)
	}
	if c.Family == FamilyForest && c.Hyper != 0 && (c.Hyper != math.Trunc(c.Hyper) || c.Hyper > 16) {
		// A depth of 0.5 was cut to 0: trees without a split, the same
		// probability for every row.
		return fmt.Errorf("hyper = %g: a forest's hyper-parameter is its tree depth, a whole number from 1 to 16 (0 chooses 2 or 3 by cross-validation)", c.Hyper)
	}
	if c.Screen < 0 {
		return fmt.Errorf("screen = %d, want >= 0", c.Screen)
	}
	return nil
}

// ErrOneClass is returned when training rows are all correct or all wrong.
var ErrOneClass = errors.New("training rows are all correct or all incorrect: nothing to learn; add rows of the other class")

// Fit trains one model on t (rows of one LLM, or pooled over several) and
// names it name (Model.Model): the LLM model name, or FallbackKey for a
// pooled model. A Set stores a model under its name. It refuses an invalid
// table (Table.Validate) and, with ErrOneClass, rows of a single class.
func Fit(t *Table, name string, cfg TrainConfig) (*Model, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("model %q: %w", name, err)
	}
	m, _, err := fit(t, name, cfg)
	return m, err
}

// fit is Fit, on a valid table, that also returns the cross-fitted
// out-of-fold probabilities.
func fit(t *Table, name string, cfg TrainConfig) (*Model, []float64, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	cfg.CalibrateOn = cfg.calibrateOn()
	pos := 0
	for _, y := range t.Y {
		if y > 0.5 {
			pos++
		}
	}
	if pos == 0 || pos == t.N() {
		return nil, nil, fmt.Errorf("model %q: %w", name, ErrOneClass)
	}
	if cfg.Ensemble > 0 {
		return fitEnsemble(t, name, cfg, pos)
	}
	candidates := t.Features
	if cfg.Screen > 0 && cfg.Screen < t.D() {
		keep := screen(t, cfg.Screen)
		var err error
		if t, err = t.Select(keep); err != nil {
			return nil, nil, err
		}
	}
	d := t.D()
	mean, scale := standardise(t)
	z := make([]float64, len(t.X))
	for i := range t.N() {
		for j := range d {
			z[i*d+j] = zscore(t.X[i*d+j], mean[j], scale[j])
		}
	}
	var w []float64
	if cfg.Balance {
		w = balanceWeights(t.Y)
	}
	folds := foldsOf(t.N(), cfg.Folds, cfg.Seed)
	grid := hyperGrid(cfg.Family)
	if cfg.Hyper > 0 {
		grid = []float64{cfg.Hyper}
	}
	best, bestLoss := grid[0], math.Inf(1)
	oof := make([]float64, t.N())
	var bestOOF []float64
	if cfg.predictOnly && len(grid) == 1 && cfg.CalibrateOn == "train" {
		grid = nil // nothing to choose, nothing calibrated on out-of-fold scores
	}
	for _, h := range grid {
		if err := crossScores(z, d, t.Y, w, folds, cfg, h, oof); err != nil {
			return nil, nil, err
		}
		l := logLoss(oof, t.Y, w)
		if l < bestLoss {
			best, bestLoss = h, l
			bestOOF = append(bestOOF[:0], oof...)
		}
	}
	if len(grid) > 0 && bestOOF == nil {
		return nil, nil, fmt.Errorf("model %q: the cross-validated loss is not a number for any of the %d hyper-parameters tried: "+
			"the values of a feature (%s) are too extreme to fit; leave out that feature or its extreme rows",
			name, len(grid), strings.Join(t.Features, ", "))
	}
	m := &Model{Model: name, Features: append([]string(nil), t.Features...), Mean: mean, Scale: scale,
		Family: cfg.Family, Calibration: cfg.Calibration, Balance: cfg.Balance, Hyper: hyperName(cfg.Family, best),
		TrainDomains: t.Domains(), Rows: t.N(), Positives: pos}
	if len(candidates) != len(m.Features) {
		m.Candidates = append([]string(nil), candidates...)
	}
	if err := fitFamily(m, z, d, t.Y, w, cfg, best); err != nil {
		return nil, nil, err
	}
	calScores := bestOOF
	if cfg.CalibrateOn == "train" {
		calScores = make([]float64, t.N())
		for i := range calScores {
			calScores[i] = m.score(z[i*d : (i+1)*d])
		}
	}
	m.Platt, m.Isotonic = fitCalibration(cfg.Calibration, calScores, t.Y, w)
	if cfg.Offset {
		m.Offset = fitOffset(t)
	}
	if cfg.predictOnly {
		return m, nil, nil
	}
	// Metrics on out-of-fold scores, each fold calibrated by a map fitted on
	// the other folds (cross-fitting), so that they are not optimistic.
	p := make([]float64, t.N())
	k := 0
	for _, f := range folds {
		k = max(k, f+1)
	}
	for f := range k {
		var s, y, ww []float64
		for i, g := range folds {
			if g != f {
				s = append(s, bestOOF[i])
				y = append(y, t.Y[i])
				if w != nil {
					ww = append(ww, w[i])
				}
			}
		}
		cm := &Model{Offset: m.Offset}
		cm.Platt, cm.Isotonic = fitCalibration(cfg.Calibration, s, y, ww)
		for i, g := range folds {
			if g == f {
				p[i] = cm.blend(cm.calibrate(bestOOF[i]), t.Row(i))
			}
		}
	}
	m.Metrics = measure(p, t.Y, t.Domain)
	m.Metrics.Unmeasured = unmeasurable(t.N(), pos, cfg.Folds)
	return m, p, nil
}

// unmeasurable says why out-of-fold metrics of n rows, pos of them correct,
// in folds cross-validation folds mean nothing (a fold without one of the
// classes), or "".
func unmeasurable(n, pos, folds int) string {
	k := min(folds, n)
	if min(pos, n-pos) < k {
		return fmt.Sprintf("%d correct and %d incorrect rows: too few for each of the %d folds to hold both classes", pos, n-pos, k)
	}
	return ""
}

// fitEnsemble averages single-feature models on the best-screened features.
func fitEnsemble(t *Table, name string, cfg TrainConfig, pos int) (*Model, []float64, error) {
	// Members are the best-screened features whose signal is at least half
	// the strongest one's: averaging in a feature that barely separates right
	// from wrong pulls every estimate toward the training accuracy.
	cand, strength := screenStrength(t, min(cfg.Ensemble, t.D()))
	top := 0.0
	for _, v := range strength {
		top = math.Max(top, v)
	}
	var keep []string
	for i, f := range cand {
		if strength[i] >= top/2 {
			keep = append(keep, f)
		}
	}
	mcfg := cfg
	mcfg.Ensemble, mcfg.Screen = 0, 0
	if mcfg.Hyper == 0 && mcfg.Family == FamilyLogreg {
		mcfg.Hyper = 1 // one feature under a monotone calibration: C only matters for ties
	}
	m := &Model{Model: name, Features: keep, Family: cfg.Family, Calibration: cfg.Calibration, Balance: cfg.Balance,
		Hyper: fmt.Sprintf("ensemble of %d", len(keep)), TrainDomains: t.Domains(), Rows: t.N(), Positives: pos}
	if len(keep) != t.D() {
		m.Candidates = append([]string(nil), t.Features...)
	}
	p := make([]float64, t.N())
	for j, f := range keep {
		one, err := t.Select([]string{f})
		if err != nil {
			return nil, nil, err
		}
		mm, pm, err := fit(one, name+"/"+f, mcfg)
		if err != nil {
			return nil, nil, err
		}
		mm.Inputs = []int{j}
		mm.Metrics = Metrics{}
		mm.TrainDomains = nil
		m.Members = append(m.Members, mm)
		for i, v := range pm {
			p[i] += v / float64(len(keep))
		}
	}
	var w []float64
	if cfg.Balance {
		w = balanceWeights(t.Y)
	}
	if cfg.Recalibrate && len(keep) > 1 {
		sub, err := t.Select(keep)
		if err != nil {
			return nil, nil, err
		}
		avg := make([]float64, t.N())
		z := make([]float64, len(keep))
		for i := range avg {
			for _, mm := range m.Members {
				avg[i] += mm.Predict(sub.Row(i), z)
			}
			avg[i] /= float64(len(keep))
		}
		m.Recalibration = fitIsotonic(avg, t.Y, w)
	}
	if cfg.predictOnly {
		return m, nil, nil
	}
	if m.Recalibration != nil {
		// Cross-fitted as the members' calibration is: each fold's average
		// mapped by a recalibration fitted on the other folds' averages.
		folds := foldsOf(t.N(), cfg.Folds, cfg.Seed)
		q := make([]float64, len(p))
		for f := range slices.Max(folds) + 1 {
			var s, y, ww []float64
			for i, g := range folds {
				if g != f {
					s, y = append(s, p[i]), append(y, t.Y[i])
					if w != nil {
						ww = append(ww, w[i])
					}
				}
			}
			iso := fitIsotonic(s, y, ww)
			for i, g := range folds {
				if g == f {
					q[i] = p[i]
					if len(s) > 0 {
						q[i] = iso.Predict(p[i])
					}
				}
			}
		}
		p = q
	}
	m.Metrics = measure(p, t.Y, t.Domain)
	m.Metrics.Unmeasured = unmeasurable(t.N(), pos, cfg.Folds)
	return m, p, nil
}

func fitCalibration(method string, s, y, w []float64) (*Platt, *Isotonic) {
	switch method {
	case CalPlatt:
		return fitPlatt(s, y, w), nil
	case CalIsotonic:
		return nil, fitIsotonic(s, y, w)
	}
	return nil, nil
}

// fitOffset picks the probability feature (values in [0,1]) that best
// separates right from wrong within the training domains and records its
// bias mean(x) - accuracy; nil when there is none.
func fitOffset(t *Table) *Offset {
	best, bestAUC := -1, 0.5
	byDomain := map[string][]int{}
	for i, d := range t.Domain {
		byDomain[d] = append(byDomain[d], i)
	}
	for j := range t.D() {
		prob := true
		for i := range t.N() {
			if v := t.X[i*t.D()+j]; v < 0 || v > 1 {
				prob = false
				break
			}
		}
		if !prob {
			continue
		}
		var sum, nd float64
		for _, rows := range byDomain {
			x := make([]float64, len(rows))
			y := make([]float64, len(rows))
			for k, i := range rows {
				x[k], y[k] = t.X[i*t.D()+j], t.Y[i]
			}
			if a := AUROC(x, y); !math.IsNaN(a) {
				sum += a
				nd++
			}
		}
		if nd > 0 && sum/nd > bestAUC {
			best, bestAUC = j, sum/nd
		}
	}
	if best < 0 {
		return nil
	}
	var mx, my float64
	for i := range t.N() {
		mx += t.X[i*t.D()+best]
		my += t.Y[i]
	}
	n := float64(t.N())
	return &Offset{Feature: best, Bias: (mx - my) / n, Weight: 0.5}
}

// screen returns the k features whose within-domain AUROC is furthest from
// 0.5 on average, in table order.
func screen(t *Table, k int) []string {
	keep, _ := screenStrength(t, k)
	return keep
}

// screenStrength is screen, also returning each kept feature's mean
// |AUROC - 0.5|.
func screenStrength(t *Table, k int) ([]string, []float64) {
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
	str := make([]float64, k)
	for i, j := range keep {
		out[i], str[i] = t.Features[j], strength[j]
	}
	return out, str
}

// standardise returns each feature's mean and standard deviation over t's
// rows (scale 1 for a constant feature, as scikit-learn's StandardScaler).
//
// Finite but extreme values (a perplexity of 1e160 from a degenerate
// answer) are kept, not skipped: dropping them would drop exactly the rows
// a model most needs to see, and they are valid numbers. So that the sums
// and squares cannot overflow to Inf, each column is first divided by the
// power of two just above its largest magnitude (when that is above 1),
// and the mean and scale multiplied back: they are then finite for any
// finite column, and as powers of two scale exactly, ordinary columns get
// the same bits as the plain formula.
func standardise(t *Table) (mean, scale []float64) {
	d, n := t.D(), float64(t.N())
	mean = make([]float64, d)
	scale = make([]float64, d)
	exp := make([]int, d) // the columns' scale, 2^exp[j]
	for i := range t.N() {
		for j, v := range t.Row(i) {
			if _, e := math.Frexp(v); e > exp[j] {
				exp[j] = e
			}
		}
	}
	for i := range t.N() {
		for j, v := range t.Row(i) {
			mean[j] += math.Ldexp(v, -exp[j])
		}
	}
	for j := range mean {
		mean[j] /= n
	}
	for i := range t.N() {
		for j, v := range t.Row(i) {
			dv := math.Ldexp(v, -exp[j]) - mean[j]
			scale[j] += float64(dv * dv) // not fused into an FMA (GOAMD64=v3): the same bits on every build
		}
	}
	for j := range scale {
		mean[j] = math.Ldexp(mean[j], exp[j])
		scale[j] = math.Ldexp(math.Sqrt(scale[j]/n), exp[j])
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
