package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/ipc"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

const ingestSynopsis = `--in PATH [--brokers HOST:PORT,..] [--topic traces] [--rate N] [--batch-rows N] [--idle-flush D]
       [--max-steps N] [--max-logprob X] [--check=false] [--quiet]

Converts OpenAI/vLLM responses (JSON Lines, .gz ok; "-" is stdin; streamed
responses as chunk objects or raw server-sent events) to trace.v1
batches and produces them to Kafka as Arrow IPC messages under the message size
limit, waiting for every broker acknowledgement (acks=all).

A trace.v1 Arrow IPC file (file or stream format, uncompressed, given by
name; told by its content, whatever its name) is sent as it is, checked as
JSON responses are: its batches are joined up to --batch-rows, chunk rows
(seq, final) are joined into whole responses, and a trace whose final chunk
never comes is rejected as incomplete. Rejections name the row and batch
(or, for chunked traces, the trace id). A table (CSV, TSV) is refused.

Responses are sent in batches of --batch-rows; from a pipe, FIFO or terminal
(tail -f log | entrowatch ingest --in -) what was read is sent whenever the
input pauses for --idle-flush (200ms), and at least every 5 x --idle-flush
(1s) while it keeps coming, so responses do not wait for a full batch. A
regular file (also as stdin) is read in full batches.

--rate N replays at N responses per second and rewrites each response's event
time (ts) to when it is sent, so that a file of past traffic looks live: for
demos and load tests. Replaying the same file again stamps new times, and
ClickHouse deduplicates a response only within its hour: resend a file
without --rate, or only the part not acknowledged.

A response too large for one message (1000000 bytes: about 11,000 steps of 20
alternatives) is sent as chunk rows keyed by its id, which the stream joins
again (up to its stream.assemble.max_steps, 32768 by default).

Lines that cannot be read or sent are reported on stderr (line number, id,
reason; at most 20 per reason) and skipped; the summary counts them: a line
over 64 MiB, or a response whose prompt and attributes alone fill a message,
is too_long. So is what the stream would dead-letter (empty, no_logprobs,
nan_logprob, positive_logprob, more than --max-steps steps): give
--max-steps and --max-logprob as the stream's profile section has them, or
--check=false to send such responses for the stream to dead-letter. The
exit status is 1 when nothing could be produced. An error that stops it
(the broker's, or the input's: a gzip file cut short) says how many
responses were acknowledged before it and up to which input line, so that
only the rest need be sent again (sending all again is harmless: the store
keeps one row per model and trace id).

TLS and SASL: --kafka-tls, --kafka-tls-ca, --kafka-sasl, --kafka-sasl-user,
as in every command (the older --tls, --tls-ca, --sasl, --sasl-user still
work); the SASL password is read from $ENTROWATCH_KAFKA_PASSWORD.`

func runIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ingest", ingestSynopsis, stderr)
	in := fs.String("in", "", "responses: JSON Lines (.gz ok), \"-\" for stdin")
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap brokers; the default is where entrowatch run starts its embedded broker")
	topic := fs.String("topic", "traces", "topic to produce to")
	rate := fs.Float64("rate", 0, "responses per second, event times spread accordingly; 0 = as fast as possible")
	batchRows := fs.Int("batch-rows", ingest.DefaultConfig().BatchRows, "responses per record batch (split further to fit the message limit)")
	idleFlush := fs.Duration("idle-flush", 200*time.Millisecond, "send the responses read so far when a pipe, FIFO or terminal input pauses this long (tail -f log | entrowatch ingest --in -); 0 = only full batches")
	prof := profile.DefaultConfig()
	fs.IntVar(&prof.MaxSteps, "max-steps", prof.MaxSteps, "longest trajectory sent, as the stream's profile.max_steps; longer ones are rejected as too_long, not sent")
	fs.Float64Var(&prof.MaxLogprob, "max-logprob", prof.MaxLogprob, "largest logprob taken as rounding noise around 0, as the stream's profile.max_logprob; a response with a larger one is rejected as positive_logprob, not sent")
	quiet := fs.Bool("quiet", false, "no progress line, no rejection lines; the summary only")
	check := fs.Bool("check", true, "refuse, and do not send, the responses the stream would dead-letter (the profile checks, with --max-steps and --max-logprob); --check=false sends them, for the stream to dead-letter (but for a streamed response longer than --max-steps, whose chunks are held in memory until it ends: refused either way)")
	kf := addKafkaFlags(fs, kafkaPlain)
	if err := kf.parse(args); err != nil {
		return err
	}
	if err := prof.Validate(); err != nil {
		return badFlag("%s", strings.NewReplacer("profile.max_steps", "--max-steps", "profile.max_logprob", "--max-logprob").Replace(err.Error()))
	}
	if *in == "" {
		fmt.Fprintln(stderr, "--in is required")
		fs.Usage()
		return errUsage
	}
	if !(*rate >= 0) || math.IsInf(*rate, 1) || (*rate > 0 && *rate < minRate) { // NaN too
		return badFlag("--rate %v: want a number of responses per second from %v (one every 1000 s) up, or 0 for no pacing", *rate, minRate)
	}
	if *topic == "" {
		return badFlag("--topic \"\": want the topic to produce to (entrowatch run consumes traces)")
	}
	if *batchRows < 1 {
		return badFlag("--batch-rows %d: want at least 1 response per record batch", *batchRows)
	}
	if strings.HasSuffix(*topic, ".dead") {
		fmt.Fprintf(stderr, "ingest: warning: --topic %s looks like a dead-letter topic (run's dead_letter.topic is <source topic>.dead): responses produced there are not scored; to send dead letters back, use entrowatch deadletters --requeue\n", *topic)
	}
	conn := kf.config(*brokers, "entrowatch-ingest")
	icfg := ingest.DefaultConfig()
	icfg.BatchRows = *batchRows
	if *idleFlush < 0 {
		return badFlag("--idle-flush %v: want a duration, 0 (off) or more, e.g. 200ms", *idleFlush)
	}
	if liveInput(*in) {
		icfg.FlushIdle = *idleFlush
	}
	if *rate > 0 {
		icfg.BatchRows = max(1, min(*batchRows, int(*rate/20))) // about 20 sends per second
	}
	// A streamed response's steps are bounded as the stream bounds them.
	icfg.MaxSteps = prof.MaxSteps
	icfg.MaxHeldSteps = max(icfg.MaxHeldSteps, prof.MaxSteps)
	if err := icfg.Validate(); err != nil {
		return err
	}
	pcfg := kafka.DefaultProducerConfig()
	pcfg.Topic = *topic
	// Each batch is produced synchronously, alone: waiting 5 ms for company
	// that never comes only slows small batches (--rate, --batch-rows).
	pcfg.BatchTimeout = time.Millisecond
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := kafka.NewProducer(conn, pcfg, log)
	if err != nil {
		return err
	}
	o := ingestOptions{conn: conn, icfg: icfg, rate: *rate, quiet: *quiet}
	if *check {
		o.prof = &prof
	}
	if isArrowPath(*in) {
		// trace.v1 batches, as entrowatch score reads them: chunk rows are
		// joined (and cut again if too large), traces left open at the end
		// are rejected as incomplete.
		mem := memory.NewGoAllocator()
		r, err := ipc.OpenFile(*in, mem)
		if err != nil {
			p.Close()
			return fmt.Errorf("reading %s as Arrow IPC trace.v1: %w", *in, err)
		}
		src := &batchedSource{src: &arrowSource{r: r, maxSteps: prof.MaxSteps, mem: mem}, rows: icfg.BatchRows, mem: mem}
		err = interrupted(ctx, ingestFrom(ctx, src, mem, p, o, stdout, stderr))
		if err == nil && r.Unterminated() {
			fmt.Fprintf(stderr, "ingest: warning: %s ends without the Arrow end-of-stream marker: a writer may have stopped, or the copy been cut short, between two batches; what it holds was sent\n", *in)
		}
		return errors.Join(err, src.close(), p.Close())
	}
	src, err := ingest.OpenContext(ctx, *in)
	if err != nil {
		p.Close()
		if ae := (*ingest.ArrowInputError)(nil); errors.As(err, &ae) {
			// Standard input, a pipe or a gzip file: Arrow is read from a file.
			return fmt.Errorf("%w: ingest reads Arrow IPC (trace.v1) from a file given by name, uncompressed; "+
				"from standard input, a pipe or gzip it reads JSON responses", err)
		}
		return err
	}
	err = interrupted(ctx, ingestConn(ctx, src, p, o, stdout, stderr))
	return errors.Join(err, src.Close(), p.Close())
}

