package main

import (
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	arrowipc "github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/clustertag"
	"github.com/entrowatch/entrowatch/schemas"
)

// clusterPrompts writes 60 prompts on three topics, with their domains.
func clusterPrompts(t *testing.T, dir string) (csvPath, jsonlPath string) {
	t.Helper()
	topics := [][]string{
		strings.Fields("court judge contract plaintiff defendant statute appeal jury verdict"),
		strings.Fields("planet galaxy telescope orbit comet nebula asteroid stellar supernova"),
		strings.Fields("recipe flour butter oven simmer garlic onion pastry dough"),
	}
	names := []string{"law", "astronomy", "cooking"}
	var c, j strings.Builder
	c.WriteString("domain,prompt\n")
	for i := 0; i < 60; i++ {
		tp := i % 3
		var p []string
		for w := 0; w < 7; w++ {
			p = append(p, topics[tp][(i*7+w*5)%len(topics[tp])])
		}
		prompt := "Which of the following " + strings.Join(p, " ") + "?"
		fmt.Fprintf(&c, "%s,%q\n", names[tp], prompt)
		fmt.Fprintf(&j, "{\"id\":\"r%d\",\"domain\":%q,\"prompt\":%q,\"choices\":[]}\n", i, names[tp], prompt)
	}
	csvPath = filepath.Join(dir, "prompts.csv")
	require.NoError(t, os.WriteFile(csvPath, []byte(c.String()), 0o644))
	jsonlPath = filepath.Join(dir, "prompts.jsonl.gz")
	f, err := os.Create(jsonlPath)
	require.NoError(t, err)
	gz := gzip.NewWriter(f)
	_, err = gz.Write([]byte(j.String()))
	require.NoError(t, err)
	require.NoError(t, gz.Close())
	require.NoError(t, f.Close())
	return csvPath, jsonlPath
}

func TestClusterFitReport(t *testing.T) {
	dir := t.TempDir()
	csvPath, jsonlPath := clusterPrompts(t, dir)
	out := filepath.Join(dir, "clusters.json")
	stdout, stderr, code := runCLI(t, "cluster", "fit", "--in", jsonlPath, "--out", out, "--k", "auto", "--k-max", "6", "--restarts", "3")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "3 clusters")
	// 9 distinct prompts leave room for k = 3 only at 5 per cluster: the
	// range is clamped, and says so (k = 4..6 were fitted on 2 points each).
	require.Regexp(t, `stability \(mean adjusted Rand index between restarts\) per k: 3:1\.000\*\n`, stdout, "the score of every k tried")
	require.Contains(t, stderr, "clamped to k=3 (k_min)")
	require.Contains(t, stderr, "picked k=3 (highest stability", "progress on stderr")
	m, err := clustertag.Load(out)
	require.NoError(t, err)
	require.Len(t, m.Clusters, 3)

	stdout, stderr, code = runCLI(t, "cluster", "report", "--in", csvPath, "--clusters", out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "ARI 1.000, purity 1.000")
	require.Contains(t, stdout, "unclustered: 0 (0.0%)")

	// Refit with --previous: ids are carried over and the mapping is shown.
	out2 := filepath.Join(dir, "clusters2.json")
	_, stderr, code = runCLI(t, "cluster", "fit", "--in", csvPath, "--out", out2, "--k", "3", "--seed", "7", "--previous", out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "keeps id")
	m2, err := clustertag.Load(out2)
	require.NoError(t, err)
	require.Equal(t, m.Version, m2.Previous.Version)
}

func TestClusterErrors(t *testing.T) {
	dir := t.TempDir()
	noPrompt := filepath.Join(dir, "noprompt.csv")
	require.NoError(t, os.WriteFile(noPrompt, []byte("domain,text\nlaw,hello\n"), 0o644))
	noField := filepath.Join(dir, "noprompt.jsonl")
	require.NoError(t, os.WriteFile(noField, []byte("{\"id\":\"a\"}\n{\"id\":\"b\"}\n"), 0o644))
	out := filepath.Join(dir, "c.json")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no subcommand", []string{"cluster"}, 2, "fit|report"},
		{"unknown subcommand", []string{"cluster", "draw"}, 2, "unknown subcommand"},
		{"missing flags", []string{"cluster", "fit", "--in", noPrompt}, 2, "--in and --out are required"},
		{"missing file", []string{"cluster", "fit", "--in", filepath.Join(dir, "nope.csv"), "--out", out}, 1, "no such file"},
		{"no prompt column", []string{"cluster", "fit", "--in", noPrompt, "--out", out}, 1, "no prompt column"},
		{"no prompt field", []string{"cluster", "fit", "--in", noField, "--out", out}, 1, "no line has a \"prompt\""},
		{"bad k", []string{"cluster", "fit", "--in", noPrompt, "--out", out, "--k", "one"}, 2, "--k \"one\""},
		{"report without artifact", []string{"cluster", "report", "--in", noPrompt, "--clusters", filepath.Join(dir, "none.json")}, 1, "entrowatch cluster fit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, tc.args...)
			require.Equal(t, tc.code, code, stderr)
			require.Contains(t, stderr, tc.want)
		})
	}
}

