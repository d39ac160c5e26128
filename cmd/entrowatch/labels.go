package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

const labelsSynopsis = `requests|import --clickhouse DSN [flags]

  labels requests (--out FILE | --topic T --brokers H:P,..) [--domains 5] [--per-domain 50] [--batch NAME]
      Takes the top --domains of the labeling_queue view (low estimated
      accuracy, wide interval, high volume) and, for each, --per-domain
      responses from labeling_candidates (most uncertain first, stratified by
      p_correct, never ones already labelled or requested), records them in
      label_requests and writes them: JSON Lines to FILE (CSV when FILE ends in
      .csv, "-" for stdout) or one JSON message per request to the topic.

  labels import (--in FILE | --topic T --brokers H:P,.. [--group G] [--follow]) [--source NAME]
      Stores labels (label.v1: trace_id, correct, source, ts) in the labels
      table; the newest label of a trace wins and re-importing is harmless.
      FILE: CSV with a header (trace_id,correct[,source,ts]) or JSON Lines;
      "-" for stdin. Topic messages: label.v1 Arrow IPC streams or JSON
      objects; offsets are committed after the labels are stored. Without
      --follow the import stops when the topic has been idle for --idle, or
      with an error at a message that holds no labels; with --follow it runs
      as entrowatch run does: such a message is logged and skipped, and a
      failing insert is retried.
      entrowatch run with the ClickHouse sink already stores its labels_topic
      (where POST /v1/labels goes); this command is for other topics and files.

  Kafka with TLS or SASL: --kafka-tls, --kafka-tls-ca FILE, --kafka-sasl MECH,
  --kafka-sasl-user USER (password from $ENTROWATCH_KAFKA_PASSWORD); --tls is
  ClickHouse's. The topic is checked (and for requests created when missing)
  before anything else, so a wrong password is an error.`

func runLabels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "Usage: entrowatch labels "+labelsSynopsis)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return errUsage
	}
	switch args[0] {
	case "requests":
		return runLabelRequests(ctx, args[1:], stdout, stderr)
	case "import":
		return runLabelImport(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "labels: unknown subcommand %q (want requests or import)\n", args[0])
	return errUsage
}

func runLabelRequests(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("labels requests", "--clickhouse DSN (--out FILE | --topic T --brokers H:P,..) [flags]", stderr)
	chf := addClickHouseFlags(fs)
	out := fs.String("out", "", "file to write the requests to: .jsonl/.json (JSON Lines) or .csv; \"-\" for stdout")
	topic := fs.String("topic", "", "Kafka topic to publish the requests to (one JSON message each)")
	brokers := fs.String("brokers", "", "comma-separated Kafka bootstrap brokers for --topic")
	kf := addKafkaFlags(fs, "kafka-")
	domains := fs.Int("domains", 5, "how many domains of the labeling queue to take, highest priority first")
	perDomain := fs.Int("per-domain", 50, "responses to request per domain")
	batch := fs.String("batch", "", "name of this request batch (default: the time, e.g. 20260301T120000Z)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := fileOrTopic(fs, stderr, "out", *out, *topic, *brokers); err != nil {
		return err
	}
	cfg, err := chf.config(fs)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	if *batch == "" {
		*batch = now.Format("20060102T150405Z")
	}
	// Open the destination first: a request is recorded only when it can be delivered.
	var w io.Writer
	var closeOut func() error
	if *out != "" {
		if *out == "-" {
			w, closeOut = stdout, func() error { return nil }
		} else {
			f, err := os.Create(*out)
			if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			w, closeOut = f, f.Close
		}
	}
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		if closeOut != nil {
			closeOut()
		}
		return err
	}
	defer conn.Close()
	reqs, err := clickhouse.RequestLabels(ctx, conn, cfg.DatabaseName(), *domains, *perDomain, *batch, now)
	if err != nil {
		if closeOut != nil {
			closeOut()
		}
		return err
	}
	if *topic != "" {
		if err := clickhouse.PublishRequests(ctx, kf.config(*brokers, "entrowatch-labels"), *topic, reqs); err != nil {
			return fmt.Errorf("%w (the requests are recorded in label_requests with batch %s)", err, *batch)
		}
	} else {
		werr := writeRequests(w, *out, reqs)
		if err := errors.Join(werr, closeOut()); err != nil {
			return fmt.Errorf("writing %s: %w (the requests are recorded in label_requests with batch %s)", *out, err, *batch)
		}
	}
	doms := map[string]bool{}
	for _, r := range reqs {
		doms[r.Model+"/"+r.Domain] = true
	}
	fmt.Fprintf(stderr, "labels requests: %d responses from %d domains (batch %s)\n", len(reqs), len(doms), *batch)
	return nil
}

