package estimate

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReadTableMissingFeatures: every missing feature column is named at
// once (only the first was, one per run), and a column that differs only in
// case is suggested.
func TestReadTableMissingFeatures(t *testing.T) {
	p := filepath.Join(t.TempDir(), "t.csv")
	require.NoError(t, os.WriteFile(p, []byte("model,domain,correct,mean,Std\nm,d,1,0.5,0.1\n"), 0o644))
	_, err := ReadTable(p, []string{"mean", "foo", "std"})
	require.ErrorIs(t, err, ErrMissingFeature)
	require.ErrorContains(t, err, `feature columns "foo", "std" missing from the CSV header (have model,domain,correct,mean,Std)`)
	require.ErrorContains(t, err, `did you mean "Std" for "std"? column names are case-sensitive`)
	_, err = ReadTable(p, []string{"bar"})
	require.ErrorIs(t, err, ErrMissingFeature)
	require.ErrorContains(t, err, `column "bar" missing from the CSV header`)
	require.NotContains(t, err.Error(), "did you mean")
}
