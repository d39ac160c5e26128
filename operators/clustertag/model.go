package clustertag

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"

	"github.com/entrowatch/entrowatch/internal/words"
)

// Criteria for choosing k.
const (
	CriterionStability  = "stability"
	CriterionSilhouette = "silhouette"
)

// Spaces a model clusters in.
const (
	SpaceTFIDF     = "tfidf"     // hashed TF-IDF terms, centroids over the vocabulary
	SpaceLSA       = "lsa"       // TF-IDF projected on its top singular vectors
	SpaceEmbedding = "embedding" // caller-supplied prompt embeddings
)

// FitConfig says how clusters are learnt. Defaults are on the fields.
type FitConfig struct {
	// Vector says how prompts become term vectors; Fit stores it in the
	// artifact. FitEmbeddings uses it only to name clusters from prompts.
	// Default DefaultVectorConfig().
	Vector VectorConfig
	// MinDF drops terms seen in fewer prompts. Default 2.
	MinDF int
	// MaxDF drops terms seen in more than this share of prompts. Default 0.5.
	MaxDF float64
	// LSA is the number of latent dimensions (truncated SVD) the TF-IDF
	// vectors are projected on before clustering; 0 clusters the TF-IDF
	// vectors themselves. Default 50, at most 1000.
	LSA int
	// PowerIters of the randomized SVD. Default 4, at most 20.
	PowerIters int
	// K is the number of clusters; 0 picks it (see Criterion). Default 0,
	// at most 1000.
	K int
	// KMin and KMax bound the automatic choice of k. Default 3 and 20: the
	// stability criterion favours k = 2, since nearly any bisection of the
	// prompts is reproducible; set KMin to 2 to allow it. KMax is at most
	// 1000, and a fit tries no k that leaves fewer than 5 distinct points per
	// cluster on average (the k for which a fixed --k warns), KMin excepted.
	KMin, KMax int
	// Criterion picks k when K is 0: "stability" (default) takes the k whose
	// k-means restarts agree most with each other (mean pairwise adjusted
	// Rand index of the restarts' partitions); "silhouette" the k with the
	// highest mean silhouette (cosine distance) on a sample.
	Criterion string
	// Restarts of k-means per k; the restart with the highest objective
	// (sum of cosine similarities) wins. Default 10, at most 100.
	Restarts int
	// MaxIter bounds the Lloyd iterations of one k-means run. Default 100,
	// at most 10000.
	MaxIter int
	// Seed makes fits reproducible. Default 1.
	Seed uint64
	// MaxPrompts caps the prompts a fit uses; beyond it a random sample of
	// this size is used. Default 20000, at most 100000.
	MaxPrompts int
	// SilhouetteSample is how many prompts the silhouette used to pick k is
	// computed on. Default 2000, from 10 to 5000.
	SilhouetteSample int
	// ThresholdQuantile sets each cluster's distance threshold at this
	// quantile of its members' distances; prompts beyond it are unclustered.
	// Default 0.95.
	ThresholdQuantile float64
	// TopTerms is how many terms name a cluster. Default 3, from 1 to 10.
	TopTerms int
}

// DefaultFitConfig returns the settings documented on the fields.
func DefaultFitConfig() FitConfig {
	return FitConfig{
		Vector: DefaultVectorConfig(), MinDF: 2, MaxDF: 0.5, LSA: 50, PowerIters: 4,
		KMin: 3, KMax: 20, Criterion: CriterionStability, Restarts: 10, MaxIter: 100, Seed: 1, MaxPrompts: 20000,
		SilhouetteSample: 2000, ThresholdQuantile: 0.95, TopTerms: 3,
	}
}