func writeRequests(w io.Writer, name string, reqs []clickhouse.LabelRequest) error {
	bw := bufio.NewWriter(w)
	if strings.EqualFold(filepath.Ext(name), ".csv") {
		cw := csv.NewWriter(bw)
		_ = cw.Write([]string{"trace_id", "model", "domain", "p_correct", "uncertainty", "stratum", "stratum_rank", "priority", "ts", "prompt", "batch"})
		for _, r := range reqs {
			_ = cw.Write([]string{r.TraceID, r.Model, r.Domain, ftoa(r.PCorrect), ftoa(r.Uncertainty), strconv.Itoa(int(r.Stratum)),
				strconv.FormatUint(r.StratumRank, 10), ftoa(r.Priority), r.TS.UTC().Format(time.RFC3339), r.Prompt, r.Batch})
		}
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
		return bw.Flush()
	}
	enc := json.NewEncoder(bw)
	for _, r := range reqs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func ftoa(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func runLabelImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("labels import", "--clickhouse DSN (--in FILE | --topic T --brokers H:P,..) [flags]", stderr)
	chf := addClickHouseFlags(fs)
	in := fs.String("in", "", "labels file: CSV with header trace_id,correct[,source,ts] or JSON Lines; \"-\" for stdin")
	topic := fs.String("topic", "", "Kafka topic of labels (label.v1 Arrow IPC or JSON messages)")
	brokers := fs.String("brokers", "", "comma-separated Kafka bootstrap brokers for --topic")
	kf := addKafkaFlags(fs, "kafka-")
	group := fs.String("group", "entrowatch-labels", "consumer group for --topic (offsets committed after storing)")
	follow := fs.Bool("follow", false, "with --topic, keep importing until interrupted")
	idle := fs.Duration("idle", 5*time.Second, "with --topic and without --follow, stop after this long without messages")
	source := fs.String("source", "import", "source recorded for labels that name none")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := fileOrTopic(fs, stderr, "in", *in, *topic, *brokers); err != nil {
		return err
	}
	cfg, err := chf.config(fs)
	if err != nil {
		return err
	}
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	db := cfg.DatabaseName()
	if *in != "" {
		var r io.Reader = os.Stdin
		if *in != "-" {
			f, err := os.Open(*in)
			if err != nil {
				return fmt.Errorf("--in: %w", err)
			}
			defer f.Close()
			r = f
		}
		labels, err := clickhouse.ReadLabels(r, *source, time.Now())
		if err != nil {
			return fmt.Errorf("reading labels from %s: %w", *in, err)
		}
		if err := clickhouse.InsertLabels(ctx, conn, db, labels); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "labels import: %d labels stored\n", len(labels))
		return nil
	}

	n, err := clickhouse.ImportTopic(ctx, conn, db, clickhouse.TopicImport{Kafka: kf.config(*brokers, "entrowatch-labels"), Topic: *topic,
		Group: *group, Source: *source, Follow: *follow, Idle: *idle,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, memory.NewGoAllocator())
	fmt.Fprintf(stderr, "labels import: %d labels stored from topic %s\n", n, *topic)
	return err
}

// fileOrTopic checks that exactly one of --<fileFlag> FILE and --topic T is
// given, and that a topic comes with its brokers.
func fileOrTopic(fs *flag.FlagSet, stderr io.Writer, fileFlag, file, topic, brokers string) error {
	if (file == "") == (topic == "") {
		fmt.Fprintf(stderr, "give exactly one of --%s FILE or --topic T\n", fileFlag)
		fs.Usage()
		return errUsage
	}
	if topic != "" && brokers == "" {
		return fmt.Errorf("--topic %s needs --brokers host:port,...", topic)
	}
	return nil
}
