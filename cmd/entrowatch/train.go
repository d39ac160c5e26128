package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode"

	"golang.org/x/text/width"

	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/operators/estimate"
	"github.com/entrowatch/entrowatch/schemas"
)

const trainSynopsis = `--in LABELED --out estimator.json [--features a,b,..] [--family logreg|forest|mlp] [--calibration platt|isotonic|none] [--balance] [--model NAME] [--min-rows N] [--min-class N]
       [--ensemble N] [--recalibrate=false] [--screen N] [--offset] [--calibrate-on oof|train] [--hyper X] [--folds N] [--transfer=false]

Trains the estimator of P(correct) that entrowatch score --estimator and the
stream use: one model per LLM model in the table, plus a fallback for models
it has not seen (the pooled model; with a single LLM, that LLM's model). An
LLM with fewer labelled rows than --min-rows, or fewer than --min-class
correct or incorrect ones, gets no model of its own: the pooled fallback
scores its rows.
LABELED is a CSV (.gz ok) with columns model, domain, correct (1/0, true/false,
t/f or yes/no; empty = unlabelled, skipped) and the feature columns, as
entrowatch score writes for responses that carry a "correct" field, or scored
Arrow IPC. A header that names a column twice is refused. The report on
stdout gives, per model, out-of-fold AUROC, Brier and ECE, and per domain the
estimated and true accuracy, with the error to expect on a domain not trained
on.

By default (--ensemble 3) each model is the average of up to 3 single-feature
models on the best-separating candidate features, whatever --family says;
--ensemble 0 fits one model of the family on all kept features (as eval's
logreg_*, forest_* and mlp_* methods do).

Several tables (--in a,b or --in again) are read as one: to retrain, give the
first training table with the labels exported from production (entrowatch
labels export), which cover only the domains the labeling queue chose.

Examples:
  entrowatch score --in labelled.jsonl.gz --out labelled.csv
  entrowatch train --in labelled.csv --out estimator.json
  entrowatch train --in labelled.csv,prod.csv --out estimator.json
  entrowatch train --in plaut.csv.gz --out est.json --features confidence --model Llama-13b`

