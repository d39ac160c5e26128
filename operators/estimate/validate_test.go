package estimate

import (
	"context"
	"errors"
	"go/parser"
	"go/token"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// smallModel fits a quick valid model named name on scored.v1 features.
func smallModel(t *testing.T, name string) *Model {
	t.Helper()
	cfg := DefaultTrainConfig()
	cfg.Ensemble = 0
	m, err := Fit(synthetic(300, []string{"mean", "std"}, 2), name, cfg)
	require.NoError(t, err)
	return m
}

// TestNewChecksConfigSet: a set handed over in memory gets the checks a
// loaded one gets, so that no row is silently unknown_model, estimated 0.5
// or a panic.
func TestNewChecksConfigSet(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	noScale := func() *Model {
		return &Model{Model: "llm-a", Features: []string{"mean"}, Family: FamilyLogreg, Logreg: &Logreg{W: []float64{1}}, Calibration: CalNone}
	}
	noFamily := func() *Model {
		return &Model{Model: "llm-a", Features: []string{"mean"}, Mean: []float64{0}, Scale: []float64{1}, Calibration: CalNone}
	}
	sealed := func(s *Set) *Set { s.Seal(); return s }
	for _, tc := range []struct {
		name string
		set  *Set
		want string
	}{
		{"empty set", &Set{}, "no models in the estimator set: add at least one"},
		{"no mean or scale", sealed(&Set{Models: map[string]*Model{"llm-a": noScale()}}), `model "llm-a": 1 features but 0 means and 0 scales`},
		{"no family", sealed(&Set{Models: map[string]*Model{"llm-a": noFamily()}}), `model "llm-a": unknown family ""`},
		{"fallback names no model", sealed(&Set{Fallback: "*", Models: map[string]*Model{"llm-a": smallModel(t, "llm-a")}}),
			`fallback "*" names no model in the set (have llm-a): set Fallback to one of the keys`},
		{"nil model", &Set{Models: map[string]*Model{"llm-a": nil}}, `model stored under "llm-a" is nil`},
		{"key is not the name", sealed(&Set{Models: map[string]*Model{FallbackKey: smallModel(t, "llm-a")}}), `model stored under "*" is named "llm-a"`},
		{"not sealed", &Set{Models: map[string]*Model{"llm-a": smallModel(t, "llm-a")}}, "not sealed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op, err := New(Config{Set: tc.set}, mem, nil)
			require.ErrorContains(t, err, tc.want)
			require.Nil(t, op)
		})
	}
	t.Run("changed after seal", func(t *testing.T) {
		set := sealed(&Set{Models: map[string]*Model{"llm-a": smallModel(t, "llm-a")}})
		set.Models["llm-a"].Rows++
		_, err := New(Config{Set: set}, mem, nil)
		require.ErrorContains(t, err, "the set changed after Seal: call Seal again")
		set.Seal()
		op, err := New(Config{Set: set}, mem, nil)
		require.NoError(t, err)
		op.Close()
	})
}

// TestSetValidateBeforeSeal: Validate checks the structure only, so a set
// can be checked while it is built; Parse still checks the hashes.
func TestSetValidateBeforeSeal(t *testing.T) {
	set := &Set{Fallback: "llm-a", Models: map[string]*Model{"llm-a": smallModel(t, "llm-a")}}
	require.NoError(t, set.Validate())
	require.Empty(t, set.Version, "Validate does not seal")
	b, err := set.Marshal()
	require.NoError(t, err)
	got, err := Parse(b)
	require.NoError(t, err)
	require.NoError(t, got.Validate())
}

