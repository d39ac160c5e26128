package estimate

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

func mustHash(t *testing.T, v any) string {
	t.Helper()
	h, err := hash(v)
	require.NoError(t, err)
	return h
}

// cloneSet is a deep copy of s (through its JSON).
func cloneSet(t *testing.T, s *Set) *Set {
	t.Helper()
	b, err := json.Marshal(s)
	require.NoError(t, err)
	var c Set
	require.NoError(t, json.Unmarshal(b, &c))
	return &c
}

// artifactBases trains the sets the malformed artifacts are made from:
// "ensemble", model "m" averaging three members on mean, std and max (each
// carries signal); and single models "p" (logreg, isotonic), "f" (forest,
// platt) and "n" (mlp, none) on mean and std.
func artifactBases(t *testing.T) map[string]*Set {
	t.Helper()
	tbl := synthetic(600, []string{"mean", "std", "max"}, 3)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range tbl.N() {
		tbl.X[i*3+1] = tbl.X[i*3] + rng.NormFloat64()*0.5
		tbl.X[i*3+2] = tbl.X[i*3] + rng.NormFloat64()*0.7
	}
	ens, err := Fit(tbl, "m", DefaultTrainConfig())
	require.NoError(t, err)
	require.Len(t, ens.Members, 3)
	require.Equal(t, []string{"mean", "std", "max"}, ens.Features)
	bases := map[string]*Set{"ensemble": {Models: map[string]*Model{"m": ens}, Fallback: "m"}}
	two := synthetic(600, []string{"mean", "std"}, 3)
	for name, cfg := range map[string]TrainConfig{
		"p": {Family: FamilyLogreg, Calibration: CalIsotonic, Folds: 3, Seed: 1},
		"f": {Family: FamilyForest, Calibration: CalPlatt, Folds: 3, Seed: 1, Hyper: 2},
		"n": {Family: FamilyMLP, Calibration: CalNone, Folds: 3, Seed: 1, Hyper: 1},
	} {
		m, err := Fit(two, name, cfg)
		require.NoError(t, err)
		bases[name] = &Set{Models: map[string]*Model{name: m}, Fallback: name}
	}
	for _, s := range bases {
		require.NoError(t, s.Validate())
		require.NoError(t, s.Seal())
	}
	return bases
}

// firstSplit is the index of tree 0's first internal node.
func firstSplit(t *testing.T, f *Forest) int {
	for i, fe := range f.Trees[0].Feature {
		if fe >= 0 {
			return i
		}
	}
	t.Fatal("tree 0 has no split")
	return -1
}

