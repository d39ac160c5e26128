package estimate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// TrainOptions selects which models Train fits; TrainConfig says how each one
// is fitted. The zero value trains every LLM model of the table that has
// the default minimum of rows, plus a fallback, silently, without the
// transfer measurement.
type TrainOptions struct {
	// Models, when not empty, fits only these LLM models and no fallback:
	// rows of other LLM models then get status unknown_model. Each must have
	// rows of both classes in the table. Default: every model of the table,
	// plus a fallback.
	Models []string
	// MinRows and MinPerClass are the fewest labelled rows, and the fewest
	// correct and incorrect rows, an LLM model needs for a model of its own
	// when a pooled fallback is trained: an LLM with fewer is left to the
	// fallback (with a warning to Progress), which is fitted on more rows
	// than a handful and estimates its rows better. Where there is nothing to
	// fall back on (a table of one LLM, whose model is the fallback; the
	// pooled model itself; the LLMs named in Models) a model under the
	// minimum is still trained, with a warning. 0 means the default,
	// DefaultMinRows (50) and DefaultMinPerClass (10: two rows of each class
	// per fold of the default 5-fold cross-validation); 1 turns the minimum
	// off.
	MinRows, MinPerClass int
	// Transfer measures each model's error on a domain it was not trained
	// on (Metrics.Transfer, see MeasureTransfer) when it has two or more
	// training domains; it refits once per domain. Default false
	// (entrowatch train turns it on).
	Transfer bool
	// Progress, when not nil, receives a line per step, e.g.
	// "train: llm-a (1200 rows)". Default nil: silent.
	Progress io.Writer
}

// Defaults of TrainOptions.MinRows and MinPerClass.
const (
	DefaultMinRows     = 50
	DefaultMinPerClass = 10
)

// ErrTooFewRows is matched (errors.Is) by CheckRows's error for an LLM model
// with fewer labelled rows than TrainOptions asks for a model of its own.
var ErrTooFewRows = errors.New("too few labelled rows")

// Validate checks that the model names are usable as Set keys and that the
// minimums are not negative.
func (o TrainOptions) Validate() error {
	for i, name := range o.Models {
		if slices.Contains(o.Models[:i], name) {
			return fmt.Errorf("model %q is listed twice in TrainOptions.Models", name)
		}
	}
	if o.MinRows < 0 || o.MinPerClass < 0 {
		return fmt.Errorf("TrainOptions.MinRows = %d, MinPerClass = %d: want >= 0 (0 = the defaults %d and %d, 1 = no minimum)",
			o.MinRows, o.MinPerClass, DefaultMinRows, DefaultMinPerClass)
	}
	return nil
}

// minimums are MinRows and MinPerClass with the defaults applied.
func (o TrainOptions) minimums() (rows, perClass int) {
	rows, perClass = o.MinRows, o.MinPerClass
	if rows == 0 {
		rows = DefaultMinRows
	}
	if perClass == 0 {
		perClass = DefaultMinPerClass
	}
	return rows, perClass
}

// CheckRows says whether rows labelled rows, positives of them correct, are
// enough for a model of their own: nil, an error matching ErrOneClass (one
// class only), or a *TooFewRowsError (matching ErrTooFewRows) that gives the
// counts and the minimums missed.
func (o TrainOptions) CheckRows(rows, positives int) error {
	if positives == 0 || positives == rows {
		return ErrOneClass
	}
	minRows, minClass := o.minimums()
	if rows < minRows || positives < minClass || rows-positives < minClass {
		return &TooFewRowsError{Rows: rows, Positives: positives, MinRows: minRows, MinPerClass: minClass}
	}
	return nil
}

// TooFewRowsError is CheckRows's refusal of an LLM model with fewer labelled
// rows, or fewer of a class, than TrainOptions asks for a model of its own.
// It matches ErrTooFewRows.
type TooFewRowsError struct {
	Rows, Positives      int // labelled rows, and how many are correct
	MinRows, MinPerClass int // the minimums applied (defaults filled in)
}

// RowsShort and ClassShort say which minimum was missed: MinRows, or
// MinPerClass for the correct or the incorrect rows.
func (e *TooFewRowsError) RowsShort() bool { return e.Rows < e.MinRows }

// ClassShort: see RowsShort.
func (e *TooFewRowsError) ClassShort() bool {
	return e.Positives < e.MinPerClass || e.Rows-e.Positives < e.MinPerClass
}

// Error names only the minimums missed, e.g. "too few labelled rows: 60 rows
// (55 correct, 5 incorrect), under the minimum of 10 incorrect".
func (e *TooFewRowsError) Error() string {
	neg := e.Rows - e.Positives
	var missed []string
	if e.RowsShort() {
		missed = append(missed, fmt.Sprintf("%d rows", e.MinRows))
	}
	switch {
	case e.Positives < e.MinPerClass && neg < e.MinPerClass:
		missed = append(missed, fmt.Sprintf("%d of each class", e.MinPerClass))
	case e.Positives < e.MinPerClass:
		missed = append(missed, fmt.Sprintf("%d correct", e.MinPerClass))
	case neg < e.MinPerClass:
		missed = append(missed, fmt.Sprintf("%d incorrect", e.MinPerClass))
	}
	return fmt.Sprintf("%v: %d rows (%d correct, %d incorrect), under the minimum of %s",
		ErrTooFewRows, e.Rows, e.Positives, neg, strings.Join(missed, " and "))
}

