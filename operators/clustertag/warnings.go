package clustertag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strings"
)

// minPerCluster is the mean number of distinct prompts per cluster below
// which a fit warns that k is large for the data.
const minPerCluster = 5

// minVocabulary is the vocabulary size below which a fit warns that the
// prompts have too little text in common to tell topics apart.
const minVocabulary = 10

// promptValues counts the different prompts and, when they are few values
// repeated many times (a column of ids or labels), returns a hint saying so.
func promptValues(prompts []string) (int, string) {
	seen := make(map[string]struct{})
	var examples []string
	short := true // every value is at most 3 words, like an id or a label
	for _, p := range prompts {
		if _, ok := seen[p]; ok {
			continue
		}
		seen[p] = struct{}{}
		if len(examples) < 3 {
			examples = append(examples, fmt.Sprintf("%.30q", p))
		}
		if len(seen) <= 100 && len(strings.Fields(p)) > 3 {
			short = false
		}
	}
	n, d := len(prompts), len(seen)
	if d > 100 || n < 10*d || !short {
		return d, ""
	}
	more := ""
	if d > len(examples) {
		more = ", ..."
	}
	return d, fmt.Sprintf("the %d prompts hold only %d different values (%s%s): the input's prompt column or field seems to hold ids or labels, not prompt text",
		n, d, strings.Join(examples, ", "), more)
}

// checkK rejects a k that d distinct points cannot support: a fixed k above
// d, or an automatic choice whose smallest k leaves fewer than 2 points per
// cluster. what names the points; hint, when not empty, explains why they
// are so few.
func checkK(cfg FitConfig, d int, what, hint string) error {
	var msg string
	switch {
	case d < 2:
		msg = fmt.Sprintf("the %s are all the same: nothing to cluster", what)
	case cfg.K > d:
		msg = fmt.Sprintf("k=%d is more than the %d distinct %s", cfg.K, d, what)
	case cfg.K == 0 && d-1 < cfg.KMin:
		msg = fmt.Sprintf("%d distinct %s are too few to choose k in [%d, %d]", d, what, cfg.KMin, cfg.KMax)
	default:
		return nil
	}
	if hint != "" {
		return errors.New(msg + "; " + hint)
	}
	if d < 2 {
		return errors.New(msg)
	}
	if cfg.K > d {
		// Offer only what can be fitted: --k auto needs d-1 >= KMin.
		var ways []string
		if hi := autoKMax(cfg, d); hi > cfg.KMin {
			ways = append(ways, fmt.Sprintf("--k auto (k in [%d, %d] by %s)", cfg.KMin, hi, cfg.Criterion))
		} else if d-1 >= cfg.KMin {
			ways = append(ways, fmt.Sprintf("--k auto (here only k=%d, k_min)", cfg.KMin))
		}
		k := suggestK(d)
		if d >= 2*minPerCluster {
			ways = append(ways, fmt.Sprintf("a k of at most %d (%d distinct per cluster)", k, minPerCluster))
		} else {
			ways = append(ways, fmt.Sprintf("a k of at most %d", k))
		}
		return fmt.Errorf("%s: give %s", msg, strings.Join(ways, ", or "))
	}
	return fmt.Errorf("%s: give k explicitly (--k N, N <= %d)", msg, d)
}

// suggestK is the largest k leaving minPerCluster distinct points per
// cluster on average, and at least 2.
func suggestK(d int) int {
	return max(2, d/minPerCluster)
}

// distinctRows counts the different rows of x (equal indices and values). Rows
// are compared by a 64-bit hash: a collision, vanishingly rare, undercounts by one.
func distinctRows(x *csr) int {
	seed := maphash.MakeSeed()
	seen := make(map[uint64]struct{}, x.rows())
	var h maphash.Hash
	h.SetSeed(seed)
	var b [8]byte
	for i := 0; i < x.rows(); i++ {
		idx, val := x.row(i)
		h.Reset()
		for q, j := range idx {
			binary.LittleEndian.PutUint32(b[:4], uint32(j))
			binary.LittleEndian.PutUint32(b[4:], math.Float32bits(val[q]))
			h.Write(b[:])
		}
		seen[h.Sum64()] = struct{}{}
	}
	return len(seen)
}

