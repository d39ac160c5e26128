package clustertag

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

// Report describes how a model partitions a set of prompts.
type Report struct {
	Version     string // the artifact's Version
	Prompts     int    // docs in the input, those without a prompt included
	NoPrompt    int    // empty prompts (tagged -1 without distance)
	Unclustered int    // tagged -1: beyond every threshold or no known term
	// Clusters has one entry per cluster of the artifact, in its order.
	Clusters []ClusterReport
	// UnclusteredExamples are a few of the unclustered prompts (those with
	// a prompt), spread evenly over the input.
	UnclusteredExamples []UnclusteredExample
	// With known domains: agreement of the tags (unclustered as one more
	// cluster) with the domains; Nearest* ignore the thresholds.
	HasDomain                 bool
	Domains                   int     // distinct domains in the input
	ARI, Purity               float64 // adjusted Rand index (1 identical, about 0 random) and purity (0 to 1)
	NearestARI, NearestPurity float64 // the same, each prompt in its nearest cluster
}

// ClusterReport is one cluster's line of a Report.
type ClusterReport struct {
	ID        int      // Cluster.ID
	Label     string   // Cluster.Label
	FitSize   int      // training prompts
	Size      int      // prompts of this input tagged with it
	TopDomain string   // most frequent domain among them (with domains)
	TopShare  float64  // its share
	Examples  []string // the prompts nearest its centroid, nearest first
}

// UnclusteredExample is an unclustered prompt and its nearest cluster.
type UnclusteredExample struct {
	Prompt   string
	Nearest  string  // label of the nearest cluster, "" without a known term
	Distance float32 // to the nearest centroid (1 without a known term)
}

// Summarize tags docs with m and reports sizes, examples (per cluster the
// prompts nearest its centroid; a few unclustered ones, spread over the
// input) and, when the docs carry domains, purity and adjusted Rand index.
func Summarize(m *Model, docs *Docs, examples int) (*Report, error) {
	t := m.NewTagger()
	r := &Report{Version: m.Version, Prompts: len(docs.Docs), HasDomain: docs.HasDomain}
	r.Clusters = make([]ClusterReport, len(m.Clusters))
	for c, cl := range m.Clusters {
		r.Clusters[c] = ClusterReport{ID: cl.ID, Label: cl.Label, FitSize: cl.Size}
	}
	domCount := make([]map[string]int, len(m.Clusters))
	type member struct {
		doc, near int
		dist      float32
	}
	members := make([][]member, len(m.Clusters))
	var unclustered []member
	var truth, pred, nearest []string
	for i, d := range docs.Docs {
		var c int
		var dist float32
		var err error
		switch {
		case m.Space == SpaceEmbedding:
			if len(d.Embedding) == 0 {
				return nil, fmt.Errorf("the artifact clusters embeddings but a prompt has no embedding")
			}
			c, dist, err = t.TagVector(d.Embedding)
			if err != nil {
				return nil, err
			}
		case d.Prompt == "":
			r.NoPrompt++
			c = Unclustered
			t.last = Unclustered
		default:
			c, dist = t.Tag(d.Prompt)
		}
		near := t.nearestIndex()
		if c == Unclustered {
			r.Unclustered++
			if d.Prompt != "" {
				unclustered = append(unclustered, member{i, near, dist})
			}
		} else {
			cr := &r.Clusters[c]
			cr.Size++
			members[c] = append(members[c], member{i, near, dist})
			if docs.HasDomain {
				if domCount[c] == nil {
					domCount[c] = map[string]int{}
				}
				domCount[c][d.Domain]++
			}
		}
		if docs.HasDomain {
			truth = append(truth, d.Domain)
			pred = append(pred, fmt.Sprint(c))
			nearest = append(nearest, fmt.Sprint(near))
		}
	}
	for c, ms := range members {
		slices.SortStableFunc(ms, func(a, b member) int { return cmp.Compare(a.dist, b.dist) })
		for _, x := range ms[:min(examples, len(ms))] {
			r.Clusters[c].Examples = append(r.Clusters[c].Examples, docs.Docs[x.doc].Prompt)
		}
	}
	if n := min(examples, len(unclustered)); n > 0 {
		for q := range n {
			x := unclustered[q*len(unclustered)/n]
			ex := UnclusteredExample{Prompt: docs.Docs[x.doc].Prompt, Distance: x.dist}
			if x.near != Unclustered {
				ex.Nearest = m.Clusters[x.near].Label
			}
			r.UnclusteredExamples = append(r.UnclusteredExamples, ex)
		}
	}
	if docs.HasDomain && len(truth) > 0 {
		tc := Codes(truth)
		r.ARI, r.Purity = ARI(tc, Codes(pred)), Purity(tc, Codes(pred))
		r.NearestARI, r.NearestPurity = ARI(tc, Codes(nearest)), Purity(tc, Codes(nearest))
		seen := map[string]bool{}
		for _, d := range truth {
			seen[d] = true
		}
		r.Domains = len(seen)
		for c := range r.Clusters {
			best, bn := "", 0
			for d, n := range domCount[c] {
				if n > bn || n == bn && d < best {
					best, bn = d, n
				}
			}
			if r.Clusters[c].Size > 0 {
				r.Clusters[c].TopDomain = best
				r.Clusters[c].TopShare = float64(bn) / float64(r.Clusters[c].Size)
			}
		}
	}
	return r, nil
}

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "artifact %s: %d clusters, %d prompts\n", r.Version, len(r.Clusters), r.Prompts)
	share := 0.0
	if r.Prompts > 0 {
		share = float64(r.Unclustered) / float64(r.Prompts)
	}
	fmt.Fprintf(&b, "unclustered: %d (%.1f%%)", r.Unclustered, 100*share)
	if r.NoPrompt > 0 {
		fmt.Fprintf(&b, ", of which %d without a prompt", r.NoPrompt)
	}
	b.WriteString("\n")
	if r.HasDomain {
		fmt.Fprintf(&b, "against %d known domains: ARI %.3f, purity %.3f (unclustered counted as one cluster); nearest cluster, no threshold: ARI %.3f, purity %.3f\n",
			r.Domains, r.ARI, r.Purity, r.NearestARI, r.NearestPurity)
	}
	cl := append([]ClusterReport(nil), r.Clusters...)
	sort.SliceStable(cl, func(i, j int) bool { return cl[i].Size > cl[j].Size })
	for _, c := range cl {
		fmt.Fprintf(&b, "\ncluster %d %q: %d prompts (%d at fit)", c.ID, c.Label, c.Size, c.FitSize)
		if c.TopDomain != "" {
			fmt.Fprintf(&b, ", %.0f%% %s", 100*c.TopShare, c.TopDomain)
		}
		b.WriteString("\n")
		for _, e := range c.Examples {
			fmt.Fprintf(&b, "  - %s\n", clip(e, 110))
		}
	}
	if len(r.UnclusteredExamples) > 0 {
		b.WriteString("\nunclustered, for example:\n")
		for _, e := range r.UnclusteredExamples {
			how := "no term the model knows"
			if e.Nearest != "" {
				how = fmt.Sprintf("nearest %q at distance %.3f", e.Nearest, e.Distance)
			}
			fmt.Fprintf(&b, "  - %s  (%s)\n", clip(e.Prompt, 100), how)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "..."
}
