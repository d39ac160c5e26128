package estimate

import (
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// WriteReport writes results.csv, summary.md, feature_auroc.csv,
// estimates.svg and reliability.svg into dir (created if needed).
func WriteReport(dir string, rep *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeResults(filepath.Join(dir, "results.csv"), rep); err != nil {
		return err
	}
	if err := writeFeatureAUC(filepath.Join(dir, "feature_auroc.csv"), rep); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.md"), []byte(Summary(rep)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "estimates.svg"), []byte(estimatesSVG(rep)), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "reliability.svg"), []byte(reliabilitySVG(rep)), 0o644)
}

func fmtF(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(v, 'f', 6, 64)
}

func writeResults(path string, rep *Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"model", "k", "train_domains", "method", "aee", "rho"})
	for _, r := range rep.Results {
		w.Write([]string{r.Model, strconv.Itoa(r.K), strings.Join(r.TrainDomains, "+"), r.Method, fmtF(r.AEE), fmtF(r.Rho)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeFeatureAUC(path string, rep *Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"model", "domain", "feature", "rows", "auroc"})
	for _, a := range rep.FeatureAUC {
		w.Write([]string{a.Model, a.Domain, a.Feature, strconv.Itoa(a.Rows), fmtF(a.AUROC)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// median ignores NaN; NaN when nothing is left.
func median(v []float64) float64 {
	var s []float64
	for _, x := range v {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Medians returns the median AEE and rho of each method over all results
// matching keep.
func Medians(rep *Report, keep func(Result) bool) map[string][2]float64 {
	aee, rho := map[string][]float64{}, map[string][]float64{}
	for _, r := range rep.Results {
		if keep != nil && !keep(r) {
			continue
		}
		aee[r.Method] = append(aee[r.Method], r.AEE)
		rho[r.Method] = append(rho[r.Method], r.Rho)
	}
	out := map[string][2]float64{}
	for m := range aee {
		out[m] = [2]float64{median(aee[m]), median(rho[m])}
	}
	return out
}

func methodOrder(rep *Report) []string { return Ranked(Medians(rep, nil)) }

// Ranked orders the methods of med (as Medians returns) by median AEE, best
// first; ties by name, a NaN AEE last. summary.md and eval's table use it,
// so both list tied methods alike.
func Ranked(med map[string][2]float64) []string {
	ms := sortedKeys(med)
	sort.SliceStable(ms, func(a, b int) bool {
		x, y := med[ms[a]][0], med[ms[b]][0]
		return x < y || (!math.IsNaN(x) && math.IsNaN(y))
	})
	return ms
}

// mdCell makes s safe inside a markdown table cell: a "|" would end the cell
// and a line break the row.
func mdCell(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, "|", `\|`)
	// A name like "<b>&amp;" is text, not HTML, when the file is rendered.
	s = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
	return strings.Join(strings.Fields(s), " ")
}

// pairCell writes "AEE (rho)", or "n/a" when the method has no result there.
func pairCell(v [2]float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return F3(v[0]) + " (" + F3(v[1]) + ")"
}

// F3 writes v with 3 decimals, or "n/a" for NaN (a rho over domains of
// equal estimates, for one), as summary.md and eval's table print it.
func F3(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// Summary renders the markdown summary.
func Summary(rep *Report) string {
	var b strings.Builder
	ms := methodOrder(rep)
	models := sortedKeys(rep.True)
	ks := map[int]bool{}
	for _, r := range rep.Results {
		ks[r.K] = true
	}
	var kl []int
	for k := range ks {
		kl = append(kl, k)
	}
	sort.Ints(kl)
	fmt.Fprintf(&b, "# entrowatch eval\n\nLeave-domains-out: for each model and each training set of k domains, fit on those domains and estimate every domain's accuracy; AEE = mean |estimated - true| over the held-out domains, rho = Spearman(estimated, true) over all domains. Medians over training sets.\n\n")
	fmt.Fprintf(&b, "Features: %s. Models: %d. Training sets x methods: %d fits in %s.\n\n", strings.Join(rep.Features, ","), len(models), rep.Fits, rep.Wall.Round(1e7))
	fmt.Fprintf(&b, "`%s` is the method `entrowatch train` uses by default; `sk_*` reproduce the scikit-learn reference (ref-eval.py).\n\n", DefaultName)
	if len(rep.NotApplicable) > 0 {
		b.WriteString("Methods left out, not applicable to these features:\n\n")
		for _, n := range rep.NotApplicable {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	if len(rep.Unevaluated) > 0 {
		b.WriteString("Models not evaluated (n/a below):\n\n")
		for _, mo := range sortedKeys(rep.Unevaluated) {
			fmt.Fprintf(&b, "- %s: %s\n", mo, rep.Unevaluated[mo])
		}
		b.WriteString("\n")
	}
	if len(rep.SkippedK) > 0 {
		fmt.Fprintf(&b, "k skipped, not below the model's domain count: %s.\n\n", strings.Join(rep.SkippedK, "; "))
	}
	if len(rep.SingleClass) > 0 {
		fmt.Fprintf(&b, "Training sets left out, their rows all correct or all wrong (no estimator can be fitted on one class; the medians are over the others): %d.\n\n", len(rep.SingleClass))
		for _, s := range rep.SingleClass {
			fmt.Fprintf(&b, "- %s\n", mdCell(s))
		}
		b.WriteString("\n")
	}
	b.WriteString("## Median AEE and rho per method\n\n| method | AEE | rho |\n|---|---|---|\n")
	all := Medians(rep, nil)
	for _, m := range ms {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", mdCell(m), F3(all[m][0]), F3(all[m][1]))
	}
	b.WriteString("\n## Median AEE (rho) per k\n\n| method |")
	for _, k := range kl {
		fmt.Fprintf(&b, " k=%d |", k)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(kl)) + "\n")
	perK := map[int]map[string][2]float64{}
	for _, k := range kl {
		perK[k] = Medians(rep, func(r Result) bool { return r.K == k })
	}
	for _, m := range ms {
		fmt.Fprintf(&b, "| %s |", mdCell(m))
		for _, k := range kl {
			v, ok := perK[k][m]
			fmt.Fprintf(&b, " %s |", pairCell(v, ok))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n## Median AEE (rho) per model\n\n| method |")
	for _, mo := range models {
		fmt.Fprintf(&b, " %s |", mdCell(mo))
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(models)) + "\n")
	perM := map[string]map[string][2]float64{}
	for _, mo := range models {
		perM[mo] = Medians(rep, func(r Result) bool { return r.Model == mo })
	}
	for _, m := range ms {
		fmt.Fprintf(&b, "| %s |", mdCell(m))
		for _, mo := range models {
			v, ok := perM[mo][m]
			fmt.Fprintf(&b, " %s |", pairCell(v, ok))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n## Accuracy per model and domain\n\n| model | domain | rows | accuracy |\n|---|---|---|---|\n")
	for _, mo := range models {
		for _, d := range sortedKeys(rep.True[mo]) {
			fmt.Fprintf(&b, "| %s | %s | %d | %s |\n", mdCell(mo), mdCell(d), rep.Rows[mo][d], F3(rep.True[mo][d]))
		}
	}
	b.WriteString("\n## Feature AUROC for predicting correctness, per model and domain\n\n")
	b.WriteString("0.5 = no signal; below 0.5 the feature is higher on wrong answers (entropy-like). Full table: feature_auroc.csv.\n\n| model | domain |")
	for _, f := range rep.Features {
		fmt.Fprintf(&b, " %s |", mdCell(f))
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", len(rep.Features)) + "\n")
	for i := 0; i < len(rep.FeatureAUC); i += len(rep.Features) {
		a := rep.FeatureAUC[i]
		fmt.Fprintf(&b, "| %s | %s |", mdCell(a.Model), mdCell(a.Domain))
		for _, x := range rep.FeatureAUC[i : i+len(rep.Features)] {
			fmt.Fprintf(&b, " %s |", F3(x.AUROC))
		}
		b.WriteString("\n")
	}
	b.WriteString("\nPlots: estimates.svg (estimated vs true accuracy per held-out domain), reliability.svg (held-out reliability diagram).\n")
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
