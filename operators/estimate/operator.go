// Package estimate turns entropy profiles into calibrated probabilities of
// correctness: model families (logistic regression, a boosted tree ensemble,
// a small MLP), Platt and isotonic calibration, training with
// cross-validation, the versioned estimator artifact, the leave-domains-out
// evaluation, and the operator that adds p_correct to scored.v1 batches.
package estimate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/schemas"
)

// Config configures the estimate operator.
type Config struct {
	// Path of the estimator JSON written by `entrowatch train` or Set.Save.
	// Ignored when Set is given.
	Path string `yaml:"path"`
	// Set is an estimator set already in memory (from Train, Load or Parse,
	// or built by hand and sealed); it takes precedence over Path. It must
	// pass Set.Validate and be sealed (Set.Seal) after its last change: each
	// row's estimator_version is its model's content hash.
	Set *Set `yaml:"-"`
	// Strict disables the set's fallback: rows of a model without its own
	// artifact get status unknown_model. Default false (use the fallback when
	// the set has one).
	Strict bool `yaml:"strict"`
}

// DefaultConfig returns the defaults: no estimator yet, fallback allowed.
func DefaultConfig() Config { return Config{} }

// Validate checks that an estimator is named and, when Set is given, that it
// is valid and sealed.
func (c Config) Validate() error {
	if c.Set == nil && c.Path == "" {
		return errors.New("estimate: no estimator given (set Path to an estimator JSON written by entrowatch train or Set.Save, or Set to a set from Train or Load)")
	}
	if c.Set == nil {
		return nil
	}
	if err := c.Set.Validate(); err != nil {
		return fmt.Errorf("estimate: Config.Set: %w", err)
	}
	if c.Set.Version == "" {
		return errors.New("estimate: Config.Set is not sealed (no version to write to estimator_version): call its Seal method after building it")
	}
	if err := c.Set.checkSealed("the set changed after Seal: call Seal again"); err != nil {
		return fmt.Errorf("estimate: Config.Set: %w", err)
	}
	return nil
}

// Stats counts the rows an Operator has seen.
type Stats struct {
	Estimated    int64 // rows that received p_correct
	Fallback     int64 // of Estimated, rows of a model without its own artifact, scored by the set's fallback
	UnknownModel int64 // rows whose model has no artifact (status unknown_model)
	BadFeature   int64 // rows with a NaN or Inf feature (status bad_feature)
	Passed       int64 // rows that arrived with a status other than ok
}

// Operator fills p_correct and estimator_version of scored.v1 rows with status
// "ok". One Operator per goroutine: it reuses buffers.
type Operator struct {
	set    *Set
	strict bool
	closed bool
	mem    memory.Allocator
	log    *slog.Logger
	stats  Stats

	p      *array.Float64Builder
	ver    *array.StringBuilder
	status *array.StringBuilder
	x, z   []float64
	cols   map[*Model][]*array.Float64 // feature columns of the current batch
	byCol  map[int]*array.Float64      // the current batch's columns read so far, as float64 (released after the batch)
	warned map[string]bool             // unknown models already logged (bounded)
	// fellBack counts, per LLM model, the rows scored by the fallback
	// (at most maxFallbackNames models are named).
	fellBack map[string]int64
}

// maxFallbackNames bounds the models FallbackRows names; Stats.Fallback
// counts every row.
const maxFallbackNames = 1000

