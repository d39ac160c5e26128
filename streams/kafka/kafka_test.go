package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// roundTrip produces one message through a fresh producer and reads it back
// through a consumer group, committing it.
func roundTrip(t *testing.T, conn Config, topic string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, conn, 1, topic); err != nil {
		return err
	}
	pcfg := DefaultProducerConfig()
	pcfg.Topic, pcfg.MaxAttempts = topic, 2
	p, err := NewProducer(conn, pcfg, quiet)
	require.NoError(t, err)
	defer p.Close()
	if err := p.Produce(ctx, Message{Key: []byte("k"), Value: []byte("v")}); err != nil {
		return err
	}
	scfg := DefaultSourceConfig()
	scfg.Topic, scfg.Group = topic, "g-"+topic
	scfg.MaxWait, scfg.HeartbeatInterval, scfg.SessionTimeout = 50*time.Millisecond, 100*time.Millisecond, time.Second
	scfg.JoinGroupBackoff, scfg.ReadBackoffMin, scfg.ReadBackoffMax = 100*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond
	s, err := NewSource(conn, scfg, quiet)
	require.NoError(t, err)
	defer s.Close()
	m, err := s.Fetch(ctx)
	if err != nil {
		return err
	}
	require.Equal(t, "v", string(m.Value))
	return s.Commit(ctx, m)
}

func TestSASL(t *testing.T) {
	for _, tc := range []struct{ mech, kfakeMech string }{
		{"plain", "PLAIN"},
		{"scram-sha-256", "SCRAM-SHA-256"},
		{"scram-sha-512", "SCRAM-SHA-512"},
	} {
		t.Run(tc.mech, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(tc.kfakeMech, "alice", "wonderland"),
				kfake.GroupMinSessionTimeout(100*time.Millisecond))
			require.NoError(t, err)
			defer c.Close()
			conn := DefaultConfig()
			conn.Brokers = c.ListenAddrs()
			conn.SASL.Mechanism, conn.SASL.Username, conn.SASL.Password = tc.mech, "alice", "wonderland"
			require.NoError(t, roundTrip(t, conn, "sasl-ok"))

			conn.SASL.Password = "wrong"
			conn.DialTimeout = 2 * time.Second
			err = roundTrip(t, conn, "sasl-bad")
			require.Error(t, err, "a wrong password must not get through")
			require.NotContains(t, err.Error(), "wrong", "the password never appears in errors")
		})
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	serverTLS, caFile := selfSigned(t, dir)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(serverTLS), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	conn := DefaultConfig()
	conn.Brokers = c.ListenAddrs()
	conn.TLS.Enabled, conn.TLS.CAFile = true, caFile
	require.NoError(t, roundTrip(t, conn, "tls-ok"))

	conn.TLS.CAFile = ""
	conn.DialTimeout = 2 * time.Second
	require.Error(t, roundTrip(t, conn, "tls-untrusted"), "an unknown CA must be refused")
}

// selfSigned writes a CA-signed-by-itself certificate for 127.0.0.1.
func selfSigned(t *testing.T, dir string) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "entrowatch-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, caFile
}

func TestSecretRedacted(t *testing.T) {
	conn := DefaultConfig()
	conn.SASL.Password = "hunter2"
	for _, s := range []string{fmt.Sprint(conn), fmt.Sprintf("%+v", conn), fmt.Sprintf("%#v", conn)} {
		require.NotContains(t, s, "hunter2")
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "password", conn.SASL.Password)
	require.NotContains(t, b.String(), "hunter2")
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Brokers = []string{"127.0.0.1:9092"}
	require.NoError(t, ok.Validate())
	require.NoError(t, DefaultSourceConfig().Validate())
	require.NoError(t, DefaultProducerConfig().Validate())
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"no brokers":   {func(c *Config) { c.Brokers = nil }, "kafka.brokers is empty"},
		"bad broker":   {func(c *Config) { c.Brokers = []string{"localhost"} }, "host:port"},
		"sasl no user": {func(c *Config) { c.SASL.Mechanism = "plain" }, "username"},
		"sasl no pass": {func(c *Config) { c.SASL.Mechanism, c.SASL.Username = "plain", "u" }, "ENTROWATCH_KAFKA_PASSWORD"},
		"sasl unknown": {func(c *Config) { c.SASL.Mechanism = "gssapi" }, "gssapi"},
		"cert alone":   {func(c *Config) { c.TLS.CertFile = "x.pem" }, "cert_file and key_file"},
		"zero dial":    {func(c *Config) { c.DialTimeout = 0 }, "dial_timeout"},
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			tc.mut(&c)
			require.ErrorContains(t, c.Validate(), tc.want)
		})
	}
	p := DefaultProducerConfig()
	p.BatchBytes = int64(p.MaxMessageBytes)
	require.ErrorContains(t, p.Validate(), "batch_bytes")
	s := DefaultSourceConfig()
	s.StartOffset = "middle"
	require.ErrorContains(t, s.Validate(), "start_offset")
}

