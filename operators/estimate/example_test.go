package estimate_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/operators/estimate"
	"github.com/entrowatch/entrowatch/schemas"
)

// labelledRows is a synthetic labelled table: two LLMs, two domains, and a
// "mean" feature (mean token entropy) whose higher values make a wrong
// answer likelier; "std" is noise.
func labelledRows() *estimate.Table {
	rng := rand.New(rand.NewPCG(1, 2))
	t := &estimate.Table{Features: []string{"mean", "std"}}
	for i := range 800 {
		mean := rng.Float64() * 2
		y := 0.0
		if rng.Float64() < 1/(1+math.Exp(4*(mean-1))) {
			y = 1
		}
		t.X = append(t.X, mean, rng.Float64())
		t.Y = append(t.Y, y)
		t.Model = append(t.Model, []string{"llm-a", "llm-b"}[i%2])
		t.Domain = append(t.Domain, []string{"math", "trivia"}[(i/2)%2])
	}
	return t
}

// row is one response of a scored.v1 batch.
type row struct {
	model, status string
	mean          float64
	correct       *bool // nil = unlabelled
}

// scoredBatch builds a scored.v1 batch of rows; columns not set here hold
// zeros, empty strings or nulls.
func scoredBatch(mem memory.Allocator, rows []row) arrow.RecordBatch {
	b := array.NewRecordBuilder(mem, schemas.Scored)
	defer b.Release()
	for _, r := range rows {
		for i, f := range schemas.Scored.Fields() {
			switch fb := b.Field(i); {
			case f.Name == schemas.ColModel:
				fb.(*array.StringBuilder).Append(r.model)
			case f.Name == schemas.ColStatus:
				fb.(*array.StringBuilder).Append(r.status)
			case f.Name == "mean":
				fb.(*array.Float64Builder).Append(r.mean)
			case f.Name == schemas.ColCorrect && r.correct != nil:
				fb.(*array.BooleanBuilder).Append(*r.correct)
			case f.Nullable:
				fb.AppendNull()
			default:
				fb.AppendEmptyValue()
			}
		}
	}
	return b.NewRecordBatch()
}

// Train a set on labelled rows, save it, load it, and estimate P(correct)
// for new scored rows with the operator.
func Example() {
	ctx := context.Background()
	set, err := estimate.Train(ctx, labelledRows(), estimate.DefaultTrainConfig(), estimate.TrainOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	names := make([]string, 0, len(set.Models))
	for _, n := range []string{"llm-a", "llm-b", estimate.FallbackKey} {
		if set.Models[n] != nil {
			names = append(names, n)
		}
	}
	fmt.Println("models:", names, "fallback:", set.Fallback)

	dir, err := os.MkdirTemp("", "estimate-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "estimator.json")
	if err := set.Save(path); err != nil {
		fmt.Println(err)
		return
	}
	loaded, err := estimate.Load(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("same version after Load:", loaded.Version == set.Version)

	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	op, err := estimate.New(estimate.Config{Set: loaded}, mem, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	in := scoredBatch(mem, []row{
		{model: "llm-a", status: schemas.StatusOK, mean: 0.5},
		{model: "llm-a", status: schemas.StatusOK, mean: 1.5},
		{model: "llm-new", status: schemas.StatusOK, mean: 0.5}, // no model of its own: the fallback
		{model: "llm-b", status: schemas.ReasonEmpty},           // passed through
	})
	out, err := op.Process(ctx, in)
	if err != nil {
		fmt.Println(err)
		return
	}
	rec := out[0]
	models := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColModel)).(*array.String)
	status := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColStatus)).(*array.String)
	p := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColPCorrect)).(*array.Float64)
	for i := range int(rec.NumRows()) {
		if p.IsNull(i) {
			fmt.Printf("%-8s %-6s p_correct null\n", models.Value(i), status.Value(i))
			continue
		}
		fmt.Printf("%-8s %-6s p_correct %.2f\n", models.Value(i), status.Value(i), p.Value(i))
	}
	rec.Release()
	in.Release()
	op.Close()
	fmt.Println("bytes still allocated:", mem.CurrentAlloc())
	// Output:
	// models: [llm-a llm-b *] fallback: *
	// same version after Load: true
	// llm-a    ok     p_correct 0.87
	// llm-a    ok     p_correct 0.01
	// llm-new  ok     p_correct 0.89
	// llm-b    empty  p_correct null
	// bytes still allocated: 0
}

// Fit one model and build the set by hand: each model is stored under its
// own name, and Save (or Marshal) seals the set.
func ExampleFit() {
	tbl := labelledRows()
	rows := tbl.Subset(tbl.Where(func(i int) bool { return tbl.Model[i] == "llm-a" }))
	m, err := estimate.Fit(rows, "llm-a", estimate.DefaultTrainConfig())
	if err != nil {
		fmt.Println(err)
		return
	}
	set := &estimate.Set{Models: map[string]*estimate.Model{m.Model: m}, Fallback: m.Model}
	if err := set.Validate(); err != nil { // before sealing: the structure only
		fmt.Println(err)
		return
	}
	b, err := set.Marshal()
	if err != nil {
		fmt.Println(err)
		return
	}
	got, err := estimate.Parse(b)
	if err != nil {
		fmt.Println(err)
		return
	}
	gm := got.Models["llm-a"]
	fmt.Printf("%s: %s+%s %s, features %v, %d rows\n", gm.Model, gm.Family, gm.Calibration, gm.Hyper, gm.Features, gm.Rows)

	// A model stored under another key is refused before it is written.
	bad := &estimate.Set{Models: map[string]*estimate.Model{estimate.FallbackKey: m}}
	_, err = bad.Marshal()
	fmt.Println(err)
	// Output:
	// llm-a: logreg+isotonic ensemble of 1, features [mean], 400 rows
	// estimator set not written: model stored under "*" is named "llm-a": store each model under its name (Models[m.Model] = m; a pooled model is named FallbackKey, "*", when it is fitted)
}

// Collect labelled training rows from scored.v1 batches, e.g. the output of
// the profile operator on responses that carry a label.
func ExampleTable_AppendScored() {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	yes, no := true, false
	rec := scoredBatch(mem, []row{
		{model: "llm-a", status: schemas.StatusOK, mean: 0.3, correct: &yes},
		{model: "llm-a", status: schemas.StatusOK, mean: 1.7, correct: &no},
		{model: "llm-a", status: schemas.StatusOK, mean: 0.9},                      // unlabelled
		{model: "llm-a", status: schemas.ReasonNoLogprobs, correct: &yes},          // not scored
		{model: "llm-a", status: schemas.StatusOK, mean: math.NaN(), correct: &no}, // bad feature
	})
	var tbl estimate.Table // no Features: the 11 profile features
	if err := tbl.AppendScored(rec); err != nil {
		fmt.Println(err)
		return
	}
	rec.Release()
	fmt.Println("rows:", tbl.N(), "features:", tbl.D(), "labels:", tbl.Y, "domains:", tbl.Domain)
	fmt.Println("skipped:", estimate.SkippedText(tbl.Skipped))
	fmt.Println("valid:", tbl.Validate() == nil, "bytes still allocated:", mem.CurrentAlloc())
	// Output:
	// rows: 2 features: 11 labels: [1 0] domains: [(none) (none)]
	// skipped: 1 no label, 1 non-finite feature, 1 status no_logprobs; a row needs correct = 1/0 (true/false), which entrowatch score writes when the responses carry a "correct" field
	// valid: true bytes still allocated: 0
}
