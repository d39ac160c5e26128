package estimate

import (
	"math"
	"sort"
)

// AUROC is the probability that a random positive scores above a random
// negative (ties count half); NaN when a class is missing.
func AUROC(score, y []float64) float64 {
	idx := make([]int, len(score))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return score[idx[a]] < score[idx[b]] })
	var pos, neg, rankSum float64
	for k := 0; k < len(idx); {
		j := k
		for j < len(idx) && score[idx[j]] == score[idx[k]] {
			j++
		}
		r := float64(k+j+1) / 2 // mean 1-based rank of the tie group
		for _, i := range idx[k:j] {
			if y[i] > 0.5 {
				rankSum += r
				pos++
			} else {
				neg++
			}
		}
		k = j
	}
	if pos == 0 || neg == 0 {
		return math.NaN()
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

// Brier is the mean squared error of probabilities p against labels y.
func Brier(p, y []float64) float64 {
	s := 0.0
	for i, v := range p {
		d := v - y[i]
		s += float64(d * d) // unfused: the artifact's bits do not depend on GOAMD64
	}
	return s / float64(len(p))
}

// ECE is the expected calibration error over 10 equal-width bins.
func ECE(p, y []float64) float64 {
	var cnt, sp, sy [10]float64
	for i, v := range p {
		b := min(int(v*10), 9)
		b = max(b, 0)
		cnt[b]++
		sp[b] += v
		sy[b] += y[i]
	}
	e := 0.0
	for b := range cnt {
		if cnt[b] > 0 {
			e += math.Abs(sp[b]-sy[b]) / float64(len(p))
		}
	}
	return e
}

// Spearman is the rank correlation of a and b (average ranks for ties); NaN
// when either is constant.
func Spearman(a, b []float64) float64 {
	ra, rb := ranks(a), ranks(b)
	n := float64(len(a))
	var ma, mb float64
	for i := range ra {
		ma += ra[i]
		mb += rb[i]
	}
	ma /= n
	mb /= n
	var sab, saa, sbb float64
	for i := range ra {
		sab += (ra[i] - ma) * (rb[i] - mb)
		saa += (ra[i] - ma) * (ra[i] - ma)
		sbb += (rb[i] - mb) * (rb[i] - mb)
	}
	if saa == 0 || sbb == 0 {
		return math.NaN()
	}
	return sab / math.Sqrt(saa*sbb)
}

func ranks(v []float64) []float64 {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return v[idx[a]] < v[idx[b]] })
	r := make([]float64, len(v))
	for k := 0; k < len(idx); {
		j := k
		for j < len(idx) && v[idx[j]] == v[idx[k]] {
			j++
		}
		for _, i := range idx[k:j] {
			r[i] = float64(k+j+1) / 2
		}
		k = j
	}
	return r
}

// measure computes the training report from calibrated probabilities.
func measure(p, y []float64, domain []string) Metrics {
	m := Metrics{AUROC: AUROC(p, y), Brier: Brier(p, y), ECE: ECE(p, y)}
	if math.IsNaN(m.AUROC) {
		m.AUROC = 0.5
	}
	sum := map[string]*DomainMetric{}
	for i, d := range domain {
		dm := sum[d]
		if dm == nil {
			dm = &DomainMetric{Domain: d}
			sum[d] = dm
		}
		dm.Rows++
		dm.Estimated += p[i]
		dm.True += y[i]
	}
	for _, dm := range sum {
		dm.Estimated /= float64(dm.Rows)
		dm.True /= float64(dm.Rows)
		m.Domains = append(m.Domains, *dm)
	}
	sort.Slice(m.Domains, func(a, b int) bool { return m.Domains[a].Domain < m.Domains[b].Domain })
	return m
}
