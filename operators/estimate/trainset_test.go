package estimate

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// llmTable is synthetic rows of llm-a and llm-b (the signal in "mean"),
// plus, when oneClass, rows of llm-c that are all correct.
func llmTable(oneClass bool) *Table {
	t := synthetic(1200, []string{"mean", "std"}, 3)
	for i := range t.Model {
		t.Model[i] = []string{"llm-a", "llm-b"}[i%2]
	}
	if oneClass {
		for i := range 60 {
			t.X = append(t.X, float64(i%7), 0.5)
			t.Y = append(t.Y, 1)
			t.Model = append(t.Model, "llm-c")
			t.Domain = append(t.Domain, "d0")
		}
	}
	return t
}

// TestTrain: one model per LLM, the one-class LLM skipped, a pooled
// fallback; each model is the one Fit makes of its rows, and the set comes
// back sealed.
func TestTrain(t *testing.T) {
	tbl := llmTable(true)
	cfg := DefaultTrainConfig()
	var progress strings.Builder
	set, err := Train(context.Background(), tbl, cfg, TrainOptions{Progress: &progress})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"llm-a", "llm-b", FallbackKey}, keys(set))
	require.Equal(t, FallbackKey, set.Fallback)
	require.Equal(t, "train: llm-a (600 rows)\ntrain: llm-b (600 rows)\ntrain: llm-c (60 rows)\n"+
		`train: skipping llm-c: model "llm-c": `+ErrOneClass.Error()+"\n"+
		"train: pooled fallback (1260 rows)\n", progress.String())
	for _, name := range []string{"llm-a", "llm-b"} {
		m, err := Fit(tbl.Subset(tbl.Where(func(i int) bool { return tbl.Model[i] == name })), name, cfg)
		require.NoError(t, err)
		m.Version = set.Models[name].Version
		require.Equal(t, m, set.Models[name], name)
		require.Nil(t, set.Models[name].Metrics.Transfer, "no transfer unless asked")
	}
	pooled, err := Fit(tbl, FallbackKey, cfg)
	require.NoError(t, err)
	pooled.Version = set.Models[FallbackKey].Version
	require.Equal(t, pooled, set.Models[FallbackKey])
	require.NoError(t, set.checkSealed("unsealed"))
	b, err := set.Marshal()
	require.NoError(t, err)
	got, err := Parse(b)
	require.NoError(t, err)
	require.Equal(t, set.Version, got.Version, "Train's seal is the file's")
}

func keys(s *Set) []string { return s.keys() }

// TestTrainOneLLMIsFallback: the pooled model of a single LLM is its own
// model, which then serves other LLMs.
func TestTrainOneLLMIsFallback(t *testing.T) {
	tbl := synthetic(600, []string{"mean", "std"}, 2)
	set, err := Train(context.Background(), tbl, DefaultTrainConfig(), TrainOptions{})
	require.NoError(t, err)
	require.Equal(t, []string{"m"}, keys(set))
	require.Equal(t, "m", set.Fallback)
	require.Same(t, set.Models["m"], set.For("other-llm"))

	oneClass := synthetic(100, []string{"mean"}, 2)
	for i := range oneClass.Y {
		oneClass.Y[i] = 0
	}
	_, err = Train(context.Background(), oneClass, DefaultTrainConfig(), TrainOptions{})
	require.ErrorIs(t, err, ErrOneClass, "a single LLM is not skipped")
}

