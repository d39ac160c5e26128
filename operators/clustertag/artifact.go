package clustertag

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/entrowatch/entrowatch/internal/atomicfile"
)

// Format names the artifact layout; Load refuses any other.
//
// v2 (this version) measures cluster_distance in the TF-IDF space of the
// whole prompt (terms outside the vocabulary and the LSA subspace count),
// sets thresholds on prompts the fit did not see (cross-fitting), and splits
// CJK text into character bigrams. v1 artifacts cannot tag correctly under
// these rules (their thresholds were measured otherwise): Load refuses them,
// LoadPrevious reads them so that a refit can keep their ids and labels.
const Format = "entrowatch.clusters.v2"

// formatV1 is the previous layout, readable only as a --previous artifact.
const formatV1 = "entrowatch.clusters.v1"

// Model is a fitted set of topic clusters: the artifact `cluster fit` writes
// and the clustertag operator loads. Its Version is a content hash.
type Model struct {
	// Format is the artifact layout, the Format constant for a fit of this
	// version (LoadPrevious also reads the v1 layout).
	Format string `json:"format"`
	// Version is the content hash, "sha256:" and 16 hex digits, set by Seal
	// (Save seals an unsealed Model); "" until then.
	Version string `json:"version"`
	// Space is tfidf, lsa or embedding (see the Space constants).
	Space string `json:"space"`
	// Vector is how prompts are turned into terms (tfidf and lsa): the
	// tagger must vectorise as the fit did. Zero in the embedding space.
	Vector VectorConfig `json:"vector"`
	// Dim is the size of the centroids: the vocabulary (tfidf), the latent
	// dimensions (lsa) or the embedding size.
	Dim int `json:"dim"`
	// Buckets and IDF describe the vocabulary (tfidf and lsa): hash bucket
	// and inverse document frequency per term.
	Buckets []uint32 `json:"buckets,omitempty"`
	IDF     floats   `json:"idf,omitempty"`
	// OOVIDF weighs the terms of a tagged prompt that are not in the
	// vocabulary (tfidf and lsa): the idf of a term no training prompt had,
	// ln(1+n) + 1. They count in the prompt's norm, so a prompt made mostly of
	// words the fit never saw is far from every cluster.
	OOVIDF float32 `json:"oov_idf,omitempty"`
	// Projection maps a term vector to the latent space (lsa): one row of
	// Dim values per vocabulary term.
	Projection floats `json:"projection,omitempty"`
	// Clusters are the topics, at least one, in fit order (not by ID).
	Clusters []Cluster `json:"clusters"`
	// NextID is the smallest cluster id never used by this artifact or its
	// predecessors; a refit gives new topics ids from here, so an id is never
	// reused for another topic.
	NextID int `json:"next_id"`
	// Selection records how the number of clusters was chosen.
	Selection Selection `json:"k_selection"`
	// Fit records the settings and outcome of the k-means fit.
	Fit FitInfo `json:"fit"`
	// Previous records how cluster ids were carried over from the artifact
	// this one was fitted after (nil for a first fit).
	Previous *Lineage `json:"previous,omitempty"`
	// Warnings are the fit's doubts about the result (k large for the data,
	// a tiny vocabulary, empty clusters), for the user to read; Fit and
	// FitEmbeddings set them, they are not saved.
	Warnings []string `json:"-"`
}