// Upper bounds of the FitConfig counts and sizes. Each drives an allocation
// or a loop of the fit, so an unbounded value (--restarts 1000000000) ran the
// process out of memory or time instead of being refused. They sit well above
// any setting that helps a fit (the defaults are 10 to 100 times smaller).
const (
	// maxClusters bounds K and KMax: more clusters than a person can read
	// are not topics, and k-means holds k centroids of the vocabulary's size
	// per run (1,000 × 50,000 terms is 200 MB).
	maxClusters = 1000
	// maxRestarts bounds Restarts: the stability criterion keeps every
	// restart's assignment and compares all pairs of them (4,950 pairs at 100).
	maxRestarts = 100
	// maxIterations bounds MaxIter; Lloyd iterations converge in tens.
	maxIterations = 10000
	// maxLSA bounds LSA: the artifact stores vocabulary × LSA floats (50,000
	// terms × 1,000 is 200 MB) and the SVD's work grows with its square.
	maxLSA = 1000
	// maxPowerIters bounds PowerIters; 4 to 7 suffice (Halko et al. 2011).
	maxPowerIters = 20
	// maxPrompts bounds MaxPrompts: five times the default sample.
	maxPrompts = 100000
	// maxSilhouetteSample bounds SilhouetteSample: the sample's pairwise
	// distances are held in memory (100 MB at 5,000) and scanned once per k.
	maxSilhouetteSample = 5000
	// maxTopTerms bounds TopTerms: a label is the top terms joined by "/".
	maxTopTerms = 10
	// minHashBits and maxHashBits bound Vector.HashBits: the tagger holds
	// one int32 per bucket (64 MB at 24 bits).
	minHashBits, maxHashBits = 8, 24
)

// Validate reports the first setting out of range. Every count or size that
// drives an allocation or a loop has an upper bound (the max constants).
func (c FitConfig) Validate() error {
	switch {
	case c.Vector.HashBits < minHashBits || c.Vector.HashBits > maxHashBits:
		return fmt.Errorf("hash_bits %d out of range [%d, %d]", c.Vector.HashBits, minHashBits, maxHashBits)
	case c.MinDF < 1:
		return fmt.Errorf("min_df %d must be at least 1", c.MinDF)
	case !(c.MaxDF > 0 && c.MaxDF <= 1): // NaN too
		return fmt.Errorf("max_df %g must be in (0, 1]", c.MaxDF)
	case c.LSA < 0 || c.LSA > maxLSA:
		return fmt.Errorf("lsa %d out of range [0, %d] (0 clusters the TF-IDF vectors without LSA)", c.LSA, maxLSA)
	case c.PowerIters < 0 || c.PowerIters > maxPowerIters:
		return fmt.Errorf("power_iters %d out of range [0, %d]", c.PowerIters, maxPowerIters)
	case c.K < 0 || c.K == 1 || c.K > maxClusters:
		return fmt.Errorf("k %d out of range: want 0 (auto) or a number of clusters in [2, %d]", c.K, maxClusters)
	case c.KMax > maxClusters:
		return fmt.Errorf("k_max %d out of range: --k auto tries at most k=%d", c.KMax, maxClusters)
	case c.K == 0 && (c.KMin < 2 || c.KMax < c.KMin):
		return fmt.Errorf("k range [%d, %d] invalid: need 2 <= k_min <= k_max <= %d", c.KMin, c.KMax, maxClusters)
	case c.Restarts < 1 || c.Restarts > maxRestarts:
		return fmt.Errorf("restarts %d out of range [1, %d]", c.Restarts, maxRestarts)
	case c.MaxIter < 1 || c.MaxIter > maxIterations:
		return fmt.Errorf("max_iter %d out of range [1, %d]", c.MaxIter, maxIterations)
	case !(c.ThresholdQuantile > 0 && c.ThresholdQuantile <= 1): // NaN too
		return fmt.Errorf("threshold_quantile %g must be in (0, 1]", c.ThresholdQuantile)
	case c.SilhouetteSample < 10 || c.SilhouetteSample > maxSilhouetteSample:
		return fmt.Errorf("silhouette_sample %d out of range [10, %d]", c.SilhouetteSample, maxSilhouetteSample)
	case c.K == 0 && c.Criterion != CriterionStability && c.Criterion != CriterionSilhouette:
		return fmt.Errorf("criterion %q unknown (want stability or silhouette)", c.Criterion)
	case c.K == 0 && c.Criterion == CriterionStability && c.Restarts < 2:
		return errors.New("the stability criterion compares restarts: restarts must be at least 2")
	case c.MaxPrompts < 2 || c.MaxPrompts > maxPrompts:
		return fmt.Errorf("max_prompts %d out of range [2, %d] (beyond it a random sample is fitted)", c.MaxPrompts, maxPrompts)
	case c.TopTerms < 1 || c.TopTerms > maxTopTerms:
		return fmt.Errorf("top_terms %d out of range [1, %d]", c.TopTerms, maxTopTerms)
	}
	return nil
}

// Progress receives human-readable progress lines during a fit; nil is quiet.
type Progress func(format string, args ...any)

func (p Progress) printf(format string, args ...any) {
	if p != nil {
		p(format, args...)
	}
}

