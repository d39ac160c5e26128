package schemas

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/stretchr/testify/require"
)

func TestClickHouseColumns(t *testing.T) {
	cols, err := ClickHouseColumns(Scored)
	require.NoError(t, err)
	byName := map[string]CHColumn{}
	for _, c := range cols {
		byName[c.Name] = c
	}
	for name, typ := range map[string]string{
		ColTraceID:                     "String",
		ColTS:                          "DateTime('UTC')",
		ColTS + CHMillisSuffix:         "UInt16",
		ColTemperature:                 "Float32",
		ColDomain:                      "Nullable(String)",
		ColAttributes + CHKeysSuffix:   "Array(String)",
		ColAttributes + CHValuesSuffix: "Array(String)",
		ColCorrect:                     "Nullable(UInt8)",
		ColNTokens:                     "Int32",
		"kurt":                         "Float64",
		ColPCorrect:                    "Nullable(Float64)",
		ColClusterID:                   "Nullable(Int32)",
		ColClusterDistance:             "Nullable(Float32)",
		ColStatus:                      "String",
	} {
		require.Equal(t, typ, byName[name].Type, name)
	}
	// Every scored.v1 field is stored: timestamps and maps take two columns.
	require.Len(t, cols, Scored.NumFields()+2)
	require.Equal(t, ColAttributes, byName[ColAttributes+CHValuesSuffix].Field)
	require.Equal(t, "trace_id, ts, ts_ms", ClickHouseColumnList(cols[:3]))
	require.Equal(t, "  trace_id String,\n  ts DateTime('UTC')", ClickHouseColumnDefs(cols[:2], "  "))

	labels, err := ClickHouseColumns(Label)
	require.NoError(t, err)
	require.Equal(t, "trace_id, correct, source, ts, ts_ms", ClickHouseColumnList(labels))
}

func TestClickHouseColumnsRejectsUnmappable(t *testing.T) {
	for _, f := range []arrow.Field{
		{Name: "l", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32)},
		{Name: "t", Type: &arrow.TimestampType{Unit: arrow.Millisecond}, Nullable: true},
		{Name: "m", Type: arrow.MapOf(arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int32)},
	} {
		_, err := ClickHouseColumns(arrow.NewSchema([]arrow.Field{f}, nil))
		require.ErrorContains(t, err, `column "`+f.Name+`"`)
	}
}
