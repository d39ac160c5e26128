package clustertag

import (
	"fmt"
	"math"
)

// Unclustered is the cluster id of a prompt beyond every cluster's threshold,
// without a known term, or null.
const Unclustered = -1

// thresholdSlack absorbs float32 rounding, so that a prompt identical to a
// training prompt at exactly the threshold (0 for a cluster of identical
// prompts) stays in its cluster.
const thresholdSlack = 1e-4

// UnclusteredLabel is the label of Unclustered.
const UnclusteredLabel = "unclustered"

// Tagger assigns prompts to a model's clusters. It reuses its buffers, so one
// Tagger serves one goroutine; create one per goroutine with NewTagger.
type Tagger struct {
	m       *Model
	h       *hasher
	rowOf   []int32 // hash bucket -> vocabulary row, -1 when not in the vocabulary
	cent    []float32
	norm    []float32 // lsa: length of each centroid mapped back to term space
	thresh  []float32
	buckets []uint32
	terms   []uint32
	counts  []float32
	rows    []int32
	acc     []float32
	last    int // nearest cluster of the last call, before the threshold
}

// NewTagger prepares m for tagging.
func (m *Model) NewTagger() *Tagger {
	t := &Tagger{m: m, acc: make([]float32, m.Dim)}
	k := len(m.Clusters)
	t.cent = make([]float32, k*m.Dim)
	t.thresh = make([]float32, k)
	for c, cl := range m.Clusters {
		copy(t.cent[c*m.Dim:], cl.Centroid)
		t.thresh[c] = cl.Threshold
	}
	if m.Space != SpaceEmbedding {
		t.h = newHasher(m.Vector)
		t.rowOf = make([]int32, 1<<uint(m.Vector.HashBits))
		for i := range t.rowOf {
			t.rowOf[i] = -1
		}
		for i, b := range m.Buckets {
			t.rowOf[b] = int32(i)
		}
	}
	if m.Space == SpaceLSA {
		// |P·c|: 1 when the projection's columns are orthonormal, less when
		// the SVD left a column empty.
		t.norm = make([]float32, k)
		for c := range k {
			cent := t.cent[c*m.Dim : (c+1)*m.Dim]
			var ss float64
			for r := range len(m.Buckets) {
				row := m.Projection[r*m.Dim : (r+1)*m.Dim]
				var s float64
				for j, x := range row {
					s += float64(x) * float64(cent[j])
				}
				ss += s * s
			}
			t.norm[c] = float32(math.Sqrt(ss))
		}
	}
	return t
}

// Model returns the model the tagger assigns to.
func (t *Tagger) Model() *Model { return t.m }

// Tag returns the index into Model().Clusters of prompt's cluster, or
// Unclustered, and the cosine distance to the nearest centroid (1 when the
// prompt has no known term). It does not allocate once its buffers have grown.
//
// The cosine is taken in the TF-IDF space of the whole prompt: its terms
// outside the vocabulary (weighted by the model's OOVIDF) and, for LSA, the
// part of its vector outside the latent subspace count in its norm. A prompt
// on a topic the fit never saw has most of its weight there, so it is far
// from every centroid even when its projection points at one.
func (t *Tagger) Tag(prompt string) (int, float32) {
	if t.h == nil {
		return Unclustered, 1
	}
	t.buckets = t.h.appendBuckets(t.buckets[:0], prompt)
	t.terms, t.counts = termCounts(t.buckets, t.terms, t.counts)
	// Keep the known terms and weight them; unknown terms only add to the norm.
	t.rows = t.rows[:0]
	w := t.counts[:0]
	var ss, oov float32
	for q, b := range t.terms {
		tf := tfWeight(t.counts[q], t.m.Vector.Sublinear)
		r := t.rowOf[b]
		if r < 0 {
			oov += tf * tf
			continue
		}
		v := tf * t.m.IDF[r]
		t.rows = append(t.rows, r)
		w = append(w, v)
		ss += v * v
	}
	if ss == 0 {
		t.last = Unclustered
		return Unclustered, 1
	}
	norm := sqrt32(ss + oov*t.m.OOVIDF*t.m.OOVIDF)
	dim := t.m.Dim
	if t.m.Space == SpaceTFIDF {
		// The norm does not change the argmax; divide once at the end.
		best, bestDot := 0, float32(-2)
		for c := range t.thresh {
			d := dotSparse(t.rows, w, t.cent[c*dim:(c+1)*dim])
			if d > bestDot {
				best, bestDot = c, d
			}
		}
		return t.decide(best, bestDot/norm)
	}
	acc := t.acc
	clear(acc)
	p := t.m.Projection
	for q, r := range t.rows {
		v := w[q]
		row := p[int(r)*dim : (int(r)+1)*dim]
		for c := range acc {
			acc[c] += v * row[c]
		}
	}
	// x·(P·c) = (Pᵀx)·c: the term-space cosine, from the projection alone.
	best, bestCos := 0, float32(-2)
	for c := range t.thresh {
		if t.norm[c] == 0 {
			continue
		}
		cent := t.cent[c*dim : (c+1)*dim]
		var d float32
		for i, x := range acc {
			d += x * cent[i]
		}
		if d /= t.norm[c]; d > bestCos {
			best, bestCos = c, d
		}
	}
	return t.decide(best, bestCos/norm)
}

// TagVector assigns an embedding (embedding-space models only).
func (t *Tagger) TagVector(v []float32) (int, float32, error) {
	if t.m.Space != SpaceEmbedding {
		return Unclustered, 1, fmt.Errorf("model clusters %s vectors, not embeddings", t.m.Space)
	}
	if len(v) != t.m.Dim {
		return Unclustered, 1, fmt.Errorf("embedding has %d dimensions, the model %d", len(v), t.m.Dim)
	}
	copy(t.acc, v)
	id, d := t.nearest(t.acc)
	return id, d, nil
}

// nearest normalises acc and picks the most similar centroid. A zero vector,
// or one with a NaN or infinite value, is unclustered at distance 1.
func (t *Tagger) nearest(acc []float32) (int, float32) {
	var ss float64 // float64: the squares of large float32 values overflow float32
	for _, x := range acc {
		ss += float64(x) * float64(x)
	}
	if !(ss > 0) || math.IsInf(ss, 1) { // NaN too
		t.last = Unclustered
		return Unclustered, 1
	}
	inv := 1 / math.Sqrt(ss)
	for i, x := range acc {
		acc[i] = float32(float64(x) * inv)
	}
	dim := t.m.Dim
	best, bestDot := 0, float32(-2)
	for c := range t.thresh {
		cent := t.cent[c*dim : (c+1)*dim]
		var d float32
		for i, x := range acc {
			d += x * cent[i]
		}
		if d > bestDot {
			best, bestDot = c, d
		}
	}
	return t.decide(best, bestDot)
}

// nearestIndex is the nearest cluster of the last Tag call, whether or not
// it was within the threshold (Unclustered when the prompt had no known term).
func (t *Tagger) nearestIndex() int { return t.last }

func (t *Tagger) decide(c int, cos float32) (int, float32) {
	t.last = c
	dist := 1 - cos
	if dist > t.thresh[c]+thresholdSlack {
		return Unclustered, dist
	}
	return c, dist
}