// TestTrainModels: TrainOptions.Models trains those LLMs only, with no
// fallback, and every one of them must train.
func TestTrainModels(t *testing.T) {
	tbl := llmTable(true)
	set, err := Train(context.Background(), tbl, DefaultTrainConfig(), TrainOptions{Models: []string{"llm-b"}})
	require.NoError(t, err)
	require.Equal(t, []string{"llm-b"}, keys(set))
	require.Empty(t, set.Fallback)
	require.Nil(t, set.For("llm-a"))
	require.Same(t, set.Models["llm-b"], set.For(" llm-b "), "blanks around a name aside, as training takes them off")

	for _, tc := range []struct {
		models []string
		want   string
	}{
		{[]string{"gpt"}, `model "gpt": no rows of that LLM model in the table (models: llm-a,llm-b,llm-c)`},
		{[]string{"llm-a", "llm-c"}, `model "llm-c": training rows are all correct or all incorrect`},
		{[]string{"llm-a", "llm-a"}, `model "llm-a" is listed twice`},
	} {
		_, err := Train(context.Background(), tbl, DefaultTrainConfig(), TrainOptions{Models: tc.models})
		require.ErrorContains(t, err, tc.want, tc.models)
	}
}

// TestTrainTransfer: with Transfer, each model with two or more training
// domains carries its leave-one-domain-out estimates, as MeasureTransfer
// makes them.
func TestTrainTransfer(t *testing.T) {
	tbl := llmTable(false)
	cfg := DefaultTrainConfig()
	var progress strings.Builder
	set, err := Train(context.Background(), tbl, cfg, TrainOptions{Transfer: true, Progress: &progress})
	require.NoError(t, err)
	for name, m := range set.Models {
		require.NotNil(t, m.Metrics.Transfer, name)
		require.Len(t, m.Metrics.Transfer.Domains, 3, name)
		require.Contains(t, progress.String(), "train: "+name+": leave-one-domain-out over 3 domains\n")
	}
	rows := tbl.Subset(tbl.Where(func(i int) bool { return tbl.Model[i] == "llm-a" }))
	tr, err := MeasureTransfer(rows, "llm-a", cfg)
	require.NoError(t, err)
	require.Equal(t, tr, set.Models["llm-a"].Metrics.Transfer)
}

func TestTrainErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Train(ctx, llmTable(false), DefaultTrainConfig(), TrainOptions{})
	require.ErrorIs(t, err, context.Canceled)

	_, err = Train(context.Background(), &Table{Features: []string{"mean"}}, DefaultTrainConfig(), TrainOptions{})
	require.ErrorContains(t, err, "table has no rows")

	bad := DefaultTrainConfig()
	bad.Folds = 1
	_, err = Train(context.Background(), llmTable(false), bad, TrainOptions{})
	require.ErrorContains(t, err, "folds = 1")

	star := llmTable(false)
	star.Model[0] = FallbackKey
	_, err = Train(context.Background(), star, DefaultTrainConfig(), TrainOptions{})
	require.ErrorContains(t, err, `an LLM model named "*", the key of the pooled fallback`)
}

// TestCalibrateOnFamilyDefault: an empty CalibrateOn is the family's
// default, train for logreg and oof for forest and mlp, so that setting
// only Family on DefaultTrainConfig gives what entrowatch train gives.
func TestCalibrateOnFamilyDefault(t *testing.T) {
	tbl := synthetic(600, []string{"mean", "std", "max"}, 3)
	for fam, want := range map[string]string{FamilyLogreg: "train", FamilyForest: "oof", FamilyMLP: "oof"} {
		t.Run(fam, func(t *testing.T) {
			cfg := DefaultTrainConfig()
			cfg.Family, cfg.Ensemble, cfg.Folds = fam, 0, 3
			require.Empty(t, cfg.CalibrateOn)
			got, err := Fit(tbl, "m", cfg)
			require.NoError(t, err)
			cfg.CalibrateOn = want
			same, err := Fit(tbl, "m", cfg)
			require.NoError(t, err)
			require.Equal(t, mustHash(t, same), mustHash(t, got))
			cfg.CalibrateOn = map[string]string{"train": "oof", "oof": "train"}[want]
			other, err := Fit(tbl, "m", cfg)
			require.NoError(t, err)
			require.NotEqual(t, mustHash(t, other), mustHash(t, got), "the choice matters on these rows")
		})
	}
}
