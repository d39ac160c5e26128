package estimate

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// svgWidth reads the width of an SVG document.
func svgWidth(t *testing.T, svg string) float64 {
	t.Helper()
	m := regexp.MustCompile(`<svg [^>]*width="([\d.]+)"`).FindStringSubmatch(svg)
	require.NotNil(t, m)
	w, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return w
}

// oneModelReport has one model with n domains and the three plotted methods;
// est gives a domain's estimate, sk_isotonic equal to the default's (one
// feature), sk_platt off by 0.1.
func oneModelReport(n int, methods []string, est func(i int) (truth, estimate float64)) *Report {
	rep := &Report{True: map[string]map[string]float64{"m": {}}, HeldOut: map[string]map[string]map[string]float64{"m": {}}}
	for _, m := range methods {
		rep.HeldOut["m"][m] = map[string]float64{}
		rep.Results = append(rep.Results, Result{Model: "m", K: 1, Method: m, AEE: 0.1})
	}
	for i := range n {
		d := fmt.Sprintf("d%02d", i)
		tr, e := est(i)
		rep.True["m"][d] = tr
		for k, m := range methods {
			rep.HeldOut["m"][m][d] = e
			if k == 2 {
				rep.HeldOut["m"][m][d] = e - 0.1
			}
		}
	}
	return rep
}

// TestEstimatesPlotFitsOneModel: with one model the image is as wide as its
// title and legend; it was 380 px, which cut the title after "domain" and
// pushed sk_platt off the image when the legend says "(same as default)".
// A legend too long for one line wraps.
func TestEstimatesPlotFitsOneModel(t *testing.T) {
	for _, tc := range []struct {
		name    string
		methods []string
	}{
		{"references", []string{DefaultName, "sk_isotonic", "sk_platt"}},
		{"long names", []string{"screen0_isotonic_oof_offset", "screen1_isotonic_oof_offset", "logreg_isotonic"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := oneModelReport(5, tc.methods, func(i int) (float64, float64) { return 0.2 + 0.1*float64(i), 0.5 })
			if tc.name == "long names" { // the second drawn under the first: a long legend entry
				rep.HeldOut["m"]["screen1_isotonic_oof_offset"] = rep.HeldOut["m"]["screen0_isotonic_oof_offset"]
			}
			svg := estimatesSVG(rep)
			w := svgWidth(t, svg)
			require.Contains(t, svg, "(mean over training sets)</text>")
			require.LessOrEqual(t, 40+textWidth("Estimated vs true accuracy per held-out domain (mean over training sets)", 14), w)
			entries := regexp.MustCompile(`<circle cx="([\d.]+)" cy="([\d.]+)" r="4" fill="#[0-9a-f]{6}"/><text x="([\d.]+)" y="[\d.]+">([^<]*)</text>`).FindAllStringSubmatch(svg, -1)
			require.Len(t, entries, 3)
			type box struct{ x0, x1, y float64 }
			var seen []box
			for _, e := range entries {
				x, _ := strconv.ParseFloat(e[3], 64)
				y, _ := strconv.ParseFloat(e[2], 64)
				end := x + textWidth(e[4], 11)
				require.LessOrEqual(t, end, w, "legend entry %q passes the right edge", e[4])
				for _, b := range seen {
					require.False(t, b.y == y && x-8 < b.x1 && b.x0 < end, "legend entries overlap: %q", e[4])
				}
				seen = append(seen, box{x - 8, end, y})
			}
			if tc.name == "references" {
				require.Contains(t, svg, ">sk_isotonic (same as default)</text>")
			} else {
				require.NotEqual(t, seen[0].y, seen[2].y, "a legend wider than the image wraps")
			}
		})
	}
}

// TestEstimatesPlotManyDomains: 57 domains whose points crowd together keep
// their labels inside the panel (they ran below it, over the axis title),
// without overlapping, also when the points sit at the bottom of the panel.
func TestEstimatesPlotManyDomains(t *testing.T) {
	methods := []string{DefaultName, "sk_isotonic", "sk_platt"}
	for name, y := range map[string]float64{"middle": 0.55, "bottom": 0.02, "top": 0.99} {
		t.Run(name, func(t *testing.T) {
			rep := oneModelReport(57, methods, func(i int) (float64, float64) { return 0.5 + 0.001*float64(i), y })
			svg := estimatesSVG(rep)
			m := regexp.MustCompile(`<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" fill="none" stroke="#999"/>`).FindStringSubmatch(svg)
			require.NotNil(t, m)
			var panel [4]float64
			for i := range panel {
				panel[i], _ = strconv.ParseFloat(m[i+1], 64)
			}
			boxes := labelBoxes(t, svg)
			require.Len(t, boxes, 57)
			for i, a := range boxes {
				require.GreaterOrEqual(t, a[0], panel[0], "label %v left of the panel", a)
				require.LessOrEqual(t, a[1], panel[0]+panel[2], "label %v right of the panel", a)
				require.GreaterOrEqual(t, a[2], panel[1], "label %v above the panel", a)
				require.LessOrEqual(t, a[3], panel[1]+panel[3], "label %v below the panel", a)
				for _, b := range boxes[:i] {
					overlap := a[0] < b[1] && b[0] < a[1] && a[2] < b[3]-1e-6 && b[2] < a[3]-1e-6
					require.False(t, overlap, "labels at %v and %v overlap", a, b)
				}
			}
		})
	}
}

// TestReliabilityLegendFits: a long legend entry widens the image.
func TestReliabilityLegendFits(t *testing.T) {
	r := &Reliability{}
	r.add(0.3, 1)
	long := "screen1_isotonic_oof_offset"
	rep := &Report{Reliability: map[string]*Reliability{"screen0_isotonic_oof_offset": r, long: r, "atc": {}}}
	for _, m := range []string{"screen0_isotonic_oof_offset", long, "atc"} {
		rep.Results = append(rep.Results, Result{Model: "m", Method: m})
	}
	svg := reliabilitySVG(rep)
	name := long + " (same as screen0_isotonic_oof_offset)"
	require.Contains(t, svg, ">"+name+"</text>")
	require.LessOrEqual(t, 420+60+32+textWidth(name, 12), svgWidth(t, svg))
}