// New builds the operator; it loads cfg.Path unless cfg.Set is given, checks
// the set (see Config.Validate), and checks that every model's features are
// numeric columns of scored.v1 that exist when the operator runs: float64, or
// integer (n_tokens) or float32, read as float64; not p_correct or the
// cluster columns, which are written by the estimator or after it.
func New(cfg Config, mem memory.Allocator, log *slog.Logger) (*Operator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	set := cfg.Set
	if set == nil {
		var err error
		if set, err = Load(cfg.Path); err != nil {
			return nil, err
		}
	}
	width := 0
	for name, m := range set.Models {
		for _, f := range m.Features {
			i, err := schemas.Index(schemas.Scored, f)
			if err != nil {
				return nil, fmt.Errorf("estimate: model %q uses feature %q, which scored rows do not carry: %w", name, f, err)
			}
			if why := notFeature(f); why != "" {
				return nil, fmt.Errorf("estimate: model %q uses column %q, which %s; retrain without it (entrowatch train --features)", name, f, why)
			}
			if t := schemas.Scored.Field(i).Type; !numericType(t) {
				return nil, fmt.Errorf("estimate: model %q uses column %q, which is %s, not a number; retrain without it (entrowatch train --features)", name, f, t)
			}
		}
		width = max(width, len(m.Features))
		for _, mm := range m.Members {
			width = max(width, len(mm.Features)) // at most len(m.Features) in a valid set; z must hold them all
		}
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Operator{set: set, strict: cfg.Strict, mem: mem, log: log,
		p: array.NewFloat64Builder(mem), ver: array.NewStringBuilder(mem), status: array.NewStringBuilder(mem),
		x: make([]float64, width), z: make([]float64, width), cols: map[*Model][]*array.Float64{}, byCol: map[int]*array.Float64{},
		warned: map[string]bool{}, fellBack: map[string]int64{}}, nil
}

// Name implements streams.Operator.
func (o *Operator) Name() string { return "estimate" }

// Stats returns the running counts.
func (o *Operator) Stats() Stats { return o.stats }

// FallbackRows returns, per LLM model without an artifact of its own, how
// many rows the set's fallback scored (a copy; at most 1000 models are
// named, Stats.Fallback counts them all). Empty with Config.Strict or when
// every row's model has its own artifact.
func (o *Operator) FallbackRows() map[string]int64 {
	out := make(map[string]int64, len(o.fellBack))
	for k, v := range o.fellBack {
		out[k] = v
	}
	return out
}

// Models lists the LLM models of the loaded set (sorted; the pooled fallback
// key "*" included) and the fallback key ("" when none).
func (o *Operator) Models() (names []string, fallback string) {
	for k := range o.set.Models {
		names = append(names, k)
	}
	slices.Sort(names)
	return names, o.set.Fallback
}

// LeftOut returns why training gave LLM model name no model of its own
// (Set.Skipped), or "" when the set records no reason: the model was not in
// the training table, or the set was written before reasons were recorded.
func (o *Operator) LeftOut(name string) string { return o.set.Skipped[name] }

// Version is the loaded set's version.
func (o *Operator) Version() string { return o.set.Version }

// ModelVersions returns, by model name (FallbackKey for the pooled
// fallback), the version each model writes to the estimator_version column
// of its rows: its own content hash, not the set's Version.
func (o *Operator) ModelVersions() map[string]string {
	out := make(map[string]string, len(o.set.Models))
	for name, m := range o.set.Models {
		out[name] = m.Version
	}
	return out
}

// ErrClosed is wrapped by the error of Process on a closed Operator.
var ErrClosed = errors.New("estimate operator is closed")

// Close releases the builders. A second Close does nothing; Process after
// Close returns an error wrapping ErrClosed.
func (o *Operator) Close() {
	if o.closed {
		return
	}
	o.closed = true
	o.p.Release()
	o.ver.Release()
	o.status.Release()
}

// model returns the model that scores rows of LLM model name, and whether
// it is the fallback.
func (o *Operator) model(name string) (*Model, bool) {
	if m := o.set.Models[name]; m != nil {
		return m, false
	}
	if !o.strict && o.set.Fallback != "" {
		return o.set.Models[o.set.Fallback], true
	}
	return nil, false
}

// fallBack records n rows of LLM model name scored by the fallback.
func (o *Operator) fallBack(name string, n int64) {
	if n == 0 {
		return
	}
	o.stats.Fallback += n
	if _, ok := o.fellBack[name]; ok || len(o.fellBack) < maxFallbackNames {
		o.fellBack[strings.Clone(name)] += n
	}
}

// Process implements streams.Operator: the output reuses every input column
// except p_correct, estimator_version and status.
func (o *Operator) Process(ctx context.Context, in arrow.RecordBatch) ([]arrow.RecordBatch, error) {
	if o.closed {
		return nil, fmt.Errorf("%w: Process after Close; make a new operator with estimate.New", ErrClosed)
	}
	if in == nil {
		return nil, errors.New("estimate: Process of a nil batch")
	}
	s := in.Schema()
	idx := func(name string) (int, error) {
		i, err := schemas.Index(s, name)
		if err != nil {
			return 0, fmt.Errorf("estimate: input is not scored.v1: %w", err)
		}
		return i, nil
	}
	mi, err := idx(schemas.ColModel)
	if err != nil {
		return nil, err
	}
	si, err := idx(schemas.ColStatus)
	if err != nil {
		return nil, err
	}
	pi, err := idx(schemas.ColPCorrect)
	if err != nil {
		return nil, err
	}
	vi, err := idx(schemas.ColEstimatorVersion)
	if err != nil {
		return nil, err
	}
	models, ok1 := in.Column(mi).(*array.String)
	status, ok2 := in.Column(si).(*array.String)
	if !ok1 || !ok2 {
		return nil, errors.New("estimate: input is not scored.v1: model and status must be utf8")
	}
	clear(o.cols)
	defer o.releaseColumns()
	n := int(in.NumRows())
	o.p.Reserve(n)
	o.ver.Reserve(n)
	o.status.Reserve(n)
	o.status.ReserveData(n * len(schemas.StatusOK))
	o.ver.ReserveData(n * len(o.set.Version))
	var lastName string
	var last *Model
	haveLast, lastFallback := false, false
	var fallbackRun int64 // rows of lastName scored by the fallback, not yet counted
	for r := range n {
		st := status.Value(r)
		if st != schemas.StatusOK {
			o.p.AppendNull()
			o.ver.AppendNull()
			o.status.Append(st)
			o.stats.Passed++
			continue
		}
		name := models.Value(r)
		if !haveLast || name != lastName {
			o.fallBack(lastName, fallbackRun)
			fallbackRun = 0
			last, lastFallback = o.model(name)
			lastName, haveLast = name, true
			if !o.warned[name] && len(o.warned) < 100 {
				switch {
				case last == nil:
					o.warned[strings.Clone(name)] = true
					o.log.Warn("no estimator for model; its rows get status unknown_model", "model", name, "estimator", o.set.Version)
				case lastFallback:
					// Scored, but by a model trained on other LLMs: the
					// estimate may be far off (an estimator is per LLM).
					o.warned[strings.Clone(name)] = true
					o.log.Warn("no model of its own for this LLM: its rows are scored by the estimator's fallback, trained on the pooled rows of the training table (mostly or only other LLMs), and may be far off; train one on labelled rows of it (entrowatch train)",
						"model", name, "fallback", o.set.Fallback, "estimator", o.set.Version)
				}
			}
		}
		m := last
		if m == nil {
			o.p.AppendNull()
			o.ver.AppendNull()
			o.status.Append(schemas.ReasonUnknownModel)
			o.stats.UnknownModel++
			continue
		}
		cols, ok := o.cols[m]
		if !ok {
			if cols, err = o.featureColumns(in, m); err != nil {
				o.reset()
				return nil, err
			}
			o.cols[m] = cols
		}
		bad := false
		x := o.x[:len(cols)]
		for j, c := range cols {
			v := c.Value(r)
			if c.IsNull(r) || math.IsNaN(v) || math.IsInf(v, 0) {
				bad = true
			}
			x[j] = v
		}
		var p float64
		if !bad {
			p = m.Predict(x, o.z)
			bad = !(p >= 0 && p <= 1) // NaN (from a feature Predict cannot use); never a p_correct outside [0,1]
		}
		if bad {
			o.p.AppendNull()
			o.ver.AppendNull()
			o.status.Append(schemas.ReasonBadFeature)
			o.stats.BadFeature++
			continue
		}
		o.p.UnsafeAppend(p)
		o.ver.Append(m.Version)
		o.status.Append(schemas.StatusOK)
		o.stats.Estimated++
		if lastFallback {
			fallbackRun++
		}
	}
	o.fallBack(lastName, fallbackRun)
	cols := make([]arrow.Array, in.NumCols())
	copy(cols, in.Columns())
	pa, va, sa := o.p.NewArray(), o.ver.NewArray(), o.status.NewArray()
	defer pa.Release()
	defer va.Release()
	defer sa.Release()
	cols[pi], cols[vi], cols[si] = pa, va, sa
	// NewRecordBatch retains every column; the unchanged ones are shared with in.
	return []arrow.RecordBatch{array.NewRecordBatch(s, cols, int64(n))}, nil
}

func (o *Operator) reset() {
	o.p.NewArray().Release()
	o.ver.NewArray().Release()
	o.status.NewArray().Release()
}

// featureColumns returns m's feature columns of in as float64 (integer
// columns converted once per batch; releaseColumns frees them).
func (o *Operator) featureColumns(in arrow.RecordBatch, m *Model) ([]*array.Float64, error) {
	cols := make([]*array.Float64, len(m.Features))
	for j, f := range m.Features {
		i, err := schemas.Index(in.Schema(), f)
		if err != nil {
			return nil, fmt.Errorf("estimate: model %q needs feature %q: %w", m.Model, f, err)
		}
		c, ok := o.byCol[i]
		if !ok {
			if c, err = asFloat64(o.mem, in.Column(i)); err != nil {
				return nil, fmt.Errorf("estimate: feature %q: %w", f, err)
			}
			o.byCol[i] = c
		}
		cols[j] = c
	}
	return cols, nil
}

// releaseColumns releases the current batch's feature columns.
func (o *Operator) releaseColumns() {
	for i, c := range o.byCol {
		c.Release()
		delete(o.byCol, i)
	}
}