// Cluster is one topic.
type Cluster struct {
	// ID identifies the topic across refits: in [0, Model.NextID), unique
	// in the artifact, never reused for another topic (see Carry).
	ID int `json:"id"`
	// Label names the cluster in tags, domains and reports: the top terms
	// joined by "/" ("cluster-ID" without any), with "#ID" appended when it
	// would repeat another; a refit with --previous keeps the old label
	// unless --relabel. Unique, not blank, never UnclusteredLabel.
	Label string `json:"label"`
	Size  int    `json:"size"` // training prompts assigned
	// TopTerms are the cluster's most distinctive vocabulary terms (at most
	// FitConfig.TopTerms), most distinctive first; empty when the fit had
	// no prompt text (embeddings alone) or the cluster no members.
	TopTerms []string `json:"top_terms,omitempty"`
	// Threshold is the cosine distance beyond which a prompt is unclustered
	// (see FitInfo.Thresholds for how it was set).
	Threshold float32 `json:"threshold"`
	// Centroid is the cluster's unit-length mean direction in the model's
	// space, Dim values (stored as base64 of little-endian float32).
	Centroid floats `json:"centroid"`
}

// Selection records how k was chosen.
type Selection struct {
	Method string `json:"method"`           // fixed, stability or silhouette
	K      int    `json:"k"`                // the number of clusters fitted
	Sample int    `json:"sample,omitempty"` // prompts the silhouette was computed on; 0 for other methods
	// Scores maps each k tried to its criterion score (mean pairwise
	// adjusted Rand index of the restarts for stability, mean silhouette
	// for silhouette); the highest won. Empty for a fixed k.
	Scores map[int]float64 `json:"scores,omitempty"`
}

// FitInfo records what the fit saw.
type FitInfo struct {
	Prompts           int     `json:"prompts"`            // clustered: those with at least one vocabulary term
	Objective         float64 `json:"objective"`          // sum of the prompts' cosine similarities to their centroids in the winning restart
	Restarts          int     `json:"restarts"`           // k-means restarts per k (FitConfig.Restarts)
	Seed              uint64  `json:"seed"`               // FitConfig.Seed
	ThresholdQuantile float64 `json:"threshold_quantile"` // quantile of member distances each Threshold is set at
	// Thresholds says which distances the quantile was taken of: "cross-fit"
	// (each training prompt's distance under a model fitted on the other
	// folds, as for a prompt never seen) or "training" (the fitted model's own
	// distances: small inputs and embeddings).
	Thresholds string `json:"thresholds,omitempty"`
}

// Lineage maps the clusters of a new fit onto those of the previous artifact.
type Lineage struct {
	Version string    `json:"version"` // the previous artifact's Version
	Matches []IDMatch `json:"matches"` // one per new cluster, in the order of Model.Clusters
	// Relabel is true when matched clusters were named afresh instead of
	// keeping their previous labels (cluster fit --relabel).
	Relabel bool `json:"relabel,omitempty"`
}

// IDMatch says that new cluster (by fit order) took the id of an old one,
// or a fresh id when Old is -1.
type IDMatch struct {
	ID  int `json:"id"`  // the id the new cluster took: Old, or a fresh one
	Old int `json:"old"` // -1: no old cluster was similar enough
	// Similarity is the cosine similarity of the new centroid to that of
	// the old cluster it was paired with (see Carry); 0 when it was paired
	// with none. Below the minimum similarity (cluster fit --min-similarity,
	// default DefaultMinSimilarity) the pair is no match and Old is -1.
	Similarity float64 `json:"similarity"`
	// OldLabel is the matched old cluster's label (kept unless Relabel).
	OldLabel string `json:"old_label,omitempty"`
	// Nearest is the old cluster most similar to the new one, paired or not
	// (with more new clusters than old, some are paired with none), and
	// NearestSimilarity that similarity; -1 and 0 with no old cluster.
	// Set by Carry for its report, not stored in the artifact.
	Nearest           int     `json:"-"`
	NearestSimilarity float64 `json:"-"`
}

// floats marshals as base64 of little-endian float32, compact and exact.
type floats []float32

func (f floats) MarshalJSON() ([]byte, error) {
	b := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return json.Marshal(base64.StdEncoding.EncodeToString(b))
}

func (f *floats) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("float vector: want a base64 string: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("float vector: %w", err)
	}
	if len(b)%4 != 0 {
		return fmt.Errorf("float vector: %d bytes is not a multiple of 4", len(b))
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	*f = out
	return nil
}