// Producing to a topic that does not exist says so, instead of failing with
// the protocol's bare "Unknown Topic Or Partition".
func TestProduceUnknownTopic(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	conn := DefaultConfig()
	conn.Brokers = c.ListenAddrs()
	pcfg := DefaultProducerConfig()
	pcfg.Topic, pcfg.MaxAttempts = "nowhere", 2
	p, err := NewProducer(conn, pcfg, quiet)
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = p.Produce(ctx, Message{Value: []byte("v")}, Message{Value: []byte("w")})
	require.ErrorIs(t, err, ErrUnknownTopic)
	require.ErrorContains(t, err, "producing to nowhere: the topic does not exist")

	// Any other failure keeps its own message.
	require.NoError(t, EnsureTopics(ctx, conn, 1, "elsewhere"))
	pcfg.Topic = "elsewhere"
	q, err := NewProducer(conn, pcfg, quiet)
	require.NoError(t, err)
	defer q.Close()
	big := Message{Value: make([]byte, pcfg.MaxMessageBytes+1)}
	err = q.Produce(ctx, big)
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrUnknownTopic)
	require.NoError(t, q.Produce(ctx, Message{Value: []byte("v")}))
}

// CheckTopic fails at once on what a consumer would wait on quietly.
func TestCheckTopic(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("PLAIN", "alice", "wonderland"), kfake.SeedTopics(1, "here"))
	require.NoError(t, err)
	defer c.Close()
	conn := DefaultConfig()
	conn.Brokers = c.ListenAddrs()
	conn.DialTimeout = 2 * time.Second
	conn.SASL.Mechanism, conn.SASL.Username, conn.SASL.Password = "plain", "alice", "wonderland"
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	require.NoError(t, CheckTopic(ctx, conn, "here"))
	require.ErrorIs(t, CheckTopic(ctx, conn, "nowhere"), ErrUnknownTopic)
	conn.SASL.Password = "wrong"
	err = CheckTopic(ctx, conn, "here")
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrUnknownTopic)
	require.NotContains(t, err.Error(), "wrong")
}

// ReadTopic reads every partition to the end it had at the start, or with
// follow keeps reading until its context ends; it commits nothing.
func TestReadTopic(t *testing.T) {
	ctx, conn, p := seededTopic(t, "t", 3)
	for i := range 30 {
		require.NoError(t, p.Produce(ctx, Message{Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprint(i))}))
	}
	read := func() map[string]bool {
		got := map[string]bool{}
		require.NoError(t, ReadTopic(ctx, conn, "t", false, func(m Message) error {
			got[string(m.Value)] = true
			return nil
		}))
		return got
	}
	require.Len(t, read(), 30)
	require.Len(t, read(), 30, "nothing was committed: a second read sees everything again")

	fctx, fcancel := context.WithCancel(ctx)
	seen := make(chan string, 64)
	done := make(chan error, 1)
	go func() {
		done <- ReadTopic(fctx, conn, "t", true, func(m Message) error {
			seen <- string(m.Value)
			return nil
		})
	}()
	require.NoError(t, p.Produce(ctx, Message{Key: []byte("late"), Value: []byte("late")}))
	for v := range seen {
		if v == "late" {
			break
		}
	}
	fcancel()
	require.NoError(t, <-done)
	require.ErrorIs(t, ReadTopic(ctx, conn, "absent", false, func(Message) error { return nil }), ErrUnknownTopic)
}

// After fn returns an error, ReadTopic calls it no more, also for messages
// other partitions fetched meanwhile.
func TestReadTopicStopsAtFirstError(t *testing.T) {
	ctx, conn, p := seededTopic(t, "s", 4)
	var msgs []Message
	for i := range 400 {
		msgs = append(msgs, Message{Key: []byte(fmt.Sprint(i)), Value: []byte("v")})
	}
	require.NoError(t, p.Produce(ctx, msgs...))
	stop := errors.New("stop")
	for range 5 {
		calls := 0
		err := ReadTopic(ctx, conn, "s", false, func(Message) error {
			calls++
			if calls == 2 {
				return stop
			}
			return nil
		})
		require.ErrorIs(t, err, stop)
		require.Equal(t, 2, calls)
	}
}

// seededTopic starts a kfake cluster with topic of the given partitions and
// returns a context bounded for the test, the connection and a producer to
// the topic; all are closed when t ends.
func seededTopic(t *testing.T, topic string, partitions int32) (context.Context, Config, *Producer) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	conn := DefaultConfig()
	conn.Brokers = c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	pcfg := DefaultProducerConfig()
	pcfg.Topic = topic
	p, err := NewProducer(conn, pcfg, quiet)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return ctx, conn, p
}

