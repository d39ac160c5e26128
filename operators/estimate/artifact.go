package estimate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
)

// Format names the artifact's JSON layout; readers reject other formats.
const Format = "entrowatch.estimator.v1"

// FallbackKey is the Set key of the model pooled over every LLM, used for rows
// whose LLM model has no artifact of its own.
const FallbackKey = "*"

// Set is the estimator file: one Model per LLM model, plus optionally a pooled
// fallback, versioned by a content hash over everything else. Train builds
// one; by hand, store each Model under its name, set Fallback, and Seal (or
// Save) it.
type Set struct {
	Format  string `json:"format"`  // Format, set by Seal
	Version string `json:"version"` // content hash of the set (models included), set by Seal
	// Fallback is the key of the model used for LLM models without their own;
	// "" = none (their rows get status unknown_model).
	Fallback string `json:"fallback"`
	// Models maps an LLM model name to its Model. The key must be the
	// model's name, Models[k].Model == k (the name given to Fit), and the
	// pooled model's key and name is FallbackKey.
	Models map[string]*Model `json:"models"`
	// Skipped gives, per LLM model of the training table that Train left to
	// the fallback, the reason (e.g. "too few labelled rows: 3 rows (2
	// correct, 1 incorrect), under the minimum of 50 rows and 10 of each
	// class"). Omitted when no LLM was left out, so sets without it keep
	// their bytes and hashes; sets written before it existed have none.
	Skipped map[string]string `json:"skipped,omitempty"`
}

// Model is one trained estimator of P(correct) for one LLM model.
type Model struct {
	Model       string    `json:"model"`    // LLM model name, FallbackKey when pooled
	Version     string    `json:"version"`  // content hash of this model
	Features    []string  `json:"features"` // names and order of the inputs (scored.v1 columns)
	Mean        []float64 `json:"mean"`     // standardisation: z = (x - mean) / scale
	Scale       []float64 `json:"scale"`
	Family      string    `json:"family"` // logreg | forest | mlp
	Logreg      *Logreg   `json:"logreg,omitempty"`
	Forest      *Forest   `json:"forest,omitempty"`
	MLP         *MLP      `json:"mlp,omitempty"`
	Calibration string    `json:"calibration"` // platt | isotonic | none
	Platt       *Platt    `json:"platt,omitempty"`
	Isotonic    *Isotonic `json:"isotonic,omitempty"`
	Offset      *Offset   `json:"offset,omitempty"`
	// Members, when present, make this model their average; each member reads
	// the inputs Inputs (indices into this model's Features).
	Members []*Model `json:"members,omitempty"`
	Inputs  []int    `json:"inputs,omitempty"`
	// Candidates are the features offered to training before screening.
	Candidates   []string `json:"candidates,omitempty"`
	Balance      bool     `json:"balance"`
	Hyper        string   `json:"hyper"` // chosen hyper-parameter, e.g. "C=1"
	TrainDomains []string `json:"train_domains"`
	Rows         int      `json:"rows"`
	Positives    int      `json:"positives"`
	Metrics      Metrics  `json:"metrics"`
}

// Metrics are measured on out-of-fold predictions of the training data.
type Metrics struct {
	AUROC   float64        `json:"auroc"`
	Brier   float64        `json:"brier"`
	ECE     float64        `json:"ece"`
	Domains []DomainMetric `json:"domains"`
	// Transfer, when measured (two or more training domains), is the error
	// to expect on a domain the model was not trained on.
	Transfer *Transfer `json:"transfer,omitempty"`
	// Unmeasured, when set, says why AUROC, Brier, ECE and the domains'
	// Estimated mean nothing: too few rows of a class for every
	// cross-validation fold to hold both (e.g. 3 rows in 3 folds). The
	// numbers are kept as computed; the report prints n/a.
	Unmeasured string `json:"unmeasured,omitempty"`
}

// DomainMetric compares estimated with true accuracy on one training domain.
type DomainMetric struct {
	Domain    string  `json:"domain"`
	Rows      int     `json:"rows"`
	Estimated float64 `json:"estimated"`
	True      float64 `json:"true"`
}

// score returns the family's uncalibrated log-odds for standardised z.
func (m *Model) score(z []float64) float64 {
	switch {
	case m.Logreg != nil:
		return m.Logreg.Score(z)
	case m.Forest != nil:
		return m.Forest.Score(z)
	case m.MLP != nil:
		return m.MLP.Score(z)
	}
	return 0
}

// Predict returns P(correct) for raw features x (in Features order), using z
// (len >= len(Features)) as scratch space. It allocates nothing.
func (m *Model) Predict(x, z []float64) float64 {
	if len(m.Members) > 0 {
		s := 0.0
		for _, mm := range m.Members {
			s += mm.Predict(x, z)
		}
		return s / float64(len(m.Members))
	}
	for j := range m.Features {
		z[j] = (m.input(x, j) - m.Mean[j]) / m.Scale[j]
	}
	return m.blend(m.calibrate(m.score(z[:len(m.Features)])), x)
}

