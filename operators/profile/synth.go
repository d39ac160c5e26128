package profile

import (
	"math"
	"math/rand/v2"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/schemas"
)

// SynthConfig shapes synthetic traces.
type SynthConfig struct {
	Traces int    // rows in the batch
	Steps  int    // steps per trace
	K      int    // alternatives per step
	Seed   uint64 // same seed, same batch
	Model  string // model name written to every row
}

// Synthetic builds a trace.v1 batch of plausible decoding traces: per step, a
// softmax over random logits with a random temperature, sorted, top K kept,
// the chosen token drawn from the top few. For benchmarks and load tests.
// The batch is allocated from mem (nil means memory.DefaultAllocator) and
// belongs to the caller, who must Release it.
func Synthetic(mem memory.Allocator, cfg SynthConfig) arrow.RecordBatch {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	b := array.NewRecordBuilder(mem, schemas.Trace)
	defer b.Release()
	s := schemas.Trace
	col := func(name string) array.Builder { return b.Field(schemas.MustIndex(s, name)) }
	tok := col(schemas.ColTokenLogprob).(*array.ListBuilder)
	tokV := tok.ValueBuilder().(*array.Float32Builder)
	top := col(schemas.ColTopLogprobs).(*array.ListBuilder)
	inner := top.ValueBuilder().(*array.ListBuilder)
	innerV := inner.ValueBuilder().(*array.Float32Builder)
	tokV.Reserve(cfg.Traces * cfg.Steps)
	inner.Reserve(cfg.Traces * cfg.Steps)
	innerV.Reserve(cfg.Traces * cfg.Steps * cfg.K)

	logits := make([]float64, cfg.K+8)
	lp := make([]float32, cfg.K)
	ts := int64(1_760_000_000_000)
	for i := range cfg.Traces {
		col(schemas.ColTraceID).(*array.StringBuilder).Append("synthetic-" + itoa(cfg.Seed) + "-" + itoa(uint64(i)))
		col(schemas.ColTS).(*array.TimestampBuilder).Append(arrow.Timestamp(ts + int64(i)))
		col(schemas.ColModel).(*array.StringBuilder).Append(cfg.Model)
		col(schemas.ColProvider).(*array.StringBuilder).Append("synthetic")
		col(schemas.ColLogprobsMode).(*array.StringBuilder).Append("raw_logprobs")
		col(schemas.ColTemperature).(*array.Float32Builder).Append(1)
		col(schemas.ColTopP).(*array.Float32Builder).Append(1)
		col(schemas.ColDomain).(*array.StringBuilder).Append("synthetic-" + itoa(uint64(i%8)))
		col(schemas.ColPrompt).AppendNull()
		col(schemas.ColAttributes).(*array.MapBuilder).Append(true)
		col(schemas.ColFinishReason).(*array.StringBuilder).Append("stop")
		col(schemas.ColSeq).(*array.Int32Builder).Append(0)
		col(schemas.ColFinal).(*array.BooleanBuilder).Append(true)
		col(schemas.ColCorrect).AppendNull()
		tok.Append(true)
		top.Append(true)
		for range cfg.Steps {
			temp := 0.3 + 2*rng.Float64()
			for j := range logits {
				logits[j] = rng.NormFloat64() / temp
			}
			sortDesc(logits)
			var z float64
			for _, l := range logits {
				z += math.Exp(l - logits[0])
			}
			lz := logits[0] + math.Log(z)
			for j := range lp {
				lp[j] = float32(logits[j] - lz)
			}
			tokV.Append(lp[rng.IntN(min(3, cfg.K))])
			inner.Append(true)
			innerV.AppendValues(lp, nil)
		}
	}
	return b.NewRecordBatch()
}

func sortDesc(a []float64) {
	for i := 1; i < len(a); i++ {
		v := a[i]
		j := i - 1
		for j >= 0 && a[j] < v {
			a[j+1] = a[j]
			j--
		}
		a[j+1] = v
	}
}

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}
