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

// textWidth estimates the width of s in pixels at font size px (sans-serif).
func textWidth(s string, px float64) float64 { return 0.58 * px * float64(len([]rune(s))) }

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

// labelBox is the area labels must stay in (a panel, inset).
type labelBox struct{ left, right, top, bottom float64 }

// labelRoom is the side of a square panel that holds n labels of font size
// fs stacked in one column (the worst case of placeLabels), never less than
// least.
func labelRoom(n int, fs, least float64) float64 {
	return max(least, float64(n)*(fs+1)+fs+8)
}

// placeLabels puts each label beside its point, right of it unless that
// passes box.right (then left of it, or flush with the box when neither side
// has room), and moves labels down until no two overlap (lines of height fs+1
// whose horizontal extents meet) and none covers a point of dots (circles of
// radius 4). Labels pushed past box.bottom are then moved up, above the
// labels under them, so that every label stays inside box when it is tall
// enough (labelRoom).
func placeLabels(ls []pointLabel, dots [][2]float64, box labelBox, fs float64) []pointLabel {
	h := fs + 1
	top := box.top + fs - 1 // the highest baseline that keeps the text inside
	for i := range ls {
		l := &ls[i]
		w := textWidth(l.text, fs)
		l.tx, l.ty = l.x+5, max(top, min(box.bottom, l.y-5))
		switch {
		case l.tx+w <= box.right:
		case l.x-5-w >= box.left:
			l.tx, l.end = l.x-5, true
		default:
			l.tx = max(box.left, box.right-w)
		}
	}
	sort.SliceStable(ls, func(a, b int) bool { return ls[a].ty < ls[b].ty })
	// A label only moves down, by at least a pixel, so this ends.
	for i := range ls {
		for moved := true; moved; {
			moved = false
			a0, a1 := ls[i].span(fs)
			for j := range i {
				b0, b1 := ls[j].span(fs)
				// The tolerance keeps ty_j+h, which can come back as a hair
				// under h, from counting as an overlap again (a loop).
				if a0 < b1 && b0 < a1 && math.Abs(ls[i].ty-ls[j].ty) < h-1e-6 {
					ls[i].ty = ls[j].ty + h
					moved = true
				}
			}
			for _, d := range dots {
				top := ls[i].ty - fs + 1
				if a0 < d[0]+4 && d[0]-4 < a1 && top < d[1]+4 && d[1]-4 < ls[i].ty {
					ls[i].ty = max(ls[i].ty+1, d[1]+4+fs-1)
					moved = true
				}
			}
		}
	}
	// Back inside: from the bottom up, a label goes no lower than the box
	// and above every label already placed under it that it would overlap.
	// A label only moves up here, so this ends too.
	sort.SliceStable(ls, func(a, b int) bool { return ls[a].ty > ls[b].ty })
	for i := range ls {
		ls[i].ty = min(ls[i].ty, box.bottom)
		for moved := true; moved; {
			moved = false
			a0, a1 := ls[i].span(fs)
			for j := range i {
				b0, b1 := ls[j].span(fs)
				if a0 < b1 && b0 < a1 && math.Abs(ls[i].ty-ls[j].ty) < h-1e-6 {
					ls[i].ty = ls[j].ty - h
					moved = true
				}
			}
		}
		ls[i].ty = max(ls[i].ty, top) // only when the box is too short for them all
	}
	return ls
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

// estimatesSVG draws one panel per model: true accuracy (x) against the
// estimate (y) of each held-out domain, averaged over the training sets that
// left the domain out. Domain labels are moved apart where they would overlap.
func estimatesSVG(rep *Report) string {
	models := sortedKeys(rep.True)
	ms := plotted(rep)
	names := legendNames(ms, func(a, b string) bool { return sameHeldOut(rep, a, b) })
	const pad = 40.0
	const fs = 9.0 // domain label font size
	const title = "Estimated vs true accuracy per held-out domain (mean over training sets)"
	most := 0
	for _, model := range models {
		most = max(most, len(rep.True[model]))
	}
	// Square panels, grown when their labels could not all fit in 260 px.
	pw := labelRoom(most, fs, 260)
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
		var labels []pointLabel
		var dots [][2]float64
		for k := len(ms) - 1; k >= 0; k-- { // the first method last, on top
			meth := ms[k]
			est := rep.HeldOut[model][meth]
			for _, d := range sortedKeys(est) {
				e, t := est[d], rep.True[model][d]
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s" fill-opacity="0.8"><title>%s %s: true %.3f, estimated %.3f</title></circle>`+"\n",
					px(t), py(clamp01(e)), methodColor(meth), html.EscapeString(meth), html.EscapeString(d), t, e)
				dots = append(dots, [2]float64{px(t), py(clamp01(e))})
				if k == 0 {
					labels = append(labels, pointLabel{x: px(t), y: py(clamp01(e)), text: d})
				}
			}
		}
		for _, l := range placeLabels(labels, dots, labelBox{x0 + 2, x0 + pw - 2, y0 + 2, y0 + ph - 3}, fs) {
			anchor := ""
			if l.end {
				anchor = ` text-anchor="end"`
			}
			beside := math.Abs(l.tx-(l.x+5)) < 1 || math.Abs(l.tx-(l.x-5)) < 1
			if math.Abs(l.ty-(l.y-5)) > 1 || !beside { // moved: a leader line back to its point
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#aaa" stroke-width="0.5"/>`+"\n", l.x, l.y, l.tx, l.ty-3)
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#444" font-size="%.0f"%s>%s</text>`+"\n", l.tx, l.ty, fs, anchor, html.EscapeString(l.text))
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
