package estimate

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Predictor returns P(correct) for one row's raw features. A Predictor is used
// by one goroutine at a time.
type Predictor func(x []float64) float64

// Method fits a Predictor on training rows.
type Method struct {
	Name string
	Fit  func(tr *Table) (Predictor, error)
}

// EvalConfig configures the leave-domains-out protocol.
type EvalConfig struct {
	Ks      []int    // training-set sizes; nil = 1..n-1 per model
	Methods []string // method names; nil = DefaultMethods
	Workers int      // parallel training sets; 0 = GOMAXPROCS
	// Progress, when set, receives a line per finished model and a running count.
	Progress io.Writer
}

// Result is one (model, training set, method) outcome.
type Result struct {
	Model        string
	K            int
	TrainDomains []string
	Method       string
	AEE          float64 // mean |estimated - true| over held-out domains
	Rho          float64 // Spearman(estimated, true) over all domains; NaN when undefined
	Estimates    map[string]float64
}

// Report is everything eval measured.
type Report struct {
	Results     []Result
	True        map[string]map[string]float64 // model -> domain -> accuracy
	Rows        map[string]map[string]int     // model -> domain -> rows
	Reliability map[string]*Reliability       // method -> pooled held-out reliability
	FeatureAUC  []FeatureAUC
	Features    []string
	Wall        time.Duration
	Fits        int
	// SkippedK lists the asked-for k that a model cannot use (k must be
	// below its domain count), as "model: k=4 (4 domains)".
	SkippedK []string
}

// Reliability accumulates predicted vs observed frequency in 10 bins.
type Reliability struct {
	Count, SumP, SumY [10]float64
}

func (r *Reliability) add(p, y float64) {
	b := max(0, min(int(p*10), 9))
	r.Count[b]++
	r.SumP[b] += p
	r.SumY[b] += y
}

// FeatureAUC is one feature's AUROC for predicting correctness in one
// (model, domain); NaN when a class is missing.
type FeatureAUC struct {
	Model, Domain, Feature string
	Rows                   int
	AUROC                  float64
}

// DefaultName is the method name under which the configuration `train` uses
// by default is reported as well.
const DefaultName = "default"

// Methods returns every method Evaluate knows for a table with these
// features (the screenN and ensembleN methods need more than N of them);
// firstIsProb (see FirstIsProbability) adds raw_mean. sk_* reproduce the
// scikit-learn reference protocol exactly (docs/estimator.md, Fidelity).
func Methods(features []string, firstIsProb bool) []Method {
	var ms []Method
	sk := func(name string, bal bool, cal string) Method {
		return Method{name, func(tr *Table) (Predictor, error) { return fitReference(tr, bal, cal) }}
	}
	ms = append(ms, sk("sk_platt", false, CalNone), sk("sk_platt_balanced", true, CalNone), sk("sk_isotonic", false, CalIsotonic))
	for _, fam := range []string{FamilyLogreg, FamilyForest, FamilyMLP} {
		for _, cal := range []string{CalPlatt, CalIsotonic, CalNone} {
			cfg := TrainConfig{Family: fam, Calibration: cal, Folds: 5, Seed: 1, CalibrateOn: "oof"}
			if fam != FamilyLogreg {
				cfg.Folds = 3
			}
			ms = append(ms, fitMethod(fam+"_"+cal, cfg))
		}
	}
	for _, k := range []int{0, 1, 2, 3} {
		if k < len(features) {
			for _, off := range []bool{false, true} {
				for _, on := range []string{"train", "oof"} {
					cfg := DefaultTrainConfig()
					cfg.Ensemble, cfg.Screen, cfg.Offset, cfg.CalibrateOn = 0, k, off, on
					name := fmt.Sprintf("screen%d_isotonic_%s", k, on)
					if off {
						name += "_offset"
					}
					ms = append(ms, fitMethod(name, cfg))
				}
			}
		}
	}
	for _, k := range []int{2, 3, 5} {
		if k <= len(features) {
			for _, off := range []bool{false, true} {
				cfg := DefaultTrainConfig()
				cfg.Ensemble, cfg.Offset = k, off
				name := fmt.Sprintf("ensemble%d", k)
				if off {
					name += "_offset"
				}
				ms = append(ms, fitMethod(name, cfg))
			}
		}
	}
	ms = append(ms, Method{"atc", fitATC})
	if firstIsProb {
		ms = append(ms, Method{"raw_mean", func(*Table) (Predictor, error) { return func(x []float64) float64 { return x[0] }, nil }})
	}
	ms = append(ms, fitMethod(DefaultName, DefaultTrainConfig()))
	return ms
}

// DefaultMethods returns the methods run when none are named: the references,
// the logistic calibrations, ATC, raw mean and the default. The tree ensemble
// and the MLP are many times slower; name them in EvalConfig.Methods.
func DefaultMethods() []string {
	return []string{"sk_platt", "sk_platt_balanced", "sk_isotonic", "logreg_platt", "logreg_isotonic",
		"logreg_none", "screen1_isotonic_train", "atc", "raw_mean", DefaultName}
}

