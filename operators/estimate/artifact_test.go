package estimate

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestArtifactRoundTrip(t *testing.T) {
	tbl := synthetic(1500, []string{"mean", "std", "max"}, 3)
	for _, fam := range []string{FamilyLogreg, FamilyForest, FamilyMLP} {
		for _, cal := range []string{CalIsotonic, CalPlatt, CalNone} {
			t.Run(fam+"_"+cal, func(t *testing.T) {
				cfg := TrainConfig{Family: fam, Calibration: cal, Folds: 3, Seed: 1}
				m, err := Fit(tbl, "llm", cfg)
				require.NoError(t, err)
				set := &Set{Models: map[string]*Model{"llm": m}}
				b, err := set.Marshal()
				require.NoError(t, err)
				path := filepath.Join(t.TempDir(), "est.json")
				require.NoError(t, set.Save(path))
				got, err := Load(path)
				require.NoError(t, err)
				require.Equal(t, set.Version, got.Version)
				b2, err := got.Marshal()
				require.NoError(t, err)
				require.Equal(t, string(b), string(b2), "re-marshalling is byte-identical and keeps the version")
				z := make([]float64, 3)
				for i := range 50 {
					require.Equal(t, m.Predict(tbl.Row(i), z), got.Models["llm"].Predict(tbl.Row(i), z))
				}
			})
		}
	}
}

func TestEnsembleArtifact(t *testing.T) {
	tbl := synthetic(2000, []string{"noise", "mean"}, 4)
	for i := range tbl.N() {
		tbl.X[i*2+1] = tbl.X[i*2] + tbl.X[i*2+1]*0.7 // a second, weaker signal
	}
	tbl.Features = []string{"std", "mean"}
	m, err := Fit(tbl, "llm", DefaultTrainConfig())
	require.NoError(t, err)
	require.Len(t, m.Members, 2)
	require.Equal(t, []string{"std", "mean"}, m.Features)
	set := &Set{Models: map[string]*Model{"llm": m}}
	b, err := set.Marshal()
	require.NoError(t, err)
	got, err := Parse(b)
	require.NoError(t, err)
	z := make([]float64, 2)
	require.NotNil(t, m.Recalibration, "the default recalibrates an ensemble of 2")
	for i := range 20 {
		want := m.Recalibration.Predict((m.Members[0].Predict(tbl.Row(i), z) + m.Members[1].Predict(tbl.Row(i), z)) / 2)
		require.InDelta(t, want, got.Models["llm"].Predict(tbl.Row(i), z), 1e-15)
	}
	got.Models["llm"].Members[0].Inputs = []int{5}
	require.ErrorContains(t, got.Models["llm"].Validate(), "reads input 5")
}

func TestVersionHash(t *testing.T) {
	tbl := synthetic(1000, []string{"mean", "std"}, 2)
	train := func() *Set {
		m, err := Fit(tbl, "llm", DefaultTrainConfig())
		require.NoError(t, err)
		s := &Set{Models: map[string]*Model{"llm": m}}
		s.Seal()
		return s
	}
	a, b := train(), train()
	require.Equal(t, a.Version, b.Version, "same data and settings, same version")
	require.True(t, strings.HasPrefix(a.Version, "sha256:"))

	tbl.Y[0] = 1 - tbl.Y[0]
	c := train()
	require.NotEqual(t, a.Version, c.Version, "other data, other version")

	raw, err := a.Marshal()
	require.NoError(t, err)
	edited := bytes.Replace(raw, []byte(`"rows": 1000`), []byte(`"rows": 999`), 1)
	require.NotEqual(t, raw, edited)
	_, err = Parse(edited)
	require.ErrorContains(t, err, "does not match its content")
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"not json", "nope", "not an estimator JSON"},
		{"wrong format", `{"format":"other"}`, "format"},
		{"cluster file", `{"format":"entrowatch.clusters.v1","clusters":[]}`, "topic-cluster file (entrowatch cluster fit), not an estimator: it is read by the clustertag operator"},
		{"empty", `{"format":"entrowatch.estimator.v1","models":{}}`, "no models"},
		{"bad fallback", `{"format":"entrowatch.estimator.v1","fallback":"x","models":{"a":{"model":"a"}}}`, "fallback"},
		{"incomplete model", `{"format":"entrowatch.estimator.v1","models":{"a":{"model":"a"}}}`, "no features"},
		{"null model", `{"format":"entrowatch.estimator.v1","models":{"a":null}}`, `model stored under "a" is nil`},
		{"null member", `{"format":"entrowatch.estimator.v1","models":{"a":{"model":"a","features":["x"],"members":[null]}}}`, "member 0 is nil"},
		{"no format", `{"models":{"a":{"model":"a"}}}`, `format "", want "entrowatch.estimator.v1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			require.ErrorContains(t, err, tc.want)
		})
	}
}
