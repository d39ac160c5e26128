package clustertag

import (
	"math/rand/v2"
	"strings"
)

// topics are three disjoint vocabularies for synthetic prompts.
var topics = [][]string{
	strings.Fields("court judge contract plaintiff defendant statute appeal jury verdict tort lawsuit negligence evidence testimony"),
	strings.Fields("planet galaxy telescope orbit comet nebula asteroid stellar supernova cosmic gravity eclipse meteor quasar"),
	strings.Fields("recipe flour butter oven simmer garlic onion saute pastry dough yeast skillet marinade vinegar"),
}

// synthPrompts returns n prompts per topic (topic-major) of 8-14 words.
func synthPrompts(n int, seed uint64) ([]string, []int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var out []string
	var lab []int
	for t, words := range topics {
		for i := 0; i < n; i++ {
			var b strings.Builder
			b.WriteString("Which of the following")
			for w := 0; w < 8+rng.IntN(7); w++ {
				b.WriteString(" ")
				b.WriteString(words[rng.IntN(len(words))])
			}
			out = append(out, b.String())
			lab = append(lab, t)
		}
	}
	return out, lab
}
