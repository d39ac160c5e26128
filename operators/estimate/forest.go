package estimate

import (
	"math"
	"sort"
)

// Forest is a gradient-boosted ensemble of shallow regression trees on the
// log-odds scale (logistic loss, Newton leaves, histogram split search).
type Forest struct {
	Base  float64 `json:"base"`  // initial log-odds
	Rate  float64 `json:"rate"`  // learning rate (already applied to leaf values)
	Depth int     `json:"depth"` // maximum depth of a tree (the hyper-parameter, "depth=N")
	Trees []Tree  `json:"trees"` // one per boosting round; Score adds up their leaves
}

// Tree is one regression tree in flat arrays; node 0 is the root. A node with
// Feature -1 is a leaf holding Value.
type Tree struct {
	Feature []int     `json:"feature"` // per node: index into the model's Features of the split, -1 at a leaf
	Thresh  []float64 `json:"thresh"`  // go left when z[feature] <= thresh
	Left    []int     `json:"left"`    // per node: index of the left child, after the node's own; -1 at a leaf
	Right   []int     `json:"right"`   // per node: index of the right child, after the node's own; -1 at a leaf
	// Value is, per node, the log-odds a leaf adds to the score (learning
	// rate applied); Score reads it at leaves only.
	Value []float64 `json:"value"`
}

// Score returns the ensemble's log-odds for standardised features z.
func (f *Forest) Score(z []float64) float64 {
	s := f.Base
	for t := range f.Trees {
		tr := &f.Trees[t]
		n := 0
		for tr.Feature[n] >= 0 {
			if z[tr.Feature[n]] <= tr.Thresh[n] {
				n = tr.Left[n]
			} else {
				n = tr.Right[n]
			}
		}
		s += tr.Value[n]
	}
	return s
}

// forestParams are the tree ensemble's hyper-parameters.
type forestParams struct {
	Trees  int     // boosting rounds
	Depth  int     // maximum tree depth
	Rate   float64 // learning rate
	Lambda float64 // L2 penalty on leaf values
	Bins   int     // candidate thresholds per feature
	MinHes float64 // minimum hessian per child
}

func defaultForestParams(depth int) forestParams {
	return forestParams{Trees: 100, Depth: depth, Rate: 0.1, Lambda: 1, Bins: 32, MinHes: 5}
}

// fitForest boosts trees on standardised x (n x d), labels y, weights w.
func fitForest(x []float64, d int, y, w []float64, p forestParams) *Forest {
	n := len(y)
	// Candidate thresholds per feature: halfway between a quantile and the
	// next larger value, so that no training value sits on a threshold.
	// A threshold equal to a training value (as they once were) sends that
	// value left and the same value a rounding away right: a feature
	// computed with another summation order (FMA, the AVX-512 kernel) or
	// carried as float32 (the stream) moved p_correct by up to 0.39.
	cuts := make([][]float64, d)
	col := make([]float64, n)
	for j := range d {
		for i := range n {
			col[i] = x[i*d+j]
		}
		sort.Float64s(col)
		var c []float64
		for b := 1; b < p.Bins; b++ {
			v := col[b*(n-1)/p.Bins]
			k := sort.Search(n, func(i int) bool { return col[i] > v })
			if k == n {
				continue // v is the largest value: nothing to its right
			}
			cut := v + (col[k]-v)/2
			if cut >= col[k] { // v and the next value are adjacent floats
				cut = v
			}
			if len(c) == 0 || cut > c[len(c)-1] {
				c = append(c, cut)
			}
		}
		cuts[j] = c
	}
	// Bin index of every value: the number of cuts below it.
	bin := make([]uint8, n*d)
	for i := range n {
		for j := range d {
			bin[i*d+j] = uint8(sort.SearchFloat64s(cuts[j], x[i*d+j]))
		}
	}
	var sw, sy float64
	for i := range n {
		sw += weight(w, i)
		sy += weight(w, i) * y[i]
	}
	pbar := math.Min(math.Max(sy/sw, 1e-6), 1-1e-6)
	f := &Forest{Base: math.Log(pbar / (1 - pbar)), Rate: p.Rate, Depth: p.Depth}
	score := make([]float64, n)
	for i := range score {
		score[i] = f.Base
	}
	g := make([]float64, n)
	h := make([]float64, n)
	rows := make([]int, n)
	nb := 0
	for _, c := range cuts {
		nb = max(nb, len(c)+1)
	}
	hg := make([]float64, nb)
	hh := make([]float64, nb)
	for range p.Trees {
		for i := range n {
			q := sigmoid(score[i])
			g[i] = weight(w, i) * (q - y[i])
			h[i] = weight(w, i) * math.Max(q*(1-q), 1e-12)
			rows[i] = i
		}
		var tr Tree
		var grow func(rs []int, depth int) int
		grow = func(rs []int, depth int) int {
			var G, H float64
			for _, i := range rs {
				G += g[i]
				H += h[i]
			}
			node := len(tr.Feature)
			tr.Feature = append(tr.Feature, -1)
			tr.Thresh = append(tr.Thresh, 0)
			tr.Left = append(tr.Left, -1)
			tr.Right = append(tr.Right, -1)
			tr.Value = append(tr.Value, -p.Rate*G/(H+p.Lambda))
			if depth >= p.Depth || H < 2*p.MinHes {
				return node
			}
			best, bf, bb := 0.0, -1, 0
			parent := G * G / (H + p.Lambda)
			for j := range d {
				k := len(cuts[j]) + 1
				clear(hg[:k])
				clear(hh[:k])
				for _, i := range rs {
					b := bin[i*d+j]
					hg[b] += g[i]
					hh[b] += h[i]
				}
				var gl, hl float64
				for b := 0; b < k-1; b++ {
					gl += hg[b]
					hl += hh[b]
					gr, hr := G-gl, H-hl
					if hl < p.MinHes || hr < p.MinHes {
						continue
					}
					gain := gl*gl/(hl+p.Lambda) + gr*gr/(hr+p.Lambda) - parent
					if gain > best+1e-12 {
						best, bf, bb = gain, j, b
					}
				}
			}
			if bf < 0 {
				return node
			}
			// Partition rs in place: bin <= bb goes left.
			lo := 0
			for k, i := range rs {
				if int(bin[i*d+bf]) <= bb {
					rs[lo], rs[k] = rs[k], rs[lo]
					lo++
				}
			}
			tr.Feature[node] = bf
			tr.Thresh[node] = cuts[bf][bb]
			l := grow(rs[:lo], depth+1)
			r := grow(rs[lo:], depth+1)
			tr.Left[node], tr.Right[node] = l, r
			return node
		}
		grow(rows, 0)
		f.Trees = append(f.Trees, tr)
		last := &f.Trees[len(f.Trees)-1]
		for i := range n {
			nd := 0
			for last.Feature[nd] >= 0 {
				if x[i*d+last.Feature[nd]] <= last.Thresh[nd] {
					nd = last.Left[nd]
				} else {
					nd = last.Right[nd]
				}
			}
			score[i] += last.Value[nd]
		}
	}
	return f
}
