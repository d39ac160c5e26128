package deploy

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDocsListEveryView: the table of views in docs/clickhouse.md names
// every view an analyst may query, with the columns the view has, in its
// order; the alarm kinds' views have alarm_checks' columns and are named in
// the Alarms section; the views left out are the inner steps of others,
// listed here so that a new view is either documented or left out on
// purpose. (label_status, a view the page named elsewhere, was missing from
// the table.)
func TestDocsListEveryView(t *testing.T) {
	inner := []string{"alarm_bins", "alarm_buckets", "alarm_config", "alarm_rows", "calibration_strata", "labels_latest"}
	const db = "docs_views"
	ch := migratedChdb(t, db)
	out, err := ch.Exec("SELECT name FROM system.tables WHERE database = '" + db + "' AND engine = 'View' ORDER BY name")
	require.NoError(t, err)
	views := strings.Fields(out)
	require.NotEmpty(t, views)

	b, err := os.ReadFile("../docs/clickhouse.md")
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| ([^|]+) \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		documented[m[1]] = strings.TrimSpace(m[2])
	}
	var missing []string
	for _, v := range views {
		cols, ok := documented[v]
		if slices.Contains(inner, v) {
			continue
		}
		if strings.HasPrefix(v, "alarm_") && v != "alarm_checks" {
			require.Contains(t, string(b), "`"+v+"`", "alarm kind view %s: name it in the Alarms section", v)
			cols = documented["alarm_checks"]
			ok = true
		}
		if !ok {
			missing = append(missing, v)
			continue
		}
		if cols == "same" || strings.HasPrefix(cols, "as `") || strings.Contains(cols, "...") {
			continue // "same" as the row above, or a view of many columns
		}
		desc, err := ch.Exec("SELECT name FROM system.columns WHERE database = '" + db + "' AND table = '" + v + "' ORDER BY position")
		require.NoError(t, err)
		require.Equal(t, strings.Join(strings.Fields(desc), ", "), cols, "view %s: the columns of the docs' table", v)
	}
	require.Empty(t, missing, "views not in docs/clickhouse.md's table of views (or add them to the inner views of this test)")
}
