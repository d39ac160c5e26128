package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/operators/clustertag"
)

// runCluster dispatches `cluster fit` and `cluster report`.
func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, "Usage: entrowatch cluster fit|report [flags]   (entrowatch cluster fit -h for its flags)")
		fmt.Fprintln(stderr, "  fit     learn topic clusters from prompts and write the artifact")
		fmt.Fprintln(stderr, "  report  cluster sizes, labels, examples, share unclustered; purity and ARI against known domains")
		if len(args) == 0 {
			return errUsage
		}
		return flag.ErrHelp
	}
	switch args[0] {
	case "fit":
		return runClusterFit(ctx, args[1:], stdout, stderr)
	case "report":
		return runClusterReport(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "entrowatch cluster: unknown subcommand %q (want fit or report)\n", args[0])
	return errUsage
}

func runClusterFit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("cluster fit", "--in PROMPTS --out clusters.json [--k N|auto] [--previous old.json [--relabel]]", stderr)
	def := clustertag.DefaultFitConfig()
	in := fs.String("in", "", "prompts: OpenAI JSON Lines with a top-level \"prompt\" (.jsonl, .json), CSV with a prompt column (.csv), or one prompt per line; .gz ok (required)")
	out := fs.String("out", "", "artifact to write, e.g. clusters.json (required)")
	kFlag := fs.String("k", "auto", "number of clusters, or auto: the k in [--k-min, --k-max] with the best criterion (see docs/clusters.md)")
	fs.IntVar(&def.KMin, "k-min", def.KMin, "smallest k tried by --k auto")
	fs.IntVar(&def.KMax, "k-max", def.KMax, "largest k tried by --k auto")
	fs.IntVar(&def.LSA, "lsa", def.LSA, "latent dimensions of the truncated SVD before k-means; 0 clusters the TF-IDF vectors directly")
	fs.IntVar(&def.Restarts, "restarts", def.Restarts, "k-means restarts per k; the one with the best objective is kept")
	seed := fs.Uint64("seed", def.Seed, "random seed (fits are reproducible for a given seed and input)")
	fs.IntVar(&def.MinDF, "min-df", def.MinDF, "drop words and bigrams found in fewer prompts")
	fs.Float64Var(&def.ThresholdQuantile, "threshold-quantile", def.ThresholdQuantile, "each cluster's unclustered threshold: this quantile of its members' distances")
	fs.BoolVar(&def.Vector.Bigrams, "bigrams", def.Vector.Bigrams, "add word bigrams to the terms (off by default: no gain on prompts-dev, twice the terms)")
	fs.BoolVar(&def.Vector.Shapes, "shapes", def.Vector.Shapes, "add one token for numbers and one per math symbol (= + * / ^ \\ $ % < >)")
	emb := fs.String("embedding", "auto", "cluster on the input's embedding column/field: auto (when every prompt has one), yes, no")
	prev := fs.String("previous", "", "previous artifact: new clusters take the ids of the most similar old ones (Hungarian matching of centroids)")
	minSim := fs.Float64("min-similarity", clustertag.DefaultMinSimilarity, "with --previous: centroid similarity (0 to 1) below which a cluster is a new topic with a fresh id")
	relabel := fs.Bool("relabel", false, "with --previous: name matched clusters from the new fit's terms instead of keeping their previous labels (domains, labels and baselines in ClickHouse are keyed by label text)")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *in == "" || *out == "" {
		fmt.Fprintln(stderr, "cluster fit: --in and --out are required")
		fs.Usage()
		return errUsage
	}
	if *prev == "" && (flagSet(fs, "min-similarity") || *relabel) {
		return badFlag("--min-similarity and --relabel apply to --previous: give the artifact the refit replaces")
	}
	if !(*minSim >= 0 && *minSim <= 1) {
		return badFlag("--min-similarity %g: want a cosine similarity from 0 to 1 (default %g)", *minSim, clustertag.DefaultMinSimilarity)
	}
	switch *emb {
	case "auto", "yes", "no":
	default:
		return badFlag("--embedding %q: want auto, yes or no", *emb)
	}
	def.Seed = *seed
	if *kFlag != "auto" {
		k, err := strconv.Atoi(*kFlag)
		if err != nil || k < 2 {
			return badFlag("--k %q: want a whole number of clusters >= 2, or auto", *kFlag)
		}
		def.K = k
	}
	if err := def.Validate(); err != nil {
		return badFlag("invalid settings: %w", err)
	}
	tmp, commit, err := artifactOutput(*out, "the input", *in)
	if err != nil {
		return err
	}
	defer commit(false) // no-op once committed
	var old *clustertag.Model
	if *prev != "" {
		var err error
		if old, err = clustertag.LoadPrevious(*prev); err != nil {
			return fmt.Errorf("--previous: %w", err)
		}
	}
	start := time.Now()
	progress := func(format string, a ...any) {
		if !*quiet {
			fmt.Fprintf(stderr, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
		}
	}
	docs, err := clustertag.ReadFile(*in)
	if err != nil {
		return fmt.Errorf("reading prompts: %w", err)
	}
	if docs.Skipped > 0 {
		fmt.Fprintf(stderr, "cluster fit: %d of %s in %s %s\n", docs.Skipped, words.Count(docs.Skipped+len(docs.Docs), "record"), *in,
			map[bool]string{true: "has no prompt and was skipped", false: "have no prompt and were skipped"}[docs.Skipped == 1])
	}
	warnLongLines(stderr, "cluster fit", *in, docs)
	progress("read %d prompts from %s", len(docs.Docs), *in)
	prompts := make([]string, len(docs.Docs))
	for i, d := range docs.Docs {
		prompts[i] = d.Prompt
	}
	useEmb := docs.Embeddings
	switch *emb {
	case "auto":
	case "yes":
		if !docs.Embeddings {
			return fmt.Errorf("--embedding yes: not every prompt in %s has an embedding (field or column \"embedding\" with a float array)", *in)
		}
	case "no":
		useEmb = false
	default:
		return fmt.Errorf("--embedding %q: want auto, yes or no", *emb)
	}
	var m *clustertag.Model
	if useEmb {
		vecs := make([][]float32, len(docs.Docs))
		for i, d := range docs.Docs {
			vecs[i] = d.Embedding
		}
		progress("clustering the %d-dimensional prompt embeddings", len(vecs[0]))
		m, err = clustertag.FitEmbeddings(ctx, vecs, prompts, def, progress)
	} else {
		for i, p := range prompts {
			if p == "" {
				return fmt.Errorf("record %d of %s has an embedding but no prompt; use --embedding yes to cluster embeddings", i+1, *in)
			}
		}
		m, err = clustertag.Fit(ctx, prompts, def, progress)
	}
	if err != nil {
		return fmt.Errorf("fitting clusters on %s: %w", *in, err)
	}
	for _, w := range m.Warnings {
		fmt.Fprintf(stderr, "cluster fit: warning: %s\n", w)
	}
	if old != nil {
		lin, err := m.Carry(old, *minSim, *relabel)
		if err != nil {
			return fmt.Errorf("--previous %s: %w", *prev, err)
		}
		fmt.Fprintf(stderr, "cluster ids mapped onto %s (%s):\n", *prev, old.Version)
		for i, mt := range lin.Matches {
			c := m.Clusters[i]
			switch {
			case mt.Old >= 0 && *relabel && c.Label != mt.OldLabel:
				fmt.Fprintf(stderr, "  cluster %d %q keeps id %d, relabelled from %q (centroid similarity %.2f)\n", mt.ID, c.Label, mt.Old, mt.OldLabel, mt.Similarity)
			case mt.Old >= 0:
				fmt.Fprintf(stderr, "  cluster %d %q keeps id %d and its label (centroid similarity %.2f; top terms now %s)\n", mt.ID, c.Label, mt.Old, mt.Similarity, strings.Join(c.TopTerms, "/"))
			case mt.Similarity > 0 || mt.Nearest < 0:
				fmt.Fprintf(stderr, "  cluster %d %q is new (similarity %.2f to the old cluster it was paired with, below %.2f)\n", mt.ID, c.Label, mt.Similarity, *minSim)
			default: // more new clusters than old: paired with none
				fmt.Fprintf(stderr, "  cluster %d %q is new (%d old clusters went to more similar new ones; nearest old: %d %q, similarity %.2f)\n",
					mt.ID, c.Label, len(old.Clusters), mt.Nearest, oldLabel(old, mt.Nearest), mt.NearestSimilarity)
			}
		}
	}
	if err := m.Save(tmp); err != nil {
		return err
	}
	if err := commit(true); err != nil {
		return err
	}
	how := "k given"
	if m.Selection.Method != "fixed" {
		how = "k chosen by " + m.Selection.Method
	}
	fmt.Fprintf(stdout, "wrote %s: %s, %d clusters (%s space, %s), %d prompts\n", *out, m.Version, len(m.Clusters), m.Space, how, m.Fit.Prompts)
	if len(m.Selection.Scores) > 0 {
		ks := slices.Sorted(maps.Keys(m.Selection.Scores))
		var b strings.Builder
		for _, k := range ks {
			mark := ""
			if k == m.Selection.K {
				mark = "*"
			}
			fmt.Fprintf(&b, " %d:%.3f%s", k, m.Selection.Scores[k], mark)
		}
		what := m.Selection.Method
		if what == clustertag.CriterionStability {
			what += " (mean adjusted Rand index between restarts)"
		}
		fmt.Fprintf(stdout, "  %s per k:%s\n", what, b.String())
	}
	for _, c := range m.Clusters {
		fmt.Fprintf(stdout, "  %3d  %-40s %5d prompts  threshold %.3f\n", c.ID, c.Label, c.Size, c.Threshold)
	}
	return nil
}

func runClusterReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("cluster report", "--in PROMPTS --clusters clusters.json", stderr)
	in := fs.String("in", "", "prompts, in any format cluster fit reads; with a domain field/column, purity and adjusted Rand index are reported (required)")
	path := fs.String("clusters", "", "artifact written by entrowatch cluster fit (required)")
	examples := fs.Int("examples", 3, "example prompts shown per cluster")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *in == "" || *path == "" {
		fmt.Fprintln(stderr, "cluster report: --in and --clusters are required")
		fs.Usage()
		return errUsage
	}
	if *examples < 0 {
		return badFlag("--examples %d: want 0 or more", *examples)
	}
	m, err := clustertag.Load(*path)
	if err != nil {
		return err
	}
	docs, err := clustertag.ReadFile(*in)
	if err != nil {
		return fmt.Errorf("reading prompts: %w", err)
	}
	warnLongLines(stderr, "cluster report", *in, docs)
	if err := ctx.Err(); err != nil {
		return err
	}
	r, err := clustertag.Summarize(m, docs, *examples)
	if err != nil {
		return fmt.Errorf("%s with %s: %w", *in, *path, err)
	}
	return r.WriteText(stdout)
}

// warnLongLines says which lines of path were skipped for being longer than
// clustertag.MaxLineBytes.
func warnLongLines(stderr io.Writer, cmd, path string, docs *clustertag.Docs) {
	if len(docs.TooLong) == 0 {
		return
	}
	var lines []string
	for _, l := range docs.TooLong[:min(len(docs.TooLong), 5)] {
		lines = append(lines, strconv.Itoa(l))
	}
	if len(docs.TooLong) > 5 {
		lines = append(lines, "...")
	}
	fmt.Fprintf(stderr, "%s: warning: skipped %d line(s) of %s longer than %d MiB (line %s): a prompt that long is not a question to cluster; check the file\n",
		cmd, len(docs.TooLong), path, clustertag.MaxLineBytes>>20, strings.Join(lines, ", "))
}

// oldLabel is the label of the cluster with id in m.
func oldLabel(m *clustertag.Model, id int) string {
	for _, c := range m.Clusters {
		if c.ID == id {
			return c.Label
		}
	}
	return ""
}