// runTrain fits one estimator per LLM model (plus a pooled fallback) and
// writes the estimator set.
func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := estimate.DefaultTrainConfig()
	fs := newFlags("train", trainSynopsis, stderr)
	var in pathList
	fs.Var(&in, "in", "labelled table: CSV (.gz ok) with columns model, domain, correct and the features, or scored Arrow IPC (required); several (a,b or --in again) are read as one: the first training table and the labels exported from production")
	out := fs.String("out", "", "estimator JSON to write (required)")
	feats := fs.String("features", "", "comma-separated candidate feature columns (default: the 11 profile features)")
	family := fs.String("family", def.Family, "model family: logreg, forest (gradient-boosted trees) or mlp")
	cal := fs.String("calibration", def.Calibration, "calibration map: isotonic, platt or none")
	balance := fs.Bool("balance", def.Balance, "weight the classes equally (off by default: it biases the accuracy estimate)")
	model := fs.String("model", "", "train only for this LLM model, with no fallback: other models' rows are rejected as unknown_model (default: one model per model value plus a fallback)")
	ensemble := fs.Int("ensemble", def.Ensemble, "average single-feature models on the N candidate features that best separate right from wrong within each training domain (0 = one model on the features kept by --screen)")
	screen := fs.Int("screen", def.Screen, "with --ensemble 0: keep the N best-separating candidate features (0 = keep all)")
	recal := fs.Bool("recalibrate", def.Recalibrate, "with --ensemble of 2 or more: map the members' average to P(correct) by isotonic regression on the training rows (false = the plain average, which shrinks toward the training accuracy when several features carry signal)")
	offset := fs.Bool("offset", def.Offset, "blend in a shifted probability feature when one of the features is a probability (e.g. confidence)")
	calOn := fs.String("calibrate-on", def.CalibrateOn, "fit the calibration on the final model's training scores (train) or on out-of-fold scores (oof) (default: train for logreg, oof for forest and mlp)")
	hyper := fs.Float64("hyper", 0, "fix the family's hyper-parameter (logreg C, forest depth, mlp alpha); 0 = choose by cross-validation")
	folds := fs.Int("folds", def.Folds, "cross-validation folds for hyper-parameters and calibration")
	minRows := fs.Int("min-rows", estimate.DefaultMinRows, "fewest labelled rows for an LLM's own model; LLMs with fewer are scored by the pooled fallback (1 = no minimum)")
	minClass := fs.Int("min-class", estimate.DefaultMinPerClass, "fewest correct and fewest incorrect rows for an LLM's own model; LLMs with fewer are scored by the pooled fallback (1 = no minimum)")
	transfer := fs.Bool("transfer", true, "measure the error to expect on new domains: refit once per training domain without it and estimate it (leave-one-domain-out)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := in.distinct(); err != nil {
		return err
	}
	if len(in) == 0 || *out == "" {
		fmt.Fprintln(stderr, "--in and --out are required")
		fs.Usage()
		return errUsage
	}
	if *minRows < 1 || *minClass < 1 {
		return badFlag("--min-rows %d, --min-class %d: want at least 1 (1 = no minimum)", *minRows, *minClass)
	}
	if *screen != 0 && *ensemble != 0 {
		return badFlag("--screen %d applies to one model (--ensemble 0); the ensemble (--ensemble %d) keeps its own best-screened features: drop --screen, or add --ensemble 0", *screen, *ensemble)
	}
	cfg := def
	cfg.Family, cfg.Calibration, cfg.Balance, cfg.Screen, cfg.Folds = *family, *cal, *balance, *screen, *folds
	cfg.Ensemble, cfg.Offset, cfg.CalibrateOn, cfg.Hyper, cfg.Recalibrate = *ensemble, *offset, *calOn, *hyper, *recal
	if err := cfg.Validate(); err != nil {
		return badFlag("%w", err)
	}
	tmp, commit, err := artifactOutput(*out, "an input table", in...)
	if err != nil {
		return err
	}
	defer commit(false) // no-op once committed
	tbl, err := estimate.ReadTables(in, featureList(*feats))
	if errors.Is(err, estimate.ErrMissingFeature) {
		return fmt.Errorf("%w (choose features with --features)", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "train: %d rows, %s, candidate features %s%s\n", tbl.N(), words.Count(len(tbl.Models()), "model"), strings.Join(tbl.Features, ","), skippedNote(tbl))
	tableNotes(stderr, "train", tbl)
	if cfg.Ensemble == 0 && cfg.Screen >= tbl.D() {
		fmt.Fprintf(stderr, "train: note: --screen %d is not below the %s: all are kept, none is screened out\n", cfg.Screen, words.Count(tbl.D(), "candidate feature"))
	}
	opts := estimate.TrainOptions{Transfer: *transfer, Progress: stderr, MinRows: *minRows, MinPerClass: *minClass}
	if *model != "" {
		if names := tbl.Models(); !slices.Contains(names, *model) {
			return fmt.Errorf("--model %q: no rows of that model in %s (models: %s)", *model, in.String(), strings.Join(names, ","))
		}
		opts.Models = []string{*model}
	}
	set, err := estimate.Train(ctx, tbl, cfg, opts)
	if ctx.Err() != nil {
		// Ctrl-C: the deferred commit(false) removes the partial file; an
		// earlier --out is left as it was.
		return fmt.Errorf("interrupted; no estimator written to %s", *out)
	}
	if err != nil {
		return err
	}
	if err := set.Save(tmp); err != nil {
		return fmt.Errorf("writing the estimator: %w", err)
	}
	if err := commit(true); err != nil {
		return err
	}
	printTrainReport(stdout, set, *transfer, *ensemble)
	printTrainNotes(stderr, set, cfg)
	if set.Fallback != "" {
		printLeftToFallback(stdout, tbl, set, opts)
		fmt.Fprintf(stdout, "models not in the table are estimated with %s\n", fallbackName(set.Fallback))
	}
	fmt.Fprintf(stdout, "wrote %s (version %s)\n", *out, set.Version)
	return nil
}

// maxQuietECE is the out-of-fold ECE above which train says the model's
// probabilities are not calibrated (the default's is 0.01-0.05 on tinylm).
const maxQuietECE = 0.08