// contentHash is the hex SHA-256 prefix of the artifact with Version empty.
func (m *Model) contentHash() (string, error) {
	c := *m
	c.Version = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:8]), nil
}

// Seal sets Version to the content hash; call it after the last change.
func (m *Model) Seal() error {
	v, err := m.contentHash()
	if err != nil {
		return fmt.Errorf("hashing cluster artifact: %w", err)
	}
	m.Version = v
	return nil
}

// Save writes the artifact as JSON, atomically (temp file + rename). It
// refuses a Model that Load would refuse.
func (m *Model) Save(path string) error {
	if m.Version == "" {
		if err := m.Seal(); err != nil {
			return err
		}
	}
	if err := m.check(); err != nil {
		return fmt.Errorf("writing cluster artifact %s: %w: %v", path, ErrArtifact, err)
	}
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return fmt.Errorf("encoding cluster artifact: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n')); err != nil {
		return fmt.Errorf("writing cluster artifact %s: %w", path, err)
	}
	return nil
}

// ErrArtifact marks an artifact that cannot be used.
var ErrArtifact = errors.New("invalid cluster artifact")

// Load reads and checks an artifact written by Save, for tagging.
func Load(path string) (*Model, error) {
	return load(path, false)
}

// LoadPrevious reads an artifact to carry its ids and labels over to a refit
// (cluster fit --previous): it also accepts the v1 format, whose thresholds
// and distances Load refuses but whose centroids and labels are still good.
func LoadPrevious(path string) (*Model, error) {
	return load(path, true)
}

func load(path string, previous bool) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading cluster artifact: %w (fit one with: entrowatch cluster fit --in PROMPTS --out %s)", err, path)
	}
	m, err := decode(b, previous)
	if err != nil {
		if errors.Is(err, errFormatV1) {
			return nil, fmt.Errorf("cluster artifact %s: %w; refit it, keeping its cluster ids and labels: entrowatch cluster fit --in PROMPTS --out NEW.json --previous %s", path, err, path)
		}
		if estimatorArtifact(b) {
			return nil, fmt.Errorf("%w: %s is an estimator artifact (entrowatch train); pass it with --estimator", ErrArtifact, path)
		}
		return nil, fmt.Errorf("cluster artifact %s: %w", path, err)
	}
	return m, nil
}

// estimatorArtifact reports whether b is the JSON that `entrowatch train`
// writes (operators/estimate): format entrowatch.estimator.*, or no format
// but the estimator's "models" object and no "clusters".
func estimatorArtifact(b []byte) bool {
	var top struct {
		Format   string          `json:"format"`
		Models   json.RawMessage `json:"models"`
		Clusters json.RawMessage `json:"clusters"`
	}
	if json.Unmarshal(b, &top) != nil {
		return false
	}
	if strings.HasPrefix(top.Format, "entrowatch.estimator.") {
		return true
	}
	return top.Format == "" && len(top.Models) > 0 && top.Models[0] == '{' && top.Clusters == nil
}

// errFormatV1 marks a v1 artifact given where only the current format will do.
var errFormatV1 = errors.New("format " + formatV1 + " was written by an older entrowatch: its unclustered thresholds were measured on another scale than today's cluster_distance, so it would tag wrongly")

// Decode parses and checks an artifact: the current format, with a version
// that matches its content.
func Decode(b []byte) (*Model, error) {
	return decode(b, false)
}

func decode(b []byte, previous bool) (*Model, error) {
	var m Model
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrArtifact, err)
	}
	switch {
	case m.Format == formatV1 && !previous:
		return nil, fmt.Errorf("%w: %w", ErrArtifact, errFormatV1)
	case m.Format != Format && m.Format != formatV1:
		return nil, fmt.Errorf("%w: %v", ErrArtifact, m.check())
	case m.Version == "":
		// Without a version there is nothing to check the content against: a
		// hand edit would go unnoticed.
		return nil, fmt.Errorf("%w: no \"version\" (the content hash written by entrowatch cluster fit): the file was edited or is not a cluster artifact; refit it", ErrArtifact)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrArtifact, err)
	}
	return &m, nil
}

