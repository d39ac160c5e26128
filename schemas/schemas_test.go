package schemas_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

func TestSchemas(t *testing.T) {
	require.Equal(t, "trace.v1", schemas.NameOf(schemas.Trace))
	require.Equal(t, "trace.v1", schemas.NameOf(schemas.Trace64))
	require.Equal(t, "scored.v1", schemas.NameOf(schemas.Scored))
	require.Equal(t, "label.v1", schemas.NameOf(schemas.Label))
	require.Len(t, schemas.ProfileFeatures, schemas.NumProfile)
	require.Len(t, schemas.Baselines, schemas.NumBaselines)

	// Trace64 differs from Trace only in the logprob lists' element type.
	require.Equal(t, schemas.Trace.NumFields(), schemas.Trace64.NumFields())
	for i, f := range schemas.Trace.Fields() {
		g := schemas.Trace64.Field(i)
		require.Equal(t, f.Name, g.Name)
		switch f.Name {
		case schemas.ColTokenLogprob:
			require.True(t, arrow.TypeEqual(g.Type, arrow.ListOf(arrow.PrimitiveTypes.Float64)))
		case schemas.ColTopLogprobs:
			require.True(t, arrow.TypeEqual(g.Type, arrow.ListOf(arrow.ListOf(arrow.PrimitiveTypes.Float64))))
		default:
			require.True(t, arrow.TypeEqual(f.Type, g.Type), f.Name)
		}
	}
	// The trace's pass-through columns appear in scored.v1 with the same types,
	// and the per-step lists do not.
	for _, f := range schemas.Trace.Fields() {
		got, ok := schemas.Scored.FieldsByName(f.Name)
		switch f.Name {
		case schemas.ColTokenLogprob, schemas.ColTopLogprobs, schemas.ColSeq, schemas.ColFinal:
			require.False(t, ok, f.Name)
		default:
			require.True(t, ok, f.Name)
			require.True(t, arrow.TypeEqual(f.Type, got[0].Type), f.Name)
		}
	}
	for _, n := range append(append([]string{}, schemas.ProfileFeatures...), schemas.Baselines...) {
		i := schemas.MustIndex(schemas.Scored, n)
		require.Equal(t, arrow.FLOAT64, schemas.Scored.Field(i).Type.ID())
	}
	_, err := schemas.Index(schemas.Scored, "nope")
	require.ErrorContains(t, err, `column "nope" missing`)
}