// printTrainNotes says what a user may not expect of set: a model whose
// out-of-fold calibration error is large, an --offset that
// found no probability feature to apply to, and features the stream does
// not carry (the estimator then serves eval and experiments only).
func printTrainNotes(w io.Writer, set *estimate.Set, cfg estimate.TrainConfig) {
	if cfg.Offset {
		applied := false
		for _, m := range set.Models {
			applied = applied || m.Offset != nil
			for _, mm := range m.Members {
				applied = applied || mm.Offset != nil
			}
		}
		if !applied {
			fmt.Fprintln(w, "note: --offset applied to no model: no kept feature is a probability of being right (all values in [0,1], higher on correct rows)")
		}
	}
	for _, name := range sortedModelKeys(set) {
		// A domain's estimate is the mean p_correct of its rows: a model
		// whose probabilities are off by this much on average misstates
		// accuracy by about as much.
		if m := set.Models[name].Metrics; m.Unmeasured == "" && m.ECE > maxQuietECE {
			fmt.Fprintf(w, "note: model %s: out-of-fold ECE %.3f: its p_correct is off by about that much on average, and so are the accuracies estimated from it; "+
				"the default method (logreg+isotonic ensemble, recalibrated) is calibrated on its training rows\n", estimate.ModelName(name), m.ECE)
		}
	}
	var foreign []string
	for _, name := range sortedModelKeys(set) {
		for _, f := range set.Models[name].Features {
			if _, err := schemas.Index(schemas.Scored, f); err != nil && !slices.Contains(foreign, f) {
				foreign = append(foreign, f)
			}
		}
	}
	if len(foreign) > 0 {
		fmt.Fprintf(w, "note: features %s are not columns of scored responses (the 11 profile features and 7 baselines): "+
			"entrowatch score --estimator and run cannot use this estimator; it serves eval and your own code\n", strings.Join(foreign, ", "))
	}
}

func fallbackName(key string) string {
	if key == estimate.FallbackKey {
		return "the pooled model (*)"
	}
	return "model " + estimate.ModelName(key)
}

// printLeftToFallback lists the LLM models of the table that got no model
// of their own, and why.
func printLeftToFallback(w io.Writer, tbl *estimate.Table, set *estimate.Set, opts estimate.TrainOptions) {
	rows, pos := map[string]int{}, map[string]int{}
	for i, m := range tbl.Model {
		rows[m]++
		if tbl.Y[i] > 0.5 {
			pos[m]++
		}
	}
	for _, name := range tbl.Models() {
		if set.Models[name] != nil {
			continue
		}
		why := "no model of its own"
		var few *estimate.TooFewRowsError
		switch err := opts.CheckRows(rows[name], pos[name]); {
		case errors.Is(err, estimate.ErrOneClass):
			why = fmt.Sprintf("no model of its own: its %d rows are all of one class", rows[name])
		case errors.As(err, &few):
			var flags []string
			if few.RowsShort() {
				flags = append(flags, "--min-rows")
			}
			if few.ClassShort() {
				flags = append(flags, "--min-class")
			}
			why = fmt.Sprintf("no model of its own: %v (%s)", err, strings.Join(flags, ", "))
		}
		fmt.Fprintf(w, "model %s: %s; its rows are estimated with %s\n", estimate.ModelName(name), why, fallbackName(set.Fallback))
	}
}

// settingsText names a model's hyper-parameters as trained: the ensemble's
// size (and why it is smaller than asked), its members' C, class balancing.
func settingsText(m *estimate.Model, ensemble int) string {
	s := m.Hyper
	if n := len(m.Members); n > 0 {
		avail := len(m.Candidates) // the features screened, when some were left out
		if avail == 0 {
			avail = len(m.Features)
		}
		if c := min(ensemble, avail); c > n {
			s += fmt.Sprintf(" (of %d candidates: those whose signal is under half the strongest's are left out)", c)
		}
		if h := m.Members[0].Hyper; h != "" {
			s += ", " + h + " each"
		}
		if m.Recalibration != nil {
			s += ", average recalibrated"
		}
	}
	if m.Balance {
		s += ", classes balanced"
	}
	return s
}

// displayWidth is how many terminal columns s takes: East Asian wide and
// fullwidth characters (CJK, most emoji) two, combining marks none, others one.
func displayWidth(s string) int {
	n := 0
	for _, r := range s {
		switch {
		case unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r):
		case width.LookupRune(r).Kind() == width.EastAsianWide || width.LookupRune(r).Kind() == width.EastAsianFullwidth:
			n += 2
		default:
			n++
		}
	}
	return n
}

// padRight pads s with spaces to w terminal columns (displayWidth).
func padRight(s string, w int) string {
	return s + strings.Repeat(" ", max(0, w-displayWidth(s)))
}

