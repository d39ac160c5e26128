package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// TestAlertRulesPromtool checks deploy/prometheus/alerts.yml with promtool
// and runs its unit tests, prometheus/alerts_test.yml: every alert fires on
// the input it is for, with the annotations it should render, and stays
// silent on the input it is not for.
func TestAlertRulesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not on PATH (Debian: apt-get install prometheus): the unit tests of the alert rules, prometheus/alerts_test.yml, did not run")
	}
	for _, args := range [][]string{
		{"check", "rules", filepath.Join("prometheus", "alerts.yml")},
		{"test", "rules", filepath.Join("prometheus", "alerts_test.yml")},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		require.NoError(t, err, "promtool %v:\n%s", args, out)
	}
}

// TestComposePrometheusConfig checks deploy/compose/prometheus.yml with
// promtool, its rule file pointed at deploy/prometheus/alerts.yml (compose
// mounts it at /etc/prometheus/alerts.yml, which does not exist here).
func TestComposePrometheusConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not on PATH (Debian: apt-get install prometheus): compose/prometheus.yml was not checked")
	}
	b, err := os.ReadFile(filepath.Join("compose", "prometheus.yml"))
	require.NoError(t, err)
	const mounted = "/etc/prometheus/alerts.yml"
	require.Contains(t, string(b), mounted)
	rules, err := filepath.Abs(filepath.Join("prometheus", "alerts.yml"))
	require.NoError(t, err)
	cfg := filepath.Join(t.TempDir(), "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(strings.ReplaceAll(string(b), mounted, rules)), 0o644))
	out, err := exec.Command(promtool, "check", "config", cfg).CombinedOutput()
	require.NoError(t, err, "promtool check config:\n%s", out)
}

// TestEveryAlertHasAUnitTest: every rule of alerts.yml is expected to fire
// in at least one test of alerts_test.yml (promtool itself does not care).
func TestEveryAlertHasAUnitTest(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				AlertName string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	for path, v := range map[string]any{"alerts.yml": &rules, "alerts_test.yml": &tests} {
		b, err := os.ReadFile(filepath.Join("prometheus", path))
		require.NoError(t, err)
		require.NoError(t, yaml.Unmarshal(b, v), path)
	}
	require.Equal(t, []string{"alerts.yml"}, tests.RuleFiles, "the unit tests load the rules as they are, annotations included")
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			require.True(t, fires[r.Alert], "no test of prometheus/alerts_test.yml expects %s to fire", r.Alert)
			n++
		}
	}
	require.Positive(t, n)
}
