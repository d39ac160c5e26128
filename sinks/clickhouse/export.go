package clickhouse

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/entrowatch/entrowatch/schemas"
)

// ExportFilter picks the labelled responses ExportLabelled reads.
type ExportFilter struct {
	Model string    // only this LLM; "" = every one
	Since time.Time // only responses from this time on; zero = all
	// LabelsOnly leaves out responses labelled only by the correct field
	// they arrived with; by default those count as labelled, as in the
	// labelled view.
	LabelsOnly bool
}

// ExportRow is one labelled response: what `entrowatch train` reads.
type ExportRow struct {
	// TraceID, Model and Domain identify the response; Domain is its
	// effective domain: the caller's, else its cluster label ("" when it
	// has neither).
	TraceID, Model, Domain string
	Correct                bool // the label: the response was correct
	// LabelSource is the source of the label in the labels table, or
	// "response" for a label the response carried itself (FromLabels false).
	LabelSource      string
	FromLabels       bool      // the label is the trace's newest in the labels table
	TS               time.Time // the response's ts (UTC, whole seconds)
	PCorrect         *float64  // nil when no estimator was deployed
	EstimatorVersion string    // content hash of the estimator model that set PCorrect; "" without one
	// NTokens is the number of tokens the response generated.
	NTokens  int32
	Features [schemas.NumProfile + schemas.NumBaselines]float64 // ProfileFeatures then Baselines
}

// ExportColumns are the CSV header of an export, in the order of ExportRow:
// the key columns and correct that train reads, provenance that it ignores,
// then n_tokens and the features, named as entrowatch score names them.
func ExportColumns() []string {
	cols := []string{"id", "model", "domain", "correct", "label_source", "ts", "p_correct", "estimator_version", "n_tokens"}
	cols = append(cols, schemas.ProfileFeatures...)
	return append(cols, schemas.Baselines...)
}

// ExportStats is what ExportLabelled read.
type ExportStats struct {
	Rows       int            // rows passed to fn
	FromLabels int            // labelled through the labels table (the newest label of the trace)
	PerModel   map[string]int // rows per model
	Domains    int            // distinct (model, domain) pairs
}

// exportSQL is the query behind ExportLabelled: every valid response of
// scored (one row per trace_id and model, the last inserted; with or without an
// estimate, so that a first estimator can be trained from the stream) with
// its effective domain (as scored_ok: the caller's, else the cluster
// label), joined to its newest label (labels_latest). It reads scored
// rather than scored_ok or labelled because those two hold only responses
// that were estimated.
func exportSQL(db string, f ExportFilter) (string, []any) {
	feats := strings.Join(append(append([]string{}, schemas.ProfileFeatures...), schemas.Baselines...), ", ")
	var where []string
	var args []any
	where = append(where, "status = 'ok'")
	if f.Model != "" {
		where = append(where, "model = ?")
		args = append(args, f.Model)
	}
	if !f.Since.IsZero() {
		where = append(where, "ts >= toDateTime(?)")
		args = append(args, uint32(max(f.Since.Unix(), 0)))
	}
	labelled := "has_label = 1 OR isNotNull(given)"
	if f.LabelsOnly {
		labelled = "has_label = 1"
	}
	q := fmt.Sprintf(`SELECT trace_id, model, domain, if(has_label = 1, label_correct, assumeNotNull(given)) AS realised,
    if(has_label = 1, label_source, 'response') AS src, has_label, ts, p_correct, ifNull(estimator_version, ''), n_tokens, %[2]s
FROM
(
    SELECT trace_id, ts, model,
        if(ifNull(domain, '') = '', ifNull(cluster_label, ''), assumeNotNull(domain)) AS domain,
        correct AS given, p_correct, estimator_version, n_tokens, %[2]s
    FROM %[1]s.scored FINAL
    WHERE %[3]s
    ORDER BY trace_id, model, inserted_at DESC
    LIMIT 1 BY trace_id, model
) AS s
ANY LEFT JOIN
(
    SELECT trace_id, toUInt8(1) AS has_label, correct AS label_correct, source AS label_source FROM %[1]s.labels_latest
) AS l USING trace_id
WHERE %[4]s
ORDER BY model, domain, trace_id`, db, feats, strings.Join(where, " AND "), labelled)
	return q, args
}

// ExportLabelled calls fn with every labelled valid response of db's scored
// table that f picks, ordered by model, domain and trace_id: the training
// table for `entrowatch train`. The label is the trace's newest in the
// labels table, else the correct field the response arrived with.
func ExportLabelled(ctx context.Context, conn driver.Conn, db string, f ExportFilter, fn func(ExportRow) error) (ExportStats, error) {
	st := ExportStats{PerModel: map[string]int{}}
	q, args := exportSQL(db, f)
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return st, fmt.Errorf("labels export: reading %s.scored and its labels: %w", db, err)
	}
	defer rows.Close()
	domains := map[[2]string]bool{}
	for rows.Next() {
		var r ExportRow
		var correct, has uint8
		var p *float64
		dest := []any{&r.TraceID, &r.Model, &r.Domain, &correct, &r.LabelSource, &has, &r.TS, &p, &r.EstimatorVersion, &r.NTokens}
		for i := range r.Features {
			dest = append(dest, &r.Features[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return st, fmt.Errorf("labels export: %w", err)
		}
		r.Correct, r.PCorrect, r.FromLabels = correct == 1, p, has == 1
		st.Rows++
		st.PerModel[r.Model]++
		if r.FromLabels {
			st.FromLabels++
		}
		domains[[2]string{r.Model, r.Domain}] = true
		if err := fn(r); err != nil {
			return st, err
		}
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("labels export: %w", err)
	}
	st.Domains = len(domains)
	return st, nil
}
