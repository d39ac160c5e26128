package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/entrowatch/entrowatch/streams/kafka"
	"github.com/entrowatch/entrowatch/streams/runner"
)

// TestDeadlettersFollowRequeueRefused: --follow with --requeue would put
// every record that fails again back on the source topic, endlessly (2,000
// records became 5,493 requeued in 10 s); it is refused before anything
// connects, and the help says so.
func TestDeadlettersFollowRequeueRefused(t *testing.T) {
	_, errs, code := runCLI(t, "deadletters", "--follow", "--requeue", "traces", "--brokers", "127.0.0.1:1")
	require.Equal(t, 2, code, errs)
	require.Contains(t, errs, "--follow and --requeue cannot be combined")
	require.Contains(t, errs, "endlessly")
	require.NotContains(t, errs, "127.0.0.1:1", "refused before connecting")

	out, _, code := runCLI(t, "deadletters", "-h")
	require.Equal(t, 0, code)
	require.Contains(t, out, "--requeue cannot be combined with --follow")
}

// TestDeadlettersUnknownReason: a misspelt --reason used to list 0 records
// and exit 0; it is refused with the known reasons, before anything
// connects. The reasons listed in the help are the ones accepted.
func TestDeadlettersUnknownReason(t *testing.T) {
	_, errs, code := runCLI(t, "deadletters", "--reason", "nan_logprob,corrupt_ipcc", "--brokers", "127.0.0.1:1")
	require.Equal(t, 2, code, errs)
	require.Contains(t, errs, `unknown reason "corrupt_ipcc"`)
	require.Contains(t, errs, "corrupt_ipc, wrong_schema, empty, no_logprobs, nan_logprob, positive_logprob, too_long, step_mismatch, incomplete, unknown_model, bad_feature")
	require.NotContains(t, errs, "127.0.0.1:1")

	out, _, code := runCLI(t, "deadletters", "-h")
	require.Equal(t, 0, code)
	help := strings.Join(strings.Fields(out), " ")
	for _, r := range deadLetterReasons {
		require.True(t, strings.Contains(help, " "+r+",") || strings.Contains(help, " "+r+";"), "%s is not listed in the help", r)
	}
}

// TestCLIKafkaFlagNames: every command shows --kafka-tls, --kafka-tls-ca,
// --kafka-sasl and --kafka-sasl-user; ingest and deadletters also take their
// former --tls, --tls-ca, --sasl and --sasl-user, and alarms and labels
// --sasl and --sasl-user (their --tls is ClickHouse's).
func TestCLIKafkaFlagNames(t *testing.T) {
	for _, cmd := range [][]string{{"ingest"}, {"deadletters"}, {"alarms"}, {"labels", "requests"}, {"labels", "import"}} {
		out, _, code := runCLI(t, append(cmd, "-h")...)
		require.Equal(t, 0, code, cmd)
		for _, f := range []string{"-kafka-tls\n", "-kafka-tls-ca string", "-kafka-sasl string", "-kafka-sasl-user string"} {
			require.Contains(t, out, "  "+f, cmd)
		}
		require.NotContains(t, out, "  -sasl string", cmd, "one name per flag in the flag list")
		require.NotContains(t, out, "  -tls-ca string", cmd)
	}

	parse := func(besideClickHouse bool, args ...string) (kafka.Config, *flag.FlagSet, error) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String("topic", "", "")
		chTLS := false
		if besideClickHouse {
			fs.BoolVar(&chTLS, "tls", false, "")
		}
		kf := addKafkaFlags(fs, besideClickHouse)
		if err := kf.parse(args); err != nil {
			return kafka.Config{}, fs, err
		}
		if besideClickHouse {
			require.Equal(t, fs.Lookup("tls").Value.String() == "true", chTLS)
		}
		return kf.config("b:9092", "t"), fs, nil
	}
	t.Setenv("ENTROWATCH_KAFKA_PASSWORD", "pw")
	want, _, err := parse(kafkaPlain, "--kafka-tls", "--kafka-tls-ca", "ca.pem", "--kafka-sasl", "plain", "--kafka-sasl-user", "u")
	require.NoError(t, err)
	require.True(t, want.TLS.Enabled)
	require.Equal(t, "ca.pem", want.TLS.CAFile)
	require.Equal(t, "plain", want.SASL.Mechanism)
	require.Equal(t, "u", want.SASL.Username)
	for _, args := range [][]string{
		{"--tls", "--tls-ca", "ca.pem", "--sasl", "plain", "--sasl-user", "u"},
		{"-tls", "-tls-ca=ca.pem", "--sasl=plain", "-sasl-user", "u"},
		{"--tls=true", "--kafka-tls-ca", "ca.pem", "--sasl", "plain", "--kafka-sasl-user=u"},
	} {
		got, _, err := parse(kafkaPlain, args...)
		require.NoError(t, err, args)
		require.Equal(t, want, got, args)
	}
	// A value that looks like a flag is a value; "--" ends the flags.
	_, fs, err := parse(kafkaPlain, "--topic", "--tls", "--sasl", "plain", "--sasl-user", "u")
	require.NoError(t, err)
	require.Equal(t, "--tls", fs.Lookup("topic").Value.String())
	require.Equal(t, "false", fs.Lookup("kafka-tls").Value.String())

	// Beside ClickHouse flags --tls is ClickHouse's, --sasl Kafka's, and
	// --tls-ca is refused with the name to use.
	got, fs, err := parse(kafkaBesideClickHouse, "--tls", "--sasl", "plain", "--sasl-user", "u")
	require.NoError(t, err)
	require.False(t, got.TLS.Enabled)
	require.Equal(t, "true", fs.Lookup("tls").Value.String())
	require.Equal(t, "plain", got.SASL.Mechanism)
	_, _, err = parse(kafkaBesideClickHouse, "--tls-ca", "ca.pem")
	require.ErrorIs(t, err, errUsage)

	_, errs, code := runCLI(t, "alarms", "--clickhouse", "clickhouse://127.0.0.1:1", "--webhook", "http://x", "--tls-ca", "ca.pem")
	require.Equal(t, 2, code)
	require.Contains(t, errs, "--kafka-tls-ca")
}