// termSpace is the TF-IDF vectorisation learnt from the training prompts.
type termSpace struct {
	buckets []uint32  // vocabulary row -> hash bucket
	idf     []float32 // per row
	names   []string  // per row: a surface form, for labels
	x       *csr      // training prompts, unit rows over the vocabulary
	oovIDF  float32   // idf of a term no prompt had: ln(1+n) + 1
}

// buildTerms hashes the prompts, keeps terms by document frequency and
// returns the TF-IDF matrix (sublinear tf when configured, rows L2-normalised).
func buildTerms(docs []string, cfg FitConfig) (*termSpace, error) {
	h := newHasher(cfg.Vector)
	df := map[uint32]int{}
	name := map[uint32]string{}
	var buf []uint32
	var terms []uint32
	var counts []float32
	for _, d := range docs {
		buf = h.appendBuckets(buf[:0], d)
		terms, counts = termCounts(buf, terms, counts)
		for _, t := range terms {
			df[t]++
		}
		h.surfaces(d, func(b uint32, s string) {
			if _, ok := name[b]; !ok {
				name[b] = s
			}
		})
	}
	n := len(docs)
	maxDF := int(math.Floor(cfg.MaxDF * float64(n)))
	ts := &termSpace{oovIDF: float32(math.Log(float64(1+n)) + 1)}
	for b, c := range df {
		if c >= cfg.MinDF && c <= max(maxDF, cfg.MinDF) {
			ts.buckets = append(ts.buckets, b)
		}
	}
	if len(ts.buckets) == 0 {
		return nil, noVocabulary(df, name, n, cfg)
	}
	slices.Sort(ts.buckets)
	row := map[uint32]int32{}
	ts.idf = make([]float32, len(ts.buckets))
	ts.names = make([]string, len(ts.buckets))
	for i, b := range ts.buckets {
		row[b] = int32(i)
		ts.idf[i] = float32(math.Log(float64(1+n)/float64(1+df[b])) + 1)
		ts.names[i] = name[b]
	}
	x := &csr{ptr: make([]int, 1, n+1), dim: len(ts.buckets)}
	for _, d := range docs {
		buf = h.appendBuckets(buf[:0], d)
		terms, counts = termCounts(buf, terms, counts)
		start := len(x.val)
		for q, t := range terms {
			r, ok := row[t]
			if !ok {
				continue
			}
			x.idx = append(x.idx, r)
			x.val = append(x.val, tfWeight(counts[q], cfg.Vector.Sublinear)*ts.idf[r])
		}
		sortRow(x.idx[start:], x.val[start:])
		normalize(x.val[start:])
		x.ptr = append(x.ptr, len(x.val))
	}
	ts.x = x
	return ts, nil
}

// noVocabulary says why no term was kept: the prompts have no words to
// cluster on, share none, or share only words found in too many of them.
func noVocabulary(df map[uint32]int, name map[uint32]string, n int, cfg FitConfig) error {
	if len(df) == 0 {
		return fmt.Errorf("none of the %d prompts has a word to cluster on (stop words and words of fewer than %d letters are left out)", n, cfg.Vector.MinLen)
	}
	var common []string
	for b, c := range df {
		if c >= cfg.MinDF {
			common = append(common, name[b])
		}
	}
	if len(common) == 0 {
		return fmt.Errorf("no term occurs in at least %d of the %d prompts (min_df): the prompts share no words; fit on more prompts", cfg.MinDF, n)
	}
	slices.Sort(common)
	more := ""
	if len(common) > 5 {
		common, more = common[:5], ", ..."
	}
	return fmt.Errorf("every term found in at least %d of the %d prompts is in more than %.0f%% of them (max_df), as %s%s: words common to (nearly) all prompts cannot tell topics apart; fit on prompts of more than one topic",
		cfg.MinDF, n, 100*cfg.MaxDF, strings.Join(common, ", "), more)
}

// dropEmpty removes the rows without any vocabulary term and returns
// their indices (nil when there are none).
func (ts *termSpace) dropEmpty() map[int]bool {
	x := ts.x
	out := &csr{ptr: []int{0}, dim: x.dim, idx: x.idx[:0], val: x.val[:0]}
	var dropped map[int]bool
	for i := 0; i < x.rows(); i++ {
		idx, val := x.row(i)
		if len(idx) == 0 {
			if dropped == nil {
				dropped = map[int]bool{}
			}
			dropped[i] = true
			continue
		}
		// In place: the kept rows only move towards the front.
		out.idx = append(out.idx, idx...)
		out.val = append(out.val, val...)
		out.ptr = append(out.ptr, len(out.val))
	}
	ts.x = out
	return dropped
}