// TestNilLogger: a nil logger discards instead of crashing kafka-go's
// goroutines when they log (the source logs as it joins its group, the
// producer when a write fails).
func TestNilLogger(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "nil-log"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	conn := DefaultConfig()
	conn.Brokers = c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	pcfg := DefaultProducerConfig()
	pcfg.Topic, pcfg.MaxAttempts = "absent", 2
	bad, err := NewProducer(conn, pcfg, nil)
	require.NoError(t, err)
	require.ErrorIs(t, bad.Produce(ctx, Message{Value: []byte("v")}), ErrUnknownTopic)
	require.NoError(t, bad.Close())

	pcfg.Topic = "nil-log"
	p, err := NewProducer(conn, pcfg, nil)
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Produce(ctx, Message{Value: []byte("v")}))
	scfg := DefaultSourceConfig()
	scfg.Topic, scfg.Group = "nil-log", "g-nil-log"
	scfg.MaxWait, scfg.HeartbeatInterval, scfg.SessionTimeout = 50*time.Millisecond, 100*time.Millisecond, time.Second
	scfg.JoinGroupBackoff, scfg.ReadBackoffMin, scfg.ReadBackoffMax = 100*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond
	s, err := NewSource(conn, scfg, nil)
	require.NoError(t, err)
	defer s.Close()
	m, err := s.Fetch(ctx)
	require.NoError(t, err)
	require.Equal(t, "v", string(m.Value))
	require.NoError(t, s.Commit(ctx, m))
}

// TestWatermarks: a Source reports the partitions the group assigned to it
// and their high watermarks, without fetching; a second member takes some of
// them over and each reports only its own.
func TestWatermarks(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "wm"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	conn := DefaultConfig()
	conn.Brokers = c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pcfg := DefaultProducerConfig()
	pcfg.Topic = "wm"
	p, err := NewProducer(conn, pcfg, quiet)
	require.NoError(t, err)
	defer p.Close()
	for i := range 40 {
		require.NoError(t, p.Produce(ctx, Message{Key: []byte(fmt.Sprint("k", i)), Value: []byte("v")}))
	}
	source := func() *Source {
		scfg := DefaultSourceConfig()
		scfg.Topic, scfg.Group = "wm", "g-wm"
		scfg.MaxWait, scfg.HeartbeatInterval, scfg.SessionTimeout = 50*time.Millisecond, 100*time.Millisecond, time.Second
		scfg.RebalanceTimeout = time.Second
		scfg.JoinGroupBackoff, scfg.ReadBackoffMin, scfg.ReadBackoffMax = 100*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond
		s, err := NewSource(conn, scfg, quiet)
		require.NoError(t, err)
		return s
	}
	a := source()
	defer a.Close()
	var wm map[int]PartitionOffsets
	require.Eventually(t, func() bool { // the reader joins in the background
		wm, err = a.Watermarks(ctx)
		return err == nil && len(wm) == 4
	}, 20*time.Second, 50*time.Millisecond, "the only member holds every partition")
	var total int64
	for _, o := range wm {
		total += o.High
		require.Zero(t, o.Next, "nothing committed, start_offset earliest: the log start")
		require.Zero(t, o.Start)
		require.EqualValues(t, -1, o.Committed, "nothing committed")
	}
	require.EqualValues(t, 40, total, "high watermarks add up to what was produced")
	// Committed offsets are where an unfetched partition's lag counts from.
	m, err := a.Fetch(ctx)
	require.NoError(t, err)
	require.NoError(t, a.Commit(ctx, m))
	wm, err = a.Watermarks(ctx)
	require.NoError(t, err)
	require.Equal(t, m.Offset+1, wm[m.Partition].Next)
	require.Equal(t, m.Offset+1, wm[m.Partition].Committed)

	b := source()
	defer b.Close()
	go func() {
		for ctx.Err() == nil {
			if _, err := a.Fetch(ctx); err != nil {
				return
			}
		}
	}()
	go func() {
		for ctx.Err() == nil {
			if _, err := b.Fetch(ctx); err != nil {
				return
			}
		}
	}()
	require.Eventually(t, func() bool {
		wa, err1 := a.Watermarks(ctx)
		wb, err2 := b.Watermarks(ctx)
		if err1 != nil || err2 != nil || len(wa) == 0 || len(wb) == 0 || len(wa)+len(wb) != 4 {
			return false
		}
		for p := range wa {
			if _, both := wb[p]; both {
				return false
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "two members split the partitions")
	cancel()
}
