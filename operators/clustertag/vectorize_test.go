package clustertag

import (
	"context"
	"slices"
	"strings"
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
		require.Equal(t, buckets(h, "ÜBER КОТ"), buckets(h, "über кот"), "non-ASCII letters are lower-cased")
	})
	t.Run("one-letter words counted in characters", func(t *testing.T) {
		// "у" is one Cyrillic letter but two bytes: it was kept as a term.
		noBi := cfg
		noBi.Bigrams = false
		require.Equal(t, buckets(newHasher(noBi), "кот дома"), buckets(newHasher(noBi), "Кот у дома"))
	})
	t.Run("symbols separate words", func(t *testing.T) {
		noBi := cfg
		noBi.Bigrams = false
		nh := newHasher(noBi)
		require.Equal(t, buckets(nh, "point name"), buckets(nh, "point – name"))
		require.Equal(t, buckets(nh, "twelve three"), buckets(nh, "twelve÷three"))
	})
	t.Run("CJK text as character bigrams", func(t *testing.T) {
		noBi := cfg
		noBi.Bigrams = false
		nh := newHasher(noBi)
		// An unspaced sentence was one word, shared with no other prompt.
		require.Len(t, nh.appendBuckets(nil, "我喜欢学习中文"), 6)
		require.Len(t, nh.appendBuckets(nil, "猫"), 1, "a lone character is a term")
		require.Len(t, nh.appendBuckets(nil, "猫 と 犬"), 3)
		require.Len(t, nh.appendBuckets(nil, "東京タワー"), 4)
		require.Len(t, nh.appendBuckets(nil, "한국어 공부"), 3)
		require.Subset(t, nh.appendBuckets(nil, "我喜欢学习中文"), nh.appendBuckets(nil, "学习"))
		require.Len(t, nh.appendBuckets(nil, "Python的列表"), 3, "Latin and CJK runs split")
	})
	t.Run("surfaces agree with buckets", func(t *testing.T) {
		for _, s := range []string{"Supreme courts rule on contracts", "天气预报说明天有雨 Кот у дома, café – über"} {
			var got []uint32
			h.surfaces(s, func(b uint32, _ string) { got = append(got, b) })
			require.Equal(t, h.appendBuckets(nil, s), got)
		}
	})
	t.Run("no allocation once grown", func(t *testing.T) {
		buf := make([]uint32, 0, 256)
		for _, s := range []string{"A company sells widgets in three markets; demand is elastic and prices fall.", "天气预报说明天有雨 Кот у ДОМА"} {
			allocs := testing.AllocsPerRun(100, func() { buf = h.appendBuckets(buf[:0], s) })
			require.Zero(t, allocs)
		}
	})
}

// TestFitChinese: Chinese prompts on two topics are told apart and named by
// character bigrams. Unspaced, each prompt was one word: no term occurred
// in two prompts and the fit failed.
func TestFitChinese(t *testing.T) {
	weather := []string{"今天天气很好", "明天天气会下雨", "天气预报说明天有雨", "今天的天气很热", "这周天气很冷",
		"下雨天气不要出门", "明天天气很好吗", "天气预报说今天很热", "昨天下雨了天气很冷", "周末天气怎么样"}
	food := []string{"我喜欢吃米饭", "晚饭我们吃面条", "妈妈做的饭很好吃", "我们去饭店吃饭", "米饭和面条都好吃",
		"午饭吃什么好呢", "这家饭店的面条很好吃", "我晚饭吃了米饭", "吃饭的时候不要说话", "饭店的米饭很香"}
	prompts := append(append([]string{}, weather...), food...)
	truth := make([]int, len(prompts))
	for i := range food {
		truth[len(weather)+i] = 1
	}
	cfg := quietConfig()
	cfg.K = 2
	m, err := Fit(context.Background(), prompts, cfg, nil)
	require.NoError(t, err)
	require.Equal(t, 1.0, ARI(truth, fitAssign(m, prompts)))
	var labels []string
	for _, c := range m.Clusters {
		labels = append(labels, c.Label)
	}
	require.Contains(t, strings.Join(labels, " "), "天气")
	c, _ := m.NewTagger().Tag("后天天气会很冷吗")
	require.NotEqual(t, Unclustered, c)
	require.Equal(t, m.Clusters[fitAssign(m, weather[:1])[0]].ID, m.Clusters[c].ID)
}

// FuzzTag: any text vectorises deterministically and tags without panicking,
// to a valid cluster or Unclustered, at a distance in [0, 2].
func FuzzTag(f *testing.F) {
	for _, s := range []string{"", "court judge", "Find $x$: 3x^2 + 4 = 10", "café\xff\xfe", "a b c", "10,000 oranges", "天气\xe5很好", "東京タワー", "Кот у дома"} {
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
