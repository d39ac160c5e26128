package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/operators/clustertag"
	"github.com/entrowatch/entrowatch/operators/estimate"
	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/sinks/file"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/ingest"
	"github.com/entrowatch/entrowatch/streams/ipc"
)

const scoreSynopsis = `--in PATH --out PATH [--estimator FILE] [--clusters FILE [--domain-from W]] [--strict] [--max-steps N] [--rejects FILE] [--quiet]

Scores LLM responses offline: per response, the entropy profile, the white-box
baselines and, with --estimator, P(correct).

  --in   OpenAI chat-completion JSON Lines (gzip or plain; "-" is stdin), legacy
         completions, vLLM variants, Responses API objects, streamed responses
         (chunk objects or raw server-sent events) and batch output files
         (OpenAI Batch API, vLLM run-batch: rows named by custom_id)
         included; or an Arrow IPC
         file of trace.v1 (chunk rows are reassembled as in the stream). A
         "correct" field (true/false, 1/0, or "yes"/"no", "t"/"f", "1"/"0"
         as strings, as in a labelled CSV) becomes the correct column.
  --out  .csv or .csv.gz (id, model, domain, correct, n_tokens, the 11 profile
         features, the 7 baselines, then p_correct / cluster_id / cluster_label
         when given) or .arrow (Arrow IPC stream, schema scored.v1); "-" is CSV
         on stdout. The file appears only when scoring succeeds.
  --estimator  rows of an LLM model it has no model for are scored by its
         fallback; the summary counts them per model.

Rejected responses (malformed_json, failed_request, no_logprobs, empty,
nan_logprob, positive_logprob, too_long, unknown_model, ...) are reported on stderr with
their line number and counted in the summary; --rejects writes them to a JSON
Lines file. The exit status is 1 when no response could be scored.

Examples:
  entrowatch score --in responses.jsonl.gz --out profiles.csv
  entrowatch train --in profiles.csv --out estimator.json
  entrowatch score --in new.jsonl.gz --out scored.csv.gz --estimator estimator.json`

// scoreOptions are the score command's flags.
type scoreOptions struct {
	in, out, estimator, clusters, rejects string
	domainFrom                            string
	strict                                bool
	maxSteps                              int
	maxLogprob                            float64
	quiet                                 bool
}

func runScore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o scoreOptions
	fs := newFlags("score", scoreSynopsis, stderr)
	fs.StringVar(&o.in, "in", "", "input: JSON Lines (.gz ok) or Arrow IPC (trace.v1)")
	fs.StringVar(&o.out, "out", "", "output: .csv, .csv.gz or .arrow (\"-\": CSV on stdout)")
	fs.StringVar(&o.estimator, "estimator", "", "estimator artifact (entrowatch train) to add p_correct")
	fs.StringVar(&o.clusters, "clusters", "", "topic-cluster artifact (entrowatch cluster fit) to add cluster_id, cluster_label")
	fs.StringVar(&o.domainFrom, "domain-from", clustertag.DomainFromCallerElseCluster,
		"with --clusters, the domain written: caller (as given), cluster (the cluster label) or caller_else_cluster (the label where the caller gave none)")
	fs.StringVar(&o.rejects, "rejects", "", "write rejected responses as JSON Lines (line, id, reason, detail) to this file (\"-\": standard output, when --out is a file)")
	fs.BoolVar(&o.strict, "strict", false, "stop at the first rejected response with an error")
	fs.IntVar(&o.maxSteps, "max-steps", profile.DefaultConfig().MaxSteps, "longest trajectory accepted; longer ones are rejected as too_long")
	fs.Float64Var(&o.maxLogprob, "max-logprob", profile.DefaultConfig().MaxLogprob, "largest logprob taken as rounding noise around 0 (the stream's profile.max_logprob); a response with a larger one is rejected as positive_logprob")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress line, no rejection lines; the summary only")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if o.in == "" || o.out == "" {
		return badFlag("score needs --in and --out")
	}
	if o.maxSteps < 1 {
		return badFlag("--max-steps %d: want at least 1 (the longest trajectory accepted)", o.maxSteps)
	}
	if !(o.maxLogprob >= 0 && o.maxLogprob < 1) { // NaN too
		return badFlag("--max-logprob %v: want a value in [0, 1) (the largest logprob taken as rounding noise)", o.maxLogprob)
	}
	if _, err := scoreOutFormat(o.out); err != nil {
		return badFlag("%w", err)
	}
	if o.clusters == "" && flagSet(fs, "domain-from") {
		return badFlag("--domain-from needs --clusters (it picks the domain from the topic clusters)")
	}
	return score(ctx, o, stdout, stderr)
}

