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
	"path/filepath"
	"strings"
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
	Format  string `json:"format"`
	Version string `json:"version"`
	// Space is tfidf, lsa or embedding (see the Space constants).
	Space  string       `json:"space"`
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
	Projection floats    `json:"projection,omitempty"`
	Clusters   []Cluster `json:"clusters"`
	// NextID is the smallest cluster id never used by this artifact or its
	// predecessors; a refit gives new topics ids from here, so an id is never
	// reused for another topic.
	NextID    int       `json:"next_id"`
	Selection Selection `json:"k_selection"`
	Fit       FitInfo   `json:"fit"`
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
	ID       int      `json:"id"`
	Label    string   `json:"label"`
	Size     int      `json:"size"` // training prompts assigned
	TopTerms []string `json:"top_terms,omitempty"`
	// Threshold is the cosine distance beyond which a prompt is unclustered
	// (see FitInfo.Thresholds for how it was set).
	Threshold float32 `json:"threshold"`
	Centroid  floats  `json:"centroid"`
}

// Selection records how k was chosen.
type Selection struct {
	Method string          `json:"method"` // fixed or silhouette
	K      int             `json:"k"`
	Sample int             `json:"sample,omitempty"`
	Scores map[int]float64 `json:"scores,omitempty"`
}

// FitInfo records what the fit saw.
type FitInfo struct {
	Prompts           int     `json:"prompts"` // clustered: those with at least one vocabulary term
	Objective         float64 `json:"objective"`
	Restarts          int     `json:"restarts"`
	Seed              uint64  `json:"seed"`
	ThresholdQuantile float64 `json:"threshold_quantile"`
	// Thresholds says which distances the quantile was taken of: "cross-fit"
	// (each training prompt's distance under a model fitted on the other
	// folds, as for a prompt never seen) or "training" (the fitted model's own
	// distances: small inputs and embeddings).
	Thresholds string `json:"thresholds,omitempty"`
}

// Lineage maps the clusters of a new fit onto those of the previous artifact.
type Lineage struct {
	Version string    `json:"version"`
	Matches []IDMatch `json:"matches"`
	// Relabel is true when matched clusters were named afresh instead of
	// keeping their previous labels (cluster fit --relabel).
	Relabel bool `json:"relabel,omitempty"`
}

// IDMatch says that new cluster (by fit order) took the id of an old one,
// or a fresh id when Old is -1.
type IDMatch struct {
	ID         int     `json:"id"`
	Old        int     `json:"old"` // -1: no old cluster was similar enough
	Similarity float64 `json:"similarity"`
	// OldLabel is the matched old cluster's label (kept unless Relabel).
	OldLabel string `json:"old_label,omitempty"`
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

// Save writes the artifact as JSON, atomically (temp file + rename).
func (m *Model) Save(path string) error {
	if m.Version == "" {
		if err := m.Seal(); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return fmt.Errorf("encoding cluster artifact: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".clusters-*.json")
	if err != nil {
		return fmt.Errorf("writing cluster artifact %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("writing cluster artifact %s: %w", path, err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("writing cluster artifact %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing cluster artifact %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
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
// Version, its content hash (a Model fresh from Fit has none yet).
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
	switch m.Space {
	case SpaceTFIDF, SpaceLSA:
		if m.Vector.HashBits < 8 || m.Vector.HashBits > 24 {
			return fmt.Errorf("hash_bits %d out of range", m.Vector.HashBits)
		}
		if len(m.IDF) != len(m.Buckets) || len(m.Buckets) == 0 {
			return fmt.Errorf("%d buckets but %d idf values", len(m.Buckets), len(m.IDF))
		}
		for _, b := range m.Buckets {
			if b >= 1<<uint(m.Vector.HashBits) {
				return fmt.Errorf("bucket %d out of range for hash_bits %d", b, m.Vector.HashBits)
			}
		}
		if m.Space == SpaceTFIDF && m.Dim != len(m.Buckets) {
			return fmt.Errorf("tfidf space: dim %d but %d terms", m.Dim, len(m.Buckets))
		}
		if m.Space == SpaceLSA && len(m.Projection) != len(m.Buckets)*m.Dim {
			return fmt.Errorf("lsa space: projection has %d values, want %d", len(m.Projection), len(m.Buckets)*m.Dim)
		}
		if m.Format == Format && !(m.OOVIDF > 0) {
			return fmt.Errorf("oov_idf %g: want > 0", m.OOVIDF)
		}
	case SpaceEmbedding:
	default:
		return fmt.Errorf("unknown space %q", m.Space)
	}
	ids := map[int]bool{}
	for _, c := range m.Clusters {
		if len(c.Centroid) != m.Dim {
			return fmt.Errorf("cluster %d: centroid has %d values, want %d", c.ID, len(c.Centroid), m.Dim)
		}
		if c.ID < 0 || ids[c.ID] {
			return fmt.Errorf("cluster id %d negative or repeated", c.ID)
		}
		ids[c.ID] = true
		if c.ID >= m.NextID {
			return fmt.Errorf("cluster id %d not below next_id %d", c.ID, m.NextID)
		}
		if !(c.Threshold >= -thresholdSlack && c.Threshold <= 2) { // v1 kept rounding below 0
			return fmt.Errorf("cluster %d: threshold %g outside [0, 2]", c.ID, c.Threshold)
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
