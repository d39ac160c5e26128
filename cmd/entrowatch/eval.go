package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/entrowatch/entrowatch/operators/estimate"
)

// runEval runs the leave-domains-out protocol and writes a report directory.
func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "--in LABELED --report DIR [--features a,b,..] [--k 1,2,3] [--methods m1,m2,..]", stderr)
	in := fs.String("in", "", "labelled table: CSV (.gz ok) with columns model, domain, correct and the features, or scored Arrow IPC (required)")
	dir := fs.String("report", "", "directory for results.csv, summary.md, feature_auroc.csv and the SVG plots (required)")
	feats := fs.String("features", "", "comma-separated feature columns; the first one drives ATC and raw_mean (default: the 11 profile features)")
	ks := fs.String("k", "", "comma-separated training-set sizes in domains (default 1..n-1 per model)")
	methods := fs.String("methods", "", "comma-separated methods, or \"all\" (default: "+strings.Join(estimate.DefaultMethods(), ",")+"; forest_* and mlp_* are slower)")
	workers := fs.Int("workers", 0, "training sets fitted in parallel (default: GOMAXPROCS)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *in == "" || *dir == "" {
		fmt.Fprintln(stderr, "--in and --report are required")
		fs.Usage()
		return errUsage
	}
	cfg := estimate.EvalConfig{Workers: *workers, Progress: stderr}
	if *ks != "" {
		for _, s := range strings.Split(*ks, ",") {
			k, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || k < 1 {
				return fmt.Errorf("--k %q: want positive integers separated by commas, e.g. 1,2,3", *ks)
			}
			cfg.Ks = append(cfg.Ks, k)
		}
	}
	features := featureList(*feats)
	tbl, err := estimate.ReadTable(*in, features)
	if err != nil {
		return err
	}
	if *methods == "all" {
		for _, m := range estimate.Methods(tbl.Features, true) {
			cfg.Methods = append(cfg.Methods, m.Name)
		}
		cfg.Methods = dropRawMean(cfg.Methods, tbl)
	} else {
		cfg.Methods = featureList(*methods)
	}
	fmt.Fprintf(stderr, "eval: %d rows, %d models, features %s%s\n", tbl.N(), len(tbl.Models()), strings.Join(tbl.Features, ","), skippedNote(tbl))
	rep, err := estimate.Evaluate(ctx, tbl, cfg)
	if err != nil {
		return err
	}
	if len(rep.SkippedK) > 0 {
		fmt.Fprintf(stderr, "eval: skipped, k not below the model's domain count: %s\n", strings.Join(rep.SkippedK, "; "))
	}
	if len(rep.Results) == 0 {
		return fmt.Errorf("%s: no training set had both correct and incorrect rows, or every model has a single domain: nothing to evaluate", *in)
	}
	if err := estimate.WriteReport(*dir, rep); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	med := estimate.Medians(rep, nil)
	fmt.Fprintf(stdout, "%-22s %7s %7s\n", "method", "AEE", "rho")
	for _, m := range sortedByAEE(med) {
		fmt.Fprintf(stdout, "%-22s %7.3f %7.3f\n", m, med[m][0], med[m][1])
	}
	fmt.Fprintf(stdout, "%d fits in %s; report in %s\n", rep.Fits, rep.Wall.Round(1e7), *dir)
	return nil
}

func dropRawMean(ms []string, t *estimate.Table) []string {
	if estimate.FirstIsProbability(t) {
		return ms
	}
	out := ms[:0]
	for _, m := range ms {
		if m != "raw_mean" {
			out = append(out, m)
		}
	}
	return out
}

func sortedByAEE(med map[string][2]float64) []string {
	var ms []string
	for m := range med {
		ms = append(ms, m)
	}
	for i := range ms {
		for j := i + 1; j < len(ms); j++ {
			if med[ms[j]][0] < med[ms[i]][0] || (med[ms[j]][0] == med[ms[i]][0] && ms[j] < ms[i]) {
				ms[i], ms[j] = ms[j], ms[i]
			}
		}
	}
	return ms
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
	if len(t.Skipped) == 0 {
		return ""
	}
	var parts []string
	for k, v := range t.Skipped {
		parts = append(parts, fmt.Sprintf("%d %s", v, k))
	}
	return " (skipped: " + strings.Join(parts, ", ") + ")"
}
