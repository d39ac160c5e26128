package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/entrowatch/entrowatch/streams/kafka"
)

// kafkaFlags are the Kafka connection flags a command adds beside its own
// --brokers: TLS and SASL. The password comes from $ENTROWATCH_KAFKA_PASSWORD.
type kafkaFlags struct {
	fs       *flag.FlagSet
	aliases  map[string]string // older name -> canonical name
	clashes  map[string]string // older name -> why it cannot be used here
	tls      *bool
	ca       *string
	sasl     *string
	saslUser *string
}

// Where a command's Kafka flags live: beside ClickHouse flags, whose TLS
// flag is --tls, or in a command that talks to Kafka only.
const (
	kafkaPlain            = false
	kafkaBesideClickHouse = true
)

// addKafkaFlags registers --kafka-tls, --kafka-tls-ca, --kafka-sasl and
// --kafka-sasl-user, the names every command shows. The older names --tls,
// --tls-ca, --sasl and --sasl-user of ingest and deadletters are accepted
// as aliases (kafkaFlags.canonical) and not shown; beside ClickHouse flags
// (besideClickHouse) --tls is ClickHouse's, so only --sasl and --sasl-user
// are.
func addKafkaFlags(fs *flag.FlagSet, besideClickHouse bool) *kafkaFlags {
	k := &kafkaFlags{
		fs:       fs,
		aliases:  map[string]string{"sasl": "kafka-sasl", "sasl-user": "kafka-sasl-user"},
		clashes:  map[string]string{},
		tls:      fs.Bool("kafka-tls", false, "connect to Kafka with TLS"),
		ca:       fs.String("kafka-tls-ca", "", "PEM file of CAs to trust for Kafka (implies --kafka-tls)"),
		sasl:     fs.String("kafka-sasl", "", "Kafka SASL mechanism: plain, scram-sha-256 or scram-sha-512"),
		saslUser: fs.String("kafka-sasl-user", "", "Kafka SASL user (password from $ENTROWATCH_KAFKA_PASSWORD)"),
	}
	if besideClickHouse {
		k.clashes["tls-ca"] = "--tls-ca: in this command --tls is ClickHouse's; give Kafka's CA file with --kafka-tls-ca (and --kafka-tls)"
	} else {
		k.aliases["tls"], k.aliases["tls-ca"] = "kafka-tls", "kafka-tls-ca"
	}
	return k
}

// parse parses args into the command's flags (parseFlags) with the older
// Kafka flag names accepted.
func (k *kafkaFlags) parse(args []string) error {
	args, err := k.canonical(args)
	if err != nil {
		fmt.Fprintf(k.fs.Output(), "%v\nRun '%s -h' for its flags.\n", err, k.fs.Name())
		return errUsage
	}
	return parseFlags(k.fs, args)
}

// canonical returns args with the older Kafka flag names replaced by the
// canonical ones, for fs.Parse. It reads args as the flag package does
// (up to "--" or the first non-flag, skipping the values of flags that take
// one), so a value that looks like a flag is left alone.
func (k *kafkaFlags) canonical(args []string) ([]string, error) {
	out := append([]string(nil), args...)
	for i := 0; i < len(out); i++ {
		a := out[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			break
		}
		dashes := "-"
		if a[1] == '-' {
			dashes = "--"
		}
		name, value, hasValue := strings.Cut(a[len(dashes):], "=")
		if why, ok := k.clashes[name]; ok {
			return nil, fmt.Errorf("%s", why)
		}
		if c, ok := k.aliases[name]; ok {
			name = c
			out[i] = dashes + name
			if hasValue {
				out[i] += "=" + value
			}
		}
		f := k.fs.Lookup(name)
		if f == nil || hasValue {
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		i++ // the flag's value
	}
	return out, nil
}

// config is the connection to brokers (comma-separated) as clientID.
func (k *kafkaFlags) config(brokers, clientID string) kafka.Config {
	conn := kafka.DefaultConfig()
	conn.ClientID = clientID
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			conn.Brokers = append(conn.Brokers, b)
		}
	}
	conn.TLS.Enabled, conn.TLS.CAFile = *k.tls || *k.ca != "", *k.ca
	conn.SASL.Mechanism, conn.SASL.Username = *k.sasl, *k.saslUser
	if *k.sasl != "" {
		conn.SASL.Password = kafka.Secret(os.Getenv(conn.SASL.PasswordEnv))
	}
	return conn
}

