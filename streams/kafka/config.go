// Package kafka is entrowatch's Kafka client: a consumer-group Source whose
// offsets are committed explicitly, after the sink confirms, and a Producer
// that waits for all in-sync replicas. Both are thin layers over
// segmentio/kafka-go with the defaults that matter for delivery set safely.
package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Config is how to reach the cluster; it is shared by sources and producers.
type Config struct {
	// Brokers are the bootstrap host:port addresses. Default none: when
	// empty, entrowatch run starts the embedded broker and fills this in.
	Brokers []string `yaml:"brokers"`
	// ClientID names this process in broker logs. Default "entrowatch".
	ClientID string `yaml:"client_id"`
	// DialTimeout bounds one connection attempt. Default 10s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// TLS, when enabled, encrypts connections to the brokers.
	TLS TLSConfig `yaml:"tls"`
	// SASL, when a mechanism is set, authenticates to the brokers.
	SASL SASLConfig `yaml:"sasl"`
}

// TLSConfig configures TLS to the brokers.
type TLSConfig struct {
	// Enabled turns TLS on. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of CAs to trust instead of the system pool.
	// Default "" (system pool).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and key for mutual
	// TLS. Default "" (no client certificate).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the broker's certificate.
	// Default "" (the host of the broker address).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables certificate checks; for tests only.
	// Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASLConfig configures SASL authentication. The password is never part of
// the file: PasswordEnv names the environment variable that holds it, and the
// command fills Password from there.
type SASLConfig struct {
	// Mechanism is "", "plain", "scram-sha-256" or "scram-sha-512".
	// Default "" (no SASL).
	Mechanism string `yaml:"mechanism"`
	// Username to authenticate as. Default "".
	Username string `yaml:"username"`
	// PasswordEnv is the environment variable holding the password.
	// Default "ENTROWATCH_KAFKA_PASSWORD".
	PasswordEnv string `yaml:"password_env"`
	// Password is filled from PasswordEnv by the command; never logged,
	// never read from the file.
	Password Secret `yaml:"-"`
}

// Secret is a string that prints as "[redacted]" in logs and errors.
type Secret string

// String redacts the secret.
func (Secret) String() string { return "[redacted]" }

// GoString redacts the secret in %#v.
func (Secret) GoString() string { return `"[redacted]"` }

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() any { return "[redacted]" }

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		ClientID:    "entrowatch",
		DialTimeout: 10 * time.Second,
		SASL:        SASLConfig{PasswordEnv: "ENTROWATCH_KAFKA_PASSWORD"},
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka.brokers is empty: list at least one host:port")
	}
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("kafka.brokers entry %q: want host:port: %w", b, err)
		}
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("kafka.dial_timeout %v: want > 0", c.DialTimeout)
	}
	switch strings.ToLower(c.SASL.Mechanism) {
	case "":
	case "plain", "scram-sha-256", "scram-sha-512":
		if c.SASL.Username == "" {
			return fmt.Errorf("kafka.sasl.username is empty but kafka.sasl.mechanism is %q: set the user", c.SASL.Mechanism)
		}
		if c.SASL.Password == "" {
			return fmt.Errorf("kafka.sasl: no password: export %s (named by kafka.sasl.password_env)", c.SASL.PasswordEnv)
		}
	default:
		return fmt.Errorf("kafka.sasl.mechanism %q: want plain, scram-sha-256 or scram-sha-512", c.SASL.Mechanism)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("kafka.tls: cert_file and key_file go together: set both or neither")
	}
	return nil
}

// mechanism builds the SASL mechanism, or nil without SASL.
func (c Config) mechanism() (sasl.Mechanism, error) {
	switch strings.ToLower(c.SASL.Mechanism) {
	case "":
		return nil, nil
	case "plain":
		return plain.Mechanism{Username: c.SASL.Username, Password: string(c.SASL.Password)}, nil
	case "scram-sha-256":
		return scram.Mechanism(scram.SHA256, c.SASL.Username, string(c.SASL.Password))
	case "scram-sha-512":
		return scram.Mechanism(scram.SHA512, c.SASL.Username, string(c.SASL.Password))
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism %q: want plain, scram-sha-256 or scram-sha-512", c.SASL.Mechanism)
}

// tlsConfig builds the TLS configuration, or nil without TLS.
func (c Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS.Enabled {
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.TLS.ServerName,
		InsecureSkipVerify: c.TLS.InsecureSkipVerify, //nolint:gosec // opt-in, documented as test-only
	}
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka.tls.ca_file %s: no PEM certificates found", c.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls client certificate %s / %s: %w", c.TLS.CertFile, c.TLS.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// security is the SASL mechanism (nil: none) and TLS configuration (nil:
// plaintext) shared by dialer and transport.
func (c Config) security() (sasl.Mechanism, *tls.Config, error) {
	m, err := c.mechanism()
	if err != nil {
		return nil, nil, err
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	return m, tc, nil
}

// dialer is the connection recipe of sources and admin calls.
func (c Config) dialer() (*kafkago.Dialer, error) {
	m, tc, err := c.security()
	if err != nil {
		return nil, err
	}
	return &kafkago.Dialer{
		ClientID:      c.ClientID,
		Timeout:       c.DialTimeout,
		DualStack:     true,
		TLS:           tc,
		SASLMechanism: m,
	}, nil
}

// transport is the connection recipe of producers.
func (c Config) transport() (*kafkago.Transport, error) {
	m, tc, err := c.security()
	if err != nil {
		return nil, err
	}
	return &kafkago.Transport{
		ClientID:    c.ClientID,
		DialTimeout: c.DialTimeout,
		TLS:         tc,
		SASL:        m,
		MetadataTTL: 10 * time.Second,
	}, nil
}

// CheckFiles reads the files the configuration names (the TLS CA bundle,
// client certificate and key), so that a missing or malformed one is
// reported before anything connects, naming its key.
func (c Config) CheckFiles() error {
	_, err := c.tlsConfig()
	return err
}
