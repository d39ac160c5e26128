package clustertag

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestUnseenTopicIsUnclustered fits on three topics of testdata/topics.csv
// (short questions on astronomy, cooking, programming) and tags a fourth the
// fit never saw (law case questions): most of them must be unclustered, while
// held-out questions of the fitted topics mostly are not. While distances
// ignored the part of a prompt outside the LSA subspace and the vocabulary,
// 40% of the law questions were absorbed into the fitted clusters.
func TestUnseenTopicIsUnclustered(t *testing.T) {
	d, err := ReadFile("testdata/topics.csv")
	require.NoError(t, err)
	var train, heldIn, unseen []string
	n := 0
	for _, x := range d.Docs {
		switch {
		case x.Domain == "law":
			unseen = append(unseen, x.Prompt)
		case n%6 == 5:
			heldIn = append(heldIn, x.Prompt)
			n++
		default:
			train = append(train, x.Prompt)
			n++
		}
	}
	for _, lsa := range []int{20, 0} {
		cfg := DefaultFitConfig()
		cfg.K = 3
		cfg.LSA = lsa
		m, err := Fit(context.Background(), train, cfg, nil)
		require.NoError(t, err)
		share := func(prompts []string) float64 {
			tg := m.NewTagger()
			u := 0
			for _, p := range prompts {
				if c, _ := tg.Tag(p); c == Unclustered {
					u++
				}
			}
			return float64(u) / float64(len(prompts))
		}
		in, out := share(heldIn), share(unseen)
		t.Logf("lsa=%d (%s): unclustered: held-out questions of the fitted topics %.0f%%, unseen topic %.0f%%", lsa, m.Space, 100*in, 100*out)
		require.GreaterOrEqual(t, out, 0.75, "lsa=%d: an unseen topic must be mostly unclustered", lsa)
		require.LessOrEqual(t, in, 0.15, "lsa=%d: questions of the fitted topics must mostly be clustered", lsa)
	}
}
