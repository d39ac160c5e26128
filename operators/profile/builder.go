package profile

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/schemas"
)

// scoredBuilder builds the columns a profile adds to a scored.v1 batch; the
// trace columns are passed through from the input batch.
type scoredBuilder struct {
	mem     memory.Allocator
	nTokens *array.Int32Builder
	feats   [schemas.NumProfile + schemas.NumBaselines]*array.Float64Builder
	status  *array.StringBuilder
}

func newScoredBuilder(mem memory.Allocator, n int) *scoredBuilder {
	b := &scoredBuilder{
		mem:     mem,
		nTokens: array.NewInt32Builder(mem),
		status:  array.NewStringBuilder(mem),
	}
	b.nTokens.Reserve(n)
	b.status.Reserve(n)
	b.status.ReserveData(n * 2)
	for i := range b.feats {
		b.feats[i] = array.NewFloat64Builder(mem)
		b.feats[i].Reserve(n)
	}
	return b
}

func (b *scoredBuilder) append(p *Profile) {
	b.nTokens.UnsafeAppend(int32(p.N))
	for i, v := range p.Features {
		b.feats[i].UnsafeAppend(v)
	}
	for i, v := range p.Baselines {
		b.feats[schemas.NumProfile+i].UnsafeAppend(v)
	}
	b.status.Append(schemas.StatusOK)
}

func (b *scoredBuilder) appendReject(reason string) {
	b.nTokens.UnsafeAppend(0)
	for _, f := range b.feats {
		f.UnsafeAppend(0)
	}
	b.status.Append(reason)
}

func (b *scoredBuilder) release() {
	b.nTokens.Release()
	b.status.Release()
	for _, f := range b.feats {
		f.Release()
	}
}

// finish assembles the scored.v1 batch: trace columns from in (or defaults
// where a foreign producer left an optional column out), then the new ones.
func (b *scoredBuilder) finish(in arrow.RecordBatch) (arrow.RecordBatch, error) {
	n := int(in.NumRows())
	s := schemas.Scored
	cols := make([]arrow.Array, 0, s.NumFields())
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	inSchema := in.Schema()
	for _, f := range s.Fields() {
		switch f.Name {
		case schemas.ColNTokens:
			cols = append(cols, b.nTokens.NewArray())
			continue
		case schemas.ColStatus:
			cols = append(cols, b.status.NewArray())
			continue
		case schemas.ColPCorrect, schemas.ColEstimatorVersion, schemas.ColClusterID,
			schemas.ColClusterLabel, schemas.ColClusterDistance:
			cols = append(cols, array.MakeArrayOfNull(b.mem, f.Type, n))
			continue
		}
		if k := featureIndex(f.Name); k >= 0 {
			cols = append(cols, b.feats[k].NewArray())
			continue
		}
		idx := inSchema.FieldIndices(f.Name)
		if len(idx) == 0 {
			cols = append(cols, defaultColumn(b.mem, f, n))
			continue
		}
		c := in.Column(idx[0])
		if !arrow.TypeEqual(c.DataType(), f.Type) {
			return nil, fmt.Errorf("profile: column %s is %s, want %s", f.Name, c.DataType(), f.Type)
		}
		c.Retain()
		cols = append(cols, c)
	}
	return array.NewRecordBatch(s, cols, int64(n)), nil
}

var featureCols = append(append([]string{}, schemas.ProfileFeatures...), schemas.Baselines...)

func featureIndex(name string) int {
	for i, n := range featureCols {
		if n == name {
			return i
		}
	}
	return -1
}

// defaultColumn is a column a foreign trace.v1 producer omitted: nulls when
// the field is nullable, zero values (empty strings, empty maps) otherwise.
func defaultColumn(mem memory.Allocator, f arrow.Field, n int) arrow.Array {
	if f.Nullable {
		return array.MakeArrayOfNull(mem, f.Type, n)
	}
	bld := array.NewBuilder(mem, f.Type)
	defer bld.Release()
	bld.AppendEmptyValues(n)
	return bld.NewArray()
}
