package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

// runLabelExport writes the labelled responses of the scored table as a
// training table for entrowatch train.
func runLabelExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("labels export", "--clickhouse DSN --out FILE.csv [--model NAME] [--since 720h] [--labels-only]", stderr)
	chf := addClickHouseFlags(fs)
	out := fs.String("out", "", "CSV file to write the training table to (.csv); \"-\" for stdout")
	model := fs.String("model", "", "only this LLM (default: every one)")
	since := fs.Duration("since", 0, "only responses of the last DURATION (e.g. 720h; default: all of scored)")
	labelsOnly := fs.Bool("labels-only", false, "only responses labelled through the labels table, not those that arrived with their own correct field")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(stderr, "labels export: --out FILE.csv is required (\"-\" for stdout)")
		fs.Usage()
		return errUsage
	}
	if *out != "-" && !strings.EqualFold(filepath.Ext(*out), ".csv") {
		return badFlag("--out %s: labels export writes CSV, the table entrowatch train reads; name the file .csv, or \"-\" for stdout", *out)
	}
	if *since < 0 {
		return badFlag("--since %v: want a positive duration such as 720h", *since)
	}
	cfg, err := chf.config(fs)
	if err != nil {
		return err
	}
	filter := clickhouse.ExportFilter{Model: *model, LabelsOnly: *labelsOnly}
	if *since > 0 {
		filter.Since = time.Now().Add(-*since)
	}
	// Check the destination first, then write beside it and rename when
	// complete: a failed export leaves no partial file (and keeps an
	// earlier one).
	tmp, commit, err := atomicPath(*out)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	defer commit(false)
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	db := cfg.DatabaseName()
	if err := clickhouse.CheckSchema(ctx, conn, db); err != nil {
		return err
	}

	var w io.Writer = stdout
	var f *os.File
	if tmp != "-" {
		if f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_TRUNC, 0); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	cw := csv.NewWriter(bw)
	if err := cw.Write(clickhouse.ExportColumns()); err != nil {
		return err
	}
	rec := make([]string, len(clickhouse.ExportColumns()))
	st, err := clickhouse.ExportLabelled(ctx, conn, db, filter, func(r clickhouse.ExportRow) error {
		rec = rec[:0]
		rec = append(rec, r.TraceID, r.Model, r.Domain, strconv.Itoa(b2i(r.Correct)), r.LabelSource,
			r.TS.UTC().Format(time.RFC3339), "", r.EstimatorVersion, strconv.Itoa(int(r.NTokens)))
		if r.PCorrect != nil {
			rec[6] = ftoa(*r.PCorrect)
		}
		for _, v := range r.Features {
			rec = append(rec, ftoa(v))
		}
		return cw.Write(rec)
	})
	if err != nil {
		return err
	}
	if st.Rows == 0 {
		return errors.New("labels export: nothing to export: " + emptyExportReason(filter, db) + "; no file written")
	}
	cw.Flush()
	err = errors.Join(cw.Error(), bw.Flush())
	if f != nil && err == nil {
		err = errors.Join(f.Sync(), f.Close())
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	if err := commit(true); err != nil {
		return err
	}
	models := slices.Sorted(maps.Keys(st.PerModel))
	per := make([]string, len(models))
	for i, m := range models {
		per[i] = fmt.Sprintf("%s %d", m, st.PerModel[m])
	}
	dest := *out
	if dest == "-" {
		dest = "stdout"
	}
	fmt.Fprintf(stderr, "labels export: %s written to %s (%s; %s; %d through the labels table, %d by the correct field they arrived with)\n",
		words.Count(st.Rows, "labelled response"), dest, strings.Join(per, ", "), words.Count(st.Domains, "model x domain slice"), st.FromLabels, st.Rows-st.FromLabels)
	if *out != "-" {
		fmt.Fprintf(stderr, "next: entrowatch train --in FIRST.csv,%s --out estimator.json, FIRST.csv being the table the deployed estimator was trained on: "+
			"production labels cover the domains that got labels (the labeling queue asks where the estimate is worst), not all of them "+
			"(entrowatch eval --in FIRST.csv,%s --report DIR to check it first)\n", *out, *out)
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// emptyExportReason says what an export that found nothing looked for.
func emptyExportReason(f clickhouse.ExportFilter, db string) string {
	what := "no valid response in " + db + ".scored has a label (in the labels table"
	if !f.LabelsOnly {
		what += " or a correct field of its own"
	}
	what += ")"
	if f.Model != "" {
		what += fmt.Sprintf(" for model %q", f.Model)
	}
	if !f.Since.IsZero() {
		what += " since " + f.Since.UTC().Format(time.RFC3339)
	}
	return what + "; label some first (entrowatch labels requests, then labels import)"
}