// check verifies the artifact's internal consistency and, when it has a
// Version, its content hash (a Model fresh from Fit has none yet). The hash
// only shows that the file is as its writer left it: a writer that reseals
// what it wrote (or a Model built in memory) can hold anything, so every
// field tagging reads is checked here, the lengths and ranges it indexes by
// included, and the tagger can rely on them.
func (m *Model) check() error {
	if m.Format != Format && m.Format != formatV1 {
		return fmt.Errorf("format %q, want %q (written by another version of entrowatch?)", m.Format, Format)
	}
	if m.Dim < 1 {
		return fmt.Errorf("dim %d", m.Dim)
	}
	if len(m.Clusters) == 0 {
		return errors.New("no clusters")
	}
	if err := m.checkSpace(); err != nil {
		return err
	}
	if m.NextID < 0 || m.NextID > math.MaxInt32 {
		return fmt.Errorf("next_id %d out of range [0, %d]", m.NextID, math.MaxInt32)
	}
	ids := make(map[int]int, len(m.Clusters))       // id -> index
	labels := make(map[string]int, len(m.Clusters)) // label -> id
	for i, c := range m.Clusters {
		if c.ID < 0 || c.ID >= m.NextID {
			return fmt.Errorf("cluster %d: id out of range [0, next_id %d)", c.ID, m.NextID)
		}
		if j, ok := ids[c.ID]; ok {
			return fmt.Errorf("cluster %d: id repeated (clusters %d and %d of the list)", c.ID, j+1, i+1)
		}
		ids[c.ID] = i
		switch {
		case strings.TrimSpace(c.Label) == "":
			return fmt.Errorf("cluster %d: label %q is blank", c.ID, c.Label)
		case strings.EqualFold(strings.TrimSpace(c.Label), UnclusteredLabel):
			return fmt.Errorf("cluster %d: label %q is reserved for prompts in no cluster", c.ID, c.Label)
		}
		if id, ok := labels[c.Label]; ok {
			return fmt.Errorf("cluster %d: label %q repeats cluster %d's (tags and domains are keyed by label)", c.ID, c.Label, id)
		}
		labels[c.Label] = c.ID
		if c.Size < 0 {
			return fmt.Errorf("cluster %d: size %d is negative", c.ID, c.Size)
		}
		if !(c.Threshold >= -thresholdSlack && c.Threshold <= 2) { // v1 kept rounding below 0; NaN too
			return fmt.Errorf("cluster %d: threshold %g outside [0, 2]", c.ID, c.Threshold)
		}
		if len(c.Centroid) != m.Dim {
			return fmt.Errorf("cluster %d: centroid has %d values, want %d (dim)", c.ID, len(c.Centroid), m.Dim)
		}
		if j := firstNonFinite(c.Centroid); j >= 0 {
			return fmt.Errorf("cluster %d: centroid value %d is %g", c.ID, j, c.Centroid[j])
		}
		var ss float64
		for _, x := range c.Centroid {
			ss += float64(x) * float64(x)
		}
		if n := math.Sqrt(ss); n > 1+centroidSlack {
			return fmt.Errorf("cluster %d: centroid norm %.4g, want a unit vector", c.ID, n)
		}
	}
	if m.Version != "" {
		v, err := m.contentHash()
		if err != nil {
			return err
		}
		if v != m.Version {
			return fmt.Errorf("content hash %s does not match version %s: the file was edited or damaged; refit it (labels are changed with cluster fit --previous, not by editing)", v, m.Version)
		}
	}
	return nil
}

// centroidSlack absorbs the float32 rounding of a unit centroid's norm.
const centroidSlack = 1e-3