func fitMethod(name string, cfg TrainConfig) Method {
	cfg.predictOnly = true
	return Method{name, func(tr *Table) (Predictor, error) {
		m, err := Fit(tr, name, cfg)
		if err != nil {
			return nil, err
		}
		return predictorFor(m, tr.Features)
	}}
}

// fitReference is the scikit-learn reference's platt / platt_balanced /
// isotonic (docs/estimator.md): LogisticRegression(C=1) on standardised
// features, its own probabilities or an in-sample isotonic map of its
// decision function.
func fitReference(tr *Table, balance bool, cal string) (Predictor, error) {
	d := tr.D()
	mean, scale := standardise(tr)
	z := make([]float64, len(tr.X))
	for i := range tr.N() {
		for j := range d {
			z[i*d+j] = (tr.X[i*d+j] - mean[j]) / scale[j]
		}
	}
	var w []float64
	if balance {
		w = balanceWeights(tr.Y)
	}
	lr, err := fitLogreg(z, d, tr.Y, w, 1)
	if err != nil {
		return nil, err
	}
	m := &Model{Features: tr.Features, Mean: mean, Scale: scale, Family: FamilyLogreg, Logreg: lr, Calibration: CalNone}
	if cal == CalIsotonic {
		s := make([]float64, tr.N())
		for i := range s {
			s[i] = lr.Score(z[i*d : (i+1)*d])
		}
		m.Calibration, m.Isotonic = CalIsotonic, fitIsotonic(s, tr.Y, nil)
	}
	buf := make([]float64, d)
	return func(x []float64) float64 { return m.Predict(x, buf) }, nil
}

// fitATC is average thresholded confidence (Garg et al. 2022) on the first
// feature, oriented so that higher means more confident, with the threshold at
// the training (1 - accuracy) quantile (numpy's linear interpolation).
func fitATC(tr *Table) (Predictor, error) {
	d, n := tr.D(), tr.N()
	c := make([]float64, n)
	var mx, my float64
	for i := range n {
		c[i] = tr.X[i*d]
		mx += c[i]
		my += tr.Y[i]
	}
	mx /= float64(n)
	my /= float64(n)
	var cov float64
	for i := range n {
		cov += (c[i] - mx) * (tr.Y[i] - my)
	}
	sg := 1.0
	if cov < 0 {
		sg = -1
	}
	for i := range c {
		c[i] *= sg
	}
	sort.Float64s(c)
	t := quantile(c, 1-my)
	return func(x []float64) float64 {
		if sg*x[0] > t {
			return 1
		}
		return 0
	}, nil
}

// quantile of sorted v at q with linear interpolation (numpy's default).
func quantile(v []float64, q float64) float64 {
	h := q * float64(len(v)-1)
	lo := int(math.Floor(h))
	if lo >= len(v)-1 {
		return v[len(v)-1]
	}
	return v[lo] + (h-float64(lo))*(v[lo+1]-v[lo])
}

// FirstIsProbability reports whether the first feature looks like a
// probability of being right: every value in [0,1] and higher on correct rows
// on average (so mean entropy, also in [0,1], does not qualify).
func FirstIsProbability(t *Table) bool {
	var on, off, non float64
	for i := range t.N() {
		v := t.X[i*t.D()]
		if v < 0 || v > 1 {
			return false
		}
		if t.Y[i] > 0.5 {
			on += v
		} else {
			off += v
			non++
		}
	}
	pos := float64(t.N()) - non
	return pos > 0 && non > 0 && on/pos > off/non
}

type job struct {
	model string
	rows  *Table // this model's rows
	train []string
}