func sortRow(idx []int32, val []float32) {
	sort.Sort(rowSorter{idx, val})
}

type rowSorter struct {
	idx []int32
	val []float32
}

func (r rowSorter) Len() int           { return len(r.idx) }
func (r rowSorter) Less(i, j int) bool { return r.idx[i] < r.idx[j] }
func (r rowSorter) Swap(i, j int) {
	r.idx[i], r.idx[j] = r.idx[j], r.idx[i]
	r.val[i], r.val[j] = r.val[j], r.val[i]
}

// Fit learns topic clusters from prompts.
func Fit(ctx context.Context, prompts []string, cfg FitConfig, progress Progress) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(prompts) < 2 {
		return nil, fmt.Errorf("%s: need at least 2 to cluster", words.Count(len(prompts), "prompt"))
	}
	values, hint := promptValues(prompts)
	// Before vectorising only what the raw prompts settle: all the same, a
	// fixed k above their number, or ids. Whether --k auto has room is
	// decided on the vectors (fewer distinct points than prompts: "hello",
	// "world", "hello" is one point, "world" having no term in 2 prompts),
	// so that the k it suggests can be fitted.
	if values < 2 || cfg.K > values || hint != "" {
		what := "prompts"
		if values >= 2 && cfg.K > values {
			what = "prompts (counted as written; after vectorising, prompts with the same vocabulary terms count as one)"
		}
		if err := checkK(cfg, values, what, hint); err != nil {
			return nil, err
		}
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed))
	if len(prompts) > cfg.MaxPrompts {
		progress.printf("using a random sample of %d of the %d prompts (max_prompts)", cfg.MaxPrompts, len(prompts))
		prompts = samplePrompts(prompts, cfg.MaxPrompts, rng)
	}
	f, err := fitText(ctx, prompts, cfg, hint, rng, progress)
	if err != nil {
		return nil, err
	}
	m := f.m
	if err := m.setThresholds(ctx, f.kept, cfg, rng, progress); err != nil {
		return nil, err
	}
	m.Warnings = fitWarnings(m, f.distinct, "prompts", f.names, cfg.MinDF, hint)
	return m, nil
}

// textFit is a model fitted on prompts, before its thresholds are set.
type textFit struct {
	m        *Model
	kept     []string // the prompts clustered: those with a vocabulary term
	distinct int      // different term vectors among them
	names    []string // the vocabulary's surface forms
}

// fitText vectorises the prompts and clusters them: vocabulary, LSA,
// k-means, labels. Thresholds are left to setThresholds.
func fitText(ctx context.Context, prompts []string, cfg FitConfig, hint string, rng *rand.Rand, progress Progress) (*textFit, error) {
	progress.printf("vectorising %d prompts", len(prompts))
	ts, err := buildTerms(prompts, cfg)
	if err != nil {
		return nil, err
	}
	progress.printf("vocabulary: %d terms found in at least %d prompts", len(ts.buckets), cfg.MinDF)
	kept := prompts
	if empty := ts.dropEmpty(); len(empty) > 0 {
		// Prompts without a vocabulary term have no direction; they would
		// all land in one cluster and widen its threshold. Tagging calls
		// them unclustered.
		progress.printf("%d prompts without any vocabulary term left out (they will be tagged unclustered)", len(empty))
		if ts.x.rows() < 2 {
			return nil, fmt.Errorf("only %d of %d prompts share terms with others: too few to cluster", ts.x.rows(), len(prompts))
		}
		kept = make([]string, 0, ts.x.rows())
		for i, p := range prompts {
			if !empty[i] {
				kept = append(kept, p)
			}
		}
	}
	distinct := distinctRows(ts.x)
	if distinct < 2 && hint == "" {
		return nil, fmt.Errorf("after vectorising, the %d prompts are %d distinct point (%d with no term found in at least %d prompts were left out, the others have the same terms): nothing to cluster; fit on more prompts, of more than one topic",
			len(prompts), distinct, len(prompts)-len(kept), cfg.MinDF)
	}
	if err := checkK(cfg, distinct, "prompts after vectorising (prompts with the same vocabulary terms count as one, those without any are left out)", hint); err != nil {
		return nil, err
	}
	m := &Model{Format: Format, Vector: cfg.Vector, Buckets: ts.buckets, IDF: ts.idf, OOVIDF: ts.oovIDF}
	space := ts.x
	if cfg.LSA > 0 && cfg.LSA < min(ts.x.dim, ts.x.rows()) {
		progress.printf("LSA: truncated SVD to %d dimensions", cfg.LSA)
		p := truncatedSVD(ts.x, cfg.LSA, cfg.PowerIters, rng)

		m.Space, m.Dim, m.Projection = SpaceLSA, cfg.LSA, p
		space = denseCSR(project(ts.x, p, cfg.LSA), cfg.LSA)
	} else {
		if cfg.LSA > 0 {
			progress.printf("LSA skipped: %d dimensions asked, only %d terms and %d prompts", cfg.LSA, ts.x.dim, ts.x.rows())
		}
		m.Space, m.Dim = SpaceTFIDF, ts.x.dim
	}
	res, sel, err := cluster(ctx, space, distinct, cfg, rng, progress)
	if err != nil {
		return nil, err
	}
	m.Selection = sel
	m.Clusters = describe(res, ts, cfg)
	m.NextID = len(m.Clusters)
	m.Fit = FitInfo{Prompts: ts.x.rows(), Objective: res.objective, Restarts: cfg.Restarts, Seed: cfg.Seed, ThresholdQuantile: cfg.ThresholdQuantile}
	return &textFit{m: m, kept: kept, distinct: distinct, names: ts.names}, nil
}

