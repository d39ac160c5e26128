package profile_test

import (
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/entropy"
	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// scoreLines reads JSON lines into one batch and scores it, returning the
// profile features of each row and the reasons of the rejected ones.
func scoreLines(t *testing.T, lines []string, f64 bool) (map[int][]float64, map[int]string) {
	t.Helper()
	mem := memory.NewGoAllocator()
	cfg := ingest.DefaultConfig()
	cfg.Float64 = f64
	rd := ingest.NewReader(strings.NewReader(strings.Join(lines, "\n")), cfg, mem)
	defer rd.Release()
	rec, err := rd.Next()
	require.NoError(t, err)
	defer rec.Release()
	require.Empty(t, rd.Rejects())
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	require.NoError(t, err)
	rejected := map[int]string{}
	out, err := op.Score(rec, func(row int, r *profile.Reject) { rejected[row] = r.Reason })
	require.NoError(t, err)
	defer out.Release()
	feats := map[int][]float64{}
	for row := range int(out.NumRows()) {
		if _, bad := rejected[row]; bad {
			continue
		}
		for _, name := range schemas.ProfileFeatures {
			feats[row] = append(feats[row], out.Column(schemas.MustIndex(out.Schema(), name)).(*array.Float64).Value(row))
		}
	}
	return feats, rejected
}

// TestRejectedNeighbourLeavesRowAlone: a response followed in its batch by
// one with a +Inf logprob (Python's Infinity) is scored as if alone. With
// the AVX-512 kernel (make test runs this package with GOEXPERIMENT=simd)
// its features were NaN: the last partial vector of its last step read the
// next response's +Inf, and the row went on as valid.
func TestRejectedNeighbourLeavesRowAlone(t *testing.T) {
	var alts []string
	for i := range 20 {
		alts = append(alts, `{"token":"t`+strconv.Itoa(i)+`","logprob":`+strconv.FormatFloat(-1-0.25*float64(i), 'g', -1, 64)+`}`)
	}
	step := `{"token":"t0","logprob":-1,"top_logprobs":[` + strings.Join(alts, ",") + `]}`
	good := `{"id":"good","model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[` + step + "," + step + "," + step + `]}}]}`
	bad := `{"id":"bad","model":"m","choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[{"token":"a","logprob":-0.5,"top_logprobs":[{"token":"a","logprob":Infinity}]}]}}]}`
	for _, f64 := range []bool{true, false} {
		alone, rej := scoreLines(t, []string{good}, f64)
		require.Empty(t, rej)
		both, rej := scoreLines(t, []string{good, bad}, f64)
		require.Equal(t, map[int]string{1: schemas.ReasonNaNLogprob}, rej)
		for i, v := range both[0] {
			require.False(t, math.IsNaN(v), "float64 %v: %s is NaN next to a rejected response (%s)", f64, schemas.ProfileFeatures[i], entropy.Kernel())
		}
		require.Equal(t, alone[0], both[0], "float64 %v", f64)
	}
}