// Evaluate runs the leave-domains-out protocol on t: for every model and every
// training set of k domains, fit each method on those domains and estimate
// every domain's accuracy.
func Evaluate(ctx context.Context, t *Table, cfg EvalConfig) (*Report, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	all := Methods(t.Features, FirstIsProbability(t))
	names := cfg.Methods
	if names == nil {
		names = DefaultMethods()
	}
	var methods []Method
	for _, n := range names {
		found := false
		for _, m := range all {
			if m.Name == n {
				methods = append(methods, m)
				found = true
			}
		}
		if !found {
			if cfg.Methods == nil {
				continue // raw_mean and screen1 need a probability, several features
			}
			var have []string
			for _, m := range all {
				have = append(have, m.Name)
			}
			return nil, fmt.Errorf("method %q is not available for these features (have %s)", n, strings.Join(have, ","))
		}
	}
	rep := &Report{True: map[string]map[string]float64{}, Rows: map[string]map[string]int{},
		Reliability: map[string]*Reliability{}, Features: t.Features}
	var jobs []job
	maxDomains := 0
	for _, model := range t.Models() {
		rows := t.Subset(t.Where(func(i int) bool { return t.Model[i] == model }))
		doms := rows.Domains()
		rep.True[model], rep.Rows[model] = map[string]float64{}, map[string]int{}
		for i, d := range rows.Domain {
			rep.True[model][d] += rows.Y[i]
			rep.Rows[model][d]++
		}
		for d, n := range rep.Rows[model] {
			rep.True[model][d] /= float64(n)
		}
		rep.FeatureAUC = append(rep.FeatureAUC, featureAUCs(model, rows)...)
		ks := cfg.Ks
		if ks == nil {
			for k := 1; k < len(doms); k++ {
				ks = append(ks, k)
			}
		}
		maxDomains = max(maxDomains, len(doms))
		for _, k := range ks {
			if k <= 0 || k >= len(doms) {
				rep.SkippedK = append(rep.SkippedK, fmt.Sprintf("%s: k=%d (%d domains)", model, k, len(doms)))
				continue
			}
			for _, train := range combinations(doms, k) {
				jobs = append(jobs, job{model, rows, train})
			}
		}
	}
	if len(jobs) == 0 && len(cfg.Ks) > 0 && maxDomains > 1 && slices.Min(cfg.Ks) >= maxDomains {
		return nil, fmt.Errorf("k = %s leaves no domain to estimate: k must be below a model's domain count, and the most domains a model has here is %d (use k from 1 to %d)",
			strings.Trim(strings.Join(strings.Fields(fmt.Sprint(cfg.Ks)), ","), "[]"), maxDomains, maxDomains-1)
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type out struct {
		res []Result
		rel map[string]*Reliability
		err error
	}
	outs := make([]out, len(jobs))
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				res, rel, err := runJob(jobs[i], methods, rep.True[jobs[i].model], rep.Rows[jobs[i].model])
				outs[i] = out{res, rel, err}
				mu.Lock()
				done++
				if cfg.Progress != nil && (done%10 == 0 || done == len(jobs)) {
					fmt.Fprintf(cfg.Progress, "eval: %d/%d training sets (%s)\n", done, len(jobs), time.Since(start).Round(time.Second))
				}
				mu.Unlock()
			}
		}()
	}
	var err error
feed:
	for i := range jobs {
		select {
		case next <- i:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	for _, o := range outs {
		if o.err != nil {
			return nil, o.err
		}
		rep.Results = append(rep.Results, o.res...)
		for m, r := range o.rel {
			acc := rep.Reliability[m]
			if acc == nil {
				acc = &Reliability{}
				rep.Reliability[m] = acc
			}
			for b := range r.Count {
				acc.Count[b] += r.Count[b]
				acc.SumP[b] += r.SumP[b]
				acc.SumY[b] += r.SumY[b]
			}
		}
	}
	rep.Fits = len(jobs) * len(methods)
	rep.Wall = time.Since(start)
	return rep, nil
}

func runJob(j job, methods []Method, truth map[string]float64, count map[string]int) ([]Result, map[string]*Reliability, error) {
	in := map[string]bool{}
	for _, d := range j.train {
		in[d] = true
	}
	tr := j.rows.Subset(j.rows.Where(func(i int) bool { return in[j.rows.Domain[i]] }))
	pos := 0.0
	for _, y := range tr.Y {
		pos += y
	}
	if pos == 0 || pos == float64(tr.N()) {
		return nil, nil, nil // nothing to learn from a single class, as the reference
	}
	doms := j.rows.Domains()
	rel := map[string]*Reliability{}
	var res []Result
	for _, m := range methods {
		pred, err := m.Fit(tr)
		if err != nil {
			return nil, nil, fmt.Errorf("method %s on %s %v: %w", m.Name, j.model, j.train, err)
		}
		sum := map[string]float64{}
		r := &Reliability{}
		for i := range j.rows.N() {
			p := pred(j.rows.Row(i))
			d := j.rows.Domain[i]
			sum[d] += p
			if !in[d] {
				r.add(p, j.rows.Y[i])
			}
		}
		rel[m.Name] = r
		est := map[string]float64{}
		var e, a []float64
		var aee float64
		for _, d := range doms {
			est[d] = sum[d] / float64(count[d])
			e = append(e, est[d])
			a = append(a, truth[d])
			if !in[d] {
				aee += math.Abs(est[d] - truth[d])
			}
		}
		aee /= float64(len(doms) - len(j.train))
		res = append(res, Result{Model: j.model, K: len(j.train), TrainDomains: j.train, Method: m.Name,
			AEE: aee, Rho: Spearman(e, a), Estimates: est})
	}
	return res, rel, nil
}

func featureAUCs(model string, rows *Table) []FeatureAUC {
	var out []FeatureAUC
	for _, d := range rows.Domains() {
		idx := rows.Where(func(i int) bool { return rows.Domain[i] == d })
		x := make([]float64, len(idx))
		y := make([]float64, len(idx))
		for j := range rows.D() {
			for k, i := range idx {
				x[k] = rows.X[i*rows.D()+j]
				y[k] = rows.Y[i]
			}
			out = append(out, FeatureAUC{model, d, rows.Features[j], len(idx), AUROC(x, y)})
		}
	}
	return out
}

// combinations returns every k-subset of v in lexicographic order.
func combinations(v []string, k int) [][]string {
	var out [][]string
	var rec func(start int, cur []string)
	rec = func(start int, cur []string) {
		if len(cur) == k {
			out = append(out, append([]string(nil), cur...))
			return
		}
		for i := start; i < len(v); i++ {
			rec(i+1, append(cur, v[i]))
		}
	}
	rec(0, nil)
	return out
}