// produceHint is what a failed produce to the brokers of conn may mean, as
// " (...)" to append to its error, or "" when the error says it all. A
// broker that is not there refuses the connection; one that is there but
// speaks otherwise than conn (TLS to a plaintext listener, SASL to one
// without, or neither to one that wants them) closes it (EOF) or never
// answers (i/o timeout), and then "is the broker running?" alone misleads.
func produceHint(err error, conn kafka.Config) string {
	var we kafkago.WriteErrors
	if errors.As(err, &we) { // a batch's errors are per message: the first says why
		for _, e := range we {
			if e != nil {
				err = e
				break
			}
		}
	}
	const running = "is the broker running? entrowatch run starts one on 127.0.0.1:9092"
	var (
		dns      *net.DNSError
		record   tls.RecordHeaderError
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		netErr   net.Error
		op       *net.OpError
	)
	secured := conn.TLS.Enabled || conn.SASL.Mechanism != ""
	switch {
	case errors.Is(err, context.Canceled): // Ctrl-C
		return ""
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &dns), errors.As(err, &op) && op.Op == "dial":
		return " (" + running + ")"
	case errors.As(err, &record):
		return " (the broker does not answer in TLS: drop --kafka-tls and --kafka-tls-ca if its listener is plaintext, or give the address of its TLS listener)"
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return " (the TLS settings do not match the broker's certificate: give the CA that signed it with --kafka-tls-ca FILE, and the broker by the name or address its certificate is for)"
	case errors.Is(err, kafkago.Unknown):
		// The broker answered, and failed to store the messages.
		return " (the broker is running but could not store the messages: see its log; entrowatch run's embedded broker logs why, e.g. a full disk under data_dir)"
	case errors.Is(err, kafkago.SASLAuthenticationFailed), errors.Is(err, kafkago.UnsupportedSASLMechanism), errors.Is(err, kafkago.IllegalSASLState):
		return " (SASL was refused: check --kafka-sasl (plain, scram-sha-256 or scram-sha-512: the broker's mechanism), --kafka-sasl-user and $" + saslPasswordEnv(conn) + ")"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.As(err, &netErr) && netErr.Timeout():
		// The broker took the connection, then closed it or kept silent:
		// what a mismatch of TLS or SASL looks like.
		if secured {
			return " (the broker took the connection but closed it or did not answer: its TLS/SASL settings may not match the ones given (" +
				securityGiven(conn) + "; entrowatch run's embedded broker takes neither); or " + running + ")"
		}
		return " (the broker took the connection but closed it or did not answer: its TLS/SASL settings may not match the ones given (none): " +
			"if it requires TLS or SASL, give --kafka-tls [--kafka-tls-ca FILE], --kafka-sasl MECH --kafka-sasl-user USER; or " + running + ")"
	case secured:
		return " (" + running + " Or its TLS/SASL settings may not match the ones given: " + securityGiven(conn) + ")"
	}
	return " (" + running + ")"
}

// securityGiven says which of TLS and SASL conn uses, by their flags.
func securityGiven(conn kafka.Config) string {
	var on []string
	if conn.TLS.Enabled {
		on = append(on, "--kafka-tls")
	}
	if conn.SASL.Mechanism != "" {
		on = append(on, "--kafka-sasl "+conn.SASL.Mechanism)
	}
	if len(on) == 0 {
		return "neither TLS nor SASL"
	}
	return strings.Join(on, " and ")
}

// saslPasswordEnv names the variable the SASL password is read from.
func saslPasswordEnv(conn kafka.Config) string {
	if conn.SASL.PasswordEnv != "" {
		return conn.SASL.PasswordEnv
	}
	return "ENTROWATCH_KAFKA_PASSWORD"
}
