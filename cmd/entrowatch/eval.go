package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/operators/estimate"
)

const evalSynopsis = `--in LABELED --report DIR [--features a,b,..] [--k 1,2,3] [--methods m1,m2,..|all] [--workers N] [--max-training-sets N]

Measures how well each method estimates a domain's accuracy on domains it was
not trained on (the Entropy Sentinel protocol): for every LLM model and every
training set of k domains, fit on those domains and estimate every domain.
AEE is the mean |estimated - true accuracy| over the held-out domains, rho the
Spearman correlation of estimated and true accuracy over all domains. The
table printed at the end gives each method's median over all training sets;
DIR gets results.csv (one row per model, training set and method),
summary.md (medians per method, k and model), feature_auroc.csv and SVG plots.
"default" is the method entrowatch train uses. The training sets are counted
first: a model with more than --max-training-sets of them is refused (every k
of 24 domains is 16.8 million sets; k = 1..3 of 57 is 30,913).

Examples:
  entrowatch eval --in profiles.csv --report eval-report
  entrowatch eval --in plaut.csv.gz --report r --features confidence --k 1..3`

// runEval runs the leave-domains-out protocol and writes a report directory.
func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlags("eval", evalSynopsis, stderr)
	var in pathList
	fs.Var(&in, "in", "labelled table: CSV (.gz ok) with columns model, domain, correct and the features, or scored Arrow IPC (required); several (a,b or --in again) are read as one")
	dir := fs.String("report", "", "directory for results.csv, summary.md, feature_auroc.csv and the SVG plots (required)")
	feats := fs.String("features", "", "comma-separated feature columns; the first one drives ATC and raw_mean (default: the 11 profile features)")
	ks := fs.String("k", "", "training-set sizes in domains: a list (1,2,3) or a range (1..3) (default 1..n-1 per model)")
	methods := fs.String("methods", "", "comma-separated methods, or \"all\" (default: "+strings.Join(estimate.DefaultMethods(), ",")+"; forest_* and mlp_* are slower)")
	workers := fs.Int("workers", 0, "training sets fitted in parallel (default: GOMAXPROCS; at most 4 per CPU and one per training set)")
	maxSets := fs.Int("max-training-sets", estimate.DefaultMaxTrainingSets, "refuse a model with more training sets than this (the sum over k of C(domains, k))")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := in.distinct(); err != nil {
		return err
	}
	if len(in) == 0 || *dir == "" {
		fmt.Fprintln(stderr, "--in and --report are required")
		fs.Usage()
		return errUsage
	}
	if *workers < 0 {
		return badFlag("--workers %d: want a positive number (0 = GOMAXPROCS)", *workers)
	}
	if *maxSets < 1 {
		return badFlag("--max-training-sets %d: want a positive number", *maxSets)
	}
	cfg := estimate.EvalConfig{Workers: *workers, Progress: stderr, MaxTrainingSets: *maxSets}
	if err := estimate.CheckMethodNames(featureList(*methods)); err != nil {
		return badFlag("--methods %s: %w", *methods, err)
	}
	var kl []int
	if *ks != "" {
		var err error
		if kl, err = parseKs(*ks); err != nil {
			return badFlag("%w", err)
		}
	}
	created, err := reportDirWritable(*dir)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && created {
			os.Remove(*dir) // only if still empty: a failed run leaves no empty report directory
		}
	}()
	features := featureList(*feats)
	tbl, err := estimate.ReadTables(in, features)
	if errors.Is(err, estimate.ErrMissingFeature) {
		return fmt.Errorf("%w (choose features with --features)", err)
	}
	if err != nil {
		return err
	}
	var plus []string
	for _, d := range tbl.Domains() {
		if strings.Contains(d, "+") {
			plus = append(plus, strconv.Quote(d))
		}
	}
	if len(plus) > 0 {
		fmt.Fprintf(stderr, "eval: warning: domain names with a + (%s) make results.csv's train_domains ambiguous: it joins a training set's domains with +\n", strings.Join(plus, ", "))
	}
	cfg.Methods = featureList(*methods)
	fmt.Fprintf(stderr, "eval: %d rows, %s, features %s%s\n", tbl.N(), words.Count(len(tbl.Models()), "model"), strings.Join(tbl.Features, ","), skippedNote(tbl))
	tableNotes(stderr, "eval", tbl)
	if kl != nil {
		var note string
		if cfg.Ks, note, err = estimate.KsFor(tbl, kl); err != nil {
			return fmt.Errorf("--k %s: %w", *ks, err)
		}
		if note != "" {
			fmt.Fprintf(stderr, "eval: --k %s: %s\n", *ks, note)
		}
	}
	rep, err := estimate.Evaluate(ctx, tbl, cfg)
	var tooMany *estimate.TooManyTrainingSetsError
	var stopped *estimate.InterruptedError
	switch {
	case errors.As(err, &tooMany):
		msg := fmt.Sprintf("model %s has %s training sets (k = %s of its %d domains), more than --max-training-sets %d allows", tooMany.Model, tooMany.Sets, tooMany.Ks, tooMany.Domains, tooMany.Limit)
		if tooMany.SuggestK > 0 {
			msg += fmt.Sprintf("; use --k 1..%d (%s for this model", tooMany.SuggestK, words.Count(int(tooMany.SuggestSets), "training set"))
			if tooMany.SuggestK == 3 {
				msg += ", the paper's protocol"
			}
			msg += "), or raise --max-training-sets"
		} else {
			msg += "; pass a smaller --k or raise --max-training-sets"
		}
		return errors.New(msg)
	case errors.As(err, &stopped):
		return fmt.Errorf("%v; no report written", stopped)
	case err != nil:
		return err
	}
	if len(rep.NotApplicable) > 0 {
		fmt.Fprintf(stderr, "eval: methods left out, not applicable to these features: %s\n", strings.Join(rep.NotApplicable, "; "))
	}
	if len(rep.SkippedK) > 0 {
		fmt.Fprintf(stderr, "eval: skipped, k not below the model's domain count: %s\n", strings.Join(rep.SkippedK, "; "))
	}
	if n := len(rep.SingleClass); n > 0 {
		list := rep.SingleClass[:min(n, 10)]
		more := ""
		if n > len(list) {
			more = fmt.Sprintf(", and %d more (all in summary.md)", n-len(list))
		}
		fmt.Fprintf(stderr, "eval: %s left out, their rows all correct or all wrong (nothing to fit): %s%s\n", words.Count(n, "training set"), strings.Join(list, "; "), more)
	}
	for _, m := range slices.Sorted(maps.Keys(rep.Unevaluated)) {
		fmt.Fprintf(stderr, "eval: model %s not evaluated: %s\n", m, rep.Unevaluated[m])
	}
	if len(rep.Results) == 0 {
		return fmt.Errorf("%s: no training set had both correct and incorrect rows, or every model has a single domain: nothing to evaluate", in.String())
	}
	if err := estimate.WriteReport(*dir, rep); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	med := estimate.Medians(rep, nil)
	fmt.Fprintf(stdout, "median over %d training sets, AEE on held-out domains (lower is better):\n", trainingSets(rep))
	ranked := estimate.Ranked(med)
	width := 22 // wider for long method names (screen3_isotonic_train_offset)
	for _, m := range ranked {
		width = max(width, len(m))
	}
	fmt.Fprintf(stdout, "%-*s %7s %7s\n", width, "method", "AEE", "rho")
	for _, m := range ranked {
		fmt.Fprintf(stdout, "%-*s %7s %7s\n", width, m, estimate.F3(med[m][0]), estimate.F3(med[m][1]))
	}
	fmt.Fprintf(stdout, "%d fits in %s; report in %s\n", rep.Fits, rep.Wall.Round(1e7), *dir)
	return nil
}

