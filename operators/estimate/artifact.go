package estimate

import (
	"bytes"
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

	"github.com/entrowatch/entrowatch/internal/atomicfile"
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
	Model       string    `json:"model"`              // LLM model name, FallbackKey when pooled
	Version     string    `json:"version"`            // content hash of this model
	Features    []string  `json:"features"`           // names and order of the inputs (scored.v1 columns)
	Mean        []float64 `json:"mean"`               // standardisation: z = (x - mean) / scale
	Scale       []float64 `json:"scale"`              // standard deviation on the training rows (1 for a constant feature)
	Family      string    `json:"family"`             // logreg | forest | mlp
	Logreg      *Logreg   `json:"logreg,omitempty"`   // parameters when Family is logreg, else nil
	Forest      *Forest   `json:"forest,omitempty"`   // parameters when Family is forest, else nil
	MLP         *MLP      `json:"mlp,omitempty"`      // parameters when Family is mlp, else nil
	Calibration string    `json:"calibration"`        // platt | isotonic | none
	Platt       *Platt    `json:"platt,omitempty"`    // the map when Calibration is platt, else nil
	Isotonic    *Isotonic `json:"isotonic,omitempty"` // the map when Calibration is isotonic, else nil
	// Offset blends the calibrated probability with a shifted probability
	// feature; nil unless trained with TrainConfig.Offset and one of the
	// features is a probability (values in [0,1]) that tells correct rows
	// from incorrect ones within the training domains.
	Offset *Offset `json:"offset,omitempty"`
	// Members, when present, make this model their average; each member reads
	// the inputs Inputs (indices into this model's Features).
	Members []*Model `json:"members,omitempty"`
	Inputs  []int    `json:"inputs,omitempty"`
	// Recalibration, on an ensemble only, maps the members' average to
	// P(correct) (isotonic, fitted on the training rows): the plain average
	// of calibrated single-feature models is not calibrated when several of
	// them carry signal, it shrinks toward the training accuracy. Absent in
	// ensembles trained before it existed, which keep their average.
	Recalibration *Isotonic `json:"recalibration,omitempty"`
	// Candidates are the features offered to training before screening.
	Candidates   []string `json:"candidates,omitempty"`
	Balance      bool     `json:"balance"`       // classes weighted to equal total weight in training (TrainConfig.Balance)
	Hyper        string   `json:"hyper"`         // chosen hyper-parameter, e.g. "C=1"
	TrainDomains []string `json:"train_domains"` // the training rows' distinct domains, sorted; nil on an ensemble's members
	Rows         int      `json:"rows"`          // labelled training rows
	Positives    int      `json:"positives"`     // how many of them are correct
	// Metrics are measured on the training rows (see Metrics); zero on an
	// ensemble's members, whose ensemble's Metrics measure it as a whole.
	Metrics Metrics `json:"metrics"`
}

