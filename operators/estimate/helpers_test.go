package estimate

import (
	"fmt"
	"math"
	"math/rand/v2"
)

func fmtSscan(s string, x *float64) (int, error) { return fmt.Sscan(s, x) }

// synthetic builds a table of nd domains whose rows have a true probability
// of correctness p (domain-dependent distribution); feature 0 is logit(p),
// the other features are noise. Labels are Bernoulli(p), so a calibrated
// estimator's domain means match the domain accuracies.
func synthetic(n int, features []string, nd int) *Table {
	rng := rand.New(rand.NewPCG(11, 12))
	t := &Table{Features: features}
	for i := range n {
		d := i % nd
		l := rng.NormFloat64()*1.5 + float64(d) - float64(nd)/2
		p := 1 / (1 + math.Exp(-l))
		t.X = append(t.X, l)
		for range features[1:] {
			t.X = append(t.X, rng.NormFloat64())
		}
		y := 0.0
		if rng.Float64() < p {
			y = 1
		}
		t.Y = append(t.Y, y)
		t.Model = append(t.Model, "m")
		t.Domain = append(t.Domain, fmt.Sprintf("d%d", d))
	}
	return t
}
