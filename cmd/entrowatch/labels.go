package main

import (
	"bufio"
	"compress/gzip"
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

	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

const labelsSynopsis = `requests|import|export --clickhouse DSN [flags]

  labels requests (--out FILE | --topic T --brokers H:P,..) [--domains 5] [--per-domain 50] [--batch NAME] [--expire-after 168h]
      Takes the top --domains of the labeling_queue view (low estimated
      accuracy, wide interval, high volume) and, for each, --per-domain
      responses from labeling_candidates (stratified by p_correct, a random
      sample within each stratum, never ones already labelled or requested:
      what accuracy_corrected needs to be unbiased), records them in
      label_requests and writes them: to FILE as JSON Lines (.jsonl, .json,
      .ndjson; "-" for stdout) or CSV (.csv), by its extension, written whole
      or not at all; or one JSON message per request to the topic. Fields:
      trace_id, model, domain, p_correct, uncertainty, stratum, stratum_rank,
      priority, response_ts (the response's time), prompt, batch, expires_at;
      a labeler adds correct and the file goes back through labels import.
      In CSV a cell that starts with = + - @, a tab, a carriage return or
      ' gets one ' in front, so that a spreadsheet shows it rather than
      runs it as a formula (labels import removes it from trace_id).
      A request keeps its response out of the queue until expires_at
      (--expire-after, 7 days); an unlabelled response is open again after.
      --batch NAME must be new: a name label_requests holds already is
      refused. When nothing can be requested it says why, writes no file
      and exits 0.

  labels import (--in FILE | --topic T --brokers H:P,.. [--group G] [--follow]) [--source NAME]
      Stores labels (label.v1: trace_id, correct, source, ts) in the labels
      table; the newest label of a trace wins, and of the labels of one
      trace in a file or message only the last (or newest by ts) is kept
      (the output counts the duplicates). ts is RFC 3339 or Unix seconds or
      milliseconds, from 2000 to 2100 and at most 5 minutes ahead of now
      (the newest label wins); a label without one gets the time it
      is stored, except that from FILE one whose trace_id, correct and
      source are stored already is skipped: importing a file again changes
      nothing. (POST /v1/labels stamps every label without ts with the time
      it arrives: send label files that may be sent again with --in, or
      with ts.) A row whose correct is empty or null is not labelled yet:
      skipped and counted. trace_id is matched byte for byte, as ingest
      stores response ids: one with leading or trailing whitespace is
      refused; in CSV one ' before = + - @ ', a tab or a carriage return
      (what labels requests writes) is removed. It says how many labels
      match no response in scored yet (they apply when it arrives).
      FILE: CSV with a header (trace_id,correct[,source,ts]; other columns
      are ignored) or JSON: JSON Lines, an array, or objects one after
      another, pretty-printed or not (in an array "line N" is the N-th
      label); gzip-compressed or not (told by content); "-" for stdin. The
      file is read whole before anything is stored: one invalid label, a
      truncated file or a file without a row fails it, nothing is stored,
      and the first invalid labels are listed with their lines (responses,
      objects with id and no trace_id, are named once).
      Topic messages: label.v1
      Arrow IPC streams or JSON; each message's valid labels are stored,
      then its offset committed, and its invalid labels are refused one by
      one. Without --follow the import reads until the topic has been idle
      for --idle; then, when labels were refused or messages were not
      labels, it lists the first (partition, offset, line or row, reason)
      and exits 1. With --follow it runs as entrowatch run does: they are
      logged, and a failing insert is retried.
      entrowatch run with the ClickHouse sink already stores its labels_topic
      (where POST /v1/labels goes); this command is for other topics and files.

  labels export --out FILE.csv [--model NAME] [--since 720h] [--labels-only]
      Writes the labelled valid responses of scored, one row per model
      and trace id (a label names a trace id: every model's response with
      that id gets it),
      as the table entrowatch train reads: id, model, domain, correct (the
      newest label in the labels table, else the correct field the
      response arrived with; --labels-only: labels table only),
      label_source, ts, p_correct, estimator_version, n_tokens and the 18
      features. Written whole or not at all; nothing to export is an error.

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
	case "export":
		return runLabelExport(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "labels: unknown subcommand %q (want requests, import or export)\n", args[0])
	return errUsage
}

func runLabelRequests(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("labels requests", "--clickhouse DSN (--out FILE | --topic T --brokers H:P,..) [flags]", stderr)
	chf := addClickHouseFlags(fs)
	out := fs.String("out", "", "file to write the requests to: .jsonl/.json/.ndjson (JSON Lines) or .csv; \"-\" for stdout")
	topic := fs.String("topic", "", "Kafka topic to publish the requests to (one JSON message each)")
	brokers := fs.String("brokers", "", "comma-separated Kafka bootstrap brokers for --topic")
	kf := addKafkaFlags(fs, kafkaBesideClickHouse)
	domains := fs.Int("domains", 5, "how many domains of the labeling queue to take, highest priority first")
	perDomain := fs.Int("per-domain", 50, "responses to request per domain")
	expireAfter := fs.Duration("expire-after", clickhouse.DefaultRequestExpiry, "how long a request keeps its response out of the labeling queue; after it, an unlabelled response may be requested again (e.g. 72h)")
	batch := fs.String("batch", "", "name of this request batch, one label_requests does not hold yet (default: the time to the millisecond, e.g. 20260301T120000.123Z, with -2, -3, .. appended when label_requests holds it)")
	if err := kf.parse(args); err != nil {
		return err
	}
	if err := fileOrTopic(fs, stderr, "out", *out, *topic, *brokers); err != nil {
		return err
	}
	if *domains <= 0 || *perDomain <= 0 || *expireAfter <= 0 {
		fmt.Fprintf(stderr, "labels requests: --domains (%d), --per-domain (%d) and --expire-after (%v) must be positive\n", *domains, *perDomain, *expireAfter)
		fs.Usage()
		return errUsage
	}
	cfg, err := chf.config(fs)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	// Check the destination first: a request is recorded only when it can be
	// delivered. The file is written beside --out and renamed into place once
	// complete, so a failed run leaves no empty or partial file (and keeps a
	// previous one).
	var format string
	var tmp string
	commit := func(bool) error { return nil }
	if *out != "" {
		if format, err = requestsFormat(*out); err != nil {
			return err
		}
		if tmp, commit, err = atomicPath(*out); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	written := false
	defer func() {
		if !written {
			commit(false)
		}
	}()
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		return err
	}
	if err := clickhouse.CheckSchema(ctx, conn, cfg.DatabaseName()); err != nil {
		conn.Close()
		return err
	}
	defer conn.Close()
	db := cfg.DatabaseName()
	if *batch != "" {
		// Another run's batch of that name would get these requests too,
		// and the two could no longer be told apart.
		n, err := clickhouse.BatchRequests(ctx, conn, db, *batch)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("--batch %s: %s.label_requests holds a batch of that name already (%s); give a new name, or leave --batch out for one made of the time", *batch, db, words.Count(int(n), "request"))
		}
	}
	kcfg := kf.config(*brokers, "entrowatch-labels")
	if *topic != "" {
		// Publishing nothing creates and checks the topic: a wrong address or
		// password fails here, before any request is recorded.
		if err := clickhouse.PublishRequests(ctx, kcfg, *topic, nil); err != nil {
			return err
		}
	}
	if *batch == "" {
		if *batch, err = clickhouse.BatchName(ctx, conn, db, now); err != nil {
			return err
		}
	}
	reqs, err := clickhouse.RequestLabels(ctx, conn, db, *domains, *perDomain, *batch, now, *expireAfter)
	if err != nil {
		return err
	}
	if len(reqs) == 0 {
		why := "the labeling queue is empty"
		if st, err := clickhouse.LabelQueueState(ctx, conn, db); err == nil {
			why = st.Reason(db)
		}
		dest := "no file written"
		if *topic != "" {
			dest = "nothing published to " + *topic
		} else if *out == "-" {
			dest = "nothing written"
		}
		fmt.Fprintf(stderr, "labels requests: nothing to request: %s; %s\n", why, dest)
		return nil
	}
	if *topic != "" {
		if err := clickhouse.PublishRequests(ctx, kcfg, *topic, reqs); err != nil {
			return fmt.Errorf("%w (the requests are recorded in label_requests with batch %s)", err, *batch)
		}
	} else {
		if err := writeRequestsFile(tmp, stdout, format, reqs); err != nil {
			return fmt.Errorf("writing %s: %w (the requests are recorded in label_requests with batch %s)", *out, err, *batch)
		}
		written = true
		if err := commit(true); err != nil {
			return fmt.Errorf("%w (the requests are recorded in label_requests with batch %s)", err, *batch)
		}
	}
	doms := map[string]bool{}
	for _, r := range reqs {
		doms[r.Model+"/"+r.Domain] = true
	}
	fmt.Fprintf(stderr, "labels requests: %s from %s (batch %s)\n", words.Count(len(reqs), "response"), words.Count(len(doms), "domain"), *batch)
	return nil
}

// requestsFormat is the format labels requests writes to path, by its
// extension: "csv" or "jsonl" ("-" is JSON Lines).
func requestsFormat(path string) (string, error) {
	if path == "-" {
		return "jsonl", nil
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return "csv", nil
	case ".jsonl", ".json", ".ndjson":
		return "jsonl", nil
	}
	return "", fmt.Errorf("--out %s: labels requests writes JSON Lines (.jsonl, .json, .ndjson) or CSV (.csv), chosen by the extension; name the file accordingly, or \"-\" for JSON Lines on stdout", path)
}

// writeRequestsFile writes reqs to path ("-": stdout) in format.
func writeRequestsFile(path string, stdout io.Writer, format string, reqs []clickhouse.LabelRequest) error {
	if path == "-" {
		return writeRequests(stdout, format, reqs)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = writeRequests(f, format, reqs)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

func writeRequests(w io.Writer, format string, reqs []clickhouse.LabelRequest) error {
	bw := bufio.NewWriter(w)
	if format == "csv" {
		cw := csv.NewWriter(bw)
		_ = cw.Write([]string{"trace_id", "model", "domain", "p_correct", "uncertainty", "stratum", "stratum_rank", "priority", "response_ts", "prompt", "batch", "expires_at"})
		for _, r := range reqs {
			rec := []string{r.TraceID, r.Model, r.Domain, ftoa(r.PCorrect), ftoa(r.Uncertainty), strconv.Itoa(int(r.Stratum)),
				strconv.FormatUint(r.StratumRank, 10), ftoa(r.Priority), r.ResponseTS.UTC().Format(time.RFC3339), r.Prompt, r.Batch, r.ExpiresAt.UTC().Format(time.RFC3339)}
			for i, c := range rec {
				rec[i] = clickhouse.SpreadsheetCell(c) // the file is for people, who open it in a spreadsheet
			}
			_ = cw.Write(rec)
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
	in := fs.String("in", "", "labels file: CSV with header trace_id,correct[,source,ts], or JSON (JSON Lines, an array, or objects), gzip-compressed or not; \"-\" for stdin")
	topic := fs.String("topic", "", "Kafka topic of labels (label.v1 Arrow IPC or JSON messages)")
	brokers := fs.String("brokers", "", "comma-separated Kafka bootstrap brokers for --topic")
	kf := addKafkaFlags(fs, kafkaBesideClickHouse)
	group := fs.String("group", "entrowatch-labels", "consumer group for --topic (offsets committed after storing)")
	follow := fs.Bool("follow", false, "with --topic, keep importing until interrupted")
	idle := fs.Duration("idle", 5*time.Second, "with --topic and without --follow, stop after this long without messages")
	source := fs.String("source", "import", "source recorded for labels that name none")
	if err := kf.parse(args); err != nil {
		return err
	}
	if err := fileOrTopic(fs, stderr, "in", *in, *topic, *brokers); err != nil {
		return err
	}
	cfg, err := chf.config(fs)
	if err != nil {
		return err
	}
	// The file is read whole first: what is wrong with it is said without a
	// server, and nothing is stored unless all of it is right.
	var rd clickhouse.LabelsRead
	if *in != "" {
		if rd, err = readLabelFile(*in, *source); err != nil {
			return err
		}
	}
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		return err
	}
	if err := clickhouse.CheckSchema(ctx, conn, cfg.DatabaseName()); err != nil {
		conn.Close()
		return err
	}
	defer conn.Close()
	db := cfg.DatabaseName()
	if *in != "" {
		res, err := clickhouse.ImportLabels(ctx, conn, db, rd.Labels, time.Now())
		if err != nil {
			return err
		}
		msg := "labels import: " + words.Count(res.Stored, "label") + " stored"
		switch {
		case res.Unscored == 1:
			msg += " (1 matches no response in scored yet: it applies when the response arrives)"
		case res.Unscored > 1:
			msg += fmt.Sprintf(" (%d match no response in scored yet: they apply when it arrives)", res.Unscored)
		}
		switch {
		case res.Skipped == 1:
			msg += "; 1 skipped: it has no ts and its trace_id, correct and source are stored already " +
				"(importing a file again changes nothing; give a ts to store a label again as the newest)"
		case res.Skipped > 1:
			msg += fmt.Sprintf("; %d skipped: they have no ts and their trace_id, correct and source are stored already "+
				"(importing a file again changes nothing; give a ts to store a label again as the newest)", res.Skipped)
		}
		msg += labelsLeftOut(rd.Unlabelled, res.Duplicates, "file")
		fmt.Fprintln(stderr, msg)
		if n := len(res.Reverting); n > 0 {
			// Not a re-import: these differ from the trace's label now.
			it, ids := "it differs from its trace's current label, which is newer: the trace had this label before and was relabelled since", res.Reverting
			if n > 1 {
				it = "they differ from their traces' current labels, which are newer: each trace had this label before and was relabelled since"
			}
			more := ""
			if len(ids) > 5 {
				ids, more = ids[:5], fmt.Sprintf(" and %d more", n-5)
			}
			fmt.Fprintf(stderr, "labels import: warning: %s skipped although %s (a reviewer's flip-back, or an older file imported after a newer one); "+
				"to make the file's label the newest, give it a ts column with the time of the review: %s%s\n",
				words.CountAs(n, "label was", "labels were"), it, strings.Join(ids, ", "), more)
		}
		return nil
	}

	res, err := clickhouse.ImportTopic(ctx, conn, db, clickhouse.TopicImport{Kafka: kf.config(*brokers, "entrowatch-labels"), Topic: *topic,
		Group: *group, Source: *source, Follow: *follow, Idle: *idle,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, memory.NewGoAllocator())
	if err != nil && res.Stored == 0 {
		return err // nothing to report: the topic or the server could not be reached
	}
	msg := fmt.Sprintf("labels import: %s stored from topic %s", words.Count(res.Stored, "label"), *topic)
	msg += labelsLeftOut(res.Unlabelled, res.Duplicates, "message")
	if *follow && (res.Refused > 0 || res.Dropped > 0) {
		msg += fmt.Sprintf("; %s refused and %s skipped (logged above)", words.Count(res.Refused, "invalid label"), words.Count(res.Dropped, "message"))
	}
	fmt.Fprintln(stderr, msg)
	if err != nil || *follow {
		return err
	}
	return res.Err()
}

// labelsLeftOut is what an import's summary adds for the rows without
// correct and the duplicate labels of a file or message it left out.
func labelsLeftOut(unlabelled, duplicates int, of string) string {
	var s string
	switch {
	case unlabelled == 1:
		s += "; 1 row without correct skipped (unlabelled)"
	case unlabelled > 1:
		s += fmt.Sprintf("; %d rows without correct skipped (unlabelled)", unlabelled)
	}
	if duplicates > 0 {
		s += fmt.Sprintf("; %s collapsed (a trace labelled more than once in a %s keeps its last label, or its newest by ts)", words.Count(duplicates, "duplicate"), of)
	}
	return s
}

// readLabelFile reads the labels of file ("-": stdin) for labels import,
// gzip-compressed or not. The error says that nothing was stored and what
// to do: for a read error (a truncated gzip file) how many labels were read
// before it; for a file of responses, once, what a label is; for invalid
// labels, the first with their lines.
func readLabelFile(file, source string) (clickhouse.LabelsRead, error) {
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return clickhouse.LabelsRead{}, fmt.Errorf("--in: %w", err)
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.IsDir() {
			return clickhouse.LabelsRead{}, fmt.Errorf("--in %s is a directory: give a file of labels", file)
		}
		r = f
	}
	// A zero now leaves the labels without ts undated: ImportLabels skips
	// those already stored and dates the others.
	rd, err := clickhouse.ReadLabelsFile(r, source, time.Time{})
	if err != nil {
		what := "nothing was stored"
		n := len(rd.Labels)
		if n > 0 {
			what += fmt.Sprintf(", not even the %s read before it", words.Count(n, "label"))
		}
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader):
			what += ": get a complete, intact copy of the file and import that"
		case n > 0:
			what += ": fix the file and import it again"
		}
		return rd, fmt.Errorf("reading labels from %s: %w; %s", file, err, what)
	}
	if err := rd.Err(); err != nil {
		if rd.Responses == rd.Refused {
			return rd, fmt.Errorf("reading labels from %s: %w; nothing was stored", file, err)
		}
		return rd, fmt.Errorf("reading labels from %s: %w; nothing was stored: fix the file (or delete the rows that are wrong) and import it again", file, err)
	}
	return rd, nil
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
		return fmt.Errorf("--topic %s needs --brokers HOST:PORT[,HOST:PORT]", topic)
	}
	return nil
}
