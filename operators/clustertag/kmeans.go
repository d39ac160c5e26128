package clustertag

import (
	"context"
	"math"
	"math/rand/v2"
)

// kmeansResult is one spherical k-means solution.
type kmeansResult struct {
	k         int
	centroids []float32 // k×dim, unit rows
	assign    []int
	sim       []float32 // cosine similarity of each point to its centroid
	objective float64   // sum of sim: higher is better
}

func dotSparse(idx []int32, val []float32, c []float32) float32 {
	var s float32
	for k, j := range idx {
		s += val[k] * c[j]
	}
	return s
}

// seedPlusPlus picks k initial centroids among the points: the first at
// random, each next one with probability proportional to its squared cosine
// distance to the nearest centroid chosen so far (k-means++).
func seedPlusPlus(x *csr, k int, rng *rand.Rand) []float32 {
	n, dim := x.rows(), x.dim
	cent := make([]float32, k*dim)
	setCentroid := func(c, i int) {
		idx, val := x.row(i)
		for q, j := range idx {
			cent[c*dim+int(j)] = val[q]
		}
	}
	setCentroid(0, rng.IntN(n))
	d2 := make([]float64, n)
	for i := range d2 {
		d2[i] = math.Inf(1)
	}
	for c := 1; c < k; c++ {
		var total float64
		prev := cent[(c-1)*dim : c*dim]
		for i := 0; i < n; i++ {
			idx, val := x.row(i)
			d := 1 - float64(dotSparse(idx, val, prev))
			if d < 0 {
				d = 0
			}
			if d*d < d2[i] {
				d2[i] = d * d
			}
			total += d2[i]
		}
		pick := rng.IntN(n)
		if total > 0 {
			u := rng.Float64() * total
			for i := 0; i < n; i++ {
				u -= d2[i]
				if u <= 0 {
					pick = i
					break
				}
			}
		}
		setCentroid(c, pick)
	}
	return cent
}

// sphericalKMeans clusters unit rows of x into k groups maximising the sum of
// cosine similarities to the (unit) centroids, from a k-means++ start.
func sphericalKMeans(ctx context.Context, x *csr, k, maxIter int, rng *rand.Rand) (kmeansResult, error) {
	n, dim := x.rows(), x.dim
	cent := seedPlusPlus(x, k, rng)
	assign := make([]int, n)
	for i := range assign {
		assign[i] = -1
	}
	sim := make([]float32, n)
	sums := make([]float32, k*dim)
	counts := make([]int, k)
	for it := 0; it < maxIter; it++ {
		if err := ctx.Err(); err != nil {
			return kmeansResult{}, err
		}
		changed := 0
		for i := 0; i < n; i++ {
			idx, val := x.row(i)
			best, bestSim := 0, float32(math.Inf(-1))
			for c := 0; c < k; c++ {
				s := dotSparse(idx, val, cent[c*dim:(c+1)*dim])
				if s > bestSim {
					best, bestSim = c, s
				}
			}
			if assign[i] != best {
				changed++
				assign[i] = best
			}
			sim[i] = bestSim
		}
		if changed == 0 {
			break
		}
		clear(sums)
		clear(counts)
		for i := 0; i < n; i++ {
			c := assign[i]
			counts[c]++
			idx, val := x.row(i)
			s := sums[c*dim : (c+1)*dim]
			for q, j := range idx {
				s[j] += val[q]
			}
		}
		for c := 0; c < k; c++ {
			s := sums[c*dim : (c+1)*dim]
			if counts[c] == 0 || normalize(s) == 0 {
				// Empty cluster: restart it at the worst-fitting point.
				worst := 0
				for i := 1; i < n; i++ {
					if sim[i] < sim[worst] {
						worst = i
					}
				}
				clear(s)
				idx, val := x.row(worst)
				for q, j := range idx {
					s[j] = val[q]
				}
				sim[worst] = 1
			}
		}
		cent, sums = sums, cent
	}
	var obj float64
	for i := 0; i < n; i++ {
		idx, val := x.row(i)
		c := assign[i]
		sim[i] = dotSparse(idx, val, cent[c*dim:(c+1)*dim])
		obj += float64(sim[i])
	}
	return kmeansResult{k: k, centroids: cent, assign: assign, sim: sim, objective: obj}, nil
}

// bestOf runs restarts independent k-means and keeps the highest objective.
func bestOf(ctx context.Context, x *csr, k, restarts, maxIter int, rng *rand.Rand) (kmeansResult, error) {
	var best kmeansResult
	for r := 0; r < max(1, restarts); r++ {
		res, err := sphericalKMeans(ctx, x, k, maxIter, rng)
		if err != nil {
			return kmeansResult{}, err
		}
		if r == 0 || res.objective > best.objective {
			best = res
		}
	}
	return best, nil
}

// silhouette is the mean silhouette coefficient (cosine distance) of the
// sample points (indices into the full set) under assign; dist holds the
// sample's pairwise distances, row-major.
func silhouette(sample []int, dist []float32, assign []int, k int) float64 {
	s := len(sample)
	sums := make([]float64, k)
	counts := make([]int, k)
	for _, i := range sample {
		counts[assign[i]]++
	}
	var total float64
	for a := 0; a < s; a++ {
		clear(sums)
		for b := 0; b < s; b++ {
			if a != b {
				sums[assign[sample[b]]] += float64(dist[a*s+b])
			}
		}
		own := assign[sample[a]]
		if counts[own] <= 1 {
			continue // silhouette of a singleton is 0
		}
		in := sums[own] / float64(counts[own]-1)
		out := math.Inf(1)
		for c := 0; c < k; c++ {
			if c != own && counts[c] > 0 {
				out = min(out, sums[c]/float64(counts[c]))
			}
		}
		if math.IsInf(out, 1) {
			continue
		}
		total += (out - in) / max(in, out)
	}
	return total / float64(s)
}

// pairwiseDistances returns the cosine distances among the sample rows.
func pairwiseDistances(x *csr, sample []int) []float32 {
	s := len(sample)
	if x.dim > 4096 {
		out := make([]float32, s*s)
		for a := 0; a < s; a++ {
			ia, va := x.row(sample[a])
			for b := a + 1; b < s; b++ {
				ib, vb := x.row(sample[b])
				d := 1 - dotRows(ia, va, ib, vb)
				out[a*s+b], out[b*s+a] = d, d
			}
		}
		return out
	}
	dense := make([]float32, s*x.dim)
	for a, i := range sample {
		idx, val := x.row(i)
		for q, j := range idx {
			dense[a*x.dim+int(j)] = val[q]
		}
	}
	out := make([]float32, s*s)
	for a := 0; a < s; a++ {
		idx, val := x.row(sample[a])
		for b := a + 1; b < s; b++ {
			d := 1 - dotSparse(idx, val, dense[b*x.dim:(b+1)*x.dim])
			out[a*s+b], out[b*s+a] = d, d
		}
	}
	return out
}

// dotRows is the dot product of two sparse rows with sorted indices.
func dotRows(ia []int32, va []float32, ib []int32, vb []float32) float32 {
	var s float32
	for p, q := 0, 0; p < len(ia) && q < len(ib); {
		switch {
		case ia[p] < ib[q]:
			p++
		case ia[p] > ib[q]:
			q++
		default:
			s += va[p] * vb[q]
			p++
			q++
		}
	}
	return s
}