// TestClusterFitKAgainstData: a k above the distinct prompts is refused with
// the count and a k to use instead; a k leaving few prompts per cluster fits
// with a warning.
func TestClusterFitKAgainstData(t *testing.T) {
	dir := t.TempDir()
	csvPath, _ := clusterPrompts(t, dir) // 60 prompts, 9 of them different
	out := filepath.Join(dir, "c.json")
	_, stderr, code := runCLI(t, "cluster", "fit", "--in", csvPath, "--out", out, "--k", "10", "--quiet")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "k=10 is more than the 9 distinct prompts")
	require.Contains(t, stderr, "give --k auto")
	require.NoFileExists(t, out)

	stdout, stderr, code := runCLI(t, "cluster", "fit", "--in", csvPath, "--out", out, "--k", "5", "--quiet")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "5 clusters")
	require.Contains(t, stderr, "cluster fit: warning: k=5 for 9 distinct prompts is 1.8 per cluster on average")
}

// TestClusterFitIDColumn: a prompt column holding a phrasing id (as in
// plaut-dev.csv.gz) is named as the likely cause.
func TestClusterFitIDColumn(t *testing.T) {
	dir := t.TempDir()
	var c strings.Builder
	c.WriteString("domain,prompt\n")
	for i := range 100 {
		fmt.Fprintf(&c, "arc,%s\n", []string{"first", "second"}[i%2])
	}
	in := filepath.Join(dir, "ids.csv")
	require.NoError(t, os.WriteFile(in, []byte(c.String()), 0o644))
	out := filepath.Join(dir, "c.json")
	for _, k := range []string{"3", "auto"} {
		_, stderr, code := runCLI(t, "cluster", "fit", "--in", in, "--out", out, "--k", k, "--quiet")
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, "2 distinct prompts")
		require.Contains(t, stderr, `only 2 different values ("first", "second")`)
		require.Contains(t, stderr, "ids or labels, not prompt text")
	}
	_, stderr, code := runCLI(t, "cluster", "fit", "--in", in, "--out", out, "--k", "2", "--quiet")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "warning: the 100 prompts hold only 2 different values")
	require.Contains(t, stderr, "warning: the vocabulary has only 2 terms")
}

// TestClusterArtifactIsEstimator: an estimator given as --clusters is named
// as such; a cluster artifact of another format keeps the version message.
func TestClusterArtifactIsEstimator(t *testing.T) {
	dir := t.TempDir()
	est := filepath.Join(dir, "estimator.json")
	_, stderr, code := runCLI(t, "train", "--in", fixtures+"valid.expected.csv", "--out", est)
	require.Equal(t, 0, code, stderr)
	csvPath, _ := clusterPrompts(t, dir)
	want := est + " is an estimator artifact (entrowatch train); pass it with --estimator"
	_, stderr, code = runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", filepath.Join(dir, "y.csv"), "--clusters", est)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, want)
	_, stderr, code = runCLI(t, "cluster", "report", "--in", csvPath, "--clusters", est)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, want)

	other := filepath.Join(dir, "v9.json")
	require.NoError(t, os.WriteFile(other, []byte(`{"format":"entrowatch.clusters.v9","clusters":[]}`), 0o644))
	_, stderr, code = runCLI(t, "cluster", "report", "--in", csvPath, "--clusters", other)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "written by another version of entrowatch")
}

// The bench and migrate tests live here because this change may not touch
// the package's other test files.

func TestBenchUnknownSubcommand(t *testing.T) {
	_, stderr, code := runCLI(t, "bench", "bogus")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, `entrowatch bench: unknown subcommand "bogus" (want operators or pipeline)`)
	_, stderr, code = runCLI(t, "bench")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "Usage: entrowatch bench operators|pipeline")
}

