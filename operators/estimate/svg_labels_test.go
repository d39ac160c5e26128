package estimate

import (
	"fmt"
	"html"
	"math"
	"math/rand/v2"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSVGTextWidthCoversDejaVuSans: the estimate is never narrower than the text
// drawn in DejaVu Sans (the sans-serif of Linux renderers; the widths, in em,
// are the fonts' advance widths, which is also what rsvg-convert draws), and
// not much wider. It was 0.58 em a character, under the width of digits
// (0.64), capitals (0.69 on average) and W, m, M (0.99, 0.97, 0.86).
func TestSVGTextWidthCoversDejaVuSans(t *testing.T) {
	for _, tc := range []struct {
		s  string
		em float64
	}{
		{"WWWWWWWW", 7.9102},
		{"mmmmmmmm", 7.7930},
		{"MMLU_World_History", 10.4966},
		{"0123456789", 6.3623},
		{"count_char_2_some_long_suffix_xx", 17.4575},
		{"add2_2_some_long_suffix_xx", 14.4473},
		{"iiiill..,,''||;;", 4.8359},
		{"winogrande", 5.8838},
		{"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 17.4893},
		{"abcdefghijklmnopqrstuvwxyz", 14.6460},
		{"Estimated vs true accuracy per held-out domain (mean over training sets)", 37.2432},
	} {
		for _, px := range []float64{9, 11, 14} {
			w := textWidth(tc.s, px)
			require.GreaterOrEqual(t, w, tc.em*px, "%q at %g px", tc.s, px)
			require.LessOrEqual(t, w, 1.12*tc.em*px, "%q at %g px", tc.s, px)
		}
	}
	require.GreaterOrEqual(t, textWidth("日本語", 9), 3*9.0, "a character outside ASCII counts as 1 em")
}

// longLabelReport has a model with 40 domains of 26 to 32 characters (digits,
// capitals and the wide W and M among them) whose points crowd together as
// the tinylm-large ones do, and a model with 8 short ones. bottom puts every
// estimate near 0, where labels have no room below their points.
func longLabelReport(bottom bool) *Report {
	methods := []string{DefaultName, "sk_isotonic", "sk_platt"}
	rep := &Report{True: map[string]map[string]float64{}, HeldOut: map[string]map[string]map[string]float64{}}
	bases := []string{"add2", "add4", "count_char", "mod7", "mul1x3", "parity", "reverse8", "sub3"}
	suffixes := []string{"_some_long_suffix_xx", "_MMLU_World_History", "_0123456789_digits", "_WMWMW_wide_caps", "_some_long_suffix_xx"}
	acc := []float64{0.95, 0.55, 0.12, 0.18, 0.08, 0.45, 0.7, 0.01}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, model := range []string{"large", "small"} {
		rep.True[model] = map[string]float64{}
		rep.HeldOut[model] = map[string]map[string]float64{}
		for _, m := range methods {
			rep.HeldOut[model][m] = map[string]float64{}
			rep.Results = append(rep.Results, Result{Model: model, K: 1, Method: m, AEE: 0.1})
		}
		for b, base := range bases {
			for i := range 5 {
				d := base
				if model == "large" {
					d = fmt.Sprintf("%s_%d%s", base, i, suffixes[i])
				} else if i > 0 {
					continue
				}
				tr := acc[b] + 0.01*float64(i)
				e := 0.25 + 0.3*tr + 0.04*rng.Float64()
				if bottom {
					e = 0.03 * rng.Float64()
				}
				rep.True[model][d] = tr
				rep.HeldOut[model][DefaultName][d] = e
				rep.HeldOut[model]["sk_isotonic"][d] = e + 0.02 + 0.02*rng.Float64()
				rep.HeldOut[model]["sk_platt"][d] = e + 0.04*rng.Float64() - 0.03
			}
		}
	}
	return rep
}

// wallsReport has one model whose n domains, with names of 28 characters,
// have true accuracies from 0.35 to 0.45 and each method's estimates on a
// horizontal line: the labels need a column of n lines, with three walls of
// dots across it.
func wallsReport(n int) *Report {
	rep := oneModelReport(0, []string{DefaultName, "sk_isotonic", "sk_platt"}, nil)
	for i := range n {
		d := fmt.Sprintf("domain_%02d_with_a_long_name_W", i)
		rep.True["m"][d] = 0.35 + 0.1*float64(i)/float64(n)
		for k, m := range []string{DefaultName, "sk_isotonic", "sk_platt"} {
			rep.HeldOut["m"][m][d] = 0.25 * float64(k+1)
		}
	}
	return rep
}

// TestEstimatesPlotLongLabels: with 40 long domain names crowded together
// (tinylm-large split by the audit), no two labels overlap, no label covers
// a dot, and every label stays inside its panel. Labels placed end to end
// overlapped (the width estimate was too small), and the pass that moved
// labels back up into the panel put 12 of them over dots. When dots leave
// too little room (walls), the panel grows.
func TestEstimatesPlotLongLabels(t *testing.T) {
	for _, tc := range []struct {
		name           string
		rep            *Report
		panels, labels int
	}{
		{"spread", longLabelReport(false), 2, 48},
		{"bottom", longLabelReport(true), 2, 48},
		{"walls", wallsReport(30), 1, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			panels := requireLabelsClear(t, estimatesSVG(tc.rep), tc.panels, tc.labels)
			if tc.name == "walls" {
				require.Greater(t, panels[0][1]-panels[0][0], labelRoom(30, 9, 260), "the panel grew")
			}
		})
	}
}

// requireLabelsClear checks that estimates.svg has the number of panels and
// domain labels given, that no two labels overlap, that none covers a dot
// and that each is inside a panel; it returns the panels (left, right, top,
// bottom).
func requireLabelsClear(t *testing.T, svg string, npanels, nlabels int) [][4]float64 {
	t.Helper()
	const fs = 9.0
	num := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		require.NoError(t, err)
		return v
	}
	var panels [][4]float64
	for _, m := range regexp.MustCompile(`<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" fill="none" stroke="#999"/>`).FindAllStringSubmatch(svg, -1) {
		x, y := num(m[1]), num(m[2])
		panels = append(panels, [4]float64{x, x + num(m[3]), y, y + num(m[4])})
	}
	require.Len(t, panels, npanels)
	var dots [][2]float64
	for _, m := range regexp.MustCompile(`<circle cx="([\d.]+)" cy="([\d.]+)" r="4" fill="#[0-9a-f]{6}" fill-opacity="0.8">`).FindAllStringSubmatch(svg, -1) {
		dots = append(dots, [2]float64{num(m[1]), num(m[2])})
	}
	require.Len(t, dots, 3*nlabels)
	type label struct {
		text           string
		x0, x1, y0, y1 float64 // the text, down to its baseline
	}
	var ls []label
	for _, m := range regexp.MustCompile(`<text x="([\d.]+)" y="([\d.]+)" fill="#444" font-size="9"( text-anchor="end")?>([^<]*)</text>`).FindAllStringSubmatch(svg, -1) {
		text := html.UnescapeString(m[4])
		x, y := num(m[1]), num(m[2])
		w := textWidth(text, fs)
		if m[3] != "" {
			x -= w
		}
		ls = append(ls, label{text, x, x + w, y - fs, y})
	}
	require.Len(t, ls, nlabels)
	for i, a := range ls {
		inside := false
		for _, p := range panels {
			inside = inside || (a.x0 >= p[0] && a.x1 <= p[1] && a.y0 >= p[2] && a.y1 <= p[3])
		}
		require.True(t, inside, "label %q at %v is not inside a panel", a.text, a)
		for _, b := range ls[:i] {
			overlap := a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1-1e-6 && b.y0 < a.y1-1e-6
			require.False(t, overlap, "labels %q %v and %q %v overlap", a.text, a, b.text, b)
		}
		for _, d := range dots {
			// The label's box down to its descenders (the underscore
			// reaches a quarter of the font size below the baseline)
			// covers neither the dot's centre nor any of its disc.
			covers := a.x0 <= d[0] && d[0] <= a.x1 && a.y0 <= d[1] && d[1] <= a.y1+fs/4
			require.False(t, covers, "label %q %v covers the dot at %v", a.text, a, d)
			dx := max(0, a.x0-d[0], d[0]-a.x1)
			dy := max(0, a.y0+1-d[1], d[1]-(a.y1+fs/4))
			// (Positions are written to 0.1 px.)
			require.GreaterOrEqual(t, math.Hypot(dx, dy), 4-0.1, "label %q %v touches the dot at %v", a.text, a, d)
		}
	}
	return panels
}