// interruptedError is an ingest stopped by Ctrl-C or SIGTERM: its message
// ends "interrupted", not in the context's "context canceled".
type interruptedError struct{ err error }

func (e *interruptedError) Error() string {
	// A produce cut short may have been stored all the same: its
	// acknowledgement was abandoned, not refused.
	const inFlight = " (the batch being sent may have reached the broker too: sending it again is harmless)"
	msg := e.err.Error()
	if m, ok := strings.CutSuffix(msg, context.Canceled.Error()); ok {
		return m + "interrupted" + inFlight
	}
	return msg + " (interrupted)" + inFlight
}

func (e *interruptedError) Unwrap() error { return e.err }

// interrupted marks err as an interruption when ctx was cancelled and err
// is that cancellation.
func interrupted(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return &interruptedError{err}
	}
	return err
}

// ingestAll is ingestConn for a producer without TLS or SASL, sending what
// the stream would dead-letter.
func ingestAll(ctx context.Context, src io.Reader, p *kafka.Producer, icfg ingest.Config, rate float64, stdout, stderr io.Writer) error {
	return ingestConn(ctx, src, p, ingestOptions{icfg: icfg, rate: rate}, stdout, stderr)
}

// ingestOptions are how ingestConn reads and sends.
type ingestOptions struct {
	conn  kafka.Config    // the producer's connection, for what a broker error may mean (produceHint)
	icfg  ingest.Config   // how the responses are read
	prof  *profile.Config // the checks of the stream's profile operator; nil: none, send everything
	rate  float64         // responses per second, restamped; 0: as fast as possible
	quiet bool            // the summary only: no progress line, no rejection lines
}

// ingestConn reads JSON responses from src and produces them with p. With
// o.prof, the responses its checks reject are reported and not sent.
func ingestConn(ctx context.Context, src io.Reader, p *kafka.Producer, o ingestOptions, stdout, stderr io.Writer) error {
	mem := memory.NewGoAllocator()
	js := &jsonSource{r: ingest.NewReader(src, o.icfg, mem)}
	defer js.r.Release()
	return ingestFrom(ctx, js, mem, p, o, stdout, stderr)
}

