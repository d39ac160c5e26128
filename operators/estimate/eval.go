package estimate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"math/big"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/entrowatch/entrowatch/internal/words"
)

// Predictor returns P(correct) for one row's raw features. A Predictor is used
// by one goroutine at a time.
type Predictor func(x []float64) float64

// Method fits a Predictor on training rows.
type Method struct {
	Name string                             // as EvalConfig.Methods names it and Result.Method reports it, e.g. "logreg_isotonic"
	Fit  func(tr *Table) (Predictor, error) // fits on the rows of one training set
}

// EvalConfig configures the leave-domains-out protocol.
type EvalConfig struct {
	Ks []int // training-set sizes; nil = 1..n-1 per model
	// Methods are method names; nil = DefaultMethods, "all" alone = every
	// method. Those of DefaultMethods or "all" that do not apply to the
	// features are left out and listed in Report.NotApplicable.
	Methods []string
	// Workers is the number of training sets fitted in parallel; 0 =
	// GOMAXPROCS. It is cut to the number of training sets and to 4 per CPU
	// (the Progress line says so).
	Workers int
	// MaxTrainingSets caps one model's training sets (the sum over k of
	// C(domains, k)), counted before any is built; 0 = DefaultMaxTrainingSets.
	// Above it Evaluate returns a *TooManyTrainingSetsError.
	MaxTrainingSets int
	// Progress, when set, receives the number of training sets and fits at
	// the start, a running count every few seconds and a last count at the end.
	Progress io.Writer
}

// Result is one (model, training set, method) outcome.
type Result struct {
	Model        string   // LLM model
	K            int      // number of training domains, len(TrainDomains)
	TrainDomains []string // the domains fitted on, sorted; the model's other domains are held out
	Method       string   // Method.Name
	AEE          float64  // mean |estimated - true| over held-out domains
	Rho          float64  // Spearman(estimated, true) over all domains; NaN when undefined
}

// Report is everything eval measured.
type Report struct {
	// Results has one entry per method and training set with rows of both
	// classes, by model, k and training set (lexicographic), then method.
	Results     []Result
	True        map[string]map[string]float64 // model -> domain -> accuracy
	Rows        map[string]map[string]int     // model -> domain -> rows
	Reliability map[string]*Reliability       // method -> pooled held-out reliability
	FeatureAUC  []FeatureAUC                  // per model, domain and feature, on all of the model's rows
	// HeldOut is each domain's estimate averaged over the training sets
	// that left it out: model -> method -> domain.
	HeldOut  map[string]map[string]map[string]float64
	Features []string      // the table's feature columns, in its order
	Wall     time.Duration // Evaluate's elapsed wall-clock time
	Fits     int           // fits run: training sets with both classes × methods
	// SkippedK lists, per model, the asked-for k it cannot use (k must be
	// below its domain count), as "model: k=4..6 (4 domains)".
	SkippedK []string
	// NotApplicable lists the default (or "all") methods left out because
	// they do not apply to these features, as "raw_mean: why".
	NotApplicable []string
	// Unevaluated gives, per model without any result, the reason.
	Unevaluated map[string]string
	// SingleClass lists, per model that has results, the training sets left
	// out because their rows are all correct or all wrong (no estimator can
	// be fitted on them), as "model: dom1+dom2"; sorted.
	SingleClass []string
}