// crossFitFolds is the number of folds thresholds are cross-fitted on, and
// crossFitMin the fewest prompts per fold for which that is done.
const (
	crossFitFolds = 5
	crossFitMin   = 10
)

// setThresholds sets each cluster's threshold at the ThresholdQuantile of
// the distances of its prompts as the tagger measures them for a prompt the
// fit has not seen. The fitted model's own distances are optimistic: the
// vocabulary, the LSA subspace and the centroids were all shaped by those
// very prompts, so new prompts of the same topics would be unclustered far
// more often than the quantile says. Each prompt's distance is therefore
// taken under a model fitted (same settings and k, fewer restarts) on the
// other folds, and counted for its cluster in the full model. Too few
// prompts, or a fold that cannot be fitted, fall back to the model's own
// distances.
func (m *Model) setThresholds(ctx context.Context, prompts []string, cfg FitConfig, rng *rand.Rand, progress Progress) error {
	t := m.NewTagger()
	k := len(m.Clusters)
	near := make([]int, len(prompts))
	own := make([]float32, len(prompts))
	for i, p := range prompts {
		_, own[i] = t.Tag(p)
		near[i] = t.nearestIndex()
	}
	dists := make([][]float64, k)
	how := "cross-fit"
	if len(prompts) < crossFitFolds*crossFitMin {
		how = "training"
	} else {
		progress.printf("thresholds: distances of held-out prompts, %d-fold cross-fitting", crossFitFolds)
		fcfg := cfg
		fcfg.K = k
		fcfg.Restarts = min(cfg.Restarts, 3)
		// Every copy of a prompt goes to the same fold: traffic repeats
		// prompts (the same question to two LLMs, retries), and a held-out
		// prompt whose copy was fitted measures as in-sample (its rare
		// terms known). Fitted on prompts that each came twice, thresholds
		// so set left 95% of new prompts of the fitted topics unclustered
		// (TestTemplatePromptsStayClustered).
		fold := make([]int, len(prompts))
		first := make(map[string]int, len(prompts))
		for i, p := range prompts {
			f, ok := first[p]
			if !ok {
				f = len(first) % crossFitFolds
				first[p] = f
			}
			fold[i] = f
		}
		var train []string
		var held []int
		for f := 0; f < crossFitFolds && how == "cross-fit"; f++ {
			train, held = train[:0], held[:0]
			for i, p := range prompts {
				if fold[i] == f {
					held = append(held, i)
				} else {
					train = append(train, p)
				}
			}
			ff, err := fitText(ctx, train, fcfg, "", rng, nil)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				progress.printf("thresholds: fold %d cannot be fitted (%v); using the model's own distances", f+1, err)
				how = "training"
				break
			}
			// Unknown terms weigh in the norm as the full model will weigh
			// them: its OOV idf grows with the prompts fitted (ln(n+1) + 1),
			// so a fold's, fitted on fewer, measured every prompt with
			// unknown terms as closer than the tagger will. Prompts made of
			// a template and unique values (ids, numbers) then all fell
			// just beyond their threshold: 72% of new prompts of the
			// fitted topics unclustered.
			ff.m.OOVIDF = m.OOVIDF
			ft := ff.m.NewTagger()
			for _, i := range held {
				_, d := ft.Tag(prompts[i])
				if ft.nearestIndex() == Unclustered || near[i] == Unclustered {
					// No term of the fold's vocabulary: tagged unclustered
					// whatever the threshold, so it says nothing about it.
					continue
				}
				dists[near[i]] = append(dists[near[i]], float64(d))
			}
		}
	}
	for c := range dists {
		if how == "training" || len(dists[c]) == 0 {
			dists[c] = dists[c][:0]
			for i, n := range near {
				if n == c {
					dists[c] = append(dists[c], float64(own[i]))
				}
			}
		}
		m.Clusters[c].Threshold = threshold(dists[c], cfg.ThresholdQuantile)
	}
	m.Fit.Thresholds = how
	return nil
}