// ingestFrom produces the batches of in with p: JSON responses (a
// *jsonSource) or trace.v1 Arrow. With o.prof, the responses its checks
// reject are reported and not sent.
func ingestFrom(ctx context.Context, in scoreSource, mem memory.Allocator, p *kafka.Producer, o ingestOptions, stdout, stderr io.Writer) error {
	conn, prof, rate := o.conn, o.prof, o.rate
	js, _ := in.(*jsonSource) // lines: what was settled, for a resend from the next
	// acked says how many responses the broker acknowledged, and, of JSON
	// Lines, up to which input line, for an error that stops ingest.
	acked := func(rows, line int64) string {
		if js == nil {
			return words.CountAs(int(rows), "response was acknowledged", "responses were acknowledged") +
				" (sending the file again is harmless: the store keeps one row per model and trace id)"
		}
		return ackedLines(rows, line)
	}
	start := time.Now()
	lastReport := start
	// On a terminal one line is rewritten every second; in a log (a long
	// paced replay under nohup or in a container) a full line every 10 s.
	every, lead, tail := 10*time.Second, "", "\n"
	if isTerminal(stderr) {
		every, lead, tail = time.Second, "\r", ""
	}
	if o.quiet {
		every = time.Duration(math.MaxInt64)
	}
	var rows, msgs, rejected int64
	byReason := map[string]int64{}
	unit := "lines"
	if js == nil {
		unit = "rows"
	}
	// A batch's rejections, the reader's and the checks', are printed
	// together in input order once the batch is sent (or ingest stops).
	var batchRj []pendingReject
	var printReject func(pendingReject)
	reject := func(rj pendingReject) { batchRj = append(batchRj, rj) }
	printRejects := func() {
		sort.SliceStable(batchRj, func(i, j int) bool { return batchRj[i].line < batchRj[j].line })
		for _, rj := range batchRj {
			printReject(rj)
		}
		batchRj = batchRj[:0]
	}
	defer printRejects()
	printReject = func(rj pendingReject) {
		rejected++
		byReason[rj.reason]++
		switch n := byReason[rj.reason]; {
		case o.quiet:
		case n <= rejectLinesPerReason:
			fmt.Fprint(stderr, rj.where)
			if rj.id != "" && !strings.HasPrefix(rj.where, "trace ") {
				fmt.Fprintf(stderr, " (%s)", rj.id)
			}
			fmt.Fprintf(stderr, ": %s: %s\n", rj.reason, rj.detail)
		case n == rejectLinesPerReason+1:
			fmt.Fprintf(stderr, "further %s %s are counted in the summary, not printed (entrowatch score --rejects FILE lists every one)\n", rj.reason, unit)
		}
	}
	var done int64 // input lines up to which everything was acknowledged or rejected
	for {
		rec, err := in.next()
		var read int64
		if js != nil {
			read = js.r.Settled() // not the lines of streamed responses still open
		}
		for _, rj := range in.rejects() {
			reject(rj)
		}
		if errors.Is(err, io.EOF) {
			printRejects()
			break
		}
		if err != nil {
			// A read error (a truncated gzip file, Ctrl-C) after some
			// batches went out: say how many, as for a broker error, so
			// that only the rest is sent again.
			return fmt.Errorf("after %s: %w", acked(rows, done), err)
		}
		if rec.NumRows() == 0 { // a run of rejected lines ended the read early
			rec.Release()
			continue
		}
		// What the stream would dead-letter (a positive or NaN logprob,
		// more steps than it accepts: the profile operator's own checks)
		// is reported here and not sent.
		ids, _ := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
		rowReject := func(row int, reason string, err error) {
			rj := pendingReject{reason: reason, detail: err.Error()}
			rj.line, rj.where = in.rowLabel(row)
			if ids != nil && ids.IsValid(row) {
				rj.id = ids.Value(row)
			}
			reject(rj)
		}
		var refused []int
		if prof != nil {
			if err := profile.Check(*prof, rec, func(row int, r *profile.Reject) {
				refused = append(refused, row)
				rowReject(row, r.Reason, fmt.Errorf("%s; not sent, the stream would dead-letter it%s", r.Detail, checkHint(r.Reason)))
			}); err != nil {
				rec.Release()
				return fmt.Errorf("after %s: %w", acked(rows, done), err)
			}
		}
		if rate > 0 {
			// Send this batch when the schedule says so, stamped with its send times.
			due, err := sendTime(start, rows, rate)
			if err != nil {
				rec.Release()
				return err
			}
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					rec.Release()
					return fmt.Errorf("after %s: %w", acked(rows, done), ctx.Err())
				}
			}
			if len(rec.Schema().FieldIndices(schemas.ColTS)) == 0 {
				rec.Release()
				return fmt.Errorf("after %s: %w", acked(rows, done), errNoTS)
			}
			stamped, err := restamp(rec, mem, start, rows, rate)
			rec.Release()
			if err != nil {
				return err
			}
			rec = stamped
			ids, _ = rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
		}
		// A response over the message limit goes as chunk rows; one that
		// cannot (its per-row columns alone fill a message) is rejected as
		// too_long, and the rest of the batch is sent.
		size := rec.NumRows() - int64(len(refused))
		// The refused rows are taken out of the batch, which goes as one
		// whole: sent as the runs between them, a file with a bad line in
		// ten went out in ten times the messages.
		kept, orig, err := keepRows(rec, keptRuns(rec.NumRows(), refused), mem)
		if err != nil {
			rec.Release()
			return fmt.Errorf("after %s: %w", acked(rows, done), err)
		}
		var out []kafka.Message
		if kept != nil {
			var m []kafka.Message
			m, err = kafka.Messages(kept, nil, p.MaxMessageBytes())
			kept.Release()
			if tl := (*kafka.TooLargeError)(nil); errors.As(err, &tl) {
				for _, r := range tl.Rows {
					rowReject(orig(r.Row), schemas.ReasonTooLong, fmt.Errorf(
						"the response (%d steps) encodes to %d bytes, over the message limit of %d, and cannot be sent as chunks either: %s; skipped",
						r.Steps, r.Bytes, tl.Limit, r.Why))
				}
				size -= int64(len(tl.Rows))
			} else if err != nil {
				rec.Release()
				return fmt.Errorf("after %s: encoding the next %d: %w", acked(rows, done), size, err)
			}
			out = m
		}
		rec.Release() // after the rejects above, which read its ids
		if len(out) > 0 {
			if err := p.Produce(ctx, out...); err != nil {
				switch {
				case errors.Is(err, kafka.ErrUnknownTopic):
					return fmt.Errorf("after %s: %w", acked(rows, done), err)
				case kafka.IsMessageTooLarge(err):
					return fmt.Errorf("after %s: %w (messages are up to %d bytes, sent in record batches of up to %d: raise the topic's max.message.bytes to at least that)", acked(rows, done), err, p.MaxMessageBytes(), p.TopicMessageBytes())
				}
				return fmt.Errorf("after %s: %w%s", acked(rows, done), err, produceHint(err, conn))
			}
		}
		rows += size
		msgs += int64(len(out))
		done = read
		printRejects()
		if time.Since(lastReport) > every {
			lastReport = time.Now()
			fmt.Fprintf(stderr, "%sproduced %d responses (%.0f/s), %d rejected%s", lead, rows, float64(rows)/time.Since(start).Seconds(), rejected, tail)
		}
	}
	d := time.Since(start)
	if lastReport != start && tail == "" {
		fmt.Fprintln(stderr)
	}
	what := "line"
	if js == nil {
		what = "response"
	}
	fmt.Fprintf(stdout, "produced %s in %s to %s in %v (%.0f/s); %s rejected",
		words.Count(int(rows), "response"), words.Count(int(msgs), "message"), p.Topic(), d.Round(time.Millisecond), float64(rows)/d.Seconds(), words.Count(int(rejected), what))
	if rejected > 0 {
		fmt.Fprintf(stdout, " (%s)", reasonsText(byReason))
	}
	fmt.Fprintln(stdout)
	switch {
	case rows == 0 && rejected == 0:
		return errors.New("the input holds no responses; nothing produced")
	case rows == 0:
		where := "reasons above"
		if o.quiet {
			where = "run without --quiet for the reasons"
		}
		return fmt.Errorf("%s (%s); nothing produced", words.NoneOf(rejected, "response", "be sent"), where)
	}
	return nil
}