func TestBenchBatches(t *testing.T) {
	for _, tc := range []struct {
		n, per int
		want   []int
	}{
		{7, 8035, []int{7}},
		{52, 26, []int{26, 26}},
		{53, 26, []int{26, 26, 1}},
		{1, 1, []int{1}},
	} {
		require.Equal(t, tc.want, benchBatches(tc.n, tc.per), "n=%d per=%d", tc.n, tc.per)
	}
	// 2000 traces of the default shape (26 per message) used to be 77 full
	// messages: 2002 traces.
	sum := 0
	for _, n := range benchBatches(2000, 26) {
		sum += n
	}
	require.Equal(t, 2000, sum)
}

// TestBenchPipelineTraces: the topic gets exactly --traces traces although
// a message holds thousands of these short ones.
func TestBenchPipelineTraces(t *testing.T) {
	stdout, stderr, code := runCLI(t, "bench", "pipeline", "--traces", "7", "--steps", "4", "--k", "2", "--partitions", "1", "--workers", "1")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "producing 7 traces")
	require.Contains(t, stderr, "produced 7 traces")
	require.Contains(t, stdout, "tokens/s:")
}

// TestMigrateHTTPAddress: an address of ClickHouse's HTTP interface is
// answered with the native DSN to use, whichever way it is written.
func TestMigrateHTTPAddress(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"http://localhost:8123", "give clickhouse://localhost:9000"},
		{"https://ch.example.com:8443/db", "give clickhouse://ch.example.com:9440/db?secure=true"},
		{"localhost:8123", "port 8123 is ClickHouse's HTTP port"},
		{"127.0.0.1:9000", "give clickhouse://127.0.0.1:9000"},
		// Reaches the network: refused, or not understood by an HTTP server.
		{"clickhouse://127.0.0.1:8123", "port 8123 is ClickHouse's HTTP port"},
	} {
		t.Run(tc.dsn, func(t *testing.T) {
			_, stderr, code := runCLI(t, "migrate", "--clickhouse", tc.dsn)
			require.Equal(t, 1, code, stderr)
			require.Contains(t, stderr, tc.want)
			if strings.Contains(tc.dsn, "8123") || strings.Contains(tc.dsn, "http") {
				require.Contains(t, stderr, "native protocol")
			}
		})
	}
}

// TestClusterFitChatPrompts: cluster fit reads a prompt given as chat
// messages as score does (the contents joined by newlines); it failed at
// line 1 with "cannot unmarshal array".
func TestClusterFitChatPrompts(t *testing.T) {
	dir := t.TempDir()
	csvPath, _ := clusterPrompts(t, dir)
	docs, err := clustertag.ReadFile(csvPath)
	require.NoError(t, err)
	var b strings.Builder
	for i, d := range docs.Docs {
		msgs := fmt.Sprintf(`[{"role":"system","content":"Answer the exam question."},{"role":"user","content":%q}]`, d.Prompt)
		if i%2 == 1 {
			msgs = fmt.Sprintf("%q", d.Prompt) // a plain string beside
		}
		line := scoreLine(fmt.Sprintf("r%d", i))
		b.WriteString(strings.Replace(line, `"model":"m",`, `"model":"m","prompt":`+msgs+`,`, 1) + "\n")
	}
	in := filepath.Join(dir, "chat.jsonl")
	require.NoError(t, os.WriteFile(in, []byte(b.String()), 0o644))

	out := filepath.Join(dir, "clusters.json")
	stdout, stderr, code := runCLI(t, "cluster", "fit", "--in", in, "--out", out, "--k", "3", "--restarts", "2", "--quiet")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "3 clusters")

	// The prompts cluster fit reads are those score writes.
	got, err := clustertag.ReadFile(in)
	require.NoError(t, err)
	scored := filepath.Join(dir, "scored.arrow")
	_, stderr, code = runCLI(t, "score", "--in", in, "--out", scored)
	require.Equal(t, 0, code, stderr)
	f, err := os.Open(scored)
	require.NoError(t, err)
	defer f.Close()
	rd, err := arrowipc.NewReader(f)
	require.NoError(t, err)
	defer rd.Release()
	var want []string
	for rd.Next() {
		p := rd.RecordBatch().Column(schemas.MustIndex(schemas.Scored, schemas.ColPrompt)).(*array.String)
		for i := range p.Len() {
			want = append(want, p.Value(i))
		}
	}
	require.Len(t, got.Docs, len(want))
	for i, d := range got.Docs {
		require.Equal(t, want[i], d.Prompt)
	}
	require.Equal(t, "Answer the exam question.\n"+docs.Docs[0].Prompt, got.Docs[0].Prompt)
}