// scoreOutFormat is the file sink format for an --out path, by extension.
func scoreOutFormat(out string) (string, error) {
	if out == "-" {
		return "csv", nil
	}
	lower := strings.ToLower(out)
	switch {
	case strings.HasSuffix(lower, ".csv"), strings.HasSuffix(lower, ".csv.gz"):
		return "csv", nil
	case strings.HasSuffix(lower, ".arrow"), strings.HasSuffix(lower, ".arrows"), strings.HasSuffix(lower, ".ipc"):
		return "arrow", nil
	}
	return "", fmt.Errorf("--out %s: name it .csv, .csv.gz or .arrow (the extension picks the format), or - for CSV on stdout", out)
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// scoreSource yields trace batches and says where each row came from.
type scoreSource interface {
	next() (arrow.RecordBatch, error)
	rowLabel(row int) (line int64, label string) // for reports: "line 12" or "batch 3 row 7"
	rejects() []pendingReject                    // what the source itself rejected during the last next
	close() error
}

func score(ctx context.Context, o scoreOptions, stdout, stderr io.Writer) error {
	mem := memory.DefaultAllocator
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	pcfg := profile.DefaultConfig()
	pcfg.MaxSteps = o.maxSteps
	pcfg.MaxLogprob = o.maxLogprob
	prof, err := profile.New(pcfg, mem, log)
	if err != nil {
		return err
	}
	chain, err := scoreChain(o, mem, log)
	if err != nil {
		return err
	}

	for _, p := range []struct{ flag, path string }{{"--out", o.out}, {"--rejects", o.rejects}} {
		if p.path != "" && sameFile(o.in, p.path) {
			return fmt.Errorf("%s %s is the input file: writing it would destroy the responses being read", p.flag, p.path)
		}
	}
	if o.rejects != "" {
		switch {
		case o.rejects == "-" && o.out == "-":
			return errors.New("--rejects - and --out - would both write to standard output; give --rejects a file")
		case o.rejects != "-" && (samePath(o.rejects, o.out) || sameFile(o.rejects, o.out)):
			return fmt.Errorf("--rejects %s is the --out file: the scored rows would replace the rejects (or the other way round); give two files", o.rejects)
		}
	}
	src, err := openScoreSource(ctx, o.in, o.maxSteps, mem)
	if err != nil {
		return err
	}
	defer src.close()

	format, err := scoreOutFormat(o.out)
	if err != nil {
		return err
	}
	tmp, commit, err := atomicPath(o.out)
	if err != nil {
		return err
	}
	sinkCfg := file.Config{Path: tmp, Format: format, Gzip: strings.HasSuffix(strings.ToLower(o.out), ".gz"),
		CSVEstimate: o.estimator != "", CSVClusters: o.clusters != "", Buffered: true}
	var sink *file.Sink
	if o.out != "-" {
		if sink, err = file.New(sinkCfg, mem); err != nil {
			commit(false)
			return err
		}
	}
	// Standard output gets the sink (and the CSV header) with the first row
	// to write, so that a run that scores nothing writes nothing there.
	openSink := func() (*file.Sink, error) {
		if sink == nil {
			var err error
			sink, err = file.New(sinkCfg, mem)
			return sink, err
		}
		return sink, nil
	}
	closeSink := func() error {
		if sink == nil {
			return nil
		}
		return sink.Close(ctx)
	}
	rep, err := newRejectReport(o, stdout, stderr)
	if err != nil {
		closeSink()
		commit(false)
		return err
	}

	start := time.Now()
	prog := newProgress(stderr, o.quiet)
	dups := newDupIDs(maxDupIDs)
	var read, written int64
	runErr := func() error {
		for {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("interrupted after %d responses: %w", read, err)
			}
			rec, err := src.next()
			if errors.Is(err, io.EOF) {
				return rep.flush(src.rejects(), nil)
			}
			if err != nil {
				return err
			}
			if rec.NumRows() == 0 { // a run of rejected lines ended the read early
				rec.Release()
				if err := rep.flush(src.rejects(), nil); err != nil {
					return err
				}
				continue
			}
			read += rec.NumRows()
			var pending []pendingReject
			ids := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
			models, _ := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColModel)).(*array.String)
			rejected := map[int]bool{}
			scored, err := prof.Score(rec, func(row int, r *profile.Reject) {
				line, label := src.rowLabel(row)
				pending = append(pending, pendingReject{line, label, ids.Value(row), r.Reason, r.Detail})
				rejected[row] = true
			})
			dups.add(models, ids, rejected)
			rec.Release()
			if err != nil {
				return err
			}
			if err := rep.flush(src.rejects(), pending); err != nil {
				scored.Release()
				return err
			}
			n, err := writeScored(ctx, scored, chain, openSink, rep, src.rowLabel)
			if err != nil {
				return err
			}
			written += n
			prog.update(read, written, rep.total)
		}
	}()
	closeErr := errors.Join(closeSink(), rep.close())
	if runErr == nil && closeErr == nil {
		rep.summary(stderr, read, written, time.Since(start))
		fallbackSummary(stderr, chain)
		dups.warn(stderr, o.in)
		if a, ok := src.(*arrowSource); ok && a.r.Unterminated() {
			fmt.Fprintf(stderr, "warning: %s ends without the Arrow end-of-stream marker, as a stream file cut short between two batches does: if it was copied or written by a process that did not finish, traces are missing\n", o.in)
		}
	}
	ok := runErr == nil && closeErr == nil && (written > 0 || o.out == "-")
	if err := commit(ok); err != nil {
		return err
	}
	switch {
	case runErr != nil:
		return fmt.Errorf("%w (%s)", errors.Join(runErr, closeErr), notWritten(o.out, written))
	case closeErr != nil:
		return closeErr
	case written == 0 && read+rep.fromSource == 0:
		return fmt.Errorf("%s holds no responses; %s", o.in, notWritten(o.out, 0))
	case written == 0:
		return fmt.Errorf("%s (the reasons are in the summary above); %s", words.NoneOf(read+rep.fromSource, "response", "be scored"), notWritten(o.out, 0))
	}
	return nil
}