func samplePrompts(p []string, n int, rng *rand.Rand) []string {
	idx := rng.Perm(len(p))[:n]
	slices.Sort(idx)
	out := make([]string, n)
	for i, j := range idx {
		out[i] = p[j]
	}
	return out
}

// FitEmbeddings learns clusters over caller-supplied prompt embeddings (all of
// one dimension). prompts, when given (same length), only name the clusters.
func FitEmbeddings(ctx context.Context, vecs [][]float32, prompts []string, cfg FitConfig, progress Progress) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(vecs) < 2 {
		return nil, fmt.Errorf("%d embeddings: need at least 2 to cluster", len(vecs))
	}
	dim := len(vecs[0])
	data := make([]float32, 0, len(vecs)*dim)
	for i, v := range vecs {
		if len(v) != dim {
			return nil, fmt.Errorf("embedding %d has %d dimensions, the first has %d: all embeddings must have the same size", i+1, len(v), dim)
		}
		if j := firstNonFinite(v); j >= 0 {
			return nil, fmt.Errorf("embedding %d: value %d is %g: want finite numbers", i+1, j+1, v[j])
		}
		start := len(data)
		data = append(data, v...)
		if normalize(data[start:]) == 0 {
			return nil, fmt.Errorf("embedding %d is all zeros", i+1)
		}
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed))
	space := denseCSR(data, dim)
	distinct := distinctRows(space)
	if err := checkK(cfg, distinct, "embeddings (after normalising)", ""); err != nil {
		return nil, err
	}
	res, sel, err := cluster(ctx, space, distinct, cfg, rng, progress)
	if err != nil {
		return nil, err
	}
	m := &Model{Format: Format, Space: SpaceEmbedding, Dim: dim, Selection: sel}
	var ts *termSpace
	if len(prompts) == len(vecs) {
		if t, err := buildTerms(prompts, cfg); err == nil {
			ts = t
		}
	}
	m.Clusters = describe(res, ts, cfg)
	dists := make([][]float64, res.k)
	for i, c := range res.assign {
		dists[c] = append(dists[c], 1-float64(res.sim[i]))
	}
	for c := range m.Clusters {
		m.Clusters[c].Threshold = threshold(dists[c], cfg.ThresholdQuantile)
	}
	m.NextID = len(m.Clusters)
	m.Fit = FitInfo{Prompts: len(vecs), Objective: res.objective, Restarts: cfg.Restarts, Seed: cfg.Seed, ThresholdQuantile: cfg.ThresholdQuantile, Thresholds: "training"}
	m.Warnings = fitWarnings(m, distinct, "embeddings", nil, cfg.MinDF, "")
	return m, nil
}

