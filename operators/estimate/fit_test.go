package estimate

import (
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fixture reads testdata/sklearn_fixture.csv (see gen_sklearn.py).
func fixture(t *testing.T) (*Table, map[string][]float64) {
	t.Helper()
	f, err := os.Open("testdata/sklearn_fixture.csv")
	require.NoError(t, err)
	defer f.Close()
	b, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	head := strings.Split(lines[0], ",")
	cols := map[string][]float64{}
	for _, l := range lines[1:] {
		for j, v := range strings.Split(l, ",") {
			var x float64
			_, err := fmtSscan(v, &x)
			require.NoError(t, err)
			cols[head[j]] = append(cols[head[j]], x)
		}
	}
	tbl := &Table{Features: []string{"x1", "x2", "x3"}, Y: cols["y"]}
	for i := range cols["y"] {
		tbl.X = append(tbl.X, cols["x1"][i], cols["x2"][i], cols["x3"][i])
		tbl.Model = append(tbl.Model, "m")
		tbl.Domain = append(tbl.Domain, "d")
	}
	return tbl, cols
}

func standardised(t *Table) []float64 {
	mean, scale := standardise(t)
	d := t.D()
	z := make([]float64, len(t.X))
	for i := range t.N() {
		for j := range d {
			z[i*d+j] = (t.X[i*d+j] - mean[j]) / scale[j]
		}
	}
	return z
}

func maxDiff(a, b []float64) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(a[i]-b[i]))
	}
	return m
}

func TestSklearnFidelity(t *testing.T) {
	tbl, want := fixture(t)
	z := standardised(tbl)
	d := tbl.D()
	probs := func(m *Logreg) []float64 {
		p := make([]float64, tbl.N())
		for i := range p {
			p[i] = sigmoid(m.Score(z[i*d : (i+1)*d]))
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		c       float64
		balance bool
	}{{"p_lr", 1, false}, {"p_lr_c01", 0.1, false}, {"p_lr_bal", 1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var w []float64
			if tc.balance {
				w = balanceWeights(tbl.Y)
			}
			m, err := fitLogreg(z, d, tbl.Y, w, tc.c)
			require.NoError(t, err)
			diff := maxDiff(probs(m), want[tc.name])
			t.Logf("max |p - sklearn| = %.2g", diff)
			require.Less(t, diff, 1e-3)
		})
	}
	t.Run("platt", func(t *testing.T) {
		pl := fitPlatt(want["s"], tbl.Y, nil)
		got := make([]float64, tbl.N())
		for i, s := range want["s"] {
			got[i] = pl.Predict(s)
		}
		diff := maxDiff(got, want["p_platt"])
		t.Logf("max |p - sklearn| = %.2g", diff)
		require.Less(t, diff, 1e-3)
	})
	t.Run("isotonic", func(t *testing.T) {
		iso := fitIsotonic(want["s"], tbl.Y, nil)
		got := make([]float64, tbl.N())
		for i, s := range want["s"] {
			got[i] = iso.Predict(s)
		}
		require.Less(t, maxDiff(got, want["p_iso"]), 1e-9)
	})
	t.Run("reference method", func(t *testing.T) {
		pred, err := fitReference(tbl, false, CalNone)
		require.NoError(t, err)
		got := make([]float64, tbl.N())
		for i := range got {
			got[i] = pred(tbl.Row(i))
		}
		require.Less(t, maxDiff(got, want["p_lr"]), 1e-3)
	})
}

func TestPAVA(t *testing.T) {
	for _, tc := range []struct {
		name string
		y, w []float64
		want []float64
	}{
		{"sorted stays", []float64{1, 2, 3}, nil, []float64{1, 2, 3}},
		{"one violation", []float64{1, 3, 2, 4}, nil, []float64{1, 2.5, 2.5, 4}},
		{"all decreasing", []float64{3, 2, 1}, nil, []float64{2, 2, 2}},
		{"weighted", []float64{1, 3, 2}, []float64{1, 1, 3}, []float64{1, 2.25, 2.25}},
		{"cascade", []float64{0, 5, 4, 3, 10}, nil, []float64{0, 4, 4, 4, 10}},
		{"binary", []float64{0, 1, 0, 0, 1, 1}, nil, []float64{0, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.InDeltaSlice(t, tc.want, pava(tc.y, tc.w), 1e-12)
		})
	}
	t.Run("properties", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for range 200 {
			n := 1 + rng.IntN(50)
			y := make([]float64, n)
			w := make([]float64, n)
			var sy float64
			for i := range y {
				y[i] = rng.NormFloat64()
				w[i] = 0.1 + rng.Float64()
				sy += w[i] * y[i]
			}
			got := pava(y, w)
			var sg float64
			for i := range got {
				sg += w[i] * got[i]
				if i > 0 {
					require.GreaterOrEqual(t, got[i], got[i-1]-1e-12, "monotone")
				}
			}
			require.InDelta(t, sy, sg, 1e-9, "weighted mean preserved")
			require.InDeltaSlice(t, got, pava(got, w), 1e-12, "idempotent")
		}
	})
	t.Run("fit pools ties and interpolates", func(t *testing.T) {
		m := fitIsotonic([]float64{1, 1, 2, 3, 3}, []float64{0, 1, 0, 1, 1}, nil)
		require.Equal(t, []float64{1, 2, 3}, m.X)
		require.InDeltaSlice(t, []float64{1.0 / 3, 1.0 / 3, 1}, m.Y, 1e-12)
		require.InDelta(t, 2.0/3, m.Predict(2.5), 1e-12)
		require.InDelta(t, 1.0/3, m.Predict(-5), 1e-12, "clipped below")
		require.InDelta(t, 1.0, m.Predict(99), 1e-12, "clipped above")
	})
}