// Offset is the shifted-probability blend (see TrainConfig.Offset):
// p = (1-Weight) p_calibrated + Weight clip(x[Feature] - Bias, 0, 1).
type Offset struct {
	Feature int     `json:"feature"` // index into Features
	Bias    float64 `json:"bias"`    // mean(x) - accuracy on the training rows
	Weight  float64 `json:"weight"`
}

func (m *Model) blend(p float64, x []float64) float64 {
	if m.Offset == nil {
		return p
	}
	o := m.Offset
	return (1-o.Weight)*p + o.Weight*math.Max(0, math.Min(1, m.input(x, o.Feature)-o.Bias))
}

// input is feature j of this model from the caller's row x.
func (m *Model) input(x []float64, j int) float64 {
	if m.Inputs != nil {
		return x[m.Inputs[j]]
	}
	return x[j]
}

func (m *Model) calibrate(s float64) float64 {
	switch {
	case m.Platt != nil:
		return m.Platt.Predict(s)
	case m.Isotonic != nil:
		return m.Isotonic.Predict(s)
	}
	return sigmoid(s)
}

// Validate checks that the model is complete and consistent: that Predict
// can use it without reading outside its parameters.
func (m *Model) Validate() error {
	if m == nil {
		return errors.New("model is nil")
	}
	d := len(m.Features)
	if d == 0 {
		return fmt.Errorf("model %q: no features", m.Model)
	}
	if len(m.Members) > 0 {
		for i, mm := range m.Members {
			if mm == nil {
				return fmt.Errorf("model %q: member %d is nil", m.Model, i)
			}
			if len(mm.Inputs) != len(mm.Features) || len(mm.Members) > 0 {
				return fmt.Errorf("model %q: member %d must map each of its features to an input", m.Model, i)
			}
			for _, in := range mm.Inputs {
				if in < 0 || in >= d {
					return fmt.Errorf("model %q: member %d reads input %d of %d", m.Model, i, in, d)
				}
			}
			if err := mm.Validate(); err != nil {
				return err
			}
		}
		return nil
	}
	if len(m.Mean) != d || len(m.Scale) != d {
		return fmt.Errorf("model %q: %d features but %d means and %d scales", m.Model, d, len(m.Mean), len(m.Scale))
	}
	for j, s := range m.Scale {
		if !(s > 0) || math.IsInf(s, 0) || math.IsNaN(m.Mean[j]) {
			return fmt.Errorf("model %q: feature %s has scale %g, want a positive number", m.Model, m.Features[j], s)
		}
	}
	switch m.Family {
	case FamilyLogreg:
		if m.Logreg == nil || len(m.Logreg.W) != d {
			return fmt.Errorf("model %q: logreg parameters missing or not %d weights", m.Model, d)
		}
	case FamilyForest:
		if m.Forest == nil {
			return fmt.Errorf("model %q: forest parameters missing", m.Model)
		}
		for t, tr := range m.Forest.Trees {
			n := len(tr.Feature)
			if n == 0 || len(tr.Thresh) != n || len(tr.Left) != n || len(tr.Right) != n || len(tr.Value) != n {
				return fmt.Errorf("model %q: tree %d has inconsistent arrays", m.Model, t)
			}
			for i, f := range tr.Feature {
				if f >= d || (f >= 0 && (tr.Left[i] <= i || tr.Left[i] >= n || tr.Right[i] <= i || tr.Right[i] >= n)) {
					return fmt.Errorf("model %q: tree %d node %d points outside the tree", m.Model, t, i)
				}
			}
		}
	case FamilyMLP:
		if m.MLP == nil || m.MLP.Hidden <= 0 || len(m.MLP.W1) != m.MLP.Hidden*d || len(m.MLP.B1) != m.MLP.Hidden || len(m.MLP.W2) != m.MLP.Hidden {
			return fmt.Errorf("model %q: mlp parameters missing or of the wrong shape", m.Model)
		}
	default:
		return fmt.Errorf("model %q: unknown family %q (want logreg, forest or mlp)", m.Model, m.Family)
	}
	if o := m.Offset; o != nil && (o.Feature < 0 || o.Feature >= d || o.Weight < 0 || o.Weight > 1) {
		return fmt.Errorf("model %q: offset feature %d or weight %g out of range", m.Model, o.Feature, o.Weight)
	}
	switch m.Calibration {
	case CalPlatt:
		if m.Platt == nil {
			return fmt.Errorf("model %q: platt calibration missing", m.Model)
		}
	case CalIsotonic:
		if m.Isotonic == nil || len(m.Isotonic.X) != len(m.Isotonic.Y) || len(m.Isotonic.X) == 0 || !slices.IsSorted(m.Isotonic.X) {
			return fmt.Errorf("model %q: isotonic calibration missing or unsorted", m.Model)
		}
	case CalNone:
	default:
		return fmt.Errorf("model %q: unknown calibration %q (want platt, isotonic or none)", m.Model, m.Calibration)
	}
	return nil
}

