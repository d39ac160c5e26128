package estimate

import (
	"fmt"
	"hash/fnv"
	"html"
	"math"
	"sort"
	"strings"
)

// methodColor is a fixed function of the method's name, so a method keeps its
// colour from one report to the next whatever the ranking.
func methodColor(m string) string {
	switch m {
	case DefaultName:
		return "#d62728"
	case "sk_isotonic":
		return "#1f77b4"
	case "sk_platt":
		return "#2ca02c"
	}
	others := []string{"#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"}
	h := fnv.New32a()
	h.Write([]byte(m))
	return others[h.Sum32()%uint32(len(others))]
}

// plotted picks the methods drawn, in a fixed order (the first is drawn on
// top): the default and the two scikit-learn references, or else the three
// best methods.
func plotted(rep *Report) []string {
	med := Medians(rep, nil)
	var out []string
	for _, m := range []string{DefaultName, "sk_isotonic", "sk_platt"} {
		if _, ok := med[m]; ok {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		for _, m := range methodOrder(rep) {
			if len(out) < 3 {
				out = append(out, m)
			}
		}
	}
	return out
}

// legendNames labels each plotted method, saying which ones are drawn exactly
// under an earlier one, which would otherwise look missing (same(a, b)
// reports identical plotted values).
func legendNames(ms []string, same func(a, b string) bool) []string {
	out := make([]string, len(ms))
	for k, m := range ms {
		out[k] = m
		for _, above := range ms[:k] {
			if same(m, above) {
				out[k] = m + " (same as " + above + ")"
				break
			}
		}
	}
	return out
}

// sameHeldOut reports whether methods a and b have the same held-out
// estimate for every model and domain (and at least one).
func sameHeldOut(rep *Report, a, b string) bool {
	n := 0
	for _, byMethod := range rep.HeldOut {
		ea, eb := byMethod[a], byMethod[b]
		if len(ea) != len(eb) {
			return false
		}
		for d, v := range ea {
			w, ok := eb[d]
			if !ok || math.Abs(v-w) > 1e-9 {
				return false
			}
			n++
		}
	}
	return n > 0
}

// sameReliability reports whether methods a and b fall in the same bins with
// the same means.
func sameReliability(rep *Report, a, b string) bool {
	ra, rb := rep.Reliability[a], rep.Reliability[b]
	if ra == nil || rb == nil {
		return false
	}
	for i := range ra.Count {
		if ra.Count[i] != rb.Count[i] || math.Abs(ra.SumP[i]-rb.SumP[i]) > 1e-9*max(1, ra.Count[i]) || ra.SumY[i] != rb.SumY[i] {
			return false
		}
	}
	return true
}

// charWidths holds the advance widths, in em, of the printable ASCII
// characters (from ' ' to '~') in DejaVu Sans, the sans-serif of Linux
// renderers and the widest of the common ones (Arial, Helvetica and Liberation
// Sans are narrower), rounded up to the hundredth: narrow i l . , ' | ;
// (0.28 to 0.34), lower case mostly 0.55 to 0.64, digits 0.64, capitals 0.56
// to 0.79 (I and J 0.30), and the wide m, w, M, W (0.98, 0.82, 0.87, 0.99).
var charWidths = [95]float64{
	0.32, 0.41, 0.46, 0.84, 0.64, 0.96, 0.78, 0.28, 0.40, 0.40, 0.50, 0.84, 0.32, 0.37, 0.32, 0.34, //  !"#$%&'()*+,-./
	0.64, 0.64, 0.64, 0.64, 0.64, 0.64, 0.64, 0.64, 0.64, 0.64, 0.34, 0.34, 0.84, 0.84, 0.84, 0.54, // 0-9 :;<=>?
	1.00, 0.69, 0.69, 0.70, 0.78, 0.64, 0.58, 0.78, 0.76, 0.30, 0.30, 0.66, 0.56, 0.87, 0.75, 0.79, // @A-O
	0.61, 0.79, 0.70, 0.64, 0.62, 0.74, 0.69, 0.99, 0.69, 0.62, 0.69, 0.40, 0.34, 0.40, 0.84, 0.50, // P-Z [\]^_
	0.50, 0.62, 0.64, 0.55, 0.64, 0.62, 0.36, 0.64, 0.64, 0.28, 0.28, 0.58, 0.28, 0.98, 0.64, 0.62, // `a-o
	0.64, 0.64, 0.42, 0.53, 0.40, 0.64, 0.60, 0.82, 0.60, 0.60, 0.53, 0.64, 0.34, 0.64, 0.84, // p-z {|}~
}

// textWidth estimates the width of s in pixels at font size px (sans-serif).
// It errs on the wide side: the width of each character from charWidths (1 em
// outside printable ASCII, as wide as a CJK character), plus 3%.
func textWidth(s string, px float64) float64 {
	em := 0.0
	for _, r := range s {
		if r >= ' ' && r <= '~' {
			em += charWidths[r-' ']
		} else {
			em++
		}
	}
	return 1.03 * em * px
}

// pointLabel is a text label for the point (x, y).
type pointLabel struct {
	x, y   float64 // the point
	tx, ty float64 // text anchor and baseline
	end    bool    // text-anchor="end" (the label sits left of the point)
	text   string
}

func (l pointLabel) span(fs float64) (float64, float64) {
	w := textWidth(l.text, fs)
	if l.end {
		return l.tx - w, l.tx
	}
	return l.tx, l.tx + w
}

// labelBox is the area labels must stay in (a panel, inset): their text
// between left and right, their baselines between top+fs-1 and bottom.
type labelBox struct{ left, right, top, bottom float64 }

// A label's text reaches fs-1 above its baseline (ascenders are 0.76 em) and
// fs/4 below it (descenders and the underscore, 0.24 em); labels on lines
// fs+1 apart do not meet.
const (
	dotRadius = 4.0  // of the plotted points
	labelGap  = 3.0  // the least space between two labels on one line
	dotGap    = 1.0  // the least space between a label and a dot beside or under it
	tolerance = 1e-6 // floating-point slack: labels exactly fs+1 apart do not overlap
)

// labelRoom is the side of a square panel that holds n labels of font size
// fs stacked in one column, never less than least: the panel estimatesSVG
// starts from (it grows when dots leave too little room).
func labelRoom(n int, fs, least float64) float64 {
	return max(least, float64(n)*(fs+1)+fs+8)
}

// placeLabels is placeLabelsOK without its verdict.
func placeLabels(ls []pointLabel, dots [][2]float64, box labelBox, fs float64) []pointLabel {
	out, _ := placeLabelsOK(ls, dots, box, fs)
	return out
}

// placeLabelsOK puts each label beside its point: right of it unless that
// passes box.right, then left of it, then flush with the box's right or left
// edge, and at the baseline nearest to 5 px above the point (below on a
// tie) where the label is inside box and meets neither a label already placed
// (lines of height fs+1 that come within labelGap of each other) nor a dot
// (circles of radius dotRadius, kept dotGap away at the side). Labels are
// placed from the top down; each takes the first side with such a place. ok
// is false when some label had none on any side: it is then put where it
// meets no other label, dots allowed, or failing that at its first side's
// wanted baseline; a bigger box (labelRoom, and more when dots crowd) gives
// every label a place.
func placeLabelsOK(ls []pointLabel, dots [][2]float64, box labelBox, fs float64) ([]pointLabel, bool) {
	top := box.top + fs - 1 // the highest baseline that keeps the text inside
	want := func(l pointLabel) float64 { return max(top, min(box.bottom, l.y-5)) }
	sort.SliceStable(ls, func(a, b int) bool { return want(ls[a]) < want(ls[b]) })
	ok := true
	for i := range ls {
		l := &ls[i]
		w := textWidth(l.text, fs)
		type side struct {
			tx  float64
			end bool
		}
		var sides []side
		if l.x+5+w <= box.right {
			sides = append(sides, side{l.x + 5, false})
		}
		if l.x-5-w >= box.left {
			sides = append(sides, side{l.x - 5, true})
		}
		sides = append(sides, side{max(box.left, box.right-w), false})
		if box.left+w <= box.right && box.left != box.right-w {
			sides = append(sides, side{box.left, false})
		}
		if w > box.right-box.left {
			ok = false // it cannot fit, wherever it goes
		}
		placed := false
		for _, withDots := range []bool{true, false} {
			for _, s := range sides {
				l.tx, l.end = s.tx, s.end
				if ty, found := freeBaseline(ls[:i], *l, dots, withDots, want(*l), top, box.bottom, fs); found {
					l.ty, placed = ty, true
					break
				}
			}
			if placed {
				break
			}
			ok = false
		}
		if !placed {
			l.tx, l.end, l.ty = sides[0].tx, sides[0].end, want(*l)
		}
	}
	return ls, ok
}

// freeBaseline returns the baseline between lo and hi nearest to want (the
// lower one on a tie) at which l, at its anchor l.tx, meets none of the
// labels placed and, when withDots, none of dots; found is false when there
// is none.
func freeBaseline(placed []pointLabel, l pointLabel, dots [][2]float64, withDots bool, want, lo, hi, fs float64) (ty float64, found bool) {
	if lo > hi {
		return 0, false
	}
	h := fs + 1
	a0, a1 := l.span(fs)
	// The baselines each obstacle rules out, open intervals.
	var blocked [][2]float64
	for _, p := range placed {
		b0, b1 := p.span(fs)
		if a0 < b1+labelGap-tolerance && b0 < a1+labelGap-tolerance {
			blocked = append(blocked, [2]float64{p.ty - h, p.ty + h})
		}
	}
	if withDots {
		for _, d := range dots {
			if a0 < d[0]+dotRadius+dotGap-tolerance && d[0]-dotRadius-dotGap < a1-tolerance {
				blocked = append(blocked, [2]float64{d[1] - dotRadius - dotGap - fs/4, d[1] + dotRadius + fs - 1})
			}
		}
	}
	sort.Slice(blocked, func(i, j int) bool { return blocked[i][0] < blocked[j][0] })
	// Merged into disjoint intervals; their ends are free (within the
	// tolerance).
	var merged [][2]float64
	for _, b := range blocked {
		if n := len(merged); n > 0 && b[0] < merged[n-1][1]-tolerance {
			merged[n-1][1] = max(merged[n-1][1], b[1])
			continue
		}
		merged = append(merged, b)
	}
	want = max(lo, min(hi, want))
	for _, m := range merged {
		if m[0]+tolerance < want && want < m[1]-tolerance { // ruled out: the nearer free end
			up, down := m[0], m[1]
			switch {
			case down <= hi && (up < lo || down-want <= want-up):
				return down, true
			case up >= lo:
				return up, true
			}
			return 0, false
		}
	}
	return want, true
}

// wrap breaks s into lines of at most n characters at spaces.
func wrap(s string, n int) []string {
	var lines []string
	cur := ""
	for _, w := range strings.Fields(s) {
		if cur != "" && len(cur)+1+len(w) > n {
			lines = append(lines, cur)
			cur = ""
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	return append(lines, cur)
}

// panelLabels places the domain labels of model's panel, a square of side s
// with its top left corner at (0, 0), clear of each other and of the dots of
// every method in ms (the first is labelled); ok is false when some label
// found no such place (placeLabelsOK).
func panelLabels(rep *Report, model string, ms []string, s, fs float64) ([]pointLabel, bool) {
	var labels []pointLabel
	var dots [][2]float64
	for k, meth := range ms {
		est := rep.HeldOut[model][meth]
		for _, d := range sortedKeys(est) {
			x, y := rep.True[model][d]*s, (1-clamp01(est[d]))*s
			dots = append(dots, [2]float64{x, y})
			if k == 0 {
				labels = append(labels, pointLabel{x: x, y: y, text: d})
			}
		}
	}
	return placeLabelsOK(labels, dots, labelBox{2, s - 2, 2, s - 3}, fs)
}

// estimatesSVG draws one panel per model: true accuracy (x) against the
// estimate (y) of each held-out domain, averaged over the training sets that
// left the domain out. Domain labels are moved apart (with a leader line)
// where they would overlap each other or cover a dot, and stay inside their
// panel.
func estimatesSVG(rep *Report) string {
	models := sortedKeys(rep.True)
	ms := plotted(rep)
	names := legendNames(ms, func(a, b string) bool { return sameHeldOut(rep, a, b) })
	const pad = 40.0
	const fs = 9.0 // domain label font size
	const title = "Estimated vs true accuracy per held-out domain (mean over training sets)"
	most, widest := 0, 0.0
	for _, model := range models {
		most = max(most, len(rep.True[model]))
		for d := range rep.True[model] {
			widest = max(widest, textWidth(d, fs))
		}
	}
	// Square panels of 260 px, grown when their labels could not all fit in
	// one column, or the widest across, and then while some label finds no
	// place clear of the others and of the dots (which spread out as the
	// panel grows).
	pw := max(labelRoom(most, fs, 260), math.Ceil(widest)+10)
	var placed map[string][]pointLabel
	for try := 0; ; try++ {
		placed = map[string][]pointLabel{}
		ok := true
		for _, model := range models {
			if _, skip := rep.Unevaluated[model]; !skip {
				ls, good := panelLabels(rep, model, ms, pw, fs)
				placed[model], ok = ls, ok && good
			}
		}
		if ok || try == 6 { // at most 3.8 times as big: the labels then go where they can
			break
		}
		pw = math.Ceil(1.25 * pw)
	}
	ph := pw
	cols := min(4, max(1, len(models)))
	rows := (len(models) + cols - 1) / cols
	// Wide enough for the title, whatever the number of panels; the legend
	// wraps onto more lines when it is wider still.
	W := max(float64(cols)*(pw+pad)+pad+40, textWidth(title, 14)+2*pad)
	type entry struct{ x, y float64 }
	legend := make([]entry, len(ms))
	lx, ly := pad, 32.0
	for i := range ms {
		w := 8 + textWidth(names[i], 11)
		if lx > pad && lx+w > W-pad {
			lx, ly = pad, ly+18
		}
		legend[i] = entry{lx, ly}
		lx += w + 24
	}
	top := ly + 43 // the panels' top: 75 with a legend of one line
	H := top + float64(rows)*(ph+pad+20) + 20
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14">%s</text>`+"\n", pad, title)
	for i, m := range ms {
		e := legend[i]
		fmt.Fprintf(&b, `<circle cx="%.0f" cy="%.0f" r="4" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", e.x, e.y, methodColor(m), e.x+8, e.y+4, html.EscapeString(names[i]))
	}
	for mi, model := range models {
		x0 := pad + float64(mi%cols)*(pw+pad)
		y0 := top + float64(mi/cols)*(ph+pad+20)
		px := func(v float64) float64 { return x0 + v*pw }
		py := func(v float64) float64 { return y0 + (1-v)*ph }
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", x0, y0, pw, ph)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#bbb" stroke-dasharray="4,3"/>`+"\n", px(0), py(0), px(1), py(1))
		for _, t := range []float64{0, 0.5, 1} {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.1f</text>`+"\n", px(t), py(0)+13, t)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%.1f</text>`+"\n", px(0)-3, py(t)+4, t)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x0+pw/2, y0-5, html.EscapeString(model))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">true accuracy</text>`+"\n", x0+pw/2, py(0)+26)
		if why, ok := rep.Unevaluated[model]; ok {
			lines := append([]string{"not evaluated:"}, wrap(why, 40)...)
			for i, l := range lines {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#a00">%s</text>`+"\n", x0+pw/2, y0+ph/2-20+float64(i)*14, html.EscapeString(l))
			}
			continue
		}
		for k := len(ms) - 1; k >= 0; k-- { // the first method last, on top
			meth := ms[k]
			est := rep.HeldOut[model][meth]
			for _, d := range sortedKeys(est) {
				e, t := est[d], rep.True[model][d]
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s" fill-opacity="0.8"><title>%s %s: true %.3f, estimated %.3f</title></circle>`+"\n",
					px(t), py(clamp01(e)), methodColor(meth), html.EscapeString(meth), html.EscapeString(d), t, e)
			}
		}
		ls := placed[model]
		for _, l := range ls { // the leader lines first, under every label
			beside := math.Abs(l.tx-(l.x+5)) < 1 || math.Abs(l.tx-(l.x-5)) < 1
			if math.Abs(l.ty-(l.y-5)) > 1 || !beside { // moved: a leader line back to its point
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#aaa" stroke-width="0.5"/>`+"\n", x0+l.x, y0+l.y, x0+l.tx, y0+l.ty-3)
			}
		}
		for _, l := range ls {
			anchor := ""
			if l.end {
				anchor = ` text-anchor="end"`
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#444" font-size="%.0f"%s>%s</text>`+"\n", x0+l.tx, y0+l.ty, fs, anchor, html.EscapeString(l.text))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func clamp01(v float64) float64 { return math.Max(0, math.Min(1, v)) }

// reliabilitySVG draws the pooled held-out reliability diagram.
func reliabilitySVG(rep *Report) string {
	ms := plotted(rep)
	names := legendNames(ms, func(a, b string) bool { return sameReliability(rep, a, b) })
	const S, pad = 420.0, 60.0
	px := func(v float64) float64 { return pad + v*S }
	py := func(v float64) float64 { return pad + (1-v)*S }
	W := S + 2*pad + 240 // the legend's column is wider when a name needs it
	for _, n := range names {
		W = max(W, S+pad+32+textWidth(n, 12)+20)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", W, S+2*pad)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="25" font-size="14">Reliability on held-out domains (all models and training sets pooled)</text>`+"\n", pad)
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", pad, pad, S, S)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#bbb" stroke-dasharray="4,3"/>`+"\n", px(0), py(0), px(1), py(1))
	for t := 0.0; t <= 1.001; t += 0.2 {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.1f</text>`+"\n", px(t), py(0)+16, t)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%.1f</text>`+"\n", px(0)-5, py(t)+4, t)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">predicted P(correct)</text>`+"\n", px(0.5), py(0)+36)
	fmt.Fprintf(&b, `<text x="18" y="%.1f" transform="rotate(-90 18 %.1f)" text-anchor="middle">observed accuracy</text>`+"\n", py(0.5), py(0.5))
	for k := len(ms) - 1; k >= 0; k-- { // the first method last, on top, as in estimates.svg
		m := ms[k]
		r := rep.Reliability[m]
		if r == nil {
			continue
		}
		var pts []string
		var total float64
		for i := range r.Count {
			total += r.Count[i]
		}
		for i := range r.Count {
			if r.Count[i] == 0 {
				continue
			}
			x, y := r.SumP[i]/r.Count[i], r.SumY[i]/r.Count[i]
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(x), py(y)))
			rad := 2 + 8*math.Sqrt(r.Count[i]/total)
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="%.1f" fill="%s" fill-opacity="0.6"><title>%s: predicted %.3f, observed %.3f, %d rows</title></circle>`+"\n",
				px(x), py(y), rad, methodColor(m), html.EscapeString(m), x, y, int(r.Count[i]))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), methodColor(m))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", S+pad+15, pad+float64(k)*20, methodColor(m), S+pad+32, pad+float64(k)*20+10, html.EscapeString(names[k]))
	}
	b.WriteString(`<text x="` + fmt.Sprintf("%.0f", S+pad+15) + `" y="` + fmt.Sprintf("%.0f", pad+80) + `" fill="#555" font-size="10">dot area ~ rows</text>` + "\n")
	b.WriteString("</svg>\n")
	return b.String()
}
