package deploy

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

// TestDashboardCountsTracesOnce: the panels that count responses count a
// trace delivered or sent again once, as every view does (scored is a
// ReplacingMergeTree read FINAL). "Responses per minute" and "Responses by
// status" counted scored with count() and no FINAL: every redelivery showed
// until ClickHouse merged the parts, which may take hours or never happen.
// Here the day of traffic is inserted twice, with merges stopped.
func TestDashboardCountsTracesOnce(t *testing.T) {
	scored := regexp.MustCompile(`\bentrowatch\.scored\b`)
	final := regexp.MustCompile(`\bentrowatch\.scored\s+FINAL\b`)
	for _, q := range dashboardQueries(t) {
		if q.kind == "sql" && scored.MatchString(q.query) {
			require.Regexp(t, final, q.query, "%s: read scored FINAL (or a view), as the views do", q.panel)
		}
	}

	const db = "dashboard_once"
	ch := migratedChdb(t, db)
	_, err := ch.Exec("SYSTEM STOP MERGES " + db + ".scored")
	require.NoError(t, err)
	for range 2 { // the same traces again: a redelivery, or a file sent twice
		_, err = ch.Exec(clickhouse.Expand(chdbTraffic, db))
		require.NoError(t, err)
	}
	out, err := ch.Exec("SELECT count() FROM " + db + ".scored")
	require.NoError(t, err)
	require.Equal(t, "11520\n", out, "both copies are stored, not merged yet")

	// The responses column of each counting panel sums to the 5,760 traces.
	counted := map[string]int{"Responses per minute": 2, "Responses by status (trailing day)": 1}
	seen := 0
	for _, q := range dashboardQueries(t) {
		col, ok := counted[q.panel]
		if !ok {
			continue
		}
		seen++
		out, err := ch.Exec(expandMacros(q.query, db))
		require.NoError(t, err, q.panel)
		total := 0
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Split(line, "\t")
			n, err := strconv.Atoi(f[col])
			require.NoError(t, err, "%s: %q", q.panel, line)
			total += n
		}
		require.Equal(t, 5760, total, "%s counts each trace once", q.panel)
	}
	require.Equal(t, len(counted), seen, "panels %v", counted)
}
