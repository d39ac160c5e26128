package clustertag

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestARIPurity(t *testing.T) {
	for _, tc := range []struct {
		name        string
		truth, pred []int
		ari, purity float64
	}{
		// Contingency {2,1 | 0,1,2}: index 2, row pairs 6, column pairs 3,
		// expected 6*3/15 = 1.2, max 4.5: (2-1.2)/(4.5-1.2) = 0.2424...
		{"split one class", []int{0, 0, 0, 1, 1, 1}, []int{0, 0, 1, 1, 2, 2}, 0.8 / 3.3, 5.0 / 6},
		{"identical up to renaming", []int{0, 0, 1, 1, 2}, []int{7, 7, 3, 3, 5}, 1, 1},
		// index 0, expected 2*2/6, max 2: -(2/3)/(4/3) = -0.5
		{"crossed", []int{0, 0, 1, 1}, []int{0, 1, 0, 1}, -0.5, 0.5},
		{"all in one cluster", []int{0, 0, 1, 1}, []int{0, 0, 0, 0}, 0, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.InDelta(t, tc.ari, ARI(tc.truth, tc.pred), 1e-12)
			require.InDelta(t, tc.purity, Purity(tc.truth, tc.pred), 1e-12)
		})
	}
	require.Equal(t, []int{0, 1, 0, 2}, Codes([]string{"a", "b", "a", "c"}))
}
