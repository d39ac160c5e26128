package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/entrowatch/entrowatch/internal/testutil"
	"github.com/entrowatch/entrowatch/streams/ipc"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// topicRows is the number of trace rows on partition 0 of topic.
func topicRows(t *testing.T, addr, topic string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a guard against hanging
	defer cancel()
	conn, err := kafkago.DialLeader(ctx, "tcp", addr, topic, 0)
	require.NoError(t, err)
	last, err := conn.ReadLastOffset()
	conn.Close()
	require.NoError(t, err)
	if last == 0 {
		return 0
	}
	rd := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{addr}, Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer rd.Close()
	rows := 0
	for {
		m, err := rd.ReadMessage(ctx)
		require.NoError(t, err)
		rec, err := ipc.Decode(m.Value, memory.NewGoAllocator())
		require.NoError(t, err)
		rows += int(rec.NumRows())
		rec.Release()
		if m.Offset == last-1 {
			return rows
		}
	}
}

// TestIngestTruncatedGzipSaysAcknowledged: a gzip file cut short fails after
// some batches went out; the error says how many responses the broker
// acknowledged (as a broker error does), which is what is on the topic,
// and gives the cause once (before: no count, and "unexpected EOF" a
// second time on a line of its own, returned again by the gzip reader's
// Close).
func TestIngestTruncatedGzipSaysAcknowledged(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "traces"))
	require.NoError(t, err)
	defer cluster.Close()
	addr := cluster.ListenAddrs()[0]

	var in bytes.Buffer
	lines := fixtureLines(t)
	for range 20 {
		for _, l := range lines {
			in.Write(l)
			in.WriteByte('\n')
		}
	}
	data := testutil.Gzip(t, in.Bytes())
	cut := filepath.Join(t.TempDir(), "cut.jsonl.gz")
	require.NoError(t, os.WriteFile(cut, data[:len(data)*3/4], 0o644))

	stdout, stderr, code := runCLI(t, "ingest", "--in", cut, "--brokers", addr, "--batch-rows", "50")
	require.Equal(t, 1, code, stderr)
	require.Empty(t, stdout)
	// A slow machine (-race, a loaded CI) prints progress lines first.
	m := regexp.MustCompile(`(?m)^entrowatch ingest: after (\d+) responses were acknowledged, all of input lines 1 to (\d+) \(resend from line \d+, e\.g\. tail -n \+\d+; or all of it: the store keeps one row per model and trace id\): reading line \d+: ` +
		regexp.QuoteMeta(cut) + `: the gzip data ends abruptly \(a truncated file, e\.g\. an interrupted copy or download\): unexpected EOF\n$`).FindStringSubmatch(stderr)
	require.NotNil(t, m, "%q", stderr)
	require.Equal(t, 1, strings.Count(stderr, "unexpected EOF"), stderr)
	acked, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	require.Positive(t, acked, "batches went out before the cut")
	require.Less(t, acked, 20*len(lines))
	require.Equal(t, acked, topicRows(t, addr, "traces"), "the count is what is on the topic")
	upTo, err := strconv.Atoi(m[2])
	require.NoError(t, err)
	require.Equal(t, acked, upTo, "one response per line: the lines sent are the responses acknowledged")
}

// TestIngestReadErrorBeforeAnyBatch: a read error before any batch went out
// says so too (0 acknowledged): nothing to skip when sending again.
func TestIngestReadErrorBeforeAnyBatch(t *testing.T) {
	var in bytes.Buffer
	for range 50 {
		in.Write(fixtureLines(t)[0])
		in.WriteByte('\n')
	}
	data := testutil.Gzip(t, in.Bytes())
	cut := filepath.Join(t.TempDir(), "cut.gz")
	require.NoError(t, os.WriteFile(cut, data[:len(data)/2], 0o644))
	// Nothing is produced, so no broker is needed.
	_, stderr, code := runCLI(t, "ingest", "--in", cut, "--brokers", "127.0.0.1:1")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "entrowatch ingest: after 0 responses were acknowledged: reading line")
	require.Equal(t, 1, strings.Count(stderr, "unexpected EOF"), stderr)
}

// writeTraceArrow writes the golden responses as trace.v1 (float32, as on
// the wire) to path, in the Arrow IPC stream or file format.
func writeTraceArrow(t *testing.T, path string, fileFormat bool) {
	t.Helper()
	rec := goldenTraces(t, memory.NewGoAllocator())
	defer rec.Release()
	writeBatches(t, path, rec, int(rec.NumRows()), fileFormat)
}