// cluster runs k-means for the configured k, or picks k in [KMin, KMax]
// (clamped to what the data supports, see autoKMax) by the configured
// criterion; distinct is the number of different rows of x, which bounds k
// (checkK has rejected a k above it).
func cluster(ctx context.Context, x *csr, distinct int, cfg FitConfig, rng *rand.Rand, progress Progress) (kmeansResult, Selection, error) {
	n := x.rows()
	if cfg.K > 0 {
		k := min(cfg.K, distinct)
		progress.printf("k-means: k=%d, %d restarts", k, cfg.Restarts)
		res, err := bestOf(ctx, x, k, cfg.Restarts, cfg.MaxIter, rng)
		return res, Selection{Method: "fixed", K: k}, err
	}
	if distinct-1 < cfg.KMin {
		return kmeansResult{}, Selection{}, fmt.Errorf("%d distinct points are too few to choose k in [%d, %d]: give k explicitly (--k N, N <= %d)", distinct, cfg.KMin, cfg.KMax, distinct)
	}
	sel := Selection{Method: cfg.Criterion, Scores: map[int]float64{}}
	var sample []int
	var dist []float32
	if cfg.Criterion == CriterionSilhouette {
		sample = rng.Perm(n)[:min(n, cfg.SilhouetteSample)]
		slices.Sort(sample)
		dist = pairwiseDistances(x, sample)
		sel.Sample = len(sample)
	}
	hi := autoKMax(cfg, distinct)
	switch {
	case hi < cfg.KMax && distinct/minPerCluster < cfg.KMin:
		progress.printf("k range [%d, %d] clamped to k=%d (k_min): the %d distinct points leave fewer than %d per cluster at every k in it", cfg.KMin, cfg.KMax, hi, distinct, minPerCluster)
	case hi < cfg.KMax:
		progress.printf("k range [%d, %d] clamped to [%d, %d]: a larger k would leave fewer than %d of the %d distinct points per cluster", cfg.KMin, cfg.KMax, cfg.KMin, hi, minPerCluster, distinct)
	}
	var best kmeansResult
	bestScore := math.Inf(-1)
	for k := cfg.KMin; k <= hi; k++ {
		// The criteria need every restart's assignment but only the top
		// restart's centroids (k × dim each): the others are dropped.
		runs := make([]kmeansResult, cfg.Restarts)
		top := 0
		for r := range runs {
			res, err := sphericalKMeans(ctx, x, k, cfg.MaxIter, rng)
			if err != nil {
				return kmeansResult{}, Selection{}, err
			}
			runs[r] = res
			switch {
			case res.objective > runs[top].objective:
				runs[top].centroids, runs[top].sim = nil, nil
				top = r
			case r != top:
				runs[r].centroids, runs[r].sim = nil, nil
			}
		}
		var s float64
		if cfg.Criterion == CriterionSilhouette {
			s = silhouette(sample, dist, runs[top].assign, k)
		} else {
			s = agreement(runs)
		}
		sel.Scores[k] = s
		progress.printf("k=%d: objective %.1f, %s %.4f", k, runs[top].objective, cfg.Criterion, s)
		if s > bestScore {
			best, bestScore = runs[top], s
		}
	}
	sel.K = best.k
	progress.printf("picked k=%d (highest %s %.4f)", best.k, cfg.Criterion, bestScore)
	return best, sel, nil
}

// autoKMax is the largest k that --k auto tries on distinct points: KMax,
// lowered to distinct/minPerCluster, the largest k a fixed --k fits without
// the warning that its clusters are too small to be topics (trying every k
// below distinct turned 400 prompts into 391 clusters of one). It is never
// below KMin, which the user asked for and a fixed k of KMin fits too, with
// that warning; checkK has ensured that KMin is below distinct.
func autoKMax(cfg FitConfig, distinct int) int {
	return min(cfg.KMax, distinct-1, max(cfg.KMin, distinct/minPerCluster))
}

// agreement is the mean adjusted Rand index over all pairs of restarts: how
// reproducibly k-means finds the same k groups from different seeds.
func agreement(runs []kmeansResult) float64 {
	var sum float64
	pairs := 0
	for i := range runs {
		for j := i + 1; j < len(runs); j++ {
			sum += ARI(runs[i].assign, runs[j].assign)
			pairs++
		}
	}
	if pairs == 0 {
		return 0
	}
	return sum / float64(pairs)
}

// describe turns a k-means result into clusters: size, centroid, label (the
// caller sets the thresholds).
func describe(res kmeansResult, ts *termSpace, cfg FitConfig) []Cluster {
	dim := len(res.centroids) / res.k
	out := make([]Cluster, res.k)
	for _, c := range res.assign {
		out[c].Size++
	}
	for c := range out {
		out[c].ID = c
		out[c].Centroid = slices.Clone(res.centroids[c*dim : (c+1)*dim])
	}
	if ts != nil {
		labelClusters(out, res.assign, ts, cfg.TopTerms)
	}
	nameClusters(out, nil)
	return out
}

