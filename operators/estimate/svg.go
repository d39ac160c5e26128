package estimate

import (
	"fmt"
	"html"
	"math"
	"strings"
)

var palette = []string{"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"}

// plotted picks the methods drawn: the default first, then the best
// scikit-learn reference, then the best other reference.
func plotted(rep *Report) []string {
	med := Medians(rep, nil)
	var out []string
	if _, ok := med[DefaultName]; ok {
		out = append(out, DefaultName)
	}
	for _, m := range []string{"sk_isotonic", "sk_platt"} {
		if _, ok := med[m]; ok {
			out = append(out, m)
		}
	}
	if len(out) == 3 && med[out[2]][0] < med[out[1]][0] {
		out[1], out[2] = out[2], out[1]
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

// estimatesSVG draws one panel per model: true accuracy (x) against the
// estimate (y) of each held-out domain, averaged over the training sets that
// left the domain out.
func estimatesSVG(rep *Report) string {
	models := sortedKeys(rep.True)
	ms := plotted(rep)
	const pw, ph, pad = 260.0, 260.0, 40.0
	cols := min(4, max(1, len(models)))
	rows := (len(models) + cols - 1) / cols
	W := float64(cols)*(pw+pad) + pad + 40
	H := float64(rows)*(ph+pad+20) + pad + 55
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14">Estimated vs true accuracy per held-out domain (mean over training sets)</text>`+"\n", pad)
	for i, m := range ms {
		fmt.Fprintf(&b, `<circle cx="%.0f" cy="32" r="4" fill="%s"/><text x="%.0f" y="36">%s</text>`+"\n", pad+float64(i)*150, palette[i], pad+float64(i)*150+8, html.EscapeString(m))
	}
	for mi, model := range models {
		x0 := pad + float64(mi%cols)*(pw+pad)
		y0 := 75 + float64(mi/cols)*(ph+pad+20)
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
		for k := len(ms) - 1; k >= 0; k-- { // the default last, on top
			meth := ms[k]
			sum, cnt := map[string]float64{}, map[string]int{}
			for _, r := range rep.Results {
				if r.Model != model || r.Method != meth {
					continue
				}
				in := map[string]bool{}
				for _, d := range r.TrainDomains {
					in[d] = true
				}
				for d, e := range r.Estimates {
					if !in[d] {
						sum[d] += e
						cnt[d]++
					}
				}
			}
			for _, d := range sortedKeys(sum) {
				e := sum[d] / float64(cnt[d])
				t := rep.True[model][d]
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s" fill-opacity="0.8"><title>%s %s: true %.3f, estimated %.3f</title></circle>`+"\n",
					px(t), py(clamp01(e)), palette[k], html.EscapeString(meth), html.EscapeString(d), t, e)
				if k == 0 {
					fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#444" font-size="9">%s</text>`+"\n", px(t)+5, py(clamp01(e))-5, html.EscapeString(d))
				}
			}
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func clamp01(v float64) float64 { return math.Max(0, math.Min(1, v)) }

// reliabilitySVG draws the pooled held-out reliability diagram.
func reliabilitySVG(rep *Report) string {
	ms := plotted(rep)
	const S, pad = 420.0, 60.0
	px := func(v float64) float64 { return pad + v*S }
	py := func(v float64) float64 { return pad + (1-v)*S }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", S+2*pad+160, S+2*pad)
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
	for k, m := range ms {
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
				px(x), py(y), rad, palette[k], html.EscapeString(m), x, y, int(r.Count[i]))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), palette[k])
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", S+pad+15, pad+float64(k)*20, palette[k], S+pad+32, pad+float64(k)*20+10, html.EscapeString(m))
	}
	b.WriteString(`<text x="` + fmt.Sprintf("%.0f", S+pad+15) + `" y="` + fmt.Sprintf("%.0f", pad+80) + `" fill="#555" font-size="10">dot area ~ rows</text>` + "\n")
	b.WriteString("</svg>\n")
	return b.String()
}