// TestScoreReadsArrowByContent: score reads a trace.v1 Arrow file or stream
// whatever its name, and names a gzipped one for what it is (ingest reads
// them too: TestIngestArrow).
func TestScoreReadsArrowByContent(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "traces.arrow")
	writeTraceArrow(t, file, true)
	stream := filepath.Join(dir, "traces.jsonl") // misnamed
	writeTraceArrow(t, stream, false)

	// score reads the misnamed trace.v1 stream as Arrow, as it reads the
	// file (before, a file named .jsonl, .json, .gz or .ndjson was read as
	// JSON whatever it held).
	for _, p := range []string{file, stream} {
		out := filepath.Join(dir, filepath.Base(p)+".csv")
		_, stderr, code := runCLI(t, "score", "--in", p, "--out", out)
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stderr, "33 written, 0 rejected")
	}
	// A gzipped Arrow file is named for what it is.
	gz := filepath.Join(dir, "traces.arrow.gz")
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(gz, testutil.Gzip(t, b), 0o644))
	_, stderr, code := runCLI(t, "score", "--in", gz, "--out", filepath.Join(dir, "gz.csv"))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, gz+" is an Arrow IPC file, not JSON responses: score reads Arrow IPC (trace.v1) from a file given by name, uncompressed")
}

// TestScoreIngestRecogniseTablesByContent: a CSV table is "a table, not
// responses" in score and ingest whatever its name, gzip or not (before,
// only a name ending .csv, .tsv or .csv.gz was: a copy named .txt or
// gzipped as csv.gz gave one malformed_json reject per row).
func TestScoreIngestRecogniseTablesByContent(t *testing.T) {
	dir := t.TempDir()
	table, err := os.ReadFile(fixtures + "valid.expected.csv")
	require.NoError(t, err)
	txt := filepath.Join(dir, "tablecsv.txt")
	require.NoError(t, os.WriteFile(txt, table, 0o644))
	gz := filepath.Join(dir, "csv.gz")
	require.NoError(t, os.WriteFile(gz, testutil.Gzip(t, table), 0o644))
	tsv := filepath.Join(dir, "labels.jsonl.gz")
	require.NoError(t, os.WriteFile(tsv, testutil.Gzip(t, []byte("trace_id\tcorrect\nfx-0\t1\nfx-1\t0\n")), 0o644))
	for _, p := range []string{txt, gz, tsv} {
		_, stderr, code := runCLI(t, "score", "--in", p, "--out", filepath.Join(dir, "y.csv"))
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, "entrowatch score: opening input: "+p+" is a table, not responses (its first line is a header: ")
		require.Contains(t, stderr, "a labelled CSV of features is read by entrowatch train and eval\n")
		require.NotContains(t, stderr, "malformed_json")
		require.NoFileExists(t, filepath.Join(dir, "y.csv"))

		_, stderr, code = runCLI(t, "ingest", "--in", p, "--brokers", "127.0.0.1:1")
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, "entrowatch ingest: "+p+" is a table, not responses (its first line is a header: ")
		require.NotContains(t, stderr, "malformed_json")
	}
	_, stderr, _ := runCLI(t, "score", "--in", txt, "--out", filepath.Join(dir, "y.csv"))
	require.Contains(t, stderr, "(its first line is a header: id,model,domain,correct,n_tokens,mean,std,max,q10,q25,q50,q75,q90,skew,kurt,s...): this reads")
}

// withStdin runs f with standard input reading data from a pipe.
func withStdin(t *testing.T, data []byte, f func()) {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	go func() {
		w.Write(data)
		w.Close()
	}()
	old := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = old; r.Close() }()
	f()
}

// TestScoreStdinSniffed: standard input is looked at without losing its
// bytes: JSON from a pipe scores as from the file, a table or an Arrow
// stream from a pipe is refused saying what it is.
func TestScoreStdinSniffed(t *testing.T) {
	dir := t.TempDir()
	gz, err := os.ReadFile(fixtures + "valid.jsonl.gz")
	require.NoError(t, err)
	withStdin(t, gz, func() {
		_, stderr, code := runCLI(t, "score", "--in", "-", "--out", filepath.Join(dir, "p.csv"))
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stderr, "33 written, 0 rejected")
	})
	want, err := os.ReadFile(filepath.Join(dir, "p.csv"))
	require.NoError(t, err)
	_, stderr, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", filepath.Join(dir, "f.csv"))
	require.Equal(t, 0, code, stderr)
	got, err := os.ReadFile(filepath.Join(dir, "f.csv"))
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))

	table, err := os.ReadFile(fixtures + "valid.expected.csv")
	require.NoError(t, err)
	withStdin(t, table, func() {
		_, stderr, code := runCLI(t, "score", "--in", "-", "--out", filepath.Join(dir, "t.csv"))
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, "opening input: standard input is a table, not responses (its first line is a header: id,model,")
	})
	arrow := filepath.Join(dir, "traces.arrows")
	writeTraceArrow(t, arrow, false)
	b, err := os.ReadFile(arrow)
	require.NoError(t, err)
	withStdin(t, b, func() {
		_, stderr, code := runCLI(t, "score", "--in", "-", "--out", filepath.Join(dir, "a.csv"))
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, "opening input: standard input is an Arrow IPC stream, not JSON responses: score reads Arrow IPC (trace.v1) from a file given by name")
	})
}