// keptRuns returns the [from, to) row ranges of n rows that are left when
// the rows in refused (ascending) are taken out.
func keptRuns(n int64, refused []int) [][2]int64 {
	var runs [][2]int64
	from := int64(0)
	for _, r := range refused {
		if int64(r) > from {
			runs = append(runs, [2]int64{from, int64(r)})
		}
		from = int64(r) + 1
	}
	if from < n {
		runs = append(runs, [2]int64{from, n})
	}
	return runs
}

// ackedLines says how many responses the broker acknowledged, and up to
// which input line, for an error that stops ingest.
func ackedLines(rows, line int64) string {
	n := words.CountAs(int(rows), "response was acknowledged", "responses were acknowledged")
	if line == 0 {
		return n
	}
	return fmt.Sprintf("%s, all of input lines 1 to %d (resend from line %d, e.g. tail -n +%d; or all of it: the store keeps one row per model and trace id)", n, line, line+1, line+1)
}

// keepRows returns the rows of rec in runs as one batch (rec itself, retained,
// when that is all of it; nil when runs is empty), and the row of rec each
// of its rows was.
func keepRows(rec arrow.RecordBatch, runs [][2]int64, mem memory.Allocator) (arrow.RecordBatch, func(int) int, error) {
	switch {
	case len(runs) == 0:
		return nil, nil, nil
	case len(runs) == 1 && runs[0] == [2]int64{0, rec.NumRows()}:
		rec.Retain()
		return rec, func(i int) int { return i }, nil
	}
	cols := make([]arrow.Array, rec.NumCols())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	n := int64(0)
	for _, r := range runs {
		n += r[1] - r[0]
	}
	for j := range cols {
		parts := make([]arrow.Array, len(runs))
		for i, r := range runs {
			parts[i] = array.NewSlice(rec.Column(j), r[0], r[1])
		}
		c, err := array.Concatenate(parts, mem)
		for _, p := range parts {
			p.Release()
		}
		if err != nil {
			return nil, nil, fmt.Errorf("taking the refused rows out of the batch: %w", err)
		}
		cols[j] = c
	}
	orig := func(i int) int {
		for _, r := range runs {
			if w := r[1] - r[0]; int64(i) >= w {
				i -= int(w)
			} else {
				return int(r[0]) + i
			}
		}
		return -1
	}
	return array.NewRecordBatch(rec.Schema(), cols, n), orig, nil
}