// hash returns the content hash of v with its version field cleared by clear.
func hash(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs of numbers and strings always marshal
	}
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:8])
}

// Seal computes the model's and the set's content hashes and sets Format.
// Call it after building or changing a set; Train, Parse and Load return
// sealed sets, and Marshal and Save seal before writing.
func (s *Set) Seal() {
	s.Format = Format
	for _, m := range s.Models {
		m.Version = ""
		m.Version = hash(m)
	}
	s.Version = ""
	s.Version = hash(s)
}

// Validate checks the set's structure: at least one model, each valid
// (Model.Validate) and stored under its own name (Models[k].Model == k), and
// a fallback that is "" or one of the keys. It neither needs nor checks the
// content hashes, so it works before Seal; Parse and Load check them too.
func (s *Set) Validate() error {
	if len(s.Models) == 0 {
		return errors.New("no models in the estimator set: add at least one (estimate.Train, or Fit stored under its name)")
	}
	if s.Fallback != "" && s.Models[s.Fallback] == nil {
		return fmt.Errorf("fallback %q names no model in the set (have %s): set Fallback to one of the keys, or \"\" for none",
			s.Fallback, strings.Join(s.keys(), ","))
	}
	for _, k := range slices.Sorted(maps.Keys(s.Skipped)) {
		if s.Models[k] != nil {
			return fmt.Errorf("model %q is listed as skipped but has a model in the set: remove it from skipped", k)
		}
	}
	for _, k := range s.keys() {
		m := s.Models[k]
		if m == nil {
			return fmt.Errorf("model stored under %q is nil: remove the key or store a trained model", k)
		}
		if k != m.Model {
			return fmt.Errorf("model stored under %q is named %q: store each model under its name (Models[m.Model] = m; "+
				"a pooled model is named FallbackKey, %q, when it is fitted)", k, m.Model, FallbackKey)
		}
		if err := m.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// keys are the set's model keys, sorted (errors then name the same model
// on every run).
func (s *Set) keys() []string {
	ks := make([]string, 0, len(s.Models))
	for k := range s.Models {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// checkSealed reports a set whose versions are missing or no longer match
// its content; advice says what to do about it.
func (s *Set) checkSealed(advice string) error {
	for _, k := range s.keys() {
		m := s.Models[k]
		v := m.Version
		m.Version = ""
		h := hash(m)
		m.Version = v
		if h != v {
			return fmt.Errorf("model %q: version %s does not match its content (%s): %s", k, v, h, advice)
		}
	}
	v := s.Version
	s.Version = ""
	h := hash(s)
	s.Version = v
	if h != v {
		return fmt.Errorf("set version %s does not match its content (%s): %s", v, h, advice)
	}
	return nil
}

// checkFormat refuses a file that is not an estimator set.
func (s *Set) checkFormat() error {
	if s.Format == Format {
		return nil
	}
	if strings.HasPrefix(s.Format, "entrowatch.clusters.") {
		return errors.New("this is a topic-cluster file (entrowatch cluster fit), not an estimator: it is read by the clustertag operator " +
			"(--clusters on the command line); an estimator comes from entrowatch train or estimate.Train")
	}
	return fmt.Errorf("format %q, want %q (an estimator written by entrowatch train or Set.Save)", s.Format, Format)
}

// For returns the model for an LLM model name, the fallback when it has none,
// or nil.
func (s *Set) For(model string) *Model {
	if m := s.Models[model]; m != nil {
		return m
	}
	if s.Fallback != "" {
		return s.Models[s.Fallback]
	}
	return nil
}

// Marshal seals the set and returns it as indented JSON. It refuses a set
// that Parse would reject (see Validate), leaving it unchanged.
func (s *Set) Marshal() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("estimator set not written: %w", err)
	}
	s.Seal()
	b, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Save seals the set and writes it to path; like Marshal, it refuses a set
// that Load would reject.
func (s *Set) Save(path string) error {
	b, err := s.Marshal()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Parse decodes an estimator set and checks its format, structure
// (Validate) and content hashes: a set edited after it was written is
// refused.
func Parse(b []byte) (*Set, error) {
	var s Set
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("not an estimator JSON file: %w", err)
	}
	if err := s.checkFormat(); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if err := s.checkSealed("the file was edited; retrain or restore it"); err != nil {
		return nil, err
	}
	return &s, nil
}

// Load reads an estimator set from path and checks it as Parse does.
func Load(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading estimator: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("estimator %s: %w", path, err)
	}
	return s, nil
}