func TestPlatt(t *testing.T) {
	t.Run("separable stays finite", func(t *testing.T) {
		s := []float64{-3, -2, -1, 1, 2, 3}
		y := []float64{0, 0, 0, 1, 1, 1}
		p := fitPlatt(s, y, nil)
		require.False(t, math.IsInf(p.A, 0) || math.IsNaN(p.A))
		require.Less(t, p.A, 0.0, "higher score, higher probability")
		hi := 4.0 / 5 // Platt's target for 3 positives: (3+1)/(3+2)
		require.Less(t, p.Predict(3), 0.99, "the smoothed targets keep it away from 1 (target %.2f)", hi)
		require.Greater(t, p.Predict(3), 0.5)
		require.Less(t, p.Predict(-3), 0.5)
	})
	t.Run("recovers a logistic link", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(3, 4))
		n := 20000
		s := make([]float64, n)
		y := make([]float64, n)
		for i := range s {
			s[i] = 2 * rng.NormFloat64()
			if rng.Float64() < sigmoid(1.5*s[i]-0.7) {
				y[i] = 1
			}
		}
		p := fitPlatt(s, y, nil)
		require.InDelta(t, -1.5, p.A, 0.08)
		require.InDelta(t, 0.7, p.B, 0.08)
	})
}

func TestForestAndMLPLearn(t *testing.T) {
	tbl := synthetic(3000, []string{"a", "b"}, 5)
	for _, fam := range []string{FamilyForest, FamilyMLP, FamilyLogreg} {
		t.Run(fam, func(t *testing.T) {
			cfg := TrainConfig{Family: fam, Calibration: CalPlatt, Folds: 3, Seed: 1}
			m, err := Fit(tbl, "m", cfg)
			require.NoError(t, err)
			require.NoError(t, m.Validate())
			require.Greater(t, m.Metrics.AUROC, 0.75, "the signal is learnt")
			require.Less(t, m.Metrics.ECE, 0.05)
		})
	}
}

// eval fits with predictOnly, which skips the cross-fitted metrics and, when
// nothing needs them, the out-of-fold scores: the model it predicts with must
// be the one train writes, to the last bit.
func TestPredictOnlySameModel(t *testing.T) {
	tbl := synthetic(3000, []string{"a", "b", "c"}, 5)
	def := DefaultTrainConfig()
	screen := DefaultTrainConfig()
	screen.Ensemble, screen.Screen = 0, 1
	oof := TrainConfig{Family: FamilyLogreg, Calibration: CalIsotonic, Folds: 5, Seed: 1, CalibrateOn: "oof"}
	platt := TrainConfig{Family: FamilyLogreg, Calibration: CalPlatt, Folds: 5, Seed: 1, CalibrateOn: "train", Hyper: 1}
	for name, cfg := range map[string]TrainConfig{"default": def, "screen1_train": screen, "oof": oof, "platt_fixed_c": platt} {
		t.Run(name, func(t *testing.T) {
			full, err := Fit(tbl, "m", cfg)
			require.NoError(t, err)
			cfg.predictOnly = true
			lean, err := Fit(tbl, "m", cfg)
			require.NoError(t, err)
			require.NotZero(t, full.Metrics.AUROC)
			require.Zero(t, lean.Metrics.AUROC, "predictOnly measured anyway")
			pf, err := predictorFor(full, tbl.Features)
			require.NoError(t, err)
			pl, err := predictorFor(lean, tbl.Features)
			require.NoError(t, err)
			for i := range tbl.N() {
				require.Equal(t, pf(tbl.Row(i)), pl(tbl.Row(i)), "row %d", i)
			}
		})
	}
}
