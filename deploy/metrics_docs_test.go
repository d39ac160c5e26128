package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// exportedMetrics returns the names of the metrics the binary registers:
// the stream's, HTTP ingest's and run's own.
func exportedMetrics(t *testing.T) []string {
	t.Helper()
	name := regexp.MustCompile(`Name: *"(entrowatch_\w+)"`)
	seen := map[string]bool{}
	for _, src := range []string{"streams/runner/metrics.go", "streams/httpin/httpin.go", "cmd/entrowatch/run.go", "cmd/entrowatch/alarms.go"} {
		b, err := os.ReadFile(filepath.Join("..", src))
		require.NoError(t, err)
		for _, m := range name.FindAllStringSubmatch(string(b), -1) {
			seen[m[1]] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// section returns the text of a document's "## title" section.
func section(t *testing.T, doc, title string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", doc))
	require.NoError(t, err)
	s := string(b)
	i := strings.Index(s, "\n## "+title+"\n")
	require.GreaterOrEqual(t, i, 0, "%s has no section %s", doc, title)
	s = s[i+1:]
	if j := strings.Index(s[3:], "\n## "); j >= 0 {
		s = s[:j+3]
	}
	return s
}

// TestDocsListEveryMetric: the Operations sections of docs/deploy.md and
// docs/streams.md name, in full, every metric the binary exports and no
// other. They disagreed with the binary and with each other (deploy.md left
// out entrowatch_http_body_bytes, streams.md the labels metrics, the queued
// requests and the sink's connect errors and retries).
func TestDocsListEveryMetric(t *testing.T) {
	exported := exportedMetrics(t)
	require.Contains(t, exported, "entrowatch_stream_messages_total")
	require.Contains(t, exported, "entrowatch_ready")
	mentioned := regexp.MustCompile("`(entrowatch_[a-z_]+)")
	histogram := regexp.MustCompile(`_(bucket|sum|count)$`)
	for _, doc := range []string{"docs/deploy.md", "docs/streams.md"} {
		names := map[string]bool{}
		for _, m := range mentioned.FindAllStringSubmatch(section(t, doc, "Operations"), -1) {
			names[histogram.ReplaceAllString(m[1], "")] = true
		}
		for _, n := range exported {
			require.True(t, names[n], "%s, Operations, does not list %s", doc, n)
			delete(names, n)
		}
		require.Empty(t, names, "%s, Operations, lists metrics the binary does not export", doc)
	}
}
