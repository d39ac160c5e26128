package main

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/kafka"
)

// TestRunConfigTypeErrors: a value of the wrong type names its key and says
// what the key takes; yaml alone gave the line and a Go type
// ("cannot unmarshal !!int `30` into time.Duration").
func TestRunConfigTypeErrors(t *testing.T) {
	dir := t.TempDir()
	env := func(string) string { return "" }
	_, err := loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nstream:\n  drain_timeout: 30\n"), env)
	require.ErrorContains(t, err, "line 3, stream.drain_timeout: cannot unmarshal !!int `30` into time.Duration (a duration needs a unit: 30s, 5m, 1h)")
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nbroker:\n  partitions: many\n"), env)
	require.ErrorContains(t, err, "broker.partitions")
	require.ErrorContains(t, err, "(want a number)")
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nkafka:\n  brokers: [a:1, [x]]\n"), env)
	require.Error(t, err)
}

// TestRunConfigUnknownKeys: a misspelt key is named with its section and
// the key it was probably meant to be; yaml alone said "field estimater not
// found in type main.runConfig".
func TestRunConfigUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	env := func(string) string { return "" }
	_, err := loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nestimater: x.json\nfile:\n  csv_estimat: true\nstream:\n  bogus: 1\n"), env)
	require.ErrorContains(t, err, "line 2: unknown key estimater (did you mean estimator?)")
	require.ErrorContains(t, err, "line 4: unknown key file.csv_estimat (did you mean file.csv_estimate?)")
	require.ErrorContains(t, err, "line 6: unknown key stream.bogus (see deploy/entrowatch.yaml for the keys)")
	require.NotContains(t, err.Error(), "main.runConfig")
	// A key under a section that is an anonymous struct (metrics: listen):
	// the type has blanks, and yaml's Go type leaked into the message.
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nmetrics:\n  listen: 127.0.0.1:0\n  migrate: false\n"), env)
	require.ErrorContains(t, err, "line 4: unknown key metrics.migrate")
	require.NotContains(t, err.Error(), "struct {")
	require.Equal(t, 0, editDistance("kafka", "kafka"))
	require.Equal(t, 3, editDistance("kitten", "sitting"))
}

// TestRunConfigListenAddrs: bad listen addresses are config errors naming
// the key, found before anything starts (the ingest server reported
// "address 99999: invalid port" without the key).
func TestRunConfigListenAddrs(t *testing.T) {
	dir := t.TempDir()
	env := func(string) string { return "" }
	_, err := loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nhttp:\n  listen: 127.0.0.1:99999\n"), env)
	require.ErrorContains(t, err, `http.listen "127.0.0.1:99999": port "99999": want a number from 0 to 65535`)
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nmetrics:\n  listen: 9464\n"), env)
	require.ErrorContains(t, err, `metrics.listen "9464": want host:port`)
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nhttp:\n  listen: 127.0.0.1:9000\nmetrics:\n  listen: 127.0.0.1:9000\n"), env)
	require.ErrorContains(t, err, "http.listen and metrics.listen are both")
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nhttp:\n  listen: 0.0.0.0:8080\nmetrics:\n  listen: 127.0.0.1:9464\n"), env)
	require.NoError(t, err)
}

// TestRunPreflight: the files the config names are read before anything
// starts, and --print-config reports them too (a preflight check): a
// missing estimator came only after a managed ClickHouse had started and
// been migrated; a missing Kafka CA file with a hint about create_topics.
func TestRunPreflight(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "data_dir: "+dir+"/d\nsink: auto\nestimator: "+dir+"/missing.json\nkafka:\n  brokers: [127.0.0.1:1]\n  tls:\n    enabled: true\n    ca_file: "+dir+"/ca.pem\n")
	out, stderr, code := runCLI(t, "run", "--config", cfg, "--print-config")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, out, "estimator:", "the config is printed first")
	require.Contains(t, stderr, "estimator: ")
	require.Contains(t, stderr, "missing.json")
	require.Contains(t, stderr, "kafka.tls.ca_file")
	require.NotContains(t, stderr, "create_topics")

	_, stderr, code = runCLI(t, "run", "--config", cfg)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "missing.json")
	require.NotContains(t, stderr, "clickhouse", "nothing started")
	require.NotContains(t, stderr, "working directory", "an absolute path needs no hint")

	// A relative path is read from the working directory, which the error
	// names, since a path next to the config file is the usual mistake.
	cfg = writeFile(t, dir, "data_dir: "+dir+"/d\nsink: file\nestimator: nope/est.json\n")
	wd, err := os.Getwd()
	require.NoError(t, err)
	_, stderr, code = runCLI(t, "run", "--config", cfg, "--print-config")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "open nope/est.json: no such file or directory (a relative path is read from the working directory "+wd+", not from the configuration file's)")
}

// TestRunConfigMaxSteps: a profile.max_steps above the assembler's is
// refused: long responses travel as chunks, and the assembler dead-letters
// a chunked trace over its own max_steps as too_long, so the higher limit
// took nothing more (and ingest's hint to match it led to dead letters).
func TestRunConfigMaxSteps(t *testing.T) {
	dir := t.TempDir()
	env := func(string) string { return "" }
	_, err := loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nprofile:\n  max_steps: 50000\n"), env)
	require.ErrorContains(t, err, "profile.max_steps 50000 is above stream.assemble.max_steps 32768")
	require.ErrorContains(t, err, "set stream.assemble.max_steps to 50000 too")
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nprofile:\n  max_steps: 50000\nstream:\n  assemble:\n    max_steps: 50000\n"), env)
	require.NoError(t, err)
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nprofile:\n  max_steps: 1000\n"), env)
	require.NoError(t, err, "a lower profile.max_steps is the profile's to apply")
}

// TestRunConfigBrokerMessageLimit: an embedded broker whose message limit is
// below what the producers cut messages to is refused (it started without a
// word, and every large HTTP body or dead letter was refused for ever).
func TestRunConfigBrokerMessageLimit(t *testing.T) {
	dir := t.TempDir()
	env := func(string) string { return "" }
	_, err := loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nbroker:\n  max_message_bytes: 100000\n"), env)
	require.ErrorContains(t, err, "broker.max_message_bytes 100000 is below what dead_letter.batch_bytes need (1048588: record batches of up to batch_bytes, plus their header)")
	// The largest message alone fits, but producers batch several messages
	// into one record batch, which the broker measures (recheck9 F1: half
	// of 24 concurrent HTTP bodies of 520 KB answered 413).
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nbroker:\n  max_message_bytes: 1000000\n"), env)
	require.ErrorContains(t, err, "raise it to at least 1048588")
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nbroker:\n  max_message_bytes: 100000\ndead_letter:\n  max_message_bytes: 90000\n  batch_bytes: 91024\n"), env)
	require.ErrorContains(t, err, "broker.max_message_bytes 100000 is below what the batches of HTTP ingest and entrowatch ingest need (1048588")
	c, err := loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\n"), env)
	require.NoError(t, err, "the defaults fit")
	require.Equal(t, int64(c.Broker.MaxMessageBytes), kafka.DefaultProducerConfig().TopicMessageBytes(), "Kafka's default message.max.bytes, 1048588")
	_, err = loadRunConfig(writeFile(t, dir, "data_dir: "+dir+"\nbroker:\n  max_message_bytes: 100000\nkafka:\n  brokers: [k:9092]\n"), env)
	require.NoError(t, err, "with a real Kafka the broker section is not used")
}
