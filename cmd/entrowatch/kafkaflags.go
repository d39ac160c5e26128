package main

import (
	"flag"
	"os"
	"strings"

	"github.com/entrowatch/entrowatch/streams/kafka"
)

// kafkaFlags are the Kafka connection flags a command adds beside its own
// --brokers: TLS and SASL. The password comes from $ENTROWATCH_KAFKA_PASSWORD.
type kafkaFlags struct {
	tls      *bool
	ca       *string
	sasl     *string
	saslUser *string
}

// addKafkaFlags registers --<prefix>tls, --<prefix>tls-ca, --<prefix>sasl and
// --<prefix>sasl-user. Commands that also talk to ClickHouse (whose TLS flag
// is --tls) use the prefix "kafka-".
func addKafkaFlags(fs *flag.FlagSet, prefix string) *kafkaFlags {
	return &kafkaFlags{
		tls:      fs.Bool(prefix+"tls", false, "connect to Kafka with TLS"),
		ca:       fs.String(prefix+"tls-ca", "", "PEM file of CAs to trust for Kafka (implies --"+prefix+"tls)"),
		sasl:     fs.String(prefix+"sasl", "", "Kafka SASL mechanism: plain, scram-sha-256 or scram-sha-512"),
		saslUser: fs.String(prefix+"sasl-user", "", "Kafka SASL user (password from $ENTROWATCH_KAFKA_PASSWORD)"),
	}
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
