package schemas

import (
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
)

// ClickHouse column-name suffixes for Arrow types that need more than one
// ClickHouse column (the oldest supported server, 18.16, has neither
// DateTime64 nor Map).
const (
	// CHMillisSuffix names the millisecond part (0-999) of a timestamp column:
	// ts DateTime plus ts_ms UInt16.
	CHMillisSuffix = "_ms"
	// CHKeysSuffix and CHValuesSuffix name the parallel arrays a map column
	// becomes: attributes -> attributes_keys, attributes_values.
	CHKeysSuffix   = "_keys"
	CHValuesSuffix = "_values"
)

// CHColumn is one ClickHouse column implied by an Arrow field.
type CHColumn struct {
	Name  string // ClickHouse column name
	Type  string // ClickHouse type, e.g. "Nullable(Float64)"
	Field string // the Arrow field it is derived from
}

// ClickHouseColumns returns the ClickHouse columns that store s, in schema
// order, using only types ClickHouse 18.16 knows: utf8 -> String, float32/64 ->
// Float32/64, int32 -> Int32, bool -> UInt8, timestamp -> DateTime('UTC') plus a
// UInt16 millisecond column, map<utf8,utf8> -> two Array(String) columns.
// Nullable fields become Nullable(T) (maps cannot be nullable).
func ClickHouseColumns(s *arrow.Schema) ([]CHColumn, error) {
	var out []CHColumn
	for _, f := range s.Fields() {
		switch t := f.Type.(type) {
		case *arrow.TimestampType:
			if f.Nullable {
				return nil, fmt.Errorf("column %q: nullable timestamps have no ClickHouse mapping", f.Name)
			}
			out = append(out,
				CHColumn{Name: f.Name, Type: "DateTime('UTC')", Field: f.Name},
				CHColumn{Name: f.Name + CHMillisSuffix, Type: "UInt16", Field: f.Name})
		case *arrow.MapType:
			if t.KeyType().ID() != arrow.STRING || t.ItemType().ID() != arrow.STRING || f.Nullable {
				return nil, fmt.Errorf("column %q: only non-nullable map<utf8,utf8> has a ClickHouse mapping, have %s", f.Name, t)
			}
			out = append(out,
				CHColumn{Name: f.Name + CHKeysSuffix, Type: "Array(String)", Field: f.Name},
				CHColumn{Name: f.Name + CHValuesSuffix, Type: "Array(String)", Field: f.Name})
		default:
			base, err := chScalar(f.Type)
			if err != nil {
				return nil, fmt.Errorf("column %q: %w", f.Name, err)
			}
			if f.Nullable {
				base = "Nullable(" + base + ")"
			}
			out = append(out, CHColumn{Name: f.Name, Type: base, Field: f.Name})
		}
	}
	return out, nil
}

func chScalar(t arrow.DataType) (string, error) {
	switch t.ID() {
	case arrow.STRING:
		return "String", nil
	case arrow.FLOAT32:
		return "Float32", nil
	case arrow.FLOAT64:
		return "Float64", nil
	case arrow.INT32:
		return "Int32", nil
	case arrow.INT64:
		return "Int64", nil
	case arrow.BOOL:
		return "UInt8", nil
	}
	return "", fmt.Errorf("arrow type %s has no ClickHouse mapping", t)
}

// ClickHouseColumnList is the comma-separated column names, for an INSERT's
// column list (18.16 needs it spelled out).
func ClickHouseColumnList(cols []CHColumn) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// ClickHouseColumnDefs is the "name Type" list of a CREATE TABLE, one column
// per line, indented by indent.
func ClickHouseColumnDefs(cols []CHColumn, indent string) string {
	var b strings.Builder
	for i, c := range cols {
		if i > 0 {
			b.WriteString(",\n")
		}
		b.WriteString(indent + c.Name + " " + c.Type)
	}
	return b.String()
}
