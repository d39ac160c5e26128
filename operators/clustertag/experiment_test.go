package clustertag

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExperiment prints ARI/purity over a grid of settings; it only runs with
// CLUSTERTAG_EXPERIMENT set (e.g. CLUSTERTAG_EXPERIMENT=lsa,k).
func TestExperiment(t *testing.T) {
	which := os.Getenv("CLUSTERTAG_EXPERIMENT")
	if which == "" {
		t.Skip("set CLUSTERTAG_EXPERIMENT to run the tuning grid")
	}
	d, err := ReadFile(sharedData(t, "prompts-dev.csv.gz"))
	require.NoError(t, err)
	parts := []string{"tune", "held", "all"}
	if p := os.Getenv("CLUSTERTAG_PARTS"); p != "" {
		parts = strings.Split(p, ",")
	}
	data := map[string][2][]string{}
	tp, td := split(d, false)
	hp, hd := split(d, true)
	var ap, ad []string
	for _, x := range d.Docs {
		ap, ad = append(ap, x.Prompt), append(ad, x.Domain)
	}
	data["tune"] = [2][]string{tp, td}
	data["held"] = [2][]string{hp, hd}
	data["all"] = [2][]string{ap, ad}
	trueK := map[string]int{"tune": 5, "held": 5, "all": 10}
	type variant struct {
		name string
		mod  func(*FitConfig)
	}
	var vs []variant
	for _, w := range strings.Split(which, ",") {
		switch w {
		case "base":
			vs = append(vs, variant{"default", func(c *FitConfig) {}})
		case "plain":
			vs = append(vs, variant{"plain tfidf (no stop/stem/bigram/sublinear, no LSA)", func(c *FitConfig) {
				c.Vector = VectorConfig{HashBits: 18, MinLen: 1}
				c.LSA = 0
			}})
		case "lsa":
			for _, l := range []int{0, 20, 50, 100, 200} {
				vs = append(vs, variant{fmt.Sprintf("lsa=%d", l), func(c *FitConfig) { c.LSA = l }})
			}
		case "vec":
			vs = append(vs,
				variant{"no stop words", func(c *FitConfig) { c.Vector.StopWords = false }},
				variant{"no stemming", func(c *FitConfig) { c.Vector.Stem = false }},
				variant{"no bigrams", func(c *FitConfig) { c.Vector.Bigrams = false }},
				variant{"raw tf", func(c *FitConfig) { c.Vector.Sublinear = false }},
				variant{"maxdf=0.1", func(c *FitConfig) { c.MaxDF = 0.1 }},
				variant{"mindf=3", func(c *FitConfig) { c.MinDF = 3 }},
			)
		case "bigrams":
			vs = append(vs, variant{"bigrams", func(c *FitConfig) { c.Vector.Bigrams = true }})
		case "shapes":
			vs = append(vs, variant{"shapes", func(c *FitConfig) { c.Vector.Shapes = true }})
		case "lsa30":
			vs = append(vs, variant{"lsa=30", func(c *FitConfig) { c.LSA = 30 }})
		case "lsa75":
			vs = append(vs, variant{"lsa=75", func(c *FitConfig) { c.LSA = 75 }})
		case "nostem":
			vs = append(vs, variant{"no stemming", func(c *FitConfig) { c.Vector.Stem = false }})
		case "silhouette":
			vs = append(vs, variant{"k by silhouette", func(c *FitConfig) { c.Criterion = CriterionSilhouette }})
		case "lsa100":
			vs = append(vs, variant{"lsa=100", func(c *FitConfig) { c.LSA = 100 }})
		case "lsa20":
			vs = append(vs, variant{"lsa=20", func(c *FitConfig) { c.LSA = 20 }})
		case "restarts":
			vs = append(vs, variant{"restarts=20", func(c *FitConfig) { c.Restarts = 20 }})
		case "kmin2":
			vs = append(vs, variant{"k_min=2", func(c *FitConfig) { c.KMin = 2 }})
		}
	}
	seeds := []uint64{1, 2, 3}
	if v := os.Getenv("CLUSTERTAG_SEEDS"); v != "" {
		var n int
		fmt.Sscan(v, &n)
		seeds = seeds[:0]
		for s := 1; s <= n; s++ {
			seeds = append(seeds, uint64(s))
		}
	}
	for _, v := range vs {
		for _, part := range parts {
			p, dom := data[part][0], data[part][1]
			truth := Codes(dom)
			autos := []bool{false, true}
			switch os.Getenv("CLUSTERTAG_AUTO") {
			case "0":
				autos = autos[:1]
			case "1":
				autos = autos[1:]
			}
			for _, auto := range autos {
				line := fmt.Sprintf("%-40s %-4s k=%-4s", v.name, part, map[bool]string{true: "auto", false: fmt.Sprint(trueK[part])}[auto])
				var sa, sp float64
				for _, s := range seeds {
					cfg := DefaultFitConfig()
					cfg.Seed = s
					cfg.KMax = 16
					v.mod(&cfg)
					if !auto {
						cfg.K = trueK[part]
					}
					m, err := Fit(context.Background(), p, cfg, nil)
					require.NoError(t, err)
					pred := fitAssign(m, p)
					a, pu := ARI(truth, pred), Purity(truth, pred)
					sa += a
					sp += pu
					line += fmt.Sprintf("  [k%d %.3f/%.3f]", len(m.Clusters), a, pu)
				}
				fmt.Printf("%s  mean ARI %.3f purity %.3f\n", line, sa/float64(len(seeds)), sp/float64(len(seeds)))
			}
		}
	}
}