// notWritten says what a failed run left in out: nothing in a file (it
// appears only complete); on standard output, the rows written before the
// failure, if any.
func notWritten(out string, written int64) string {
	switch {
	case out != "-":
		return "nothing written to " + out
	case written == 0:
		return "nothing written to standard output"
	}
	return fmt.Sprintf("the %d rows already written to standard output are incomplete", written)
}

// fallbackSummary prints, per LLM model without a model of its own in the
// estimator, how many rows its fallback scored: their p_correct comes from
// a model trained on other LLMs' rows (or another LLM's), which CSV output
// does not show (Arrow output has each row's estimator_version).
func fallbackSummary(w io.Writer, chain []streams.Operator) {
	for _, op := range chain {
		e, ok := op.(*estimate.Operator)
		if !ok {
			continue
		}
		rows := e.FallbackRows()
		names := make([]string, 0, len(rows))
		for k := range rows {
			names = append(names, k)
		}
		slices.Sort(names)
		_, fallback := e.Models()
		for _, name := range names {
			why := fmt.Sprintf("the estimator has no model of %s's own and records no reason (%s was not in its training table, "+
				"or an older entrowatch train left it out); to give it one, train on labelled rows of %s", name, name, name)
			if left := e.LeftOut(name); left != "" {
				why = fmt.Sprintf("entrowatch train left %s out: %s; to give it a model of its own, add labelled rows of it and retrain", name, left)
			}
			fmt.Fprintf(w, "estimator: %s of model %s scored by the fallback, %s: %s\n", words.Count(int(rows[name]), "row"), name, fallbackName(fallback), why)
		}
		var named int64
		for _, n := range rows {
			named += n
		}
		if rest := e.Stats().Fallback - named; rest > 0 {
			fmt.Fprintf(w, "estimator: %d more rows of other models scored by the fallback, %s\n", rest, fallbackName(fallback))
		}
	}
}