// fitWarnings lists what makes a fitted model doubtful although it could be
// fitted: prompts that look like ids (hint, see promptValues), a tiny
// vocabulary (vocab is nil for embeddings), few distinct points per cluster,
// empty clusters. distinct counts the different points clustered; what names
// them.
func fitWarnings(m *Model, distinct int, what string, vocab []string, minDF int, hint string) []string {
	var out []string
	if hint != "" {
		out = append(out, hint+"; the clusters group those values, not topics")
	}
	if vocab != nil && len(vocab) < minVocabulary {
		terms := make([]string, 0, len(vocab))
		for _, t := range vocab {
			terms = append(terms, fmt.Sprintf("%q", t))
		}
		out = append(out, fmt.Sprintf("the vocabulary has only %d terms found in at least %d prompts (%s): too little shared text to tell topics apart",
			len(vocab), minDF, strings.Join(terms, ", ")))
	}
	k := len(m.Clusters)
	empty, zero := 0, 0
	for _, c := range m.Clusters {
		if c.Size == 0 {
			empty++
		}
		if c.Threshold <= 0 {
			zero++
		}
	}
	if per := float64(distinct) / float64(k); per < minPerCluster && hint == "" {
		w := fmt.Sprintf("k=%d for %d distinct %s is %.1f per cluster on average: clusters this small are not topics", k, distinct, what, per)
		if zero > 0 {
			w += fmt.Sprintf(", and %d of them have an unclustered threshold of 0 (only a prompt identical to a member falls within it)", zero)
		}
		if m.Selection.Method == "fixed" {
			w += fmt.Sprintf("; use --k auto, or a k of at most %d", suggestK(distinct))
		} else {
			w += fmt.Sprintf("; fit on more prompts, or give --k N with N at most %d", suggestK(distinct))
		}
		out = append(out, w)
	}
	if empty > 0 {
		out = append(out, fmt.Sprintf("%d of the %d clusters have no training prompts: k is too large for these %s", empty, k, what))
	}
	if w := kChoiceWarning(m.Selection); w != "" {
		out = append(out, w)
	}
	return out
}

// stabilityMargin is how far (in adjusted Rand index) the stability of the
// k that --k auto picks must rise above that of every k but its neighbours
// for the choice to be trusted. A single k's stability moves by about 0.03
// from seed to seed on prompts-dev; adjacent k often score alike when the
// topics are there (4 and 5), which does not make the scale of k doubtful.
const stabilityMargin = 0.05

// kChoiceWarning says when the stability criterion did not clearly pick k:
// another k, not adjacent to the chosen one, scored within stabilityMargin
// of it (flat scores: the restarts agree about as little at every k, and the
// largest k often wins by noise). It suggests the smallest k that scored
// within the margin of the best.
func kChoiceWarning(sel Selection) string {
	if sel.Method != CriterionStability || len(sel.Scores) < 3 {
		return ""
	}
	best := sel.Scores[sel.K]
	rival, rivalK := math.Inf(-1), 0
	low, high := math.Inf(1), math.Inf(-1)
	smallest := sel.K
	for k, s := range sel.Scores {
		low, high = min(low, s), max(high, s)
		if k != sel.K && (k < sel.K-1 || k > sel.K+1) && (s > rival || s == rival && k < rivalK) {
			rival, rivalK = s, k
		}
		if s >= best-stabilityMargin && k < smallest {
			smallest = k
		}
	}
	if best-rival >= stabilityMargin {
		return ""
	}
	w := fmt.Sprintf("--k auto picked k=%d with stability %.3f, not clearly above k=%d's %.3f (less than %.2f apart; every k from %d to %d scored %.3f-%.3f): the choice of k is unreliable for these prompts; give --k N",
		sel.K, best, rivalK, rival, stabilityMargin, minKey(sel.Scores), maxKey(sel.Scores), low, high)
	if smallest < sel.K {
		w += fmt.Sprintf(", e.g. --k %d, the smallest k within %.2f of the best", smallest, stabilityMargin)
	}
	return w
}

func minKey(m map[int]float64) int {
	first, out := true, 0
	for k := range m {
		if first || k < out {
			first, out = false, k
		}
	}
	return out
}

func maxKey(m map[int]float64) int {
	first, out := true, 0
	for k := range m {
		if first || k > out {
			first, out = false, k
		}
	}
	return out
}