// TestSaveRefusesWhatLoadRejects: Save and Marshal check what Load checks,
// instead of writing a file Load refuses.
func TestSaveRefusesWhatLoadRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func() *Set
		want string
	}{
		{"key is not the name", func() *Set {
			return &Set{Models: map[string]*Model{FallbackKey: smallModel(t, "m")}, Fallback: FallbackKey}
		},
			`model stored under "*" is named "m": store each model under its name`},
		{"fallback names no model", func() *Set { return &Set{Models: map[string]*Model{"m": smallModel(t, "m")}, Fallback: FallbackKey} },
			`fallback "*" names no model`},
		{"empty", func() *Set { return &Set{} }, "no models"},
		{"invalid model", func() *Set { return &Set{Models: map[string]*Model{"m": {Model: "m"}}} }, `model "m": no features`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "est.json")
			set := tc.set()
			err := set.Save(path)
			require.ErrorContains(t, err, "estimator set not written: "+tc.want)
			require.NoFileExists(t, path)
			require.Empty(t, set.Version, "a refused set is left unsealed")
			_, err = set.Marshal()
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestFitChecksTable: a table Fit cannot learn from is refused with what is
// wrong, not a panic, a model Validate rejects, or the one-class error.
func TestFitChecksTable(t *testing.T) {
	valid := func() *Table { return synthetic(40, []string{"mean", "std"}, 2) }
	for _, tc := range []struct {
		name string
		tbl  func() *Table
		want string
	}{
		{"nil", func() *Table { return nil }, "no table (nil)"},
		{"zero value with labels", func() *Table {
			return &Table{Y: []float64{0, 1}, Model: []string{"m", "m"}, Domain: []string{"d", "d"}}
		},
			"table has no features: set Table.Features"},
		{"no rows", func() *Table { return &Table{Features: []string{"mean"}} }, "table has no rows: add labelled rows"},
		{"short X", func() *Table { t := valid(); t.X = t.X[:len(t.X)-1]; return t }, "table has 79 values in X, want 40 rows x 2 features = 80"},
		{"short Model", func() *Table { t := valid(); t.Model = t.Model[:3]; return t }, "table has 40 labels (Y) but 3 Model and 40 Domain values"},
		{"short Domain", func() *Table { t := valid(); t.Domain = nil; return t }, "but 40 Model and 0 Domain values"},
		{"label not 0/1", func() *Table { t := valid(); t.Y[5] = 0.5; return t }, "table row 5: label 0.5, want 1 (correct) or 0 (incorrect)"},
		{"NaN feature", func() *Table { t := valid(); t.X[7] = math.NaN(); return t }, "table row 3: feature std is NaN"},
		{"label as feature", func() *Table { t := valid(); t.Features = []string{"correct", "std"}; return t }, `feature "correct" is the label`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			require.NotPanics(t, func() { _, err = Fit(tc.tbl(), "m", DefaultTrainConfig()) })
			require.ErrorContains(t, err, tc.want)
			require.NotErrorIs(t, err, ErrOneClass)
			require.NotPanics(t, func() { _, err = MeasureTransfer(tc.tbl(), "m", DefaultTrainConfig()) })
			require.ErrorContains(t, err, tc.want)
			require.NotPanics(t, func() { _, err = Evaluate(context.Background(), tc.tbl(), EvalConfig{}) })
			require.ErrorContains(t, err, tc.want)
		})
	}
	require.NoError(t, valid().Validate())
}

// TestAppendScoredDefaultFeatures: a new Table{} reads the 11 profile
// features, as ReadTable does, instead of rows of no features.
func TestAppendScoredDefaultFeatures(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec := scoredBatch(t, mem, []scoredRow{
		{"llm-a", schemas.StatusOK, 0.5, 0.1, 2},
		{"llm-a", schemas.StatusOK, 0.7, 0.2, 1},
	})
	defer rec.Release()
	var tbl Table
	require.NoError(t, tbl.AppendScored(rec))
	require.Equal(t, schemas.ProfileFeatures, tbl.Features)
	require.Equal(t, 2, tbl.N())
	require.Len(t, tbl.X, 2*len(schemas.ProfileFeatures))
	require.Equal(t, 0.5, tbl.Row(0)[0], "mean is the first profile feature")
	require.NoError(t, tbl.Validate())
	tbl.Features[0] = "changed"
	require.Equal(t, "mean", schemas.ProfileFeatures[0], "the table has its own copy")

	bad := &Table{X: []float64{1}}
	require.ErrorContains(t, bad.AppendScored(rec), "table holds values in X but names no features")
	err := (&Table{Features: []string{"confidence"}}).AppendScored(rec)
	require.ErrorIs(t, err, ErrMissingFeature)
	require.ErrorContains(t, err, `feature "confidence"`)
}

// TestMissingFeatureError: a missing feature column is recognisable
// (ErrMissingFeature) and its message speaks of the table, not of a
// command-line flag; the CLI adds its flag advice.
func TestMissingFeatureError(t *testing.T) {
	_, err := ReadCSV(strings.NewReader("model,domain,correct,mean\nm,d,1,0.5\n"), []string{"confidence"})
	require.ErrorIs(t, err, ErrMissingFeature)
	require.EqualError(t, err, `column "confidence" missing from the CSV header (have model,domain,correct,mean); a labelled table needs model, domain, correct and the feature columns`)
	_, err = ReadCSV(strings.NewReader("model,correct,confidence\nm,1,0.5\n"), []string{"confidence"})
	require.ErrorContains(t, err, `column "domain" missing`)
	require.False(t, errors.Is(err, ErrMissingFeature), "a missing key column is not a feature choice")
}

// TestDocsPointInsideRepo: the package's comments and error strings name
// neither files outside the repository nor command-line flags.
func TestDocsPointInsideRepo(t *testing.T) {
	outside := regexp.MustCompile(`DESIGN\.md|[a-z_-]+\.py\b|(^|[ (])--[a-z]`)
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		af, err := parser.ParseFile(fset, f, src, parser.ParseComments)
		require.NoError(t, err)
		for _, cg := range af.Comments {
			for _, c := range cg.List {
				require.False(t, outside.MatchString(c.Text), "%s: %s", fset.Position(c.Pos()), c.Text)
			}
		}
	}
	for _, err := range []error{
		func() error {
			_, err := ReadCSV(strings.NewReader("model,domain,correct\n"), []string{"x"})
			return err
		}(),
		(&Table{}).Validate(),
		DefaultTrainConfig().Validate(),
	} {
		if err != nil {
			require.NotContains(t, err.Error(), "--", err.Error())
		}
	}
}