// Reliability accumulates predicted vs observed frequency in 10 bins.
type Reliability struct {
	// Per bin of P(correct) (bin b holds [b/10, (b+1)/10), the last also
	// 1): the number of held-out rows, the sum of their P(correct) and the
	// sum of their labels (1 correct, 0 not). SumP/Count is the mean
	// estimate and SumY/Count the observed accuracy of a bin.
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
	Rows                   int // the model's rows in the domain
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
					ms = append(ms, screenMethod(k, on, off))
				}
			}
		}
	}
	for _, k := range []int{2, 3, 5} {
		if k <= len(features) {
			for _, off := range []bool{false, true} {
				ms = append(ms, ensembleMethod(k, off, false), ensembleMethod(k, off, true))
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

// screenMethod is screenK_isotonic_{on}[_offset]: one logistic model on the
// k best-screened features (0 = all), isotonic calibration fitted on the
// training ("train") or out-of-fold ("oof") scores.
func screenMethod(k int, on string, offset bool) Method {
	cfg := DefaultTrainConfig()
	cfg.Ensemble, cfg.Screen, cfg.Offset, cfg.CalibrateOn = 0, k, offset, on
	name := fmt.Sprintf("screen%d_isotonic_%s", k, on)
	if offset {
		name += "_offset"
	}
	return fitMethod(name, cfg)
}

// ensembleMethod is ensembleK[_offset][_avg]: the default's ensemble with k
// members (recalibrated, as the default).
// With avg, the members' plain average, not recalibrated (the default
// before recalibration).
func ensembleMethod(k int, offset, avg bool) Method {
	cfg := DefaultTrainConfig()
	cfg.Ensemble, cfg.Offset, cfg.Recalibrate = k, offset, !avg
	name := fmt.Sprintf("ensemble%d", k)
	if offset {
		name += "_offset"
	}
	if avg {
		name += "_avg"
	}
	return fitMethod(name, cfg)
}

var (
	screenName   = regexp.MustCompile(`^screen(\d+)_isotonic_(train|oof)(_offset)?$`)
	ensembleName = regexp.MustCompile(`^ensemble(\d+)(_offset)?(_avg)?$`)
)

// numbered resolves screenN_isotonic_{train,oof}[_offset] and
// ensembleN[_offset] for any N that makes sense with nf features (screen: N
// below nf, 0 = all; ensemble: 1 to nf): the method, or why N does not.
// ok is false when name has neither form.
func numbered(name string, nf int) (m Method, why string, ok bool) {
	if g := screenName.FindStringSubmatch(name); g != nil {
		k, err := strconv.Atoi(g[1])
		switch {
		case (err != nil || k >= nf) && nf == 1:
			return Method{}, fmt.Sprintf("with 1 feature there is nothing to screen: screen0_isotonic_%s%s is the same model", g[2], g[3]), true
		case err != nil || k >= nf:
			return Method{}, fmt.Sprintf("screening to %s of %d features keeps them all, as screen0_isotonic_%s%s does (N goes from 0, all, to %d)",
				g[1], nf, g[2], g[3], nf-1), true
		}
		return screenMethod(k, g[2], g[3] != ""), "", true
	}
	if g := ensembleName.FindStringSubmatch(name); g != nil {
		k, err := strconv.Atoi(g[1])
		switch {
		case err == nil && k == 0:
			return Method{}, "", false // no such method: the list of names says N starts at 1
		case err != nil || k > nf:
			return Method{}, fmt.Sprintf("an ensemble of %s single-feature models needs as many features (have %d; ensemble%d%s uses them all)",
				g[1], nf, nf, g[2]+g[3]), true
		}
		return ensembleMethod(k, g[2] != "", g[3] != ""), "", true
	}
	return Method{}, "", false
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
			z[i*d+j] = zscore(tr.X[i*d+j], mean[j], scale[j])
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
	seq   int
	model string
	rows  *Table   // this model's rows
	doms  []string // rows.Domains()
	train []string
}

// DefaultMaxTrainingSets is EvalConfig.MaxTrainingSets when unset: one
// model's training sets at k = 1..3 of MMLU's 57 subjects (30,913) fit under it;
// every k of 24 domains (16.8 million) does not.
const DefaultMaxTrainingSets = 50000

// TooManyTrainingSetsError is Evaluate's refusal, before building any training
// set, of a model whose asked-for k give more than EvalConfig.MaxTrainingSets.
type TooManyTrainingSetsError struct {
	Model   string // the first model over the limit
	Domains int    // its number of domains
	Ks      string // the k that model can use, e.g. "1..23"
	Sets    string // the count, in decimal (it can exceed int64)
	Limit   int    // the limit applied: EvalConfig.MaxTrainingSets, or DefaultMaxTrainingSets when unset
	// SuggestK is the largest k <= 3 such that k = 1..SuggestK stays within
	// Limit for every model (0: none does), giving SuggestSets for Model.
	SuggestK    int
	SuggestSets int64
}

// Error gives the model, its count of training sets against the limit, and
// the k = 1..SuggestK that would fit, when one does.
func (e *TooManyTrainingSetsError) Error() string {
	msg := fmt.Sprintf("model %s: %s training sets (k = %s of its %d domains), more than the limit of %d per model",
		e.Model, e.Sets, e.Ks, e.Domains, e.Limit)
	if e.SuggestK > 0 {
		msg += fmt.Sprintf("; k = 1..%d gives %s", e.SuggestK, words.Count(int(e.SuggestSets), "training set"))
	}
	return msg
}

// InterruptedError is returned when ctx ends before every training set is
// fitted; it unwraps to the context's error.
type InterruptedError struct {
	Done, Total int   // training sets fitted, of all those planned
	Err         error // the context's error: context.Canceled or context.DeadlineExceeded
}

// Error says how many training sets were fitted before the interruption.
func (e *InterruptedError) Error() string {
	return fmt.Sprintf("interrupted after %d of %s", e.Done, words.Count(e.Total, "training set"))
}

// Unwrap returns Err, so that errors.Is matches the context's error.
func (e *InterruptedError) Unwrap() error { return e.Err }

// progressEvery is how often a long evaluation reports on Progress.
const progressEvery = 5 * time.Second

// plan is one model's training sets of one size.
type plan struct {
	model string
	rows  *Table
	doms  []string
	k     int
}

// Evaluate runs the leave-domains-out protocol on t: for every model and every
// training set of k domains, fit each method on those domains and estimate
// every domain's accuracy. Training sets are counted before any is built and
// generated one at a time, so memory does not grow with their number.
func Evaluate(ctx context.Context, t *Table, cfg EvalConfig) (*Report, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	methods, notApplicable, err := selectMethods(t, cfg.Methods)
	if err != nil {
		return nil, err
	}
	limit := cfg.MaxTrainingSets
	if limit <= 0 {
		limit = DefaultMaxTrainingSets
	}
	var ks []int
	if cfg.Ks != nil {
		ks = slices.Compact(slices.Sorted(slices.Values(cfg.Ks)))
	}
	rep := &Report{True: map[string]map[string]float64{}, Rows: map[string]map[string]int{},
		Reliability: map[string]*Reliability{}, Features: t.Features, NotApplicable: notApplicable,
		HeldOut: map[string]map[string]map[string]float64{}, Unevaluated: map[string]string{}}
	var plans []plan
	var tooMany *TooManyTrainingSetsError
	total := 0
	maxDomains := 0
	perModel := map[string]int{}
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
		n := len(doms)
		maxDomains = max(maxDomains, n)
		var use, skip []int
		if ks == nil {
			for k := 1; k < n; k++ {
				use = append(use, k)
			}
		} else {
			for _, k := range ks {
				if k <= 0 || k >= n {
					skip = append(skip, k)
				} else {
					use = append(use, k)
				}
			}
		}
		if len(skip) > 0 {
			rep.SkippedK = append(rep.SkippedK, fmt.Sprintf("%s: k=%s (%s)", model, kText(skip), words.Count(n, "domain")))
		}
		sets := new(big.Int)
		if ks == nil && n > 1 { // every k: 2^n - 2 (no empty or full set)
			sets.Lsh(big.NewInt(1), uint(n)).Sub(sets, big.NewInt(2))
		} else {
			for _, k := range use {
				sets.Add(sets, new(big.Int).Binomial(int64(n), int64(k)))
			}
		}
		if !sets.IsInt64() || sets.Int64() > int64(limit) {
			if tooMany == nil {
				tooMany = &TooManyTrainingSetsError{Model: model, Domains: n, Ks: kText(use), Sets: sets.String(), Limit: limit}
			}
			continue
		}
		perModel[model] = int(sets.Int64())
		total += int(sets.Int64())
		for _, k := range use {
			plans = append(plans, plan{model, rows, doms, k})
		}
		switch {
		case n < 2:
			rep.Unevaluated[model] = fmt.Sprintf("it has a single domain (%s), so none can be held out", doms[0])
		case len(use) == 0:
			rep.Unevaluated[model] = fmt.Sprintf("no asked-for k is below its %s", words.Count(n, "domain"))
		}
	}
	if tooMany != nil {
		tooMany.SuggestK, tooMany.SuggestSets = suggestK(t, limit, tooMany.Model)
		return nil, tooMany
	}
	if total == 0 && len(ks) > 0 && maxDomains > 1 && ks[0] >= maxDomains {
		return nil, fmt.Errorf("k = %s leaves no domain to estimate: k must be below a model's domain count, and the most domains a model has here is %d (use k from 1 to %d)",
			kText(ks), maxDomains, maxDomains-1)
	}
	workers, capped := evalWorkers(cfg.Workers, total, runtime.NumCPU())
	if cfg.Progress != nil && total > 0 {
		fmt.Fprintf(cfg.Progress, "eval: %s x %s = %d fits, %s%s\n", words.Count(total, "training set"),
			words.Count(len(methods), "method"), total*len(methods), words.Count(workers, "worker"), capped)
	}

	// Workers finish jobs in any order; results are merged in job order (the
	// report does not depend on scheduling) and each job's estimates are
	// dropped once merged.
	type out struct {
		done   bool
		res    []Result
		est    [][]float64 // per method, per domain of the model (rows.Domains order)
		rel    map[string]*Reliability
		single bool
		err    error
	}
	pending := map[int]*out{}
	merged := 0
	single := map[string]int{}
	heldSum := map[string]map[string][]float64{} // model -> method -> per domain
	heldCnt := map[string][]int{}
	singleSets := map[string][]string{} // model -> the training sets of one class
	merge := func(j job, o *out) {
		if o.single {
			single[j.model]++
			singleSets[j.model] = append(singleSets[j.model], strings.Join(j.train, "+"))
			return
		}
		rep.Results = append(rep.Results, o.res...)
		doms := j.doms
		if heldSum[j.model] == nil {
			heldSum[j.model] = map[string][]float64{}
			heldCnt[j.model] = make([]int, len(doms))
		}
		in := map[string]bool{}
		for _, d := range j.train {
			in[d] = true
		}
		for di, d := range doms {
			if !in[d] {
				heldCnt[j.model][di]++
			}
		}
		for mi, m := range methods {
			s := heldSum[j.model][m.Name]
			if s == nil {
				s = make([]float64, len(doms))
				heldSum[j.model][m.Name] = s
			}
			for di, d := range doms {
				if !in[d] {
					s[di] += o.est[mi][di]
				}
			}
		}
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
	jobsOf := map[int]job{}
	next := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	done := 0
	lastReport := start
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				res, est, rel, one, err := runJob(ctx, j, methods, rep.True[j.model], rep.Rows[j.model])
				mu.Lock()
				if err != nil && firstErr == nil && ctx.Err() == nil {
					firstErr = err
				}
				pending[j.seq] = &out{true, res, est, rel, one, err}
				for o := pending[merged]; o != nil && o.done; o = pending[merged] {
					if o.err == nil {
						merge(jobsOf[merged], o)
					}
					delete(pending, merged)
					delete(jobsOf, merged)
					merged++
				}
				if err == nil {
					done++
				}
				if cfg.Progress != nil && (done == total || time.Since(lastReport) >= progressEvery) {
					lastReport = time.Now()
					el := time.Since(start)
					left := ""
					if done < total && done > 0 {
						left = fmt.Sprintf(", about %s left", (el * time.Duration(total-done) / time.Duration(done)).Round(time.Second))
					}
					fmt.Fprintf(cfg.Progress, "eval: %d/%d training sets (%s%s)\n", done, total, el.Round(time.Second), left)
				}
				mu.Unlock()
			}
		}()
	}
	seq := 0
feed:
	for _, p := range plans {
		for train := range combinations(p.doms, p.k) {
			j := job{seq, p.model, p.rows, p.doms, train}
			mu.Lock()
			stop := firstErr != nil
			if !stop {
				jobsOf[seq] = j
			}
			mu.Unlock()
			if stop {
				break feed
			}
			select {
			case next <- j:
				seq++
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, &InterruptedError{Done: done, Total: total, Err: err}
	}
	for model, sums := range heldSum {
		rep.HeldOut[model] = map[string]map[string]float64{}
		doms := sortedKeys(rep.True[model])
		for m, s := range sums {
			est := map[string]float64{}
			for di, d := range doms {
				if c := heldCnt[model][di]; c > 0 {
					est[d] = s[di] / float64(c)
				}
			}
			rep.HeldOut[model][m] = est
		}
	}
	for model, n := range perModel {
		if _, ok := rep.Unevaluated[model]; !ok && single[model] > 0 && single[model] < n {
			for _, s := range singleSets[model] {
				rep.SingleClass = append(rep.SingleClass, model+": "+s)
			}
		}
		if _, ok := rep.Unevaluated[model]; ok || n == 0 || single[model] < n {
			continue
		}
		switch acc := accuracyOf(rep, model); acc {
		case 0, 1:
			word := map[float64]string{0: "wrong", 1: "correct"}[acc]
			rep.Unevaluated[model] = fmt.Sprintf("all its rows are %s, so no training set has both classes", word)
		default:
			rep.Unevaluated[model] = fmt.Sprintf("each of its %s has rows of a single class (only correct or only wrong)", words.Count(n, "training set"))
		}
	}
	sort.Strings(rep.SingleClass)
	rep.Fits = (total - sumValues(single)) * len(methods)
	rep.Wall = time.Since(start)
	return rep, nil
}

// evalWorkers is the worker count for asked (0: GOMAXPROCS) with total
// training sets on cpus CPUs: at most one per training set and 4 per CPU
// (the fits are CPU-bound; more only hold more memory). note says why a
// larger ask was cut, e.g. " (1000 asked for: at most 4 per CPU, 2 CPUs)".
func evalWorkers(asked, total, cpus int) (n int, note string) {
	n = asked
	if asked <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	limit, why := 4*cpus, fmt.Sprintf("at most 4 per CPU, %s", words.Count(cpus, "CPU"))
	if total < limit {
		limit, why = total, "at most one per training set"
	}
	if n <= limit || limit <= 0 {
		return n, ""
	}
	if asked <= 0 {
		return limit, ""
	}
	return limit, fmt.Sprintf(" (%d asked for: %s)", asked, why)
}

func sumValues(m map[string]int) int {
	s := 0
	for _, v := range m {
		s += v
	}
	return s
}

func accuracyOf(rep *Report, model string) float64 {
	var pos, n float64
	for d, a := range rep.True[model] {
		c := float64(rep.Rows[model][d])
		pos += a * c
		n += c
	}
	return pos / n
}

// suggestK returns the largest k <= 3 such that k = 1..k stays within limit
// for every model of t, and the count it gives for model.
func suggestK(t *Table, limit int, model string) (int, int64) {
	doms := map[string]map[string]bool{}
	for i, m := range t.Model {
		if doms[m] == nil {
			doms[m] = map[string]bool{}
		}
		doms[m][t.Domain[i]] = true
	}
	count := func(n, hi int) int64 {
		var s int64
		for k := 1; k <= hi && k < n; k++ {
			s += new(big.Int).Binomial(int64(n), int64(k)).Int64()
		}
		return s
	}
	for hi := 3; hi >= 1; hi-- {
		ok := true
		for _, d := range doms {
			if count(len(d), hi) > int64(limit) {
				ok = false
			}
		}
		if ok {
			return hi, count(len(doms[model]), hi)
		}
	}
	return 0, 0
}

// selectMethods resolves names (nil: DefaultMethods; "all": every method) to
// methods. A default or "all" method that does not apply to t's features is
// left out with a reason; a named one is an error.
func selectMethods(t *Table, names []string) ([]Method, []string, error) {
	all := Methods(t.Features, FirstIsProbability(t))
	implicit := names == nil
	if implicit {
		names = DefaultMethods()
	}
	if len(names) == 1 && names[0] == "all" {
		implicit, names = true, nil
		for _, m := range Methods(t.Features, true) {
			names = append(names, m.Name)
		}
	}
	var methods []Method
	var notApplicable []string
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		i := slices.IndexFunc(all, func(m Method) bool { return m.Name == n })
		if i >= 0 {
			methods = append(methods, all[i])
			continue
		}
		m, why, ok := numbered(n, len(t.Features))
		if ok && why == "" {
			methods = append(methods, m)
			continue
		}
		if n == "raw_mean" {
			why = fmt.Sprintf("the first feature, %s, is not a probability of being right (that needs every value in [0,1] and a higher mean on correct rows)", t.Features[0])
		}
		switch {
		case why != "" && implicit:
			notApplicable = append(notApplicable, n+": "+why)
		case why != "":
			return nil, nil, fmt.Errorf("method %q does not apply to these features: %s", n, why)
		default:
			return nil, nil, fmt.Errorf("unknown method %q: the methods are %s", n, methodNames(len(t.Features)))
		}
	}
	return methods, notApplicable, nil
}

// methodNames lists every method name eval knows, for nf features.
// CheckMethodNames reports a name in names that is no method for any
// features ("all" alone is every method), before a table is read: which
// methods apply depends on the features, which names exist does not.
func CheckMethodNames(names []string) error {
	if len(names) == 1 && names[0] == "all" {
		return nil
	}
	const many = 1 << 10 // more features than any numbered name needs
	all := Methods(make([]string, many), true)
	for _, n := range names {
		if slices.ContainsFunc(all, func(m Method) bool { return m.Name == n }) || n == "raw_mean" {
			continue
		}
		if _, _, ok := numbered(n, many); !ok {
			return fmt.Errorf("unknown method %q: the methods are %s", n, methodNames(0))
		}
	}
	return nil
}

func methodNames(nf int) string {
	if nf == 0 { // features not known yet
		return "sk_platt, sk_platt_balanced, sk_isotonic; logreg_, forest_ and mlp_ each with platt, isotonic or none; " +
			"screenN_isotonic_train and screenN_isotonic_oof, each also with _offset (N from 0, all features, to one less than the features); " +
			"ensembleN, ensembleN_offset, ensembleN_avg and ensembleN_offset_avg (N from 1 to the features); atc; raw_mean (when the first feature is a probability of being right); " +
			DefaultName + "; or all"
	}
	screen := fmt.Sprintf("screenN_isotonic_train and screenN_isotonic_oof, each also with _offset (N from 0, all features, to %d)", nf-1)
	if nf == 1 {
		screen = "screen0_isotonic_train and screen0_isotonic_oof, each also with _offset (screening needs 2 or more features)"
	}
	return "sk_platt, sk_platt_balanced, sk_isotonic; logreg_, forest_ and mlp_ each with platt, isotonic or none; " + screen +
		fmt.Sprintf("; ensembleN, ensembleN_offset, ensembleN_avg and ensembleN_offset_avg (N from 1 to %d); atc; raw_mean (when the first feature is a probability of being right); %s; or all", nf, DefaultName)
}

// KsFor returns the asked-for ks that can matter for t, sorted and each
// once. A k must be below a model's domain count: when some k reach past the
// largest domain count, every k from that count up is left out and note says
// so once (k = 1..1000 is not 996 skip messages per model); otherwise
// Evaluate lists the k each model cannot use (Report.SkippedK). An error when
// no k is left.
func KsFor(t *Table, ks []int) (use []int, note string, err error) {
	doms := map[string]map[string]bool{}
	most := 0
	for i, m := range t.Model {
		if doms[m] == nil {
			doms[m] = map[string]bool{}
		}
		doms[m][t.Domain[i]] = true
		most = max(most, len(doms[m]))
	}
	use = slices.Compact(slices.Sorted(slices.Values(ks)))
	if len(use) > 0 && use[len(use)-1] > most {
		use = slices.DeleteFunc(use, func(k int) bool { return k >= most })
		note = fmt.Sprintf("k from %d up left out: no model has more than %s, and k must leave one to estimate", most, words.Count(most, "domain"))
	}
	if len(use) == 0 {
		if most < 2 {
			return nil, "", errors.New("every model has a single domain: there is nothing to hold out")
		}
		return nil, "", fmt.Errorf("no k leaves a domain to estimate: k must be below a model's domain count, and the most domains a model has here is %d (use k from 1 to %d)", most, most-1)
	}
	return use, note, nil
}

// kText writes a set of k compactly: "1..3,5".
func kText(ks []int) string {
	s := slices.Clone(ks)
	slices.Sort(s)
	s = slices.Compact(s)
	var parts []string
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		switch {
		case j == i:
			parts = append(parts, strconv.Itoa(s[i]))
		case j == i+1:
			parts = append(parts, strconv.Itoa(s[i]), strconv.Itoa(s[j]))
		default:
			parts = append(parts, fmt.Sprintf("%d..%d", s[i], s[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// runJob fits every method on j's training domains and estimates every
// domain: per method a Result and the estimates in j.doms order. single
// reports a training set of one class (skipped, as the reference does).
func runJob(ctx context.Context, j job, methods []Method, truth map[string]float64, count map[string]int) (res []Result, est [][]float64, rel map[string]*Reliability, single bool, err error) {
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
		return nil, nil, nil, true, nil
	}
	index := make(map[string]int, len(j.doms))
	for i, d := range j.doms {
		index[d] = i
	}
	rel = map[string]*Reliability{}
	for _, m := range methods {
		if err := ctx.Err(); err != nil {
			return nil, nil, nil, false, err
		}
		pred, err := m.Fit(tr)
		if err != nil {
			return nil, nil, nil, false, fmt.Errorf("method %s on %s %v: %w", m.Name, j.model, j.train, err)
		}
		sum := make([]float64, len(j.doms))
		r := &Reliability{}
		for i := range j.rows.N() {
			p := pred(j.rows.Row(i))
			d := j.rows.Domain[i]
			sum[index[d]] += p
			if !in[d] {
				r.add(p, j.rows.Y[i])
			}
		}
		rel[m.Name] = r
		e := make([]float64, len(j.doms))
		a := make([]float64, len(j.doms))
		var aee float64
		for di, d := range j.doms {
			e[di] = sum[di] / float64(count[d])
			a[di] = truth[d]
			if !in[d] {
				aee += math.Abs(e[di] - a[di])
			}
		}
		aee /= float64(len(j.doms) - len(j.train))
		res = append(res, Result{Model: j.model, K: len(j.train), TrainDomains: j.train, Method: m.Name,
			AEE: aee, Rho: Spearman(e, a)})
		est = append(est, e)
	}
	return res, est, rel, false, nil
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

// combinations yields every k-subset of v in lexicographic order, one at a
// time (a fresh slice each), so C(len(v), k) need not fit in memory.
func combinations(v []string, k int) iter.Seq[[]string] {
	return func(yield func([]string) bool) {
		n := len(v)
		if k <= 0 || k > n {
			return
		}
		idx := make([]int, k)
		for i := range idx {
			idx[i] = i
		}
		for {
			c := make([]string, k)
			for i, x := range idx {
				c[i] = v[x]
			}
			if !yield(c) {
				return
			}
			i := k - 1
			for i >= 0 && idx[i] == n-k+i {
				i--
			}
			if i < 0 {
				return
			}
			idx[i]++
			for j := i + 1; j < k; j++ {
				idx[j] = idx[j-1] + 1
			}
		}
	}
}
