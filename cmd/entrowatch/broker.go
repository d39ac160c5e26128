package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/entrowatch/entrowatch/streams/broker"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

const brokerSynopsis = `[--listen 127.0.0.1:9092] [--data-dir DIR | --in-memory] [--partitions 4] [--topics traces,traces.dead,labels]
       [--retention 24h] [--retention-bytes N] [--max-message-bytes 1048588]

Runs the embedded Kafka-protocol broker alone, the one entrowatch run starts
when kafka.brokers is empty: for several run replicas on one machine (each
with kafka.brokers set to this address) that must outlive any one of them,
for ingest and labels tests, and for demos. It is not a replacement for a
Kafka cluster: one broker, no replication, no TLS or SASL.

--data-dir persists topics, offsets and consumer groups and reloads them on
the next start (one process per directory: a second one is refused); without
it, or with --in-memory, everything is lost on exit. Retention (time, and
bytes per partition) drops the oldest messages whether they were consumed or
not, as Kafka's does. Ctrl-C or SIGTERM persists the state and stops.`

func runBroker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := broker.DefaultConfig()
	fs := newFlags("broker", brokerSynopsis, stderr)
	listen := fs.String("listen", "127.0.0.1:9092", "host:port to listen on (127.0.0.1:0: a free port, printed at start)")
	dataDir := fs.String("data-dir", "", "directory to persist the broker's state in (default: in memory)")
	inMemory := fs.Bool("in-memory", false, "keep everything in memory even with --data-dir")
	partitions := fs.Int("partitions", def.Partitions, "partitions of the topics created at start and on first use")
	topics := fs.String("topics", "traces,traces.dead,labels", "comma-separated topics to create at start (\"\" for none: topics are created on first use)")
	retention := fs.Duration("retention", def.Retention, "drop messages older than this, consumed or not (0 keeps them)")
	retentionBytes := fs.Int64("retention-bytes", def.RetentionBytes, "bytes kept per partition, oldest dropped first (0 = no bound)")
	maxMessage := fs.Int("max-message-bytes", def.MaxMessageBytes, fmt.Sprintf("largest record batch a producer may send (Kafka's message.max.bytes; entrowatch's producers need %d)", kafka.DefaultProducerConfig().TopicMessageBytes()))
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := def
	cfg.Listen, cfg.DataDir, cfg.InMemory, cfg.Partitions = *listen, *dataDir, *inMemory, *partitions
	cfg.Retention, cfg.RetentionBytes, cfg.MaxMessageBytes = *retention, *retentionBytes, *maxMessage
	for _, t := range strings.Split(*topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			cfg.Topics = append(cfg.Topics, t)
		}
	}
	if err := cfg.Validate(); err != nil {
		return badFlag("%s", strings.NewReplacer("broker.listen", "--listen", "broker.partitions", "--partitions", "broker.max_message_bytes", "--max-message-bytes",
			"broker.retention_bytes", "--retention-bytes", "broker.retention", "--retention").Replace(err.Error()))
	}
	log := slog.New(logHandler(stderr, "text", slog.LevelInfo))
	b, err := broker.Start(cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "broker listening on %s; Ctrl-C stops\n", b.Addr())
	<-ctx.Done()
	log.Info("broker stopping")
	return b.Close(context.WithoutCancel(ctx))
}
