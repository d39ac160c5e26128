package clickhouse

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/schemas"
)

// TestExportLabelled: every labelled valid response once, with its newest
// label (the labels table before the response's own correct field), its
// effective domain and its features; rejected responses, unlabelled ones
// and labels of no response are left out; the filters pick what they say.
func TestExportLabelled(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	db := cfg.Database
	rows := []row{
		{id: "a", ts: t0, domain: "X", p: 0.9, correct: 1, clusterID: -2, mean: 1.25, max: 3, q50: 0.75},         // own label 1
		{id: "b", ts: t0, domain: "X", p: 0.8, correct: -1, clusterID: -2, mean: 2},                              // table label 0
		{id: "c", ts: t0, domain: "X", p: 0.7, correct: 0, clusterID: -2, mean: 3},                               // own 0, table 1 wins
		{id: "d", ts: t0, domain: "X", p: 0.3, correct: -1, clusterID: -2, mean: 4},                              // relabelled 1 -> 0
		{id: "e", ts: t0, domain: "X", p: 0.2, correct: -1, clusterID: -2, mean: 5},                              // unlabelled: out
		{id: "f", ts: t0.Add(2 * time.Hour), p: -1, correct: -1, clusterID: 3, cluster: "topic-3", mean: 6},      // no estimate, cluster domain
		{id: "g", ts: t0, model: "m2", domain: "Y", p: 0.6, correct: 1, clusterID: -2, mean: 7},                  // other model
		{id: "h", ts: t0, domain: "X", p: -1, correct: 1, clusterID: -2, status: schemas.ReasonTooLong, mean: 8}, // rejected: out
		{id: "b", ts: t0, model: "m2", domain: "X", p: 0.5, correct: -1, clusterID: -2, mean: 9},                 // b's id from another model: labelled too
	}
	write(t, cfg, rows)
	write(t, cfg, rows[:4]) // a redelivery: still one row each
	require.NoError(t, InsertLabels(ctx, conn, db, []Label{
		{TraceID: "b", Correct: false, Source: "human", TS: t0.Add(time.Hour)},
		{TraceID: "c", Correct: true, Source: "human", TS: t0.Add(time.Hour)},
		{TraceID: "d", Correct: true, Source: "human", TS: t0.Add(time.Hour)},
		{TraceID: "d", Correct: false, Source: "review", TS: t0.Add(2 * time.Hour)},
		{TraceID: "f", Correct: true, Source: "human", TS: t0.Add(3 * time.Hour)},
		{TraceID: "h", Correct: true, Source: "human", TS: t0.Add(time.Hour)},
		{TraceID: "nobody", Correct: true, Source: "human", TS: t0.Add(time.Hour)},
	}))

	export := func(f ExportFilter) ([]ExportRow, ExportStats) {
		t.Helper()
		var got []ExportRow
		st, err := ExportLabelled(ctx, conn, db, f, func(r ExportRow) error { got = append(got, r); return nil })
		require.NoError(t, err)
		return got, st
	}
	brief := func(rs []ExportRow) []string {
		var s []string
		for _, r := range rs {
			s = append(s, fmt.Sprintf("%s %s %s %v %s %v", r.Model, r.Domain, r.TraceID, r.Correct, r.LabelSource, r.FromLabels))
		}
		return s
	}

	got, st := export(ExportFilter{})
	require.Equal(t, []string{
		"m1 X a true response false",
		"m1 X b false human true",
		"m1 X c true human true",
		"m1 X d false review true",
		"m1 topic-3 f true human true", // no domain given: the cluster label is its domain
		// A label names a trace id: it is the label of every model's
		// response with that id, as in the labelled view (the export kept
		// one of the two; retrain audit F2).
		"m2 X b false human true",
		"m2 Y g true response false",
	}, brief(got))
	require.Equal(t, ExportStats{Rows: 7, FromLabels: 5, PerModel: map[string]int{"m1": 5, "m2": 2}, Domains: 4}, st)

	a := got[0]
	require.Equal(t, t0, a.TS.UTC())
	require.NotNil(t, a.PCorrect)
	require.InDelta(t, 0.9, *a.PCorrect, 1e-12)
	require.Equal(t, "test-1", a.EstimatorVersion)
	require.Equal(t, int32(100), a.NTokens)
	require.Equal(t, 1.25, a.Features[0]) // mean
	require.Equal(t, 3.0, a.Features[2])  // max
	require.Equal(t, 0.75, a.Features[5]) // q50
	require.Equal(t, 1.5, a.Features[schemas.NumProfile+schemas.NumBaselines-1])
	require.Nil(t, got[4].PCorrect, "a response without an estimate is exported with an empty p_correct")
	require.Len(t, ExportColumns(), 9+schemas.NumProfile+schemas.NumBaselines)

	got, _ = export(ExportFilter{LabelsOnly: true})
	require.Equal(t, []string{"m1 X b false human true", "m1 X c true human true", "m1 X d false review true", "m1 topic-3 f true human true", "m2 X b false human true"}, brief(got))
	got, _ = export(ExportFilter{Model: "m2"})
	require.Equal(t, []string{"m2 X b false human true", "m2 Y g true response false"}, brief(got))
	got, _ = export(ExportFilter{Model: "it's; DROP"})
	require.Empty(t, got)
	got, _ = export(ExportFilter{Since: t0.Add(time.Hour)})
	require.Equal(t, []string{"m1 topic-3 f true human true"}, brief(got))
}

// TestSinkWriteNilBatch: a nil batch is an error, not a panic.
func TestSinkWriteNilBatch(t *testing.T) {
	cfg, _ := migrated(t)
	s, err := NewSink(context.Background(), cfg, nil)
	require.NoError(t, err)
	defer s.Close(context.Background())
	require.ErrorContains(t, s.Write(context.Background(), nil), "nil batch")
}