// maxK caps the ranges of --k: "1..100000000" is read as 1..100000 (then
// estimate.KsFor cuts it at the table's domain count), not a list of 10^8.
// A larger k needs a model with more than 100,000 domains, hence at least as
// many training sets: twice the default --max-training-sets.
const maxK = 100000

// parseKs reads --k: numbers and ranges separated by commas ("1,2,3",
// "1..3", "1-3", "1..2,4"), sorted, each once; a range ends at maxK at most.
func parseKs(s string) ([]int, error) {
	bad := fmt.Errorf("--k %q: want positive integers or ranges separated by commas, e.g. 1,2,3 or 1..3", s)
	var ks []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "..")
		if !isRange {
			lo, hi, isRange = strings.Cut(part, "-")
		}
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		if err != nil || a < 1 {
			return nil, bad
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil || b < a {
				return nil, bad
			}
		}
		// Stop at the end rather than after it: k++ past math.MaxInt
		// wraps, and "--k 9223372036854775807" looped until memory ran out.
		for k, end := a, min(b, max(a, maxK)); ; k++ {
			ks = append(ks, k)
			if k >= end {
				break
			}
		}
	}
	slices.Sort(ks)
	return slices.Compact(ks), nil
}

// reportDirWritable creates dir (or checks that it is a directory) and
// proves it writable before minutes of fitting, not after. created says it
// did not exist.
func reportDirWritable(dir string) (created bool, err error) {
	st, err := os.Stat(dir)
	if err == nil && !st.IsDir() {
		return false, fmt.Errorf("--report %s is a file; give a directory (it is created if missing)", dir)
	}
	created = errors.Is(err, fs.ErrNotExist)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("--report: %w", err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return created, fmt.Errorf("--report %s is not writable: %w", dir, err)
	}
	f.Close()
	return created, os.Remove(f.Name())
}

// trainingSets counts the distinct (model, training set) pairs evaluated.
func trainingSets(rep *estimate.Report) int {
	seen := map[string]bool{}
	for _, r := range rep.Results {
		seen[r.Model+"\x00"+strings.Join(r.TrainDomains, ",")] = true
	}
	return len(seen)
}

// pathList is a flag of one or more input files, given again or
// comma-separated; a value that names an existing file is that one file,
// commas and all.
type pathList []string

func (p *pathList) String() string { return strings.Join(*p, ",") }

func (p *pathList) Set(s string) error {
	if _, err := os.Stat(s); err == nil || !strings.Contains(s, ",") {
		*p = append(*p, s)
		return nil
	}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*p = append(*p, f)
		}
	}
	return nil
}

// distinct refuses a file given twice: its rows would count twice.
func (p pathList) distinct() error {
	for i, a := range p {
		for _, b := range p[:i] {
			if a == b || sameFile(a, b) {
				return badFlag("--in: %s is given twice; its rows would count twice", a)
			}
		}
	}
	return nil
}

// tableNotes writes what a person should know about how the labelled
// rows were read (estimate.Table.Notes), as "cmd: note: ..." lines.
func tableNotes(w io.Writer, cmd string, t *estimate.Table) {
	for _, n := range t.Notes() {
		fmt.Fprintf(w, "%s: note: %s\n", cmd, n)
	}
}

func featureList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func skippedNote(t *estimate.Table) string {
	s := ""
	if len(t.Skipped) > 0 {
		s = " (skipped: " + estimate.SkippedText(t.Skipped) + ")"
	}
	if t.Unterminated {
		s += "; warning: the Arrow stream ends without its end-of-stream marker, as a file cut short between two batches does: if it was copied or written by a process that did not finish, rows are missing"
	}
	return s
}