// fewRows is the row count under which the report marks a domain: its true
// accuracy is uncertain by more than +-0.18.
const fewRows = 30

// minRowsOf is the fewest rows of a domain (1 at least).
func minRowsOf(ds []estimate.DomainMetric) int {
	n := math.MaxInt
	for _, d := range ds {
		n = min(n, d.Rows)
	}
	return max(n, 1)
}

// printTrainReport prints each model's report; transfer says whether the
// leave-one-domain-out figures were asked for, so that a model without them
// says why.
func printTrainReport(w io.Writer, set *estimate.Set, transfer bool, ensemble int) {
	for _, name := range sortedModelKeys(set) {
		m := set.Models[name]
		fmt.Fprintf(w, "model %s: %s+%s %s, features %s, %d rows (%.3f correct)\n", estimate.ModelName(name), m.Family, m.Calibration, settingsText(m, ensemble),
			strings.Join(m.Features, ","), m.Rows, float64(m.Positives)/float64(m.Rows))
		if why := m.Metrics.Unmeasured; why != "" {
			fmt.Fprintf(w, "  out-of-fold: AUROC n/a  Brier n/a  ECE n/a (%s)\n", why)
		} else {
			fmt.Fprintf(w, "  out-of-fold: AUROC %.3f  Brier %.4f  ECE %.4f\n", m.Metrics.AUROC, m.Metrics.Brier, m.Metrics.ECE)
		}
		tr := m.Metrics.Transfer
		held := map[string]float64{}
		width := 20 // the domain column, wider for longer names
		rows, truth := map[string]int{}, map[string]float64{}
		for _, d := range m.Metrics.Domains {
			width = max(width, displayWidth(d.Domain))
			rows[d.Domain], truth[d.Domain] = d.Rows, d.True
		}
		if tr != nil {
			for _, d := range tr.Domains {
				held[d.Domain] = d.Estimated
			}
			fmt.Fprintf(w, "  %-*s %7s %9s %6s %10s\n", width, "domain", "rows", "estimated", "true", "left out")
		} else {
			fmt.Fprintf(w, "  %-*s %7s %9s %6s\n", width, "domain", "rows", "estimated", "true")
		}
		few := 0
		for _, d := range m.Metrics.Domains {
			mark := " "
			if d.Rows < fewRows {
				mark, few = "*", few+1
			}
			if m.Metrics.Unmeasured != "" {
				fmt.Fprintf(w, "  %s %6d%s %9s %6.3f", padRight(d.Domain, width), d.Rows, mark, "n/a", d.True)
			} else {
				fmt.Fprintf(w, "  %s %6d%s %9.3f %6.3f", padRight(d.Domain, width), d.Rows, mark, d.Estimated, d.True)
			}
			if e, ok := held[d.Domain]; ok {
				fmt.Fprintf(w, " %10.3f", e)
			}
			fmt.Fprintln(w)
		}
		if few > 0 {
			fmt.Fprintf(w, "  * fewer than %d rows: the true accuracy itself is uncertain by up to +-%.2f (95%%), so read its errors with care\n",
				fewRows, 1.96*math.Sqrt(0.25/float64(minRowsOf(m.Metrics.Domains))))
		}
		switch {
		case tr != nil:
			worst := ""
			for _, d := range tr.Domains {
				if n, ok := rows[d.Domain]; ok && n < fewRows && math.Abs(math.Abs(d.Estimated-truth[d.Domain])-tr.MaxAE) < 1e-12 {
					worst = fmt.Sprintf(", on %s of %d rows", d.Domain, n)
				}
			}
			fmt.Fprintf(w, "  on a domain not trained on, expect an error of about %.3f (leave-one-domain-out mean |estimated - true|, max %.3f%s)\n", tr.AEE, tr.MaxAE, worst)
			if len(tr.Skipped) > 0 {
				fmt.Fprintf(w, "  not left out (the other domains have one class only): %s\n", strings.Join(tr.Skipped, ","))
			}
		case !transfer:
		case len(m.TrainDomains) < 2:
			fmt.Fprintf(w, "  no error to expect on a domain not trained on: it was trained on one domain, and leaving one out needs two or more\n")
		default:
			fmt.Fprintf(w, "  no error to expect on a domain not trained on: leaving out any one domain leaves rows of one class only, nothing to fit\n")
		}
	}
}

func sortedModelKeys(set *estimate.Set) []string {
	var ks []string
	for k := range set.Models {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}
