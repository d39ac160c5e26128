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
	Vector VectorConfig
	// MinDF drops terms seen in fewer prompts. Default 2.
	MinDF int
	// MaxDF drops terms seen in more than this share of prompts. Default 0.5.
	MaxDF float64
	// LSA is the number of latent dimensions (truncated SVD) the TF-IDF
	// vectors are projected on before clustering; 0 clusters the TF-IDF
	// vectors themselves. Default 50.
	LSA int
	// PowerIters of the randomized SVD. Default 4.
	PowerIters int
	// K is the number of clusters; 0 picks it (see Criterion). Default 0.
	K int
	// KMin and KMax bound the automatic choice of k. Default 3 and 20: the
	// stability criterion favours k = 2, since nearly any bisection of the
	// prompts is reproducible; set KMin to 2 to allow it.
	KMin, KMax int
	// Criterion picks k when K is 0: "stability" (default) takes the k whose
	// k-means restarts agree most with each other (mean pairwise adjusted
	// Rand index of the restarts' partitions); "silhouette" the k with the
	// highest mean silhouette (cosine distance) on a sample.
	Criterion string
	// Restarts of k-means per k; the restart with the highest objective
	// (sum of cosine similarities) wins. Default 10.
	Restarts int
	// MaxIter bounds the Lloyd iterations of one k-means run. Default 100.
	MaxIter int
	// Seed makes fits reproducible. Default 1.
	Seed uint64
	// MaxPrompts caps the prompts a fit uses; beyond it a random sample of
	// this size is used. Default 20000.
	MaxPrompts int
	// SilhouetteSample is how many prompts the silhouette used to pick k is
	// computed on. Default 2000.
	SilhouetteSample int
	// ThresholdQuantile sets each cluster's distance threshold at this
	// quantile of its members' distances; prompts beyond it are unclustered.
	// Default 0.95.
	ThresholdQuantile float64
	// TopTerms is how many terms name a cluster. Default 3.
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