// maxProjection bounds the values of the LSA projection, whose columns are
// unit vectors (values at most 1; 16 leaves room for the rounding of a
// near-degenerate singular vector). A larger value overflowed the float32
// arithmetic of tagging and left every prompt unclustered.
const maxProjection = 16

// maxIDF bounds idf and oov_idf: ln(1+n)+1 for n training prompts is below
// 45 for any n an int holds. A larger weight overflowed the float32 norm of
// a prompt and tagged it into a cluster at distance NaN.
const maxIDF = 64

// checkSpace checks the vectoriser of the artifact's space: the vocabulary's
// buckets, idf and projection, and their sizes against dim.
func (m *Model) checkSpace() error {
	switch m.Space {
	case SpaceTFIDF, SpaceLSA:
	case SpaceEmbedding:
		if len(m.Buckets)+len(m.IDF)+len(m.Projection) > 0 || m.OOVIDF != 0 {
			return fmt.Errorf("embedding space: %d buckets, %d idf values, %d projection values and oov_idf %g, want none", len(m.Buckets), len(m.IDF), len(m.Projection), m.OOVIDF)
		}
		return nil
	default:
		return fmt.Errorf("unknown space %q", m.Space)
	}
	if m.Vector.HashBits < minHashBits || m.Vector.HashBits > maxHashBits {
		return fmt.Errorf("hash_bits %d out of range [%d, %d]", m.Vector.HashBits, minHashBits, maxHashBits)
	}
	if len(m.IDF) != len(m.Buckets) || len(m.Buckets) == 0 {
		return fmt.Errorf("%d buckets but %d idf values", len(m.Buckets), len(m.IDF))
	}
	for i, b := range m.Buckets {
		if b >= 1<<uint(m.Vector.HashBits) {
			return fmt.Errorf("bucket %d out of range for hash_bits %d", b, m.Vector.HashBits)
		}
		if i > 0 && b <= m.Buckets[i-1] {
			return fmt.Errorf("buckets not strictly increasing: %d after %d (term %d)", b, m.Buckets[i-1], i)
		}
	}
	for i, w := range m.IDF {
		if !(w > 0 && w <= maxIDF) { // NaN too
			return fmt.Errorf("idf value %d (bucket %d) is %g, want a weight in (0, %d]", i, m.Buckets[i], w, maxIDF)
		}
	}
	// v1 had no oov_idf (0); it is read only to carry ids over.
	if w := m.OOVIDF; !(w > 0 && w <= maxIDF) && !(w == 0 && m.Format == formatV1) {
		return fmt.Errorf("oov_idf %g: want a weight in (0, %d]", w, maxIDF)
	}
	switch m.Space {
	case SpaceTFIDF:
		if m.Dim != len(m.Buckets) {
			return fmt.Errorf("tfidf space: dim %d but %d terms", m.Dim, len(m.Buckets))
		}
		if len(m.Projection) != 0 {
			return fmt.Errorf("tfidf space: %d projection values, want none", len(m.Projection))
		}
	case SpaceLSA:
		// By division: len(Buckets)*Dim can overflow for a crafted dim.
		if len(m.Projection)%m.Dim != 0 || len(m.Projection)/m.Dim != len(m.Buckets) {
			return fmt.Errorf("lsa space: projection has %d values, want %d terms × %d (dim)", len(m.Projection), len(m.Buckets), m.Dim)
		}
		for j, x := range m.Projection {
			if !(x >= -maxProjection && x <= maxProjection) { // NaN too
				return fmt.Errorf("lsa space: projection value %d (term %d, dimension %d) is %g, want one in [-%d, %d]", j, j/m.Dim, j%m.Dim, x, maxProjection, maxProjection)
			}
		}
	}
	return nil
}

// firstNonFinite returns the index of the first NaN or infinite value of v,
// or -1.
func firstNonFinite(v []float32) int {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return i
		}
	}
	return -1
}