// TestValidateRefusesMalformedArtifact: an artifact that is sealed (its
// hashes match) but malformed is refused by Validate, Parse, Load and New
// with the model, member and field at fault, instead of crashing the
// process in Predict (index out of range) or writing p_correct outside
// [0,1]. Numbers JSON cannot hold (NaN, Inf) can only come from a set built
// in memory: Validate and New refuse those, and Seal returns an error.
func TestValidateRefusesMalformedArtifact(t *testing.T) {
	bases := artifactBases(t)
	nan, inf := math.NaN(), math.Inf(1)
	for _, tc := range []struct {
		name, base string
		mutate     func(m *Model)
		want       string
	}{
		// The audit's crash: a member with 6 features under a model of 3.
		{"member has more features than the model", "ensemble", func(m *Model) {
			mm := m.Members[0]
			mm.Features = []string{"mean", "mean", "mean", "mean", "mean", "mean"}
			mm.Inputs = []int{0, 0, 0, 0, 0, 0}
			mm.Mean = []float64{mm.Mean[0], mm.Mean[0], mm.Mean[0], mm.Mean[0], mm.Mean[0], mm.Mean[0]}
			mm.Scale = []float64{mm.Scale[0], mm.Scale[0], mm.Scale[0], mm.Scale[0], mm.Scale[0], mm.Scale[0]}
			w := mm.Logreg.W[0]
			mm.Logreg.W = []float64{w, w, w, w, w, w}
		}, `model "m", member 0: 6 features, more than the model's 3: a member reads some of the model's features`},
		{"member input outside the model", "ensemble", func(m *Model) { m.Members[2].Inputs = []int{7} },
			`model "m", member 2: inputs[0] reads input 7, outside the model's 3 features (0..2)`},
		{"member input negative", "ensemble", func(m *Model) { m.Members[1].Inputs = []int{-1} },
			`model "m", member 1: inputs[0] reads input -1, outside the model's 3 features`},
		{"member input names another feature", "ensemble", func(m *Model) { m.Members[0].Inputs = []int{1} },
			`model "m", member 0: features[0] is "mean" but inputs[0] = 1 reads the model's feature "std"`},
		{"member feature not the model's", "ensemble", func(m *Model) { m.Members[0].Features = []string{"sea"} },
			`model "m", member 0: features[0] is "sea" but inputs[0] = 0 reads the model's feature "mean"`},
		{"member without inputs", "ensemble", func(m *Model) { m.Members[0].Inputs = nil },
			`model "m", member 0: 1 features but 0 inputs`},
		{"member with members", "ensemble", func(m *Model) { m.Members[0].Members = []*Model{m.Members[1]} },
			`model "m", member 0: has members of its own`},
		{"ensemble with parameters of its own", "ensemble", func(m *Model) { m.Offset = &Offset{Weight: 0.5} },
			`model "m": an ensemble (members) takes its parameters from its members, but it also has offset`},
		// The audit's p_correct = 7 and -3.
		{"member isotonic above 1", "ensemble", func(m *Model) {
			for _, mm := range m.Members {
				for i := range mm.Isotonic.Y {
					mm.Isotonic.Y[i] = 7
				}
			}
		}, `model "m", member 0: isotonic y[0] = 7 is not a probability in [0,1]`},
		{"member isotonic below 0", "ensemble", func(m *Model) {
			for _, mm := range m.Members {
				for i := range mm.Isotonic.Y {
					mm.Isotonic.Y[i] = -3
				}
			}
		}, `model "m", member 0: isotonic y[0] = -3 is not a probability in [0,1]`},
		{"member offset outside its features", "ensemble", func(m *Model) { m.Members[1].Offset = &Offset{Feature: 1, Weight: 0.5} },
			`model "m", member 1: offset reads feature 1, outside its 1 features (0..0)`},

		// The audit's crash: a single model reading input 7 of a 1-feature row.
		{"single model with inputs", "p", func(m *Model) { m.Inputs = []int{7} },
			`model "p": inputs [7] given, but only the members of an ensemble read inputs`},
		{"feature listed twice", "p", func(m *Model) { m.Features[1] = "mean" }, `model "p": feature "mean" is listed twice`},
		{"feature written by the estimator", "p", func(m *Model) { m.Features[1] = schemas.ColPCorrect },
			`model "p": uses column "p_correct", which is written by the estimator`},
		{"empty feature name", "p", func(m *Model) { m.Features[1] = "" }, `model "p": features[1] is empty`},
		{"scale 0", "p", func(m *Model) { m.Scale[1] = 0 }, `model "p": feature std has scale 0, want a positive number`},
		{"scale Inf", "p", func(m *Model) { m.Scale[1] = inf }, `model "p": feature std has scale +Inf, want a positive number`},
		{"mean NaN", "p", func(m *Model) { m.Mean[0] = nan }, `model "p": feature mean has mean NaN, want a finite number`},
		{"logreg weight Inf", "p", func(m *Model) { m.Logreg.W[1] = inf }, `model "p": logreg w[1] is +Inf, want a finite number`},
		{"logreg bias NaN", "p", func(m *Model) { m.Logreg.B = nan }, `model "p": logreg b = NaN`},
		{"logreg weight count", "p", func(m *Model) { m.Logreg.W = append(m.Logreg.W, 1) }, `model "p": logreg parameters missing or not 2 weights`},
		// Predict scored with the logreg weights (7 of them) of a forest model.
		{"another family's parameters", "p", func(m *Model) {
			m.Family, m.Forest = FamilyForest, &Forest{}
			m.Logreg.W = []float64{1, 1, 1, 1, 1, 1, 1}
		}, `model "p": family forest, but logreg parameters are given too: remove them`},
		{"isotonic x unsorted", "p", func(m *Model) { m.Isotonic = &Isotonic{X: []float64{1, 0}, Y: []float64{0.2, 0.8}} },
			`model "p": isotonic x[1] = 0 is below x[0] = 1: the knots must be sorted`},
		{"isotonic x NaN", "p", func(m *Model) { m.Isotonic.X[0] = nan }, `model "p": isotonic x[0] is NaN, want a finite number`},
		{"isotonic decreasing", "p", func(m *Model) { m.Isotonic = &Isotonic{X: []float64{0, 1}, Y: []float64{0.9, 0.1}} },
			`model "p": isotonic y[1] = 0.1 is below y[0] = 0.9: the map must be non-decreasing`},
		{"isotonic y NaN", "p", func(m *Model) { m.Isotonic.Y[0] = nan }, `model "p": isotonic y[0] = NaN is not a probability in [0,1]`},
		{"isotonic lengths differ", "p", func(m *Model) { m.Isotonic = &Isotonic{X: []float64{0, 1}, Y: []float64{0.5}} },
			`model "p": isotonic calibration missing, empty, or with different numbers of x and y`},
		{"isotonic empty", "p", func(m *Model) { m.Isotonic = &Isotonic{X: []float64{}, Y: []float64{}} },
			`model "p": isotonic calibration missing, empty`},
		{"another calibration's parameters", "p", func(m *Model) { m.Platt = &Platt{A: -1} },
			`model "p": calibration isotonic, but platt parameters are given too`},
		{"offset weight above 1", "p", func(m *Model) { m.Offset = &Offset{Weight: 2} }, `model "p": offset weight 2, want a number in [0,1]`},
		{"offset weight NaN", "p", func(m *Model) { m.Offset = &Offset{Weight: nan} }, `model "p": offset weight NaN`},
		{"offset bias Inf", "p", func(m *Model) { m.Offset = &Offset{Weight: 0.5, Bias: inf} }, `model "p": offset bias +Inf`},
		{"offset feature", "p", func(m *Model) { m.Offset = &Offset{Feature: 5, Weight: 0.5} },
			`model "p": offset reads feature 5, outside its 2 features (0..1)`},

		{"tree reads a missing feature", "f", func(m *Model) { m.Forest.Trees[0].Feature[firstSplit(t, m.Forest)] = 2 },
			`model "f": tree 0 node 0 reads feature 2, outside its 2 features (-1 marks a leaf)`},
		{"tree feature below -1", "f", func(m *Model) { m.Forest.Trees[0].Feature[0] = -2 }, `model "f": tree 0 node 0 reads feature -2`},
		{"tree child points back", "f", func(m *Model) { m.Forest.Trees[0].Left[firstSplit(t, m.Forest)] = 0 },
			`model "f": tree 0 node 0 points outside the tree`},
		{"tree threshold NaN", "f", func(m *Model) { m.Forest.Trees[0].Thresh[firstSplit(t, m.Forest)] = nan },
			`model "f": tree 0 node 0 has threshold NaN`},
		{"forest base Inf", "f", func(m *Model) { m.Forest.Base = inf }, `model "f": forest base +Inf`},
		{"platt NaN", "f", func(m *Model) { m.Platt.A = nan }, `model "f": platt a = NaN`},

		{"mlp shape", "n", func(m *Model) { m.MLP.W1 = m.MLP.W1[1:] }, `model "n": mlp parameters missing or of the wrong shape`},
		{"mlp b2 NaN", "n", func(m *Model) { m.MLP.B2 = nan }, `model "n": mlp b2[0] is NaN, want a finite number`},
		{"mlp w2 Inf", "n", func(m *Model) { m.MLP.W2[3] = -inf }, `model "n": mlp w2[3] is -Inf, want a finite number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := cloneSet(t, bases[tc.base])
			name := set.Fallback
			tc.mutate(set.Models[name])
			require.ErrorContains(t, set.Validate(), tc.want)
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			if err := set.Seal(); err != nil {
				// NaN or Inf: no file can hold it; a set in memory is refused.
				require.ErrorContains(t, err, "no content hash")
				_, err = New(Config{Set: set}, mem, nil)
				require.ErrorContains(t, err, tc.want)
				return
			}
			b, err := json.MarshalIndent(set, "", " ") // what Marshal would refuse to write
			require.NoError(t, err)
			_, err = Parse(b)
			require.ErrorContains(t, err, tc.want)
			path := filepath.Join(t.TempDir(), "bad.json")
			require.NoError(t, os.WriteFile(path, b, 0o644))
			_, err = New(Config{Path: path}, mem, nil) // entrowatch score --estimator, entrowatch run
			require.ErrorContains(t, err, "estimator "+path+": "+tc.want)
			_, err = New(Config{Set: set}, mem, nil)
			require.ErrorContains(t, err, tc.want)
		})
	}
	// The unmutated bases pass.
	for name, s := range bases {
		require.NoError(t, cloneSet(t, s).Validate(), name)
	}
}

// TestPredictStaysInUnitInterval: Predict clamps to [0,1] as a second line
// of defence behind Validate, and keeps NaN (a bad row, not a number).
func TestPredictStaysInUnitInterval(t *testing.T) {
	m := &Model{Model: "x", Features: []string{"mean"}, Mean: []float64{0}, Scale: []float64{1},
		Family: FamilyLogreg, Logreg: &Logreg{W: []float64{1}}, Calibration: CalIsotonic,
		Isotonic: &Isotonic{X: []float64{0, 1}, Y: []float64{7, 7}}}
	z := make([]float64, 1)
	require.Equal(t, 1.0, m.Predict([]float64{0.5}, z))
	m.Isotonic.Y = []float64{-3, -3}
	require.Equal(t, 0.0, m.Predict([]float64{0.5}, z))
	ens := &Model{Model: "e", Features: []string{"mean"}, Members: []*Model{m, m}}
	require.Equal(t, 0.0, ens.Predict([]float64{0.5}, z))
	m.Isotonic.Y = []float64{0.2, 0.8}
	require.True(t, math.IsNaN(m.Predict([]float64{math.NaN()}, z)))
}

// TestOperatorNeverWritesOutOfRange: a model changed after New (so past
// Validate) to give 7 still yields p_correct in [0,1], and one that gives
// NaN yields status bad_feature, never a NaN with status ok.
func TestOperatorNeverWritesOutOfRange(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	set := testSet(t, false)
	op, err := New(Config{Set: set}, mem, nil)
	require.NoError(t, err)
	defer op.Close()
	m := set.Models["llm-a"]
	rows := []scoredRow{{"llm-a", schemas.StatusOK, 1.5, 0.2, 0}, {"llm-a", schemas.StatusOK, -2, 0.1, 0}}
	in := scoredBatch(t, mem, rows)
	defer in.Release()
	process := func() (*array.Float64, *array.String, func()) {
		out, err := op.Process(context.Background(), in)
		require.NoError(t, err)
		rec := out[0]
		return rec.Column(schemas.MustIndex(schemas.Scored, schemas.ColPCorrect)).(*array.Float64),
			rec.Column(schemas.MustIndex(schemas.Scored, schemas.ColStatus)).(*array.String), rec.Release
	}

	for i := range m.Isotonic.Y {
		m.Isotonic.Y[i] = 7
	}
	p, st, release := process()
	for i := range rows {
		require.Equal(t, schemas.StatusOK, st.Value(i))
		require.Equal(t, 1.0, p.Value(i), "row %d: p_correct clamped into [0,1]", i)
	}
	release()

	m.Logreg.B = math.NaN()
	p, st, release = process()
	defer release()
	for i := range rows {
		require.Equal(t, schemas.ReasonBadFeature, st.Value(i), "row %d", i)
		require.True(t, p.IsNull(i))
	}
	require.EqualValues(t, 2, op.Stats().BadFeature)
}

// TestTrainExtremeFeatureValues: finite but extreme feature values (a row
// at 1e160, ten at 1e308, values of opposite signs near the largest
// float64) train without a panic, keep every row, and give an artifact of
// finite numbers that Marshal writes and Parse reads back. Before, the
// standardisation overflowed: Seal panicked ("json: unsupported value:
// +Inf") or fit indexed an empty slice.
func TestTrainExtremeFeatureValues(t *testing.T) {
	ctx := context.Background()
	single := DefaultTrainConfig()
	single.Ensemble = 0
	for _, tc := range []struct {
		name string
		edit func(tbl *Table) // tbl has features mean (the signal) and std (noise)
	}{
		{"one row at 1e160", func(tbl *Table) { tbl.X[0] = 1e160 }},
		{"ten rows at 1e308", func(tbl *Table) {
			for i := range 10 {
				tbl.X[i*2] = 1e308
			}
		}},
		{"opposite signs near the largest float", func(tbl *Table) {
			for i := range tbl.N() {
				tbl.X[i*2+1] = -1.5e308
				if i < 10 {
					tbl.X[i*2+1] = 1.5e308 // x - mean overflows
				}
			}
		}},
	} {
		for cname, cfg := range map[string]TrainConfig{"ensemble": DefaultTrainConfig(), "single": single} {
			t.Run(tc.name+"/"+cname, func(t *testing.T) {
				tbl := synthetic(600, []string{"mean", "std"}, 3)
				tc.edit(tbl)
				require.NoError(t, tbl.Validate())
				set, err := Train(ctx, tbl, cfg, TrainOptions{})
				require.NoError(t, err)
				m := set.Models["m"]
				require.Equal(t, tbl.N(), m.Rows, "every row is kept")
				require.NoError(t, set.Validate())
				b, err := set.Marshal()
				require.NoError(t, err)
				got, err := Parse(b)
				require.NoError(t, err)
				z := make([]float64, 2)
				for i := range 20 {
					p := got.Models["m"].Predict(tbl.Row(i), z)
					require.True(t, p >= 0 && p <= 1, "row %d: p = %g", i, p)
				}
			})
		}
	}
}

// TestStandardiseExact: standardise's rescaling by a power of two gives the
// bits of the plain formula on ordinary columns (trained artifacts and
// their hashes do not change) and finite values on extreme ones.
func TestStandardiseExact(t *testing.T) {
	tbl := synthetic(997, []string{"a", "b", "c"}, 3)
	for i := range tbl.N() {
		tbl.X[i*3+1] *= 1234.5
		tbl.X[i*3+2] = tbl.X[i*3+2]*1e-3 + 7
	}
	mean, scale := standardise(tbl)
	n := float64(tbl.N())
	for j := range tbl.D() {
		var m, s float64
		for i := range tbl.N() {
			m += tbl.Row(i)[j]
		}
		m /= n
		for i := range tbl.N() {
			dv := tbl.Row(i)[j] - m
			s += float64(dv * dv) // the plain formula, unfused on every GOAMD64 level
		}
		require.Equal(t, m, mean[j], "feature %d", j)
		require.Equal(t, math.Sqrt(s/n), scale[j], "feature %d", j)
	}

	for i := range tbl.N() {
		tbl.X[i*3] = math.MaxFloat64 * float64(i%2*2-1)
		tbl.X[i*3+1] = float64(i) * 1e305
	}
	mean, scale = standardise(tbl)
	for j := range tbl.D() {
		require.True(t, finite(mean[j]) && finite(scale[j]) && scale[j] > 0, "feature %d: mean %g, scale %g", j, mean[j], scale[j])
	}
}

// TestSealRefusesNonFinite: Seal, Marshal, Save and New return an error,
// not a panic, for a set holding a number JSON cannot write, and leave the
// set as it was.
func TestSealRefusesNonFinite(t *testing.T) {
	set := testSet(t, false)
	m := set.Models["llm-a"]
	version, modelVersion := set.Version, m.Version
	m.Metrics.AUROC = math.NaN() // not a parameter: Validate passes
	require.NoError(t, set.Validate())

	err := set.Seal()
	require.ErrorContains(t, err, `model "llm-a": no content hash: json: unsupported value: NaN`)
	require.Equal(t, version, set.Version, "a refused set is left unchanged")
	require.Equal(t, modelVersion, m.Version)
	_, err = set.Marshal()
	require.ErrorContains(t, err, `estimator set not written: model "llm-a": no content hash`)
	path := filepath.Join(t.TempDir(), "e.json")
	require.Error(t, set.Save(path))
	require.NoFileExists(t, path)
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	_, err = New(Config{Set: set}, mem, nil)
	require.ErrorContains(t, err, `model "llm-a": no content hash`)

	require.ErrorContains(t, (&Set{Models: map[string]*Model{"x": nil}}).Seal(), `model stored under "x" is nil`)
}