// TestCLIKafkaFlagSpellingsReachSASL: ingest and deadletters reach a broker
// that requires SASL with either spelling of the flags.
func TestCLIKafkaFlagSpellingsReachSASL(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("PLAIN", "alice", "wonderland"),
		kfake.SeedTopics(1, "traces", "traces.dead"))
	require.NoError(t, err)
	defer cluster.Close()
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	t.Setenv("ENTROWATCH_KAFKA_PASSWORD", "wonderland")
	for _, sasl := range [][]string{{"--sasl", "plain", "--sasl-user", "alice"}, {"--kafka-sasl", "plain", "--kafka-sasl-user", "alice"}} {
		out, errs, code := runCLI(t, append([]string{"ingest", "--in", fixtures + "valid.jsonl.gz", "--brokers", brokers}, sasl...)...)
		require.Equal(t, 0, code, errs)
		require.Contains(t, out, "produced 33 responses", sasl)

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var errb strings.Builder
		code = dispatch(ctx, append([]string{"deadletters", "--brokers", brokers}, sasl...), io.Discard, &errb)
		cancel()
		require.Equal(t, 0, code, errb.String())
		require.Contains(t, errb.String(), "0 records from traces.dead", sasl)
	}
}

// TestDeadlettersOriginalBytes: a record the stream dead-lettered without
// its bytes (over the dead-letter message limit) is listed with the size of
// what was left out, and --requeue skips and counts it rather than producing
// an empty message.
func TestDeadlettersOriginalBytes(t *testing.T) {
	ctx := context.Background()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "traces.dead", "traces"))
	require.NoError(t, err)
	defer cluster.Close()
	kc := kafka.DefaultConfig()
	kc.Brokers = cluster.ListenAddrs()
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = "traces.dead"
	p, err := kafka.NewProducer(kc, pcfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, p.Produce(ctx, kafka.Message{Headers: []kafka.Header{
		{Key: runner.HeaderReason, Value: []byte("corrupt_ipc")},
		{Key: runner.HeaderError, Value: []byte("original message of 1040000 bytes not attached")},
		{Key: runner.HeaderSource, Value: []byte("traces/0@7")},
		{Key: runner.HeaderOriginalBytes, Value: []byte("1040000")},
	}}))
	require.NoError(t, p.Produce(ctx, kafka.Message{Value: []byte("garbage"), Headers: []kafka.Header{
		{Key: runner.HeaderReason, Value: []byte("corrupt_ipc")},
		{Key: runner.HeaderSource, Value: []byte("traces/0@8")},
	}}))
	require.NoError(t, p.Close())
	brokers := strings.Join(cluster.ListenAddrs(), ",")

	out, errs, code := runCLI(t, "deadletters", "--brokers", brokers)
	require.Equal(t, 0, code, errs)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	var big, small deadLetter
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &big))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &small))
	require.Equal(t, 0, big.Bytes)
	require.NotNil(t, big.OriginalBytes, lines[0])
	require.Equal(t, 1040000, *big.OriginalBytes)
	require.Contains(t, lines[0], `"original_bytes":1040000`)
	require.Equal(t, 7, small.Bytes)
	require.NotContains(t, lines[1], "original_bytes", "only records without their bytes carry it")

	_, errs, code = runCLI(t, "deadletters", "--brokers", brokers, "--requeue", "traces")
	require.Equal(t, 0, code, errs)
	require.Contains(t, errs, "1 requeued to traces, 1 without bytes skipped")
	out, errs, code = runCLI(t, "deadletters", "--brokers", brokers, "--topic", "traces")
	require.Equal(t, 0, code, errs)
	require.Equal(t, 1, strings.Count(out, "\n"), out)
	require.NotContains(t, out, "original_bytes")
}
