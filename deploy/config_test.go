package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// printedConfig builds entrowatch and returns `entrowatch run --print-config
// [--config file]`: the run configuration as the binary's structs marshal it,
// so every key that exists, with its effective value.
func printedConfig(t *testing.T, bin, file string) map[string]any {
	t.Helper()
	args := []string{"run", "--print-config"}
	if file != "" {
		args = append(args, "--config", file)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "entrowatch %s: %s", strings.Join(args, " "), stderr.String())
	var v map[string]any
	require.NoError(t, yaml.Unmarshal(out, &v))
	return v
}

// buildEntrowatch compiles ./cmd/entrowatch into a test directory, or skips
// the test without a go command.
func buildEntrowatch(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build entrowatch: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "entrowatch")
	cmd := exec.Command(goBin, "build", "-o", bin, "../cmd/entrowatch")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/entrowatch: %s", out)
	return bin
}

// keyPaths returns the dotted paths of the leaves of v ("file.gzip") and of
// the mappings on the way ("file").
func keyPaths(v map[string]any, prefix string, out map[string]bool) map[string]bool {
	for k, x := range v {
		p := prefix + k
		out[p] = true
		if m, ok := x.(map[string]any); ok {
			keyPaths(m, p+".", out)
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestDeployConfigListsEveryKey: deploy/entrowatch.yaml says it lists every
// key with its default. The run config rejects unknown keys, so a wrong key
// fails to load, but nothing caught a missing one (file.gzip was). Here the
// keys of the file must be exactly those the binary prints, and loading the
// file must give the defaults.
func TestDeployConfigListsEveryKey(t *testing.T) {
	bin := buildEntrowatch(t)
	defaults := printedConfig(t, bin, "")
	b, err := os.ReadFile("entrowatch.yaml")
	require.NoError(t, err)
	var file map[string]any
	require.NoError(t, yaml.Unmarshal(b, &file))

	want := keyPaths(defaults, "", map[string]bool{})
	got := keyPaths(file, "", map[string]bool{})
	var missing, unknown []string
	for _, k := range sortedKeys(want) {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for _, k := range sortedKeys(got) {
		if !want[k] {
			unknown = append(unknown, k)
		}
	}
	require.Empty(t, missing, "deploy/entrowatch.yaml lacks these keys of the run config (add them with their defaults and a comment)")
	require.Empty(t, unknown, "deploy/entrowatch.yaml has keys the run config does not know")

	require.Equal(t, defaults, printedConfig(t, bin, "entrowatch.yaml"), "deploy/entrowatch.yaml must show the defaults")
}

// docConfigKey is a backquoted dotted name in a document: `file.gzip`,
// `clickhouse.migrate: false`.
var docConfigKey = regexp.MustCompile("`([a-z_]+(?:\\.[a-z_0-9]+)+)(?:[:= ][^`]*)?`")

// notConfigKeys are dotted names the documents use for other things, though
// they start with the name of a config section.
var notConfigKeys = map[string]string{
	"metrics.transfer":   "a field of the estimator artifact",
	"metrics.unmeasured": "a field of the estimator artifact",
}

// TestDocsNameRealConfigKeys: every run config key the documents name
// (`section.key...` where section is a section of the run config) exists, as
// the binary prints its configuration. docs/clickhouse.md named
// clickhouse.conn.insertparallelism; the key is insert_parallelism.
func TestDocsNameRealConfigKeys(t *testing.T) {
	bin := buildEntrowatch(t)
	defaults := printedConfig(t, bin, "")
	keys := keyPaths(defaults, "", map[string]bool{})
	docs, err := filepath.Glob("../docs/*.md")
	require.NoError(t, err)
	docs = append(docs, "../README.md")
	require.Contains(t, docs, "../docs/clickhouse.md")
	checked := 0
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		require.NoError(t, err)
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range docConfigKey.FindAllStringSubmatch(line, -1) {
				key := m[1]
				section, _, _ := strings.Cut(key, ".")
				if _, isSection := defaults[section].(map[string]any); !isSection || notConfigKeys[key] != "" {
					continue
				}
				checked++
				if !keys[key] {
					var near []string
					for _, k := range sortedKeys(keys) {
						if strings.HasPrefix(k, section+".") {
							near = append(near, k)
						}
					}
					t.Errorf("%s:%d names the config key %s, which does not exist; the %s section has: %s",
						strings.TrimPrefix(doc, "../"), i+1, key, section, strings.Join(near, ", "))
				}
			}
		}
	}
	require.Positive(t, checked, "no config keys found in the documents: is the pattern right?")
}

// k8sDoc reads the first YAML document of a file under deploy/k8s.
func k8sDoc(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("k8s", name))
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, yaml.Unmarshal(b, &v))
	return v
}

func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// TestKubernetesShutdownAndMemory: GOMEMLIMIT was 100% of the memory limit
// (the GC only works hard once the pod is at the OOM killer's limit); the
// grace period must cover http.shutdown_delay, ingest's shutdown (10s) and
// stream.drain_timeout; the readiness probe that puts a replica in the
// ingest Service is /readyz/ingest (ingest needs Kafka, not ClickHouse).
func TestKubernetesShutdownAndMemory(t *testing.T) {
	dep := k8sDoc(t, "deployment.yaml")
	c := dig(dep, "spec", "template", "spec", "containers", 0)
	limit := fmt.Sprint(dig(c, "resources", "limits", "memory"))
	require.Equal(t, "1Gi", limit, "the GOMEMLIMIT check below assumes 1Gi")
	var memlimit string
	for _, e := range dig(c, "env").([]any) {
		if dig(e, "name") == "GOMEMLIMIT" {
			memlimit = fmt.Sprint(dig(e, "value"))
		}
	}
	mib, ok := strings.CutSuffix(memlimit, "MiB")
	require.True(t, ok, "GOMEMLIMIT %q: want NMiB", memlimit)
	n, err := strconv.Atoi(mib)
	require.NoError(t, err)
	require.InDelta(t, 0.85, float64(n)/1024, 0.05, "GOMEMLIMIT at 80-90%% of limits.memory")
	require.Equal(t, "/readyz/ingest", dig(c, "readinessProbe", "httpGet", "path"))

	cm := k8sDoc(t, "configmap.yaml")
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(fmt.Sprint(dig(cm, "data", "entrowatch.yaml"))), &cfg))
	delay, err := time.ParseDuration(fmt.Sprint(dig(cfg, "http", "shutdown_delay")))
	require.NoError(t, err, "http.shutdown_delay in the ConfigMap")
	drain, err := time.ParseDuration(fmt.Sprint(dig(cfg, "stream", "drain_timeout")))
	require.NoError(t, err, "stream.drain_timeout in the ConfigMap")
	grace := time.Duration(dig(dep, "spec", "template", "spec", "terminationGracePeriodSeconds").(int)) * time.Second
	require.Greater(t, grace, delay+10*time.Second+drain, "grace period must exceed shutdown_delay + ingest shutdown (10s) + drain_timeout")
}
