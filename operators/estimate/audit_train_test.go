package estimate

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// tinyLLM adds to t the rows of an LLM "tiny" with correct rows in d0 and
// incorrect ones in d1, pos and neg of them.
func tinyLLM(t *Table, pos, neg int) *Table {
	for i := range pos + neg {
		y := 0.0
		d := "d1"
		if i < pos {
			y, d = 1, "d0"
		}
		t.X = append(t.X, float64(i%5)-2, 0.5)
		t.Y = append(t.Y, y)
		t.Model = append(t.Model, "tiny")
		t.Domain = append(t.Domain, d)
	}
	return t
}

// TestTrainMinimumRows: an LLM with too few rows (3: 2 correct, 1 not) gets
// no model of its own when a pooled fallback is trained, with a warning;
// before, a 3-row model was fitted (out-of-fold AUROC 0) and overrode the
// much better fallback.
func TestTrainMinimumRows(t *testing.T) {
	tbl := tinyLLM(llmTable(false), 2, 1)
	var progress strings.Builder
	set, err := Train(context.Background(), tbl, DefaultTrainConfig(), TrainOptions{Progress: &progress})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"llm-a", "llm-b", FallbackKey}, keys(set))
	require.Same(t, set.Models[FallbackKey], set.For("tiny"))
	require.Contains(t, progress.String(), "train: warning: tiny gets no model of its own: too few labelled rows: "+
		"3 rows (2 correct, 1 incorrect), under the minimum of 50 rows and 10 of each class; its rows will be scored by the pooled fallback (*)\n")
	require.Equal(t, tbl.N(), set.Models[FallbackKey].Rows, "its rows still train the fallback")

	// Enough rows, but too few of one class.
	tbl = tinyLLM(llmTable(false), 100, 9)
	set, err = Train(context.Background(), tbl, DefaultTrainConfig(), TrainOptions{})
	require.NoError(t, err)
	require.Nil(t, set.Models["tiny"])

	// The minimum can be lowered (1 = none) and raised.
	tbl = tinyLLM(llmTable(false), 2, 1)
	set, err = Train(context.Background(), tbl, DefaultTrainConfig(), TrainOptions{MinRows: 1, MinPerClass: 1})
	require.NoError(t, err)
	require.NotNil(t, set.Models["tiny"])
	set, err = Train(context.Background(), llmTable(false), DefaultTrainConfig(), TrainOptions{MinRows: 601})
	require.NoError(t, err)
	require.Equal(t, []string{FallbackKey}, keys(set), "llm-a and llm-b have 600 rows each")

	_, err = Train(context.Background(), tbl, DefaultTrainConfig(), TrainOptions{MinRows: -1})
	require.ErrorContains(t, err, "MinRows = -1")
}

// TestTrainMinimumNothingToFallBackOn: where no other model could score the
// rows (one LLM; an LLM named in Models), a model under the minimum is
// trained, with a warning.
func TestTrainMinimumNothingToFallBackOn(t *testing.T) {
	tbl := tinyLLM(&Table{Features: []string{"mean", "std"}}, 12, 12)
	var progress strings.Builder
	set, err := Train(context.Background(), tbl, DefaultTrainConfig(), TrainOptions{Progress: &progress})
	require.NoError(t, err)
	require.Equal(t, []string{"tiny"}, keys(set))
	require.Contains(t, progress.String(), "train: warning: tiny: too few labelled rows: 24 rows (12 correct, 12 incorrect)")
	require.Contains(t, progress.String(), "trained anyway")

	tbl = tinyLLM(llmTable(false), 12, 12)
	progress.Reset()
	set, err = Train(context.Background(), tbl, DefaultTrainConfig(), TrainOptions{Models: []string{"tiny"}, Progress: &progress})
	require.NoError(t, err)
	require.Equal(t, []string{"tiny"}, keys(set))
	require.Contains(t, progress.String(), "trained anyway")
}

func TestCheckRows(t *testing.T) {
	var o TrainOptions
	require.NoError(t, o.CheckRows(50, 10))
	require.ErrorIs(t, o.CheckRows(100, 0), ErrOneClass)
	require.ErrorIs(t, o.CheckRows(100, 100), ErrOneClass)
	for _, c := range [][2]int{{49, 20}, {100, 9}, {100, 91}} {
		err := o.CheckRows(c[0], c[1])
		require.True(t, errors.Is(err, ErrTooFewRows), "%v: %v", c, err)
	}
	require.NoError(t, TrainOptions{MinRows: 1, MinPerClass: 1}.CheckRows(2, 1))
}