// scoreChain returns the operators after profile: estimate and clustertag
// when their artifacts are given.
func scoreChain(o scoreOptions, mem memory.Allocator, log *slog.Logger) ([]streams.Operator, error) {
	var chain []streams.Operator
	if o.estimator != "" {
		op, err := newEstimateOperator(o.estimator, mem, log)
		if err != nil {
			return nil, err
		}
		chain = append(chain, op)
	}
	if o.clusters != "" {
		op, err := newClusterOperator(o.clusters, o.domainFrom, mem, log)
		if err != nil {
			return nil, err
		}
		chain = append(chain, op)
	}
	return chain, nil
}

// writeScored runs the rest of the chain over a scored batch and writes the
// rows whose status is ok; rows a later operator rejects are reported.
//
// rowLabel locates a row of the scored batch in the input; the operators keep
// rows in order, one output row per input row, so a row's offset over the
// output batches is its input row.
func writeScored(ctx context.Context, scored arrow.RecordBatch, chain []streams.Operator, openSink func() (*file.Sink, error), rep *rejectReport,
	rowLabel func(row int) (int64, string)) (int64, error) {
	inRows := scored.NumRows()
	recs := []arrow.RecordBatch{scored}
	for _, op := range chain {
		var next []arrow.RecordBatch
		for _, r := range recs {
			out, err := op.Process(ctx, r)
			r.Release()
			if err != nil {
				releaseAll(next)
				return 0, fmt.Errorf("%s: %w", op.Name(), err)
			}
			next = append(next, out...)
		}
		recs = next
	}
	defer releaseAll(recs)
	var outRows int64
	for _, r := range recs {
		outRows += r.NumRows()
	}
	var written, offset int64
	for _, r := range recs {
		status := r.Column(schemas.MustIndex(r.Schema(), schemas.ColStatus)).(*array.String)
		ids := r.Column(schemas.MustIndex(r.Schema(), schemas.ColTraceID)).(*array.String)
		n := int(r.NumRows())
		for lo := 0; lo < n; {
			if st := status.Value(lo); st != schemas.StatusOK {
				// Rejected by profile (already reported, status is the
				// reason) or by a later operator (reported here).
				if rep.needs(ids.Value(lo), st) {
					var line int64
					where := "(after scoring)"
					if outRows == inRows {
						line, where = rowLabel(int(offset) + lo)
					}
					detail := schemas.StatusDetail(r, lo, st)
					if detail == "" {
						detail = "rejected by the estimator or the topic tagger"
					}
					if err := rep.add(line, where, ids.Value(lo), st, detail); err != nil {
						return written, err
					}
				}
				lo++
				continue
			}
			hi := lo + 1
			for hi < n && status.Value(hi) == schemas.StatusOK {
				hi++
			}
			sink, err := openSink()
			if err != nil {
				return written, err
			}
			part := r.NewSlice(int64(lo), int64(hi))
			err = sink.Write(ctx, part)
			part.Release()
			if err != nil {
				return written, err
			}
			written += int64(hi - lo)
			lo = hi
		}
		offset += int64(n)
	}
	return written, nil
}

func releaseAll(recs []arrow.RecordBatch) {
	for _, r := range recs {
		r.Release()
	}
}

func openScoreSource(ctx context.Context, path string, maxSteps int, mem memory.Allocator) (scoreSource, error) {
	if isArrowPath(path) {
		r, err := ipc.OpenFile(path, mem)
		if err != nil {
			return nil, fmt.Errorf("reading %s as Arrow IPC trace.v1: %w", path, err)
		}
		return &arrowSource{r: r, maxSteps: maxSteps, mem: mem}, nil
	}
	f, err := ingest.OpenContext(ctx, path)
	if ae := (*ingest.ArrowInputError)(nil); errors.As(err, &ae) {
		// Standard input, a pipe or a gzip file: Arrow is read from a file.
		return nil, fmt.Errorf("opening input: %w: score reads Arrow IPC (trace.v1) from a file given by name, uncompressed; "+
			"from standard input, a pipe or gzip it reads JSON responses", err)
	}
	if err != nil {
		return nil, fmt.Errorf("opening input: %w", err)
	}
	cfg := ingest.DefaultConfig()
	cfg.Float64 = true // features from the returned digits, not float32 roundings
	// A streamed response longer than --max-steps is rejected while it is
	// joined, its steps dropped, instead of being held until it finishes.
	cfg.MaxSteps = maxSteps
	cfg.MaxHeldSteps = max(cfg.MaxHeldSteps, maxSteps)
	return &jsonSource{f: f, r: ingest.NewReader(f, cfg, mem)}, nil
}