// TestClusterRefitKeepsLabels: cluster fit --previous keeps the labels of
// the clusters it matches (ClickHouse keys domains by label text) and says
// so; --relabel names them afresh and is recorded in the artifact.
func TestClusterRefitKeepsLabels(t *testing.T) {
	dir := t.TempDir()
	csvPath, _ := clusterPrompts(t, dir)
	old := filepath.Join(dir, "old.json")
	_, stderr, code := runCLI(t, "cluster", "fit", "--in", csvPath, "--out", old, "--k", "3", "--quiet")
	require.Equal(t, 0, code, stderr)
	m, err := clustertag.Load(old)
	require.NoError(t, err)
	label := map[int]string{}
	for _, c := range m.Clusters {
		label[c.ID] = c.Label
	}

	refit := filepath.Join(dir, "new.json")
	_, stderr, code = runCLI(t, "cluster", "fit", "--in", csvPath, "--out", refit, "--k", "3", "--seed", "7", "--quiet", "--previous", old)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "and its label (centroid similarity")
	m2, err := clustertag.Load(refit)
	require.NoError(t, err)
	require.False(t, m2.Previous.Relabel)
	for _, c := range m2.Clusters {
		require.Equal(t, label[c.ID], c.Label)
	}

	_, stderr, code = runCLI(t, "cluster", "fit", "--in", csvPath, "--out", refit, "--k", "3", "--seed", "7", "--quiet", "--previous", old, "--relabel")
	require.Equal(t, 0, code, stderr)
	m3, err := clustertag.Load(refit)
	require.NoError(t, err)
	require.True(t, m3.Previous.Relabel)
	for _, c := range m3.Clusters {
		require.Equal(t, strings.Join(c.TopTerms, "/"), c.Label)
	}
}

// TestClusterFitClearErrors: errors that misled. hello/world/hello asked for
// --k N, N <= 2, and --k 2 then said "nothing to cluster"; prompts sharing
// only words found in all of them got "no term occurs in at least 2"; a
// line over the limit aborted with "bufio.Scanner: token too long" and no
// line number; --min-similarity 2 was accepted.
func TestClusterFitClearErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "c.json")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	hw := write("hw.txt", "hello\nworld\nhello\n")
	_, auto, code := runCLI(t, "cluster", "fit", "--in", hw, "--out", out, "--quiet")
	require.Equal(t, 1, code)
	_, two, code := runCLI(t, "cluster", "fit", "--in", hw, "--out", out, "--quiet", "--k", "2")
	require.Equal(t, 1, code)
	require.Equal(t, auto, two)
	require.Contains(t, auto, "after vectorising, the 3 prompts are 1 distinct point")

	same := write("same.txt", "apple banana\napple banana\nbanana apple\napple banana cherry\n")
	_, stderr, code := runCLI(t, "cluster", "fit", "--in", same, "--out", out, "--quiet", "--k", "2")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "every term found in at least 2 of the 4 prompts is in more than 50% of them (max_df), as apple, banana")

	csvPath, _ := clusterPrompts(t, dir)
	_, stderr, code = runCLI(t, "cluster", "fit", "--in", csvPath, "--out", out, "--quiet", "--k", "3")
	require.Equal(t, 0, code, stderr)
	for _, tc := range []struct{ args, want []string }{
		{[]string{"--previous", out, "--min-similarity", "2"}, []string{"--min-similarity 2: want a cosine similarity from 0 to 1"}},
		{[]string{"--previous", out, "--min-similarity", "-0.1"}, []string{"--min-similarity -0.1"}},
		{[]string{"--min-similarity", "0.7"}, []string{"apply to --previous"}},
		{[]string{"--relabel"}, []string{"apply to --previous"}},
	} {
		_, stderr, code = runCLI(t, append([]string{"cluster", "fit", "--in", csvPath, "--out", filepath.Join(dir, "x.json"), "--quiet", "--k", "3"}, tc.args...)...)
		require.Equal(t, 2, code, stderr) // flags that cannot work: a usage error
		for _, w := range tc.want {
			require.Contains(t, stderr, w)
		}
	}

	// A prompt line over clustertag.MaxLineBytes is skipped and named.
	var b strings.Builder
	b.WriteString("court judge verdict\ncourt judge appeal\n")
	b.WriteString(strings.Repeat("x", clustertag.MaxLineBytes+1))
	b.WriteString("\nplanet orbit comet\nplanet orbit galaxy\n")
	long := write("long.txt", b.String())
	_, stderr, code = runCLI(t, "cluster", "fit", "--in", long, "--out", out, "--quiet", "--k", "2")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "cluster fit: warning: skipped 1 line(s) of "+long+" longer than 64 MiB (line 3)")
}
