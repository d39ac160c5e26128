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
// is fitted. The zero value trains every LLM model of the table plus a
// fallback, silently, without the transfer measurement.
type TrainOptions struct {
	// Models, when not empty, fits only these LLM models and no fallback:
	// rows of other LLM models then get status unknown_model. Each must have
	// rows of both classes in the table. Default: every model of the table,
	// plus a fallback.
	Models []string
	// Transfer measures each model's error on a domain it was not trained
	// on (Metrics.Transfer, see MeasureTransfer) when it has two or more
	// training domains; it refits once per domain. Default false
	// (entrowatch train turns it on).
	Transfer bool
	// Progress, when not nil, receives a line per step, e.g.
	// "train: llm-a (1200 rows)". Default nil: silent.
	Progress io.Writer
}

// Validate checks that the model names are usable as Set keys.
func (o TrainOptions) Validate() error {
	for i, name := range o.Models {
		if slices.Contains(o.Models[:i], name) {
			return fmt.Errorf("model %q is listed twice in TrainOptions.Models", name)
		}
	}
	return nil
}

// Train fits an estimator set on t with cfg and returns it sealed (ready for
// Config.Set or Save).
//
// By default it fits one model per LLM model of t (Table.Models) on that
// model's rows; a model whose rows are all of one class is skipped (the
// reason goes to Progress). When t holds several LLM models it also fits a
// pooled model on all rows, stored under FallbackKey and used as the
// fallback for LLM models the set does not know; when t holds one, that
// model is the fallback (the pooled model would be the same). With
// opts.Models it fits only those, every one must succeed, and the set has no
// fallback.
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
		fmt.Fprintf(progress, "train: %s (%d rows)\n", name, rows.N())
		m, err := Fit(rows, name, cfg)
		if err != nil {
			if errors.Is(err, ErrOneClass) && pooled {
				fmt.Fprintf(progress, "train: skipping %s: %v\n", name, err)
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
	set.Seal()
	return set, nil
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
	fmt.Fprintf(progress, "train: %s: leave-one-domain-out over %d domains\n", m.Model, len(m.TrainDomains))
	tr, err := MeasureTransfer(rows, m.Model, cfg)
	if err != nil {
		return fmt.Errorf("model %s: %w", m.Model, err)
	}
	m.Metrics.Transfer = tr
	return nil
}