// isArrowPath decides the input format: by extension, else by magic bytes
// (also of a file named like JSON: an Arrow file is not JSON whatever its
// name).
func isArrowPath(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".arrow", ".arrows", ".ipc", ".feather":
		return true
	}
	if st, err := os.Stat(path); path == "-" || err != nil || !st.Mode().IsRegular() {
		return false // sniffing a pipe would take its first bytes away
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 8)
	n, _ := io.ReadFull(f, b)
	return n >= 6 && string(b[:6]) == "ARROW1" || n >= 4 && b[0] == 0xff && b[1] == 0xff && b[2] == 0xff && b[3] == 0xff
}

type jsonSource struct {
	f io.Closer
	r *ingest.Reader
}

func (s *jsonSource) next() (arrow.RecordBatch, error) { return s.r.Next() }
func (s *jsonSource) rowLabel(row int) (int64, string) {
	l := s.r.RowLines()[row]
	return l, fmt.Sprintf("line %d", l)
}
func (s *jsonSource) rejects() []pendingReject {
	var out []pendingReject
	for _, x := range s.r.Rejects() {
		out = append(out, pendingReject{x.Line, fmt.Sprintf("line %d", x.Line), x.ID, x.Reason, x.Err.Error()})
	}
	return out
}
func (s *jsonSource) close() error {
	s.r.Release()
	return s.f.Close()
}

// arrowSource reads trace.v1 batches from an Arrow IPC file or stream. Chunk
// rows (seq/final, as producers stream them to the topic) are reassembled as
// the stream does; their rows are labelled by trace id, and traces whose
// final chunk never comes are rejected as incomplete at the end.
type arrowSource struct {
	r        *ipc.FileReader
	maxSteps int
	mem      memory.Allocator
	batch    int
	row0     int64
	rows     int64

	asm       *profile.Assembler
	queue     []arrow.RecordBatch // assembled batches not handed out yet
	assembled arrow.RecordBatch   // the batch handed out last, when assembled
	rej       []pendingReject
	eof       bool
}

func (s *arrowSource) next() (arrow.RecordBatch, error) {
	s.rej = s.rej[:0]
	s.assembled = nil
	for {
		if len(s.queue) > 0 {
			rec := s.queue[0]
			s.queue = s.queue[1:]
			s.assembled = rec
			return rec, nil
		}
		if s.eof {
			return nil, io.EOF
		}
		rec, err := s.r.Next()
		if errors.Is(err, io.EOF) {
			s.eof = true
			if s.asm != nil && s.asm.Open() > 0 {
				// Nothing more can come: every open trace is incomplete.
				out, err := s.asm.Expire(time.Unix(1<<40, 0))
				if err != nil {
					return nil, err
				}
				s.take(out)
				continue
			}
			return nil, io.EOF
		}
		if err != nil {
			return nil, err
		}
		s.batch++
		s.row0 += s.rows
		s.rows = rec.NumRows()
		if s.asm == nil && !profile.HasChunks(rec) {
			return rec, nil
		}
		if s.asm == nil {
			cfg := profile.DefaultAssemblerConfig()
			cfg.MaxSteps = s.maxSteps
			cfg.MaxHeldSteps = max(cfg.MaxHeldSteps, s.maxSteps)
			if s.asm, err = profile.NewAssembler(cfg, s.mem); err != nil {
				rec.Release()
				return nil, err
			}
		}
		out, err := s.asm.Add(rec, int64(s.batch), time.Unix(0, 0)) // no time passes: only the end of the input expires a trace
		rec.Release()
		if err != nil {
			return nil, fmt.Errorf("batch %d: %w", s.batch, err)
		}
		s.take(out)
	}
}