// nameClusters sets each label from the top terms ("cluster-ID" without
// them) and appends "#ID" to labels that would otherwise repeat or be
// "unclustered" (the label of prompts in no cluster). Clusters in keep (by
// index) get the label given there instead, unchanged; a new label that
// repeats a kept one gets the "#ID".
func nameClusters(cl []Cluster, keep map[int]string) {
	seen := map[string]int{}
	for c := range cl {
		if l, ok := keep[c]; ok {
			cl[c].Label = l
			seen[l] += 2 // a kept label never changes: the new one must yield
			continue
		}
		cl[c].Label = strings.Join(cl[c].TopTerms, "/")
		if cl[c].Label == "" {
			cl[c].Label = fmt.Sprintf("cluster-%d", cl[c].ID)
		}
		seen[cl[c].Label]++
		if strings.EqualFold(cl[c].Label, UnclusteredLabel) {
			seen[cl[c].Label]++ // reserved for prompts in no cluster: always "#ID"
		}
	}
	for c := range cl {
		if _, ok := keep[c]; !ok && seen[cl[c].Label] > 1 {
			cl[c].Label = fmt.Sprintf("%s#%d", cl[c].Label, cl[c].ID)
		}
	}
}

// threshold is the q-quantile of the distances, kept in [0, 2] (rounding
// puts the distance of a prompt identical to its centroid slightly below 0).
func threshold(dists []float64, q float64) float32 {
	return float32(min(2, max(0, quantile(dists, q))))
}

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (pos-float64(lo))*(s[hi]-s[lo])
}

// labelClusters names each cluster by its most distinctive terms: high
// mean TF-IDF weight inside the cluster relative to the whole corpus.
func labelClusters(cl []Cluster, assign []int, ts *termSpace, top int) {
	k := len(cl)
	dim := ts.x.dim
	in := make([]float64, k*dim)
	all := make([]float64, dim)
	for i, c := range assign {
		idx, val := ts.x.row(i)
		for q, j := range idx {
			in[c*dim+int(j)] += float64(val[q])
			all[j] += float64(val[q])
		}
	}
	n := float64(len(assign))
	for c := range cl {
		size := float64(cl[c].Size)
		if size == 0 {
			continue
		}
		type scored struct {
			j int
			s float64
		}
		var cand []scored
		for j := 0; j < dim; j++ {
			w := in[c*dim+j]
			if w == 0 {
				continue
			}
			// Contribution of the term to the divergence of the cluster's
			// mean TF-IDF vector from the corpus mean: frequent in the cluster
			// and rarer elsewhere.
			mIn, mAll := w/size, all[j]/n
			cand = append(cand, scored{j, mIn * math.Log(mIn/mAll)})
		}
		sort.Slice(cand, func(a, b int) bool {
			if cand[a].s != cand[b].s {
				return cand[a].s > cand[b].s
			}
			return cand[a].j < cand[b].j
		})
		var chosen []string
		for _, t := range cand {
			name := ts.names[t.j]
			if name == "" || generic(name) || overlaps(chosen, name) {
				continue
			}
			chosen = append(chosen, name)
			if len(chosen) == top {
				break
			}
		}
		cl[c].TopTerms = chosen
	}
}

// overlaps reports whether name shares a word with a chosen term (so that
// "supreme court" and "court" do not both name one cluster).
func overlaps(chosen []string, name string) bool {
	for _, c := range chosen {
		for _, a := range strings.Fields(c) {
			for _, b := range strings.Fields(name) {
				if a == b {
					return true
				}
			}
		}
	}
	return false
}

// genericWords are frequent in questions of every topic; they stay in the
// vectors but do not name clusters.
var genericWords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`means mean many much known associated except referred refers refer characteristic
		characteristics find called used use uses using term terms example examples given time times two three four one first
		second type types primary main important describe described description result results factor factors occur occurs
		occurred containing contain contains number numbers value values consider considered include includes including
		following true false likely best correct incorrect answer question statement statements way ways part parts kind
		kinds form forms case cases called different same certain person people new old make makes made
		based basis found name names named feature features ago suppose supposed point points common commonly
		approximately usually often typically generally according among regarding concerning concern concerns
		several various involve involves involved situation situations follows`) {
		m[w] = true
	}
	return m
}()

// generic reports whether every word of a term is generic.
func generic(name string) bool {
	for _, w := range strings.Fields(name) {
		if !genericWords[w] {
			return false
		}
	}
	return true
}
