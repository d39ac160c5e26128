package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// The configurations shipped in deploy/compose and deploy/k8s are read by
// entrowatch run's own loader (unknown keys are errors) and validate.
func TestDeployConfigsLoad(t *testing.T) {
	env := func(k string) string { return "secret-" + k }
	root := filepath.Join("..", "..", "deploy")

	compose, err := loadRunConfig(filepath.Join(root, "compose", "entrowatch.yaml"), env)
	require.NoError(t, err, "deploy/compose/entrowatch.yaml")
	require.Equal(t, "clickhouse", compose.Sink)
	require.NotEmpty(t, compose.Kafka.Brokers)
	require.Equal(t, "secret-ENTROWATCH_HTTP_TOKEN", string(compose.HTTP.Token))

	b, err := os.ReadFile(filepath.Join(root, "k8s", "configmap.yaml"))
	require.NoError(t, err)
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	require.NoError(t, yaml.Unmarshal(b, &cm))
	path := filepath.Join(t.TempDir(), "entrowatch.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cm.Data["entrowatch.yaml"]), 0o644))
	k8s, err := loadRunConfig(path, env)
	require.NoError(t, err, "deploy/k8s/configmap.yaml data.entrowatch.yaml")
	require.Equal(t, "clickhouse", k8s.Sink)
	require.Equal(t, "secret-ENTROWATCH_KAFKA_PASSWORD", string(k8s.Kafka.SASL.Password))
	require.Equal(t, "secret-ENTROWATCH_CLICKHOUSE_PASSWORD", string(k8s.ClickHouse.Conn.Password))
	require.True(t, k8s.Kafka.TLS.Enabled)
	require.False(t, k8s.ClickHouse.Migrate, "the migrate Job applies the schema, not every replica")
	require.GreaterOrEqual(t, k8s.Stream.DrainTimeout.Seconds(), 1.0)
}