// take queues the complete batches of out and records its rejected traces.
func (s *arrowSource) take(out profile.Assembled) {
	s.queue = append(s.queue, out.Complete...)
	i := 0
	for _, rec := range out.Rejected {
		ids := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
		for row := range int(rec.NumRows()) {
			detail := "chunked trace whose final chunk or a chunk before it never came"
			if out.Reasons[i] == schemas.ReasonTooLong {
				detail = fmt.Sprintf("chunked trace longer than --max-steps %d", s.maxSteps)
			}
			s.rej = append(s.rej, pendingReject{0, "trace " + ids.Value(row), ids.Value(row), out.Reasons[i], detail})
			i++
		}
		rec.Release()
	}
}

func (s *arrowSource) rowLabel(row int) (int64, string) {
	if s.assembled != nil {
		id := s.assembled.Column(schemas.MustIndex(s.assembled.Schema(), schemas.ColTraceID)).(*array.String).Value(row)
		return 0, "trace " + id
	}
	return s.row0 + int64(row) + 1, fmt.Sprintf("row %d (batch %d)", s.row0+int64(row)+1, s.batch)
}
func (s *arrowSource) rejects() []pendingReject { return s.rej }
func (s *arrowSource) close() error {
	for _, r := range s.queue {
		r.Release()
	}
	s.queue = nil
	return s.r.Close()
}

// dupIDs counts the responses written whose model and trace id came before
// in the input: each copy is scored and written on its own, which a CSV
// reader may not expect (and the ClickHouse sink, keyed the same way, would
// merge). A rejected copy, not written, repeats nothing. It keeps a 64-bit hash per distinct
// id, about 70 bytes each with the map's own, for the first max distinct
// ids of the input (later ones are checked against those, not kept), so
// that memory stays bounded on any input: 340 MB at 5 million. Two ids share
// a hash, reporting a false repeat, with probability about n²/2^65 (1e-6 at
// 5 million ids).
type dupIDs struct {
	seed  maphash.Seed
	seen  map[uint64]struct{}
	max   int
	full  bool // max ids kept: later ones are not remembered
	n     int64
	first []string // the first few repeated ids, for the warning
	more  bool     // other ids repeat too
}

// maxDupIDs is how many distinct ids score remembers to find repeats.
const maxDupIDs = 5_000_000

func newDupIDs(max int) *dupIDs {
	return &dupIDs{seed: maphash.MakeSeed(), seen: map[uint64]struct{}{}, max: max}
}

func (d *dupIDs) add(models, ids *array.String, rejected map[int]bool) {
	for i := range ids.Len() {
		if rejected[i] {
			continue
		}
		var h maphash.Hash
		h.SetSeed(d.seed)
		if models != nil && models.IsValid(i) {
			h.WriteString(models.Value(i))
		}
		h.WriteByte(0)
		h.WriteString(ids.Value(i))
		sum := h.Sum64()
		if _, ok := d.seen[sum]; !ok {
			if len(d.seen) < d.max {
				d.seen[sum] = struct{}{}
			} else {
				d.full = true
			}
			continue
		}
		d.n++
		switch id := ids.Value(i); {
		case slices.Contains(d.first, id):
		case len(d.first) < 3:
			d.first = append(d.first, id)
		default:
			d.more = true
		}
	}
}

// warn prints a warning line when some trace ids repeat.
func (d *dupIDs) warn(w io.Writer, in string) {
	if d.full {
		fmt.Fprintf(w, "note: repeated trace ids were looked for among the first %d distinct ids of %s only (to bound memory); later responses were checked against those\n", d.max, inputName(in))
	}
	if d.n == 0 {
		return
	}
	quoted := make([]string, len(d.first))
	for i, id := range d.first {
		quoted[i] = strconv.Quote(id)
	}
	more := ""
	if d.more {
		more = ", ..."
	}
	fmt.Fprintf(w, "warning: %s the model and trace id of one that came before in %s (%s%s): each copy is scored and written as a row of its own; "+
		"remove the repeats, or give each response its own id\n", words.CountAs(int(d.n), "response repeats", "responses repeat"), inputName(in), strings.Join(quoted, ", "), more)
}

type pendingReject struct {
	line                      int64
	where, id, reason, detail string
}

// flush reports a batch's rejections, the reader's and the profile's, in
// input order.
func (r *rejectReport) flush(read []pendingReject, scored []pendingReject) error {
	r.fromSource += int64(len(read))
	scored = append(scored, read...)
	sort.SliceStable(scored, func(i, j int) bool { return scored[i].line < scored[j].line })
	for _, x := range scored {
		if err := r.add(x.line, x.where, x.id, x.reason, x.detail); err != nil {
			return err
		}
	}
	return nil
}

