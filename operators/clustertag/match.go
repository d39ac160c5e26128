package clustertag

import (
	"errors"
	"fmt"
	"math"
)

// DefaultMinSimilarity is the centroid cosine similarity below which a new
// cluster is considered a new topic rather than an old one refitted.
const DefaultMinSimilarity = 0.5

// Carry gives the clusters of m, freshly fitted, the ids of the most similar
// clusters of prev: centroids are compared in term space (hash buckets of the
// vocabulary; the embedding itself for embedding models), and new and old
// clusters are paired one to one maximising total similarity (Hungarian
// method). A pair below minSim is not a match: that new cluster gets a fresh
// id from prev's next_id, so an old id is never given to another topic.
//
// A matched cluster also keeps its old label, unless relabel: domains,
// collected labels, baselines and queue counts are keyed by the label text,
// and a refit that renamed "demand/price/curve" to "price/market/firm" would
// orphan them. Its TopTerms are the new fit's. It records the mapping in
// m.Previous and returns it.
func (m *Model) Carry(prev *Model, minSim float64, relabel bool) (*Lineage, error) {
	if (m.Space == SpaceEmbedding) != (prev.Space == SpaceEmbedding) {
		return nil, fmt.Errorf("cannot map cluster ids: the new artifact clusters %s vectors, the previous one %s vectors", m.Space, prev.Space)
	}
	if m.Space != SpaceEmbedding && m.Vector != prev.Vector {
		return nil, errors.New("cannot map cluster ids: the vectoriser settings differ from the previous artifact's (refit with the same settings, or without --previous)")
	}
	if m.Space == SpaceEmbedding && m.Dim != prev.Dim {
		return nil, fmt.Errorf("cannot map cluster ids: embeddings have %d dimensions, the previous artifact's %d", m.Dim, prev.Dim)
	}
	a, b := m.termCentroids(), prev.termCentroids()
	sim := make([][]float64, len(a))
	for i := range a {
		sim[i] = make([]float64, len(b))
		for j := range b {
			sim[i][j] = cosineMaps(a[i], b[j])
		}
	}
	pair := hungarian(sim)
	next := prev.NextID
	for _, c := range prev.Clusters {
		next = max(next, c.ID+1)
	}
	lin := &Lineage{Version: prev.Version, Relabel: relabel}
	keep := map[int]string{}
	for i := range m.Clusters {
		match := IDMatch{Old: -1, Nearest: -1}
		for j := range sim[i] {
			if match.Nearest < 0 || sim[i][j] > match.NearestSimilarity {
				match.Nearest, match.NearestSimilarity = prev.Clusters[j].ID, sim[i][j]
			}
		}
		if j := pair[i]; j >= 0 {
			match.Similarity = sim[i][j]
			if sim[i][j] >= minSim {
				match.Old = prev.Clusters[j].ID
				match.OldLabel = prev.Clusters[j].Label
				if !relabel {
					keep[i] = prev.Clusters[j].Label
				}
			}
		}
		if match.Old >= 0 {
			match.ID = match.Old
		} else {
			match.ID = next
			next++
		}
		m.Clusters[i].ID = match.ID
		lin.Matches = append(lin.Matches, match)
	}
	m.NextID = next
	nameClusters(m.Clusters, keep)
	m.Previous = lin
	m.Version = ""
	return lin, nil
}

// termCentroids expresses each centroid as a unit vector keyed by hash
// bucket (by dimension for embeddings), comparable across fits.
func (m *Model) termCentroids() []map[uint32]float64 {
	out := make([]map[uint32]float64, len(m.Clusters))
	for c, cl := range m.Clusters {
		v := map[uint32]float64{}
		switch m.Space {
		case SpaceEmbedding:
			for j, x := range cl.Centroid {
				v[uint32(j)] = float64(x)
			}
		case SpaceTFIDF:
			for r, b := range m.Buckets {
				if x := cl.Centroid[r]; x != 0 {
					v[b] = float64(x)
				}
			}
		case SpaceLSA:
			for r, b := range m.Buckets {
				row := m.Projection[r*m.Dim : (r+1)*m.Dim]
				var s float64
				for j, x := range row {
					s += float64(x) * float64(cl.Centroid[j])
				}
				v[b] = s
			}
		}
		out[c] = v
	}
	return out
}

func cosineMaps(a, b map[uint32]float64) float64 {
	var dot, na, nb float64
	for k, x := range a {
		na += x * x
		if y, ok := b[k]; ok {
			dot += x * y
		}
	}
	for _, y := range b {
		nb += y * y
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return dot / math.Sqrt(na*nb)
}

// hungarian pairs rows with columns maximising the total of w (one to one);
// it returns the column of each row, -1 for rows left over when there are
// more rows than columns. O(n³) (Kuhn-Munkres with potentials).
func hungarian(w [][]float64) []int {
	rows := len(w)
	if rows == 0 {
		return nil
	}
	cols := len(w[0])
	n := max(rows, cols)
	cost := func(i, j int) float64 { // 1-based, padded with zeros
		if i > rows || j > cols {
			return 0
		}
		return -w[i-1][j-1]
	}
	u, v := make([]float64, n+1), make([]float64, n+1)
	p, way := make([]int, n+1), make([]int, n+1)
	for i := 1; i <= n; i++ {
		p[0] = i
		j0 := 0
		minv := make([]float64, n+1)
		used := make([]bool, n+1)
		for j := range minv {
			minv[j] = math.Inf(1)
		}
		for {
			used[j0] = true
			i0, delta, j1 := p[j0], math.Inf(1), 0
			for j := 1; j <= n; j++ {
				if used[j] {
					continue
				}
				cur := cost(i0, j) - u[i0] - v[j]
				if cur < minv[j] {
					minv[j], way[j] = cur, j0
				}
				if minv[j] < delta {
					delta, j1 = minv[j], j
				}
			}
			for j := 0; j <= n; j++ {
				if used[j] {
					u[p[j]] += delta
					v[j] -= delta
				} else {
					minv[j] -= delta
				}
			}
			j0 = j1
			if p[j0] == 0 {
				break
			}
		}
		for j0 != 0 {
			j1 := way[j0]
			p[j0] = p[j1]
			j0 = j1
		}
	}
	out := make([]int, rows)
	for i := range out {
		out[i] = -1
	}
	for j := 1; j <= n; j++ {
		if p[j] >= 1 && p[j] <= rows && j <= cols {
			out[p[j]-1] = j - 1
		}
	}
	return out
}