// Validate reports the first setting out of range.
func (c FitConfig) Validate() error {
	switch {
	case c.Vector.HashBits < 8 || c.Vector.HashBits > 24:
		return fmt.Errorf("hash_bits %d out of range [8, 24]", c.Vector.HashBits)
	case c.MinDF < 1:
		return fmt.Errorf("min_df %d must be at least 1", c.MinDF)
	case c.MaxDF <= 0 || c.MaxDF > 1:
		return fmt.Errorf("max_df %g must be in (0, 1]", c.MaxDF)
	case c.LSA < 0:
		return fmt.Errorf("lsa %d must be >= 0", c.LSA)
	case c.K < 0 || c.K == 1:
		return fmt.Errorf("k %d must be 0 (auto) or at least 2", c.K)
	case c.K == 0 && (c.KMin < 2 || c.KMax < c.KMin):
		return fmt.Errorf("k range [%d, %d] invalid: need 2 <= k_min <= k_max", c.KMin, c.KMax)
	case c.Restarts < 1 || c.MaxIter < 1:
		return errors.New("restarts and max_iter must be at least 1")
	case c.ThresholdQuantile <= 0 || c.ThresholdQuantile > 1:
		return fmt.Errorf("threshold_quantile %g must be in (0, 1]", c.ThresholdQuantile)
	case c.SilhouetteSample < 10:
		return fmt.Errorf("silhouette_sample %d must be at least 10", c.SilhouetteSample)
	case c.K == 0 && c.Criterion != CriterionStability && c.Criterion != CriterionSilhouette:
		return fmt.Errorf("criterion %q unknown (want stability or silhouette)", c.Criterion)
	case c.K == 0 && c.Criterion == CriterionStability && c.Restarts < 2:
		return errors.New("the stability criterion compares restarts: restarts must be at least 2")
	case c.MaxPrompts < 2:
		return fmt.Errorf("max_prompts %d must be at least 2", c.MaxPrompts)
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
	ts := &termSpace{}
	for b, c := range df {
		if c >= cfg.MinDF && c <= max(maxDF, cfg.MinDF) {
			ts.buckets = append(ts.buckets, b)
		}
	}
	if len(ts.buckets) == 0 {
		return nil, fmt.Errorf("no term occurs in at least %d of the %d prompts: too few or too different prompts to cluster", cfg.MinDF, n)
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

// dropEmpty removes the rows without any vocabulary term and returns how
// many it removed.
func (ts *termSpace) dropEmpty() int {
	x := ts.x
	out := &csr{ptr: []int{0}, dim: x.dim, idx: x.idx[:0], val: x.val[:0]}
	dropped := 0
	for i := 0; i < x.rows(); i++ {
		idx, val := x.row(i)
		if len(idx) == 0 {
			dropped++
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
		return nil, fmt.Errorf("%d prompts: need at least 2 to cluster", len(prompts))
	}
	values, hint := promptValues(prompts)
	if err := checkK(cfg, values, "prompts", hint); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed))
	if len(prompts) > cfg.MaxPrompts {
		progress.printf("using a random sample of %d of the %d prompts (max_prompts)", cfg.MaxPrompts, len(prompts))
		prompts = samplePrompts(prompts, cfg.MaxPrompts, rng)
	}
	progress.printf("vectorising %d prompts", len(prompts))
	ts, err := buildTerms(prompts, cfg)
	if err != nil {
		return nil, err
	}
	progress.printf("vocabulary: %d terms found in at least %d prompts", len(ts.buckets), cfg.MinDF)
	if empty := ts.dropEmpty(); empty > 0 {
		// Prompts without a vocabulary term have no direction; they would
		// all land in one cluster and widen its threshold. Tagging calls
		// them unclustered.
		progress.printf("%d prompts without any vocabulary term left out (they will be tagged unclustered)", empty)
		if ts.x.rows() < 2 {
			return nil, fmt.Errorf("only %d of %d prompts share terms with others: too few to cluster", ts.x.rows(), len(prompts))
		}
	}
	distinct := distinctRows(ts.x)
	if err := checkK(cfg, distinct, "prompts after vectorising (prompts with the same vocabulary terms count as one, those without any are left out)", hint); err != nil {
		return nil, err
	}
	m := &Model{Format: Format, Vector: cfg.Vector, Buckets: ts.buckets, IDF: ts.idf}
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
	m.Warnings = fitWarnings(m, distinct, "prompts", ts.names, cfg.MinDF, hint)
	return m, nil
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
	m.NextID = len(m.Clusters)
	m.Fit = FitInfo{Prompts: len(vecs), Objective: res.objective, Restarts: cfg.Restarts, Seed: cfg.Seed, ThresholdQuantile: cfg.ThresholdQuantile}
	m.Warnings = fitWarnings(m, distinct, "embeddings", nil, cfg.MinDF, "")
	return m, nil
}

// cluster runs k-means for the configured k, or picks k in [KMin, KMax]
// by the configured criterion; distinct is the number of different rows of
// x, which bounds k (checkK has rejected a k above it).
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
	var best kmeansResult
	bestScore := math.Inf(-1)
	for k := cfg.KMin; k <= min(cfg.KMax, distinct-1); k++ {
		runs := make([]kmeansResult, cfg.Restarts)
		top := 0
		for r := range runs {
			res, err := sphericalKMeans(ctx, x, k, cfg.MaxIter, rng)
			if err != nil {
				return kmeansResult{}, Selection{}, err
			}
			runs[r] = res
			if res.objective > runs[top].objective {
				top = r
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

// describe turns a k-means result into clusters: size, threshold, label.
func describe(res kmeansResult, ts *termSpace, cfg FitConfig) []Cluster {
	dim := len(res.centroids) / res.k
	out := make([]Cluster, res.k)
	dists := make([][]float64, res.k)
	for i, c := range res.assign {
		dists[c] = append(dists[c], 1-float64(res.sim[i]))
	}
	for c := range out {
		out[c].ID = c
		out[c].Size = len(dists[c])
		out[c].Centroid = slices.Clone(res.centroids[c*dim : (c+1)*dim])
		out[c].Threshold = float32(quantile(dists[c], cfg.ThresholdQuantile))
	}
	if ts != nil {
		labelClusters(out, res.assign, ts, cfg.TopTerms)
	}
	nameClusters(out)
	return out
}

// nameClusters sets each label from the top terms ("cluster-ID" without
// them) and appends "#ID" to labels that would otherwise repeat.
func nameClusters(cl []Cluster) {
	seen := map[string]int{}
	for c := range cl {
		cl[c].Label = strings.Join(cl[c].TopTerms, "/")
		if cl[c].Label == "" {
			cl[c].Label = fmt.Sprintf("cluster-%d", cl[c].ID)
		}
		seen[cl[c].Label]++
	}
	for c := range cl {
		if seen[cl[c].Label] > 1 {
			cl[c].Label = fmt.Sprintf("%s#%d", cl[c].Label, cl[c].ID)
		}
	}
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
		kinds form forms case cases called different same certain person people new old make makes made`) {
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
