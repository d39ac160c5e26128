package clustertag

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func buckets(h *hasher, s string) []uint32 {
	b := h.appendBuckets(nil, s)
	slices.Sort(b)
	return b
}

func TestVectoriser(t *testing.T) {
	cfg := DefaultVectorConfig()
	cfg.Bigrams = true
	h := newHasher(cfg)
	t.Run("deterministic", func(t *testing.T) {
		s := "The court held that the contract was void."
		require.Equal(t, h.appendBuckets(nil, s), h.appendBuckets(nil, s))
		require.Equal(t, h.appendBuckets(nil, s), newHasher(cfg).appendBuckets(nil, s))
	})
	t.Run("case, punctuation and stop words do not matter", func(t *testing.T) {
		require.Equal(t, buckets(h, "court contract"), buckets(h, "The COURT, of the contract!"))
	})
	t.Run("stemming folds plurals and -ing", func(t *testing.T) {
		require.Equal(t, buckets(h, "contract"), buckets(h, "contracts"))
		require.Equal(t, buckets(h, "market"), buckets(h, "marketing"))
		require.Equal(t, buckets(h, "class"), buckets(h, "class"))
		require.NotEqual(t, buckets(h, "class"), buckets(h, "clas"))
	})
	t.Run("words and bigrams", func(t *testing.T) {
		require.Len(t, h.appendBuckets(nil, "supreme court ruling"), 3+2)
		noBi := cfg
		noBi.Bigrams = false
		require.Len(t, newHasher(noBi).appendBuckets(nil, "supreme court ruling"), 3)
		// Bigram order matters.
		require.NotEqual(t, buckets(h, "court supreme"), buckets(h, "supreme court"))
	})
	t.Run("utf-8 words stay whole", func(t *testing.T) {
		require.Len(t, h.appendBuckets(nil, "café über"), 3)
	})
	t.Run("surfaces agree with buckets", func(t *testing.T) {
		s := "Supreme courts rule on contracts"
		var got []uint32
		h.surfaces(s, func(b uint32, _ string) { got = append(got, b) })
		require.Equal(t, h.appendBuckets(nil, s), got)
	})
	t.Run("no allocation once grown", func(t *testing.T) {
		buf := make([]uint32, 0, 256)
		s := "A company sells widgets in three markets; demand is elastic and prices fall."
		allocs := testing.AllocsPerRun(100, func() { buf = h.appendBuckets(buf[:0], s) })
		require.Zero(t, allocs)
	})
}

// FuzzTag: any text vectorises deterministically and tags without panicking,
// to a valid cluster or Unclustered, at a distance in [0, 2].
func FuzzTag(f *testing.F) {
	for _, s := range []string{"", "court judge", "Find $x$: 3x^2 + 4 = 10", "café\xff\xfe", "a b c", "10,000 oranges"} {
		f.Add(s)
	}
	prompts, _ := synthPrompts(20, 1)
	cfg := quietConfig()
	cfg.K = 3
	cfg.Vector.Bigrams, cfg.Vector.Shapes = true, true
	m, err := Fit(context.Background(), prompts, cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	tg := m.NewTagger()
	f.Fuzz(func(t *testing.T, s string) {
		c1, d1 := tg.Tag(s)
		c2, d2 := tg.Tag(s)
		if c1 != c2 || d1 != d2 {
			t.Fatalf("Tag(%q) not deterministic: %d %v vs %d %v", s, c1, d1, c2, d2)
		}
		if c1 != Unclustered && (c1 < 0 || c1 >= len(m.Clusters)) {
			t.Fatalf("Tag(%q) = %d out of range", s, c1)
		}
		if d1 < -1e-5 || d1 > 2+1e-5 {
			t.Fatalf("Tag(%q) distance %v", s, d1)
		}
	})
}