// Metrics are measured on out-of-fold predictions of the training data.
type Metrics struct {
	AUROC   float64        `json:"auroc"`   // of P(correct) for telling correct rows from incorrect; 0.5 when a class is missing
	Brier   float64        `json:"brier"`   // mean squared error of P(correct) against the labels (0 or 1): 0 is perfect
	ECE     float64        `json:"ece"`     // expected calibration error over 10 equal-width bins, from 0 (calibrated) to 1
	Domains []DomainMetric `json:"domains"` // one per training domain, sorted by name
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
	Domain string `json:"domain"`
	Rows   int    `json:"rows"` // labelled rows of the domain
	// Estimated is the mean P(correct) of the domain's rows: out-of-fold in
	// Metrics.Domains, from the model fitted without the domain in
	// Transfer.Domains.
	Estimated float64 `json:"estimated"`
	True      float64 `json:"true"` // the share of the domain's rows that are correct
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
// (len >= len(Features)) as scratch space. It allocates nothing. The model
// must pass Validate. The result is in [0,1], or NaN (from a NaN or
// infinite feature; callers treat it as a bad row).
func (m *Model) Predict(x, z []float64) float64 {
	if len(m.Members) > 0 {
		s := 0.0
		for _, mm := range m.Members {
			s += mm.Predict(x, z)
		}
		s /= float64(len(m.Members))
		if m.Recalibration != nil && !math.IsNaN(s) {
			s = m.Recalibration.Predict(s)
		}
		return clamp01(s)
	}
	for j := range m.Features {
		v := m.input(x, j)
		if math.IsInf(v, 0) {
			return math.NaN() // as documented: an infinite feature has no estimate
		}
		z[j] = zscore(v, m.Mean[j], m.Scale[j])
	}
	// A valid model's calibration and blend stay in [0,1]; the clamp also
	// absorbs rounding at the ends, and keeps NaN.
	return clamp01(m.blend(m.calibrate(m.score(z[:len(m.Features)])), x))
}

// zscore standardises x: (x - mean) / scale, also when x - mean overflows
// (x and mean of opposite signs, both near the largest float64).
func zscore(x, mean, scale float64) float64 {
	z := (x - mean) / scale
	if math.IsInf(z, 0) && !math.IsInf(x, 0) {
		return (x/2 - mean/2) / (scale / 2)
	}
	return z
}

// Offset is the shifted-probability blend (see TrainConfig.Offset):
// p = (1-Weight) p_calibrated + Weight clip(x[Feature] - Bias, 0, 1).
type Offset struct {
	Feature int     `json:"feature"` // index into Features
	Bias    float64 `json:"bias"`    // mean(x) - accuracy on the training rows
	Weight  float64 `json:"weight"`  // share of the shifted feature in the blend, in [0,1]; Fit uses 0.5
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
	if len(m.Inputs) > 0 {
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
// can use it without reading outside its parameters or the caller's row,
// and that it returns a probability. Every number Predict reads must be
// finite; the features are distinct column names a model can read (not the
// label, a key column or a column written by the estimator or after it;
// the operator, New, also checks that scored rows carry them); Mean and
// Scale give each feature a finite mean and a positive scale; the family's
// parameters have one weight per feature, and tree nodes point at features
// and children that exist; the calibration is a map into [0,1] (isotonic:
// sorted knots, non-decreasing values in [0,1]); an offset reads one of the
// features. A top-level model reads the caller's row in Features order and
// has no Inputs. An ensemble (Members) holds no parameters of its own; each
// member is a single model whose Inputs point, one per member feature, at
// the ensemble's feature of the same name.
func (m *Model) Validate() error {
	if m == nil {
		return errors.New("model is nil")
	}
	where := fmt.Sprintf("model %q", m.Model)
	if len(m.Inputs) > 0 {
		return fmt.Errorf("%s: inputs %v given, but only the members of an ensemble read inputs (indices into the ensemble's features): "+
			"remove inputs, or retrain (entrowatch train)", where, m.Inputs)
	}
	if err := m.validate(where); err != nil {
		return err
	}
	if len(m.Members) == 0 {
		if m.Recalibration != nil {
			return fmt.Errorf("%s: has a recalibration, which maps an ensemble's average: a single model has none (its calibration is platt or isotonic): remove it", where)
		}
		return nil
	}
	if m.Recalibration != nil {
		if err := validIsotonic(m.Recalibration, where+": recalibration"); err != nil {
			return err
		}
	}
	if err := m.noOwnParameters(where); err != nil {
		return err
	}
	for i, mm := range m.Members {
		if mm == nil {
			return fmt.Errorf("%s: member %d is nil", where, i)
		}
		mwhere := fmt.Sprintf("%s, member %d", where, i)
		if len(mm.Members) > 0 {
			return fmt.Errorf("%s: has members of its own: an ensemble's members must be single models", mwhere)
		}
		if mm.Recalibration != nil {
			return fmt.Errorf("%s: has a recalibration, which maps an ensemble's average, not a member's: remove it", mwhere)
		}
		if len(mm.Features) > len(m.Features) {
			return fmt.Errorf("%s: %d features, more than the model's %d: a member reads some of the model's features",
				mwhere, len(mm.Features), len(m.Features))
		}
		if len(mm.Inputs) != len(mm.Features) {
			return fmt.Errorf("%s: %d features but %d inputs: a member must map each of its features to an input (one of the model's %d features)",
				mwhere, len(mm.Features), len(mm.Inputs), len(m.Features))
		}
		for j, in := range mm.Inputs {
			if in < 0 || in >= len(m.Features) {
				return fmt.Errorf("%s: inputs[%d] reads input %d, outside the model's %d features (0..%d)",
					mwhere, j, in, len(m.Features), len(m.Features)-1)
			}
			if mm.Features[j] != m.Features[in] {
				return fmt.Errorf("%s: features[%d] is %q but inputs[%d] = %d reads the model's feature %q: "+
					"a member's features must be the model's features its inputs point at", mwhere, j, mm.Features[j], j, in, m.Features[in])
			}
		}
		if err := mm.validate(mwhere); err != nil {
			return err
		}
	}
	return nil
}

// validate checks m's features and, unless m is an ensemble, its
// parameters; where names m in errors ("model "x"", "model "x", member 2").
func (m *Model) validate(where string) error {
	d := len(m.Features)
	if d == 0 {
		return fmt.Errorf("%s: no features", where)
	}
	for j, f := range m.Features {
		if strings.TrimSpace(f) == "" {
			return fmt.Errorf("%s: features[%d] is empty: name the column it reads", where, j)
		}
		if why := notFeature(f); why != "" {
			return fmt.Errorf("%s: uses column %q, which %s; retrain without it (entrowatch train --features)", where, f, why)
		}
		if slices.Contains(m.Features[:j], f) {
			return fmt.Errorf("%s: feature %q is listed twice", where, f)
		}
	}
	if len(m.Members) > 0 {
		return nil
	}
	if len(m.Mean) != d || len(m.Scale) != d {
		return fmt.Errorf("%s: %d features but %d means and %d scales", where, d, len(m.Mean), len(m.Scale))
	}
	for j, s := range m.Scale {
		if !finite(m.Mean[j]) {
			return fmt.Errorf("%s: feature %s has mean %g, want a finite number", where, m.Features[j], m.Mean[j])
		}
		if !(s > 0) || math.IsInf(s, 0) {
			return fmt.Errorf("%s: feature %s has scale %g, want a positive number", where, m.Features[j], s)
		}
	}
	if err := m.validateFamily(where); err != nil {
		return err
	}
	if o := m.Offset; o != nil {
		if o.Feature < 0 || o.Feature >= d {
			return fmt.Errorf("%s: offset reads feature %d, outside its %d features (0..%d)", where, o.Feature, d, d-1)
		}
		if !(o.Weight >= 0 && o.Weight <= 1) {
			return fmt.Errorf("%s: offset weight %g, want a number in [0,1]", where, o.Weight)
		}
		if !finite(o.Bias) {
			return fmt.Errorf("%s: offset bias %g, want a finite number", where, o.Bias)
		}
	}
	return m.validateCalibration(where)
}

// validateFamily checks the family's parameters, and that no other family's
// are present (score uses the first it finds).
func (m *Model) validateFamily(where string) error {
	d := len(m.Features)
	var other []string
	switch m.Family {
	case FamilyLogreg:
		if m.Logreg == nil || len(m.Logreg.W) != d {
			return fmt.Errorf("%s: logreg parameters missing or not %d weights", where, d)
		}
		if err := allFinite(where, "logreg w", m.Logreg.W); err != nil {
			return err
		}
		if !finite(m.Logreg.B) || !finite(m.Logreg.C) {
			return fmt.Errorf("%s: logreg b = %g, c = %g, want finite numbers", where, m.Logreg.B, m.Logreg.C)
		}
		other = present(param{FamilyForest, m.Forest != nil}, param{FamilyMLP, m.MLP != nil})
	case FamilyForest:
		f := m.Forest
		if f == nil {
			return fmt.Errorf("%s: forest parameters missing", where)
		}
		if !finite(f.Base) || !finite(f.Rate) {
			return fmt.Errorf("%s: forest base %g, rate %g, want finite numbers", where, f.Base, f.Rate)
		}
		for t, tr := range f.Trees {
			n := len(tr.Feature)
			if n == 0 || len(tr.Thresh) != n || len(tr.Left) != n || len(tr.Right) != n || len(tr.Value) != n {
				return fmt.Errorf("%s: tree %d has inconsistent arrays", where, t)
			}
			for i, fe := range tr.Feature {
				if fe < -1 || fe >= d {
					return fmt.Errorf("%s: tree %d node %d reads feature %d, outside its %d features (-1 marks a leaf)", where, t, i, fe, d)
				}
				if fe >= 0 && (tr.Left[i] <= i || tr.Left[i] >= n || tr.Right[i] <= i || tr.Right[i] >= n) {
					return fmt.Errorf("%s: tree %d node %d points outside the tree", where, t, i)
				}
				if !finite(tr.Thresh[i]) || !finite(tr.Value[i]) {
					return fmt.Errorf("%s: tree %d node %d has threshold %g, value %g, want finite numbers", where, t, i, tr.Thresh[i], tr.Value[i])
				}
			}
		}
		other = present(param{FamilyLogreg, m.Logreg != nil}, param{FamilyMLP, m.MLP != nil})
	case FamilyMLP:
		p := m.MLP
		if p == nil || p.Hidden <= 0 || len(p.W1) != p.Hidden*d || len(p.B1) != p.Hidden || len(p.W2) != p.Hidden {
			return fmt.Errorf("%s: mlp parameters missing or of the wrong shape", where)
		}
		for _, a := range []struct {
			name string
			v    []float64
		}{{"mlp w1", p.W1}, {"mlp b1", p.B1}, {"mlp w2", p.W2}, {"mlp b2", []float64{p.B2}}, {"mlp alpha", []float64{p.Alpha}}} {
			if err := allFinite(where, a.name, a.v); err != nil {
				return err
			}
		}
		other = present(param{FamilyLogreg, m.Logreg != nil}, param{FamilyForest, m.Forest != nil})
	default:
		return fmt.Errorf("%s: unknown family %q (want logreg, forest or mlp)", where, m.Family)
	}
	if len(other) > 0 {
		return fmt.Errorf("%s: family %s, but %s parameters are given too: remove them", where, m.Family, strings.Join(other, " and "))
	}
	return nil
}

// validateCalibration checks that the calibration maps any score into [0,1]
// and that no other calibration's parameters are present (calibrate uses
// the first it finds).
func (m *Model) validateCalibration(where string) error {
	var other []string
	switch m.Calibration {
	case CalPlatt:
		if m.Platt == nil {
			return fmt.Errorf("%s: platt calibration missing", where)
		}
		if !finite(m.Platt.A) || !finite(m.Platt.B) {
			return fmt.Errorf("%s: platt a = %g, b = %g, want finite numbers", where, m.Platt.A, m.Platt.B)
		}
		other = present(param{CalIsotonic, m.Isotonic != nil})
	case CalIsotonic:
		if err := validIsotonic(m.Isotonic, where); err != nil {
			return err
		}
		other = present(param{CalPlatt, m.Platt != nil})
	case CalNone:
		other = present(param{CalPlatt, m.Platt != nil}, param{CalIsotonic, m.Isotonic != nil})
	default:
		return fmt.Errorf("%s: unknown calibration %q (want platt, isotonic or none)", where, m.Calibration)
	}
	if len(other) > 0 {
		return fmt.Errorf("%s: calibration %s, but %s parameters are given too: remove them", where, m.Calibration, strings.Join(other, " and "))
	}
	return nil
}

// validIsotonic checks an isotonic map: as many finite, sorted knots as
// values, the values non-decreasing probabilities.
func validIsotonic(iso *Isotonic, where string) error {
	if iso == nil || len(iso.X) != len(iso.Y) || len(iso.X) == 0 {
		return fmt.Errorf("%s: isotonic calibration missing, empty, or with different numbers of x and y", where)
	}
	for i, x := range iso.X {
		if !finite(x) {
			return fmt.Errorf("%s: isotonic x[%d] is %g, want a finite number", where, i, x)
		}
		if i > 0 && x < iso.X[i-1] {
			return fmt.Errorf("%s: isotonic x[%d] = %g is below x[%d] = %g: the knots must be sorted", where, i, x, i-1, iso.X[i-1])
		}
	}
	for i, y := range iso.Y {
		if !(y >= 0 && y <= 1) {
			return fmt.Errorf("%s: isotonic y[%d] = %g is not a probability in [0,1]", where, i, y)
		}
		if i > 0 && y < iso.Y[i-1] {
			return fmt.Errorf("%s: isotonic y[%d] = %g is below y[%d] = %g: the map must be non-decreasing", where, i, y, i-1, iso.Y[i-1])
		}
	}
	return nil
}

// noOwnParameters refuses an ensemble that also carries parameters of a
// single model: Predict averages the members and would ignore them.
func (m *Model) noOwnParameters(where string) error {
	own := present(param{"mean", m.Mean != nil}, param{"scale", m.Scale != nil},
		param{"logreg", m.Logreg != nil}, param{"forest", m.Forest != nil}, param{"mlp", m.MLP != nil},
		param{"platt", m.Platt != nil}, param{"isotonic", m.Isotonic != nil}, param{"offset", m.Offset != nil})
	if len(own) > 0 {
		return fmt.Errorf("%s: an ensemble (members) takes its parameters from its members, but it also has %s: remove them",
			where, strings.Join(own, ", "))
	}
	return nil
}

// param is a parameter block of a model and whether it is set.
type param struct {
	name string
	set  bool
}

// present names the parameter blocks that are set.
func present(ps ...param) []string {
	var out []string
	for _, p := range ps {
		if p.set {
			out = append(out, p.name)
		}
	}
	return out
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// allFinite reports the first value of field that is NaN or infinite.
func allFinite(where, field string, v []float64) error {
	for i, x := range v {
		if !finite(x) {
			return fmt.Errorf("%s: %s[%d] is %g, want a finite number", where, field, i, x)
		}
	}
	return nil
}

// hash returns the content hash of v (its JSON encoding), or an error for
// what JSON cannot hold: a NaN or infinite number.
func hash(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("no content hash: %w (a NaN or infinite number cannot be written: "+
			"Validate names the parameter; retrain, or fix the set by hand)", err)
	}
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:8]), nil
}

// Seal computes the model's and the set's content hashes and sets Format.
// Call it after building or changing a set; Train, Parse and Load return
// sealed sets, and Marshal and Save seal before writing. It fails, leaving
// the set unchanged, on a nil model or a number JSON cannot hold (NaN, Inf).
func (s *Set) Seal() error {
	sealed := make(map[string]string, len(s.Models))
	for _, k := range s.keys() {
		m := s.Models[k]
		if m == nil {
			return fmt.Errorf("model stored under %q is nil: remove the key or store a trained model", k)
		}
		h, err := m.contentHash()
		if err != nil {
			return fmt.Errorf("model %q: %w", k, err)
		}
		sealed[k] = h
	}
	// The set's hash covers its models with their new versions: hashed on
	// copies, so that the set is unchanged until all is known.
	c := *s
	c.Format, c.Version = Format, ""
	c.Models = make(map[string]*Model, len(s.Models))
	for k, m := range s.Models {
		mc := *m
		mc.Version = sealed[k]
		c.Models[k] = &mc
	}
	h, err := hash(&c)
	if err != nil { // not reached: the models, the only numbers, hashed
		return fmt.Errorf("estimator set: %w", err)
	}
	for k, m := range s.Models {
		m.Version = sealed[k]
	}
	s.Format, s.Version = Format, h
	return nil
}

// contentHash is the model's hash without its version. It reads m only:
// models are shared by the operators that estimate with them.
func (m *Model) contentHash() (string, error) {
	c := *m
	c.Version = ""
	return hash(&c)
}

// Validate checks the set's structure: at least one model, each valid
// (Model.Validate) and stored under its own name (Models[k].Model == k), and
// a fallback that is "" or one of the keys. It neither needs nor checks the
// content hashes, so it works before Seal; Parse and Load check them too.
func (s *Set) Validate() error {
	if s == nil {
		return errors.New("estimator set is nil: load one (estimate.Load) or train one (estimate.Train)")
	}
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
	// It reads the set only: a set is shared by the operators estimating
	// with it, and New checks it.
	for _, k := range s.keys() {
		m := s.Models[k]
		h, err := m.contentHash()
		if err != nil {
			return fmt.Errorf("model %q: %w", k, err)
		}
		if h != m.Version {
			return fmt.Errorf("model %q: version %s does not match its content (%s): %s", k, m.Version, h, advice)
		}
	}
	c := *s
	c.Version = ""
	h, err := hash(&c)
	if err != nil {
		return fmt.Errorf("estimator set: %w", err)
	}
	if h != s.Version {
		return fmt.Errorf("set version %s does not match its content (%s): %s", s.Version, h, advice)
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

// For returns the model for an LLM model name (blanks around it aside, as
// training takes them off), the fallback when it has none, or nil.
func (s *Set) For(model string) *Model {
	if m := s.Models[model]; m != nil {
		return m
	}
	if m := s.Models[strings.TrimSpace(model)]; m != nil {
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
	if err := s.Seal(); err != nil {
		return nil, fmt.Errorf("estimator set not written: %w", err)
	}
	b, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Save seals the set and writes it to path, whole or not at all (through a
// temporary file renamed into place, so a failed write leaves the previous
// artifact as it was); like Marshal, it refuses a set that Load would
// reject.
func (s *Set) Save(path string) error {
	b, err := s.Marshal()
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b)
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
		// Fields this version does not know change the hash too: a file
		// from a newer entrowatch, not an edited one.
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		var strict Set
		if uerr := d.Decode(&strict); uerr != nil && strings.Contains(uerr.Error(), "unknown field") {
			return nil, fmt.Errorf("the file has fields this entrowatch (%s) does not know (%v): it was written by a newer entrowatch; upgrade, or retrain with this one", Format, uerr)
		}
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