// Unwrap returns ErrTooFewRows, so that errors.Is matches it.
func (e *TooFewRowsError) Unwrap() error { return ErrTooFewRows }

// Train fits an estimator set on t with cfg and returns it sealed (ready for
// Config.Set or Save).
//
// By default it fits one model per LLM model of t (Table.Models) on that
// model's rows. When t holds several LLM models it also fits a pooled model
// on all rows, stored under FallbackKey and used as the fallback for LLM
// models the set does not know; an LLM model whose rows are all of one class,
// or fewer than opts.MinRows / MinPerClass, gets no model of its own and is
// scored by that fallback (the reason goes to Progress). When t holds one
// LLM model, that model is the fallback (the pooled model would be the same).
// With opts.Models it fits only those, every one must succeed, and the set
// has no fallback. A model under the minimum that is trained because nothing
// else could score its rows gets a warning on Progress.
//
// Train checks ctx between fits.
func Train(ctx context.Context, t *Table, cfg TrainConfig, opts TrainOptions) (*Set, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	all := t.Models()
	names := opts.Models
	if len(names) == 0 {
		names = all
	}
	for _, name := range names {
		if !slices.Contains(all, name) {
			return nil, fmt.Errorf("model %q: no rows of that LLM model in the table (models: %s)", name, strings.Join(all, ","))
		}
	}
	pooled := len(opts.Models) == 0 && len(names) > 1
	if pooled && slices.Contains(names, FallbackKey) {
		return nil, fmt.Errorf("the table has rows of an LLM model named %q, the key of the pooled fallback: rename that model in the table", FallbackKey)
	}
	set := &Set{Models: map[string]*Model{}}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rows := t.Subset(t.Where(func(i int) bool { return t.Model[i] == name }))
		fmt.Fprintf(progress, "train: %s (%d rows)\n", ModelName(name), rows.N())
		if err := opts.CheckRows(rows.N(), positives(rows.Y)); errors.Is(err, ErrTooFewRows) {
			if pooled {
				fmt.Fprintf(progress, "train: warning: %s gets no model of its own: %v; its rows will be scored by the pooled fallback (%s)\n", name, err, FallbackKey)
				set.skip(name, err.Error())
				continue
			}
			fmt.Fprintf(progress, "train: warning: %s: %v; trained anyway, as there is no other model to score its rows, but its estimates are unreliable: add labelled rows\n", name, err)
		}
		m, err := Fit(rows, name, cfg)
		if err != nil {
			if errors.Is(err, ErrOneClass) && pooled {
				fmt.Fprintf(progress, "train: skipping %s: %v\n", name, err)
				set.skip(name, fmt.Sprintf("its %d labelled rows are all of one class", rows.N()))
				continue
			}
			return nil, err
		}
		if opts.Transfer {
			if err := measureTransfer(ctx, progress, rows, m, cfg); err != nil {
				return nil, err
			}
		}
		set.Models[name] = m
	}
	switch {
	case pooled:
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "train: pooled fallback (%d rows)\n", t.N())
		if err := opts.CheckRows(t.N(), positives(t.Y)); errors.Is(err, ErrTooFewRows) {
			fmt.Fprintf(progress, "train: warning: pooled fallback: %v; trained anyway, but its estimates are unreliable: add labelled rows\n", err)
		}
		m, err := Fit(t, FallbackKey, cfg)
		if err != nil {
			return nil, err
		}
		if opts.Transfer {
			if err := measureTransfer(ctx, progress, t, m, cfg); err != nil {
				return nil, err
			}
		}
		set.Models[FallbackKey] = m
		set.Fallback = FallbackKey
	case len(opts.Models) == 0:
		// The pooled model of one LLM is that LLM's model: it serves
		// unknown models too, as the pooled one does when there are several.
		set.Fallback = names[0]
	}
	// Train's own models are valid; checking here turns a parameter that
	// went NaN or infinite in fitting into an error that names it, instead
	// of an artifact that every reader refuses.
	if err := set.Validate(); err != nil {
		return nil, fmt.Errorf("trained estimator is not usable: %w", err)
	}
	if err := set.Seal(); err != nil {
		return nil, fmt.Errorf("sealing the trained estimator: %w", err)
	}
	return set, nil
}

// skip records why LLM model name got no model of its own.
func (s *Set) skip(name, why string) {
	if s.Skipped == nil {
		s.Skipped = map[string]string{}
	}
	s.Skipped[name] = why
}

// positives counts the correct rows.
func positives(y []float64) int {
	n := 0
	for _, v := range y {
		if v > 0.5 {
			n++
		}
	}
	return n
}

// measureTransfer records in m.Metrics.Transfer the estimates of refits of
// rows without each of m's training domains in turn.
func measureTransfer(ctx context.Context, progress io.Writer, rows *Table, m *Model, cfg TrainConfig) error {
	if len(m.TrainDomains) < 2 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fmt.Fprintf(progress, "train: %s: leave-one-domain-out over %d domains\n", ModelName(m.Model), len(m.TrainDomains))
	tr, err := MeasureTransfer(rows, m.Model, cfg)
	if err != nil {
		return fmt.Errorf("model %s: %w", ModelName(m.Model), err)
	}
	m.Metrics.Transfer = tr
	return nil
}

// ModelName is an LLM model's name for a message: the name itself, or ""
// for rows that carry none, which would otherwise print as nothing at all.
func ModelName(name string) string {
	if name == "" {
		return `""`
	}
	return name
}
