package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

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
