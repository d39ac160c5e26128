package schemas

import (
	"fmt"
	"math"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// StatusDetail explains a status an operator after profile set on row i of
// a scored.v1 batch without a detail of its own: the model that has no
// estimator (unknown_model), the features that are not finite
// (bad_feature). "" for other statuses. entrowatch score reports it and the
// stream puts it in the dead-letter record, in the same words.
func StatusDetail(b arrow.RecordBatch, i int, status string) string {
	sc := b.Schema()
	switch status {
	case ReasonUnknownModel:
		if idx := sc.FieldIndices(ColModel); len(idx) > 0 {
			if m, ok := b.Column(idx[0]).(*array.String); ok && m.IsValid(i) {
				return fmt.Sprintf("no estimator for model %q and no fallback applies: train one with this model's rows "+
					"(entrowatch train without --model also writes a fallback for models it has not seen)", m.Value(i))
			}
		}
	case ReasonBadFeature:
		var bad []string
		for _, name := range append(append([]string{}, ProfileFeatures...), Baselines...) {
			idx := sc.FieldIndices(name)
			if len(idx) == 0 {
				continue
			}
			c, ok := b.Column(idx[0]).(*array.Float64)
			if !ok {
				continue
			}
			if c.IsNull(i) {
				bad = append(bad, name+" is null")
			} else if v := c.Value(i); math.IsNaN(v) || math.IsInf(v, 0) {
				bad = append(bad, fmt.Sprintf("%s is %v", name, v))
			}
		}
		if len(bad) > 0 {
			return strings.Join(bad, ", ")
		}
		return "the estimator's prediction is NaN for finite features"
	}
	return ""
}