// TestIngestHintTLSSASLMismatch: a broker that takes the connection and then
// drops it (SASL given to a broker without, or none to one that requires
// it) is not "not running": the hint names the TLS/SASL settings given.
func TestIngestHintTLSSASLMismatch(t *testing.T) {
	plain, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "traces"))
	require.NoError(t, err)
	defer plain.Close()
	sasl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("PLAIN", "alice", "wonderland"), kfake.SeedTopics(1, "traces"))
	require.NoError(t, err)
	defer sasl.Close()
	t.Setenv("ENTROWATCH_KAFKA_PASSWORD", "wonderland")

	_, stderr, code := runCLI(t, "ingest", "--in", fixtures+"valid.jsonl.gz", "--brokers", plain.ListenAddrs()[0], "--kafka-sasl", "plain", "--kafka-sasl-user", "alice")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "after 0 responses were acknowledged: ")
	require.Contains(t, stderr, "its TLS/SASL settings may not match the ones given (--kafka-sasl plain; entrowatch run's embedded broker takes neither); or is the broker running?")

	_, stderr, code = runCLI(t, "ingest", "--in", fixtures+"valid.jsonl.gz", "--brokers", sasl.ListenAddrs()[0])
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "its TLS/SASL settings may not match the ones given (none): if it requires TLS or SASL, give --kafka-tls [--kafka-tls-ca FILE], --kafka-sasl MECH --kafka-sasl-user USER; or is the broker running?")
}

// TestProduceHint: what each kind of produce error is said to mean.
func TestProduceHint(t *testing.T) {
	none := kafka.Config{}
	withTLS := kafka.Config{TLS: kafka.TLSConfig{Enabled: true}}
	withBoth := kafka.Config{TLS: kafka.TLSConfig{Enabled: true}, SASL: kafka.SASLConfig{Mechanism: "scram-sha-512"}}
	wrap := func(err error) error { return fmt.Errorf("producing 1 message to traces: %w", err) }
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	running := "is the broker running? entrowatch run starts one on 127.0.0.1:9092"
	for _, c := range []struct {
		name      string
		err       error
		conn      kafka.Config
		want      string
		wantNot   string
		wantEmpty bool
	}{
		{"refused", wrap(refused), none, " (" + running + ")", "", false},
		{"refused with TLS", wrap(refused), withTLS, " (" + running + ")", "", false},
		{"dial timeout", wrap(&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}), withTLS, " (" + running + ")", "", false},
		{"no such host", wrap(&net.DNSError{Err: "no such host", Name: "kafka"}), none, " (" + running + ")", "", false},
		// F6: --kafka-tls against a plaintext broker waits for a TLS answer that never comes.
		{"TLS to plaintext", wrap(timeout), withTLS, "its TLS/SASL settings may not match the ones given (--kafka-tls; entrowatch run's embedded broker takes neither); or " + running, "", false},
		{"SASL to a broker without", wrap(io.ErrUnexpectedEOF), withBoth, "the ones given (--kafka-tls and --kafka-sasl scram-sha-512;", "", false},
		{"none to a broker with", wrap(io.EOF), none, "may not match the ones given (none): if it requires TLS or SASL, give --kafka-tls", "", false},
		{"reset", wrap(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), none, "if it requires TLS or SASL", "", false},
		{"batch of messages", fmt.Errorf("producing 3 messages to traces: %w", kafkago.WriteErrors{nil, io.ErrUnexpectedEOF, io.ErrUnexpectedEOF}), withTLS, "TLS/SASL settings may not match", "", false},
		{"plaintext answer to TLS", wrap(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), withTLS, "the broker does not answer in TLS", running, false},
		{"unknown CA", wrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), withTLS, "give the CA that signed it with --kafka-tls-ca FILE", running, false},
		{"SASL refused", wrap(kafkago.SASLAuthenticationFailed), withBoth, "SASL was refused: check --kafka-sasl", running, false},
		{"other, secured", wrap(errors.New("something")), withTLS, " (" + running + " Or its TLS/SASL settings may not match the ones given: --kafka-tls)", "", false},
		{"other", wrap(errors.New("something")), none, " (" + running + ")", "", false},
		// A full disk under the embedded broker's data_dir: it answers, with an unknown server error.
		{"broker failed to store", fmt.Errorf("producing 1 message to traces: %w", kafkago.WriteErrors{kafkago.Unknown}), none, "could not store the messages: see its log", running, false},
		{"interrupted", wrap(context.Canceled), withTLS, "", "", true},
	} {
		got := produceHint(c.err, c.conn)
		if c.wantEmpty {
			require.Empty(t, got, c.name)
			continue
		}
		require.Contains(t, got, c.want, c.name)
		if c.wantNot != "" {
			require.NotContains(t, got, c.wantNot, c.name)
		}
		if c.conn.TLS.Enabled || c.conn.SASL.Mechanism != "" {
			continue
		}
		require.NotContains(t, got, "embedded broker takes neither", c.name)
	}
}