// checkHint says which ingest flag matches the stream setting behind a
// reason, for a stream configured otherwise than by default.
func checkHint(reason string) string {
	switch reason {
	case schemas.ReasonPositiveLogprob:
		return " (if the stream's profile.max_logprob is higher, give ingest the same --max-logprob)"
	case schemas.ReasonTooLong:
		return " (if the stream's profile.max_steps is higher, give ingest the same --max-steps)"
	}
	return ""
}

// restamp returns rec with ts set to the send time of each row under rate:
// row i of the whole replay is stamped start + i/rate.
// minRate is the slowest --rate: one response every 1000 s.
const minRate = 0.001

// sendTime is when response i of a replay at rate is due: start + i/rate.
// A schedule beyond ten years is refused: the conversion to a duration
// overflowed (--rate 1e-12 sent at once, stamped in year 0).
func sendTime(start time.Time, i int64, rate float64) (time.Time, error) {
	secs := float64(i) / rate
	if secs > 10*365*24*3600 {
		return time.Time{}, fmt.Errorf("--rate %v: response %d would be sent %.3g s after the start, more than ten years; give a higher rate", rate, i+1, secs)
	}
	return start.Add(time.Duration(secs * float64(time.Second))), nil
}

func restamp(rec arrow.RecordBatch, mem memory.Allocator, start time.Time, first int64, rate float64) (arrow.RecordBatch, error) {
	idx, err := schemas.Index(rec.Schema(), schemas.ColTS)
	if err != nil {
		return nil, err
	}
	tb := array.NewTimestampBuilder(mem, rec.Schema().Field(idx).Type.(*arrow.TimestampType))
	defer tb.Release()
	for i := int64(0); i < rec.NumRows(); i++ {
		t, err := sendTime(start, first+i, rate)
		if err != nil {
			return nil, err
		}
		tb.Append(arrow.Timestamp(t.UnixMilli()))
	}
	ts := tb.NewArray()
	defer ts.Release()
	cols := make([]arrow.Array, rec.NumCols())
	copy(cols, rec.Columns())
	cols[idx] = ts
	return array.NewRecordBatch(rec.Schema(), cols, rec.NumRows()), nil
}

// liveInput reports whether path ("-": standard input) may pause between
// lines: a pipe, FIFO, terminal or socket rather than a regular file, which
// is read in full batches (reading it through FlushIdle's goroutine only
// costs time).
func liveInput(path string) bool {
	var st os.FileInfo
	var err error
	if path == "-" {
		st, err = os.Stdin.Stat()
	} else {
		st, err = os.Stat(path)
	}
	return err != nil || !st.Mode().IsRegular()
}
