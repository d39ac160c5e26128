package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

// TestLabelsExportTrainRoundTrip: labels imported for streamed responses come
// back out of ClickHouse, with the responses' features, as a table that
// entrowatch train reads; filters, refusals and an empty export behave.
func TestLabelsExportTrainRoundTrip(t *testing.T) {
	dsn := migratedServer(t)
	ctx := context.Background()
	conn := openServer(t, dsn)
	// 240 responses of two LLMs in 4 domains; the first 100 unlabelled in
	// the stream, the rest with their own correct field; every 7th rejected.
	// Half have no estimate (p_correct null): a first estimator is trained
	// from a stream that had none.
	require.NoError(t, conn.Exec(ctx, `INSERT INTO default.scored (trace_id, ts, model, domain, correct, n_tokens, mean, std, max, q50, h_top5, p_correct, estimator_version, status)
SELECT concat('r', toString(number)), toDateTime('2026-03-01 00:00:00', 'UTC') + number * 60, if(number % 2 = 0, 'm1', 'm2'),
    concat('d', toString(number % 4)), if(number < 100, NULL, toUInt8(number % 3 = 0)), 20 + number % 9,
    number / 100, 1 + (number % 5) / 10, 3 + number / 50, number / 200, 0.25, if(number % 2 = 0, 0.5, NULL), if(number % 2 = 0, 'v1', NULL),
    if(number % 7 = 6, 'too_long', 'ok')
FROM system.numbers LIMIT 240`))
	dir := t.TempDir()
	labels := filepath.Join(dir, "labels.csv")
	var b strings.Builder
	b.WriteString("trace_id,correct\n")
	for n := range 100 {
		b.WriteString("r" + strconv.Itoa(n) + "," + strconv.Itoa(b2i(n%2 == 0 || n%5 == 0)) + "\n")
	}
	b.WriteString("r150,1\n") // overrides r150's own correct (0)
	b.WriteString("unknown-trace,1\n")
	require.NoError(t, os.WriteFile(labels, []byte(b.String()), 0o644))
	_, stderr, code := runCLI(t, "labels", "import", "--clickhouse", dsn, "--in", labels)
	require.Equal(t, 0, code, stderr)

	out := filepath.Join(dir, "train.csv")
	_, stderr, code = runCLI(t, "labels", "export", "--clickhouse", dsn, "--out", out)
	require.Equal(t, 0, code, stderr)
	// 240 responses, 34 rejected (n % 7 = 6), all labelled: 206 rows; 86
	// of the first 100 are valid and labelled through the table, plus r150.
	require.Contains(t, stderr, "206 labelled responses written to "+out+" (m1 103, m2 103; 4 model x domain slices; 87 through the labels table, 119 by the correct field they arrived with)")
	require.Contains(t, stderr, "next: entrowatch train --in FIRST.csv,"+out+" --out estimator.json, FIRST.csv being the table the deployed estimator was trained on")
	rows := readCSV(t, out)
	require.Len(t, rows, 206)
	byID := map[string]map[string]string{}
	for _, r := range rows {
		byID[r["id"]] = r
	}
	require.NotContains(t, byID, "r6", "a rejected response is not exported")
	require.NotContains(t, byID, "unknown-trace", "a label of no response is not exported")
	r10 := byID["r10"]
	require.Equal(t, map[string]string{"model": "m1", "domain": "d2", "correct": "1", "label_source": "import", "ts": "2026-03-01T00:10:00Z",
		"p_correct": "0.5", "estimator_version": "v1", "n_tokens": "21", "mean": "0.1", "max": "3.2", "q50": "0.05", "h_top5": "0.25", "std": "1"},
		pick(r10, "model", "domain", "correct", "label_source", "ts", "p_correct", "estimator_version", "n_tokens", "mean", "max", "q50", "h_top5", "std"))
	require.Equal(t, "", byID["r11"]["p_correct"], "no estimate: empty p_correct")
	require.Equal(t, "0", byID["r11"]["correct"]) // 11: odd, not a multiple of 5
	require.Equal(t, "1", byID["r150"]["correct"], "the labels table wins over the response's own correct")
	require.Equal(t, "import", byID["r150"]["label_source"])
	require.Equal(t, "0", byID["r151"]["correct"])
	require.Equal(t, "response", byID["r151"]["label_source"])

	// train reads the export as it is.
	est := filepath.Join(dir, "est.json")
	_, stderr, code = runCLI(t, "train", "--in", out, "--out", est)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "206 rows")

	// Filters.
	_, stderr, code = runCLI(t, "labels", "export", "--clickhouse", dsn, "--out", out, "--model", "m2", "--labels-only")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "43 labelled responses written") // odd n < 100 minus the rejected, plus none: r150 is m1
	for _, r := range readCSV(t, out) {
		require.Equal(t, "m2", r["model"])
		require.Equal(t, "import", r["label_source"])
	}

	// Refusals leave the earlier file as it was.
	before, err := os.ReadFile(out)
	require.NoError(t, err)
	_, stderr, code = runCLI(t, "labels", "export", "--clickhouse", dsn, "--out", out, "--model", "nosuch")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, `nothing to export: no valid response in default.scored has a label (in the labels table or a correct field of its own) for model "nosuch"`)
	require.Contains(t, stderr, "no file written")
	_, stderr, code = runCLI(t, "labels", "export", "--clickhouse", dsn, "--out", filepath.Join(dir, "t.arrow"))
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "labels export writes CSV")
	_, stderr, code = runCLI(t, "labels", "export", "--clickhouse", dsn)
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "--out FILE.csv is required")
	after, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, before, after)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 3, "labels.csv, train.csv, est.json and no temporary file")

	// To stdout; the header is the documented one.
	stdout, stderr, code := runCLI(t, "labels", "export", "--clickhouse", dsn, "--out", "-", "--since", "1h")
	require.Equal(t, 1, code, "no response of the last hour: %s", stderr)
	require.Empty(t, stdout)
	stdout, stderr, code = runCLI(t, "labels", "export", "--clickhouse", dsn, "--out", "-")
	require.Equal(t, 0, code, stderr)
	require.True(t, strings.HasPrefix(stdout, strings.Join(clickhouse.ExportColumns(), ",")+"\n"), stdout[:200])
	require.Contains(t, stderr, "written to stdout")

	// A database without the schema says to migrate.
	_, stderr, code = runCLI(t, "labels", "export", "--clickhouse", strings.TrimSuffix(dsn, "/default")+"/nodb", "--out", out)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "run entrowatch migrate --clickhouse DSN first")
}

func pick(m map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		out[k] = m[k]
	}
	return out
}