// rejectLinesPerReason caps the stderr lines per reason: a systematic problem
// (a whole model unknown, a file of another format) should not bury the rest.
const rejectLinesPerReason = 20

// rejectReport prints, counts and optionally records rejected responses.
type rejectReport struct {
	strict   bool
	quiet    bool
	w        io.Writer
	f        io.WriteCloser // --rejects; nil without it
	byReason map[string]int64
	total    int64
	// fromSource counts responses the reader rejected before scoring
	// (malformed lines, cut-off streams, incomplete chunked traces).
	fromSource int64
	seen       map[string]bool // trace_id+reason already reported by profile
}

func newRejectReport(o scoreOptions, stdout, stderr io.Writer) (*rejectReport, error) {
	r := &rejectReport{strict: o.strict, quiet: o.quiet, w: stderr, byReason: map[string]int64{}, seen: map[string]bool{}}
	switch o.rejects {
	case "":
	case "-":
		r.f = nopCloser{stdout}
	default:
		f, err := os.Create(o.rejects)
		if err != nil {
			return nil, fmt.Errorf("--rejects: %w", err)
		}
		r.f = f
	}
	return r, nil
}

// needs reports whether a non-ok row still has to be reported (a later
// operator set its status; profile rejections were reported as they happened).
func (r *rejectReport) needs(id, reason string) bool { return !r.seen[id+"\x00"+reason] }

func (r *rejectReport) add(line int64, where, id, reason, detail string) error {
	r.total++
	r.byReason[reason]++
	if len(r.seen) < 1<<20 {
		r.seen[id+"\x00"+reason] = true
	}
	if r.strict {
		return fmt.Errorf("%s: response %q rejected: %s (%s); drop --strict to skip and count such responses", where, id, reason, detail)
	}
	switch n := r.byReason[reason]; {
	case r.quiet:
	case n <= rejectLinesPerReason:
		fmt.Fprintf(r.w, "reject %s id=%q reason=%s: %s\n", where, id, reason, detail)
	case n == rejectLinesPerReason+1:
		more := "--rejects FILE lists every one"
		if r.f != nil {
			more = "the --rejects file lists every one"
		}
		fmt.Fprintf(r.w, "reject: further %s rejections are counted in the summary, not printed (%s)\n", reason, more)
	}
	if r.f != nil {
		_, err := fmt.Fprintf(r.f, "{\"line\":%d,\"id\":%q,\"reason\":%q,\"detail\":%q}\n", line, id, reason, detail)
		return err
	}
	return nil
}

func (r *rejectReport) close() error {
	if r.f == nil {
		return nil
	}
	return r.f.Close()
}

func (r *rejectReport) summary(w io.Writer, read, written int64, d time.Duration) {
	fmt.Fprintf(w, "scored %s in %s: %d written, %d rejected", words.Count(int(read+r.fromSource), "response"), d.Round(time.Millisecond), written, r.total)
	if r.total > 0 {
		reasons := make([]string, 0, len(r.byReason))
		for k := range r.byReason {
			reasons = append(reasons, k)
		}
		sort.Strings(reasons)
		parts := make([]string, len(reasons))
		for i, k := range reasons {
			parts[i] = fmt.Sprintf("%s %d", k, r.byReason[k])
		}
		fmt.Fprintf(w, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
}

// progress prints a progress line on stderr at most every two seconds, once
// the work has run for two seconds.
type progress struct {
	w     io.Writer
	off   bool
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, off bool) *progress {
	now := time.Now()
	return &progress{w: w, off: off, start: now, last: now}
}

func (p *progress) update(read, written, rejected int64) {
	if p.off {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 2*time.Second {
		return
	}
	p.last = now
	rate := float64(read) / now.Sub(p.start).Seconds()
	fmt.Fprintf(p.w, "progress: %d responses read, %d written, %d rejected (%.0f responses/s)\n", read, written, rejected, rate)
}

// nopCloser is standard output as the --rejects file: Close leaves it open.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// inputName names an --in for a message: "-" is standard input.
func inputName(in string) string {
	if in == "-" {
		return "standard input"
	}
	return in
}
