package estimate

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMeasureTransferMatchesRefits(t *testing.T) {
	tbl := synthetic(6000, []string{"a", "b"}, 3)
	cfg := DefaultTrainConfig()
	tr, err := MeasureTransfer(tbl, "m", cfg)
	require.NoError(t, err)
	require.Len(t, tr.Domains, 3)
	var sum, maxAE float64
	for _, dm := range tr.Domains {
		// The same as fitting without the domain by hand.
		train := tbl.Subset(tbl.Where(func(i int) bool { return tbl.Domain[i] != dm.Domain }))
		m, err := Fit(train, "m", cfg)
		require.NoError(t, err)
		p, err := predictorFor(m, tbl.Features)
		require.NoError(t, err)
		var est, truth, n float64
		for i := range tbl.N() {
			if tbl.Domain[i] == dm.Domain {
				est += p(tbl.Row(i))
				truth += tbl.Y[i]
				n++
			}
		}
		require.Equal(t, int(n), dm.Rows)
		require.InDelta(t, est/n, dm.Estimated, 1e-12, dm.Domain)
		require.InDelta(t, truth/n, dm.True, 1e-12, dm.Domain)
		sum += math.Abs(dm.Estimated - dm.True)
		maxAE = math.Max(maxAE, math.Abs(dm.Estimated-dm.True))
	}
	require.InDelta(t, sum/3, tr.AEE, 1e-12)
	require.Equal(t, maxAE, tr.MaxAE)
	// The synthetic domains share one calibrated relation: little transfer
	// error (the middle domain is interpolated, the outer ones extrapolated).
	require.Less(t, tr.AEE, 0.06)
}

// A domain where the feature means something else (correctness no longer
// follows it) shows up as a large left-out error on that domain only.
func TestMeasureTransferFindsAShiftedDomain(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tbl := &Table{Features: []string{"confidence"}}
	for i := range 6000 {
		d := []string{"a", "b", "odd"}[i%3]
		c := rng.Float64()
		p := c
		if d == "odd" {
			p = 0.2 * c // confidently wrong
		}
		y := 0.0
		if rng.Float64() < p {
			y = 1
		}
		tbl.X = append(tbl.X, c)
		tbl.Y = append(tbl.Y, y)
		tbl.Model = append(tbl.Model, "m")
		tbl.Domain = append(tbl.Domain, d)
	}
	tr, err := MeasureTransfer(tbl, "m", DefaultTrainConfig())
	require.NoError(t, err)
	got := map[string]DomainMetric{}
	for _, dm := range tr.Domains {
		got[dm.Domain] = dm
	}
	odd := got["odd"]
	require.InDelta(t, 0.1, odd.True, 0.02)
	require.Greater(t, odd.Estimated-odd.True, 0.3, "left out, odd is estimated from a and b")
	require.InDelta(t, odd.Estimated-odd.True, tr.MaxAE, 1e-12)
	for _, d := range []string{"a", "b"} {
		// Left out, a is estimated from b and odd (and vice versa): the odd
		// domain drags the estimate down, but by less.
		require.Less(t, math.Abs(got[d].Estimated-got[d].True), odd.Estimated-odd.True, d)
	}
}

func TestMeasureTransferOneDomain(t *testing.T) {
	tbl := synthetic(600, []string{"a"}, 1)
	tr, err := MeasureTransfer(tbl, "m", DefaultTrainConfig())
	require.NoError(t, err)
	require.Nil(t, tr)
}

// A domain whose complement is one class cannot be left out: it is listed
// as skipped, the others are measured.
func TestMeasureTransferSkipsOneClassComplement(t *testing.T) {
	tbl := &Table{Features: []string{"x"}}
	add := func(d string, x, y float64) {
		tbl.X = append(tbl.X, x)
		tbl.Y = append(tbl.Y, y)
		tbl.Model = append(tbl.Model, "m")
		tbl.Domain = append(tbl.Domain, d)
	}
	for i := range 200 {
		add("mixed", float64(i%10), float64(i%2))
		add("ones", float64(i%10), 1)
	}
	tr, err := MeasureTransfer(tbl, "m", DefaultTrainConfig())
	require.NoError(t, err)
	require.Equal(t, []string{"mixed"}, tr.Skipped)
	require.Len(t, tr.Domains, 1)
	require.Equal(t, "ones", tr.Domains[0].Domain)
}
