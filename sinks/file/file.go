// Package file is the local sink: scored rows to an Arrow IPC stream file or
// to CSV. It implements streams.Sink: Write returns once the rows are on disk
// (flushed and fsynced), so the stream may commit their offsets.
package file

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/schemas"
)

// Config says where and how to write.
type Config struct {
	// Path of the output file; "-" is standard output.
	Path string `yaml:"path"`
	// Format is "arrow" (Arrow IPC stream, schema scored.v1, every row with
	// its status) or "csv" (the columns of CSVHeader; rows with status ok
	// only). Default: from the extension of Path (.csv and .csv.gz are CSV,
	// else Arrow).
	Format string `yaml:"format"`
	// Gzip compresses the file. Default: when Path ends in .gz.
	Gzip bool `yaml:"gzip"`
	// CSVEstimate adds the p_correct column to CSV output (the Arrow format
	// always carries p_correct and estimator_version). Default false.
	CSVEstimate bool `yaml:"csv_estimate"`
	// CSVClusters adds cluster_id and cluster_label to CSV output. Default
	// false.
	CSVClusters bool `yaml:"csv_clusters"`
	// Buffered lets Write return before the rows reach the disk: they are
	// flushed when the buffer fills and on Close. For offline scoring, where
	// nothing is committed per write. Default false: every Write flushes and
	// fsyncs, as at-least-once delivery needs.
	Buffered bool `yaml:"-"`
	// Append keeps what an existing file at Path holds and writes after it,
	// as the stream needs across restarts (its offsets were committed for
	// those rows): CSV goes on after the last whole line, under the same
	// header (another header is refused), an Arrow IPC stream goes on after
	// its last whole record batch (its end-of-stream marker and any
	// message a crash cut short are cut off). Gzip: CSV adds a gzip member
	// (readers such as gzip -d, zcat and Go's gzip read them as one file);
	// an existing compressed Arrow stream is refused. Default false: New
	// truncates the file.
	Append bool `yaml:"-"`
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	_, err := c.Resolved()
	return err
}

// Resolved returns c with what its path implies filled in, as New uses it:
// Gzip for a name ending in .gz, and an empty Format from the extension
// (csv for .csv, else arrow). The error is Validate's.
func (c Config) Resolved() (Config, error) {
	if c.Path == "" {
		return c, errors.New("file sink: path is empty")
	}
	lower := strings.ToLower(c.Path)
	if strings.HasSuffix(lower, ".gz") && c.Path != "-" {
		c.Gzip = true
		lower = strings.TrimSuffix(lower, ".gz")
	}
	if c.Format == "" {
		c.Format = "arrow"
		if filepath.Ext(lower) == ".csv" {
			c.Format = "csv"
		}
	}
	if c.Format != "arrow" && c.Format != "csv" {
		return c, fmt.Errorf("file sink: format %q, want arrow or csv", c.Format)
	}
	return c, nil
}

// ErrClosed is wrapped by the error of Write on a closed Sink.
var ErrClosed = errors.New("file sink is closed")

// Sink writes scored.v1 batches to one file. Not safe for concurrent use.
type Sink struct {
	cfg    Config
	f      *os.File
	gz     *gzip.Writer // between bw and f when compressing
	bw     *bufio.Writer
	ipcw   *ipc.Writer
	csv    *csvWriter
	rows   int64
	closed bool
}

// New creates (truncates) the file, or with cfg.Append opens it to write
// after what it holds. A nil mem means memory.DefaultAllocator (the Arrow
// format encodes through it; CSV does not allocate Arrow memory).
func New(cfg Config, mem memory.Allocator) (*Sink, error) {
	cfg, err := cfg.Resolved()
	if err != nil {
		return nil, err
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	f := os.Stdout
	var kept int64 // bytes of an existing file written after (Append)
	if cfg.Path != "-" {
		var err error
		if cfg.Append {
			f, kept, err = openAppend(cfg)
		} else {
			f, err = os.Create(cfg.Path)
		}
		if err != nil {
			return nil, fmt.Errorf("file sink: %w", err)
		}
	}
	s := &Sink{cfg: cfg, f: f, bw: bufio.NewWriterSize(f, 1<<20)}
	if cfg.Gzip && cfg.Path != "-" {
		s.gz = gzip.NewWriter(f)
		s.bw = bufio.NewWriterSize(s.gz, 1<<20)
	}
	if cfg.Format == "csv" {
		s.csv = newCSVWriter(s.bw, cfg)
		if kept == 0 {
			if err := s.csv.header(); err != nil {
				f.Close()
				return nil, fmt.Errorf("file sink %s: %w", cfg.Path, err)
			}
		}
	} else {
		var w io.Writer = s.bw
		if kept > 0 {
			// The file holds the schema already: the writer's own schema
			// message is dropped, its batches follow the existing ones.
			w = &skipWriter{w: s.bw, skip: schemaMessageBytes(mem)}
		}
		s.ipcw = ipc.NewWriter(w, ipc.WithSchema(schemas.Scored), ipc.WithAllocator(mem))
	}
	return s, nil
}

// openAppend opens cfg.Path for writing after its content, creating it
// when missing. It returns the bytes kept: 0 for a new or empty file (the
// caller then writes the header or schema as for a new file).
func openAppend(cfg Config) (*os.File, int64, error) {
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, 0, err
	}
	keep, err := appendOffset(f, cfg)
	if err == nil {
		err = f.Truncate(keep)
	}
	if err == nil {
		_, err = f.Seek(keep, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %w", cfg.Path, err)
	}
	return f, keep, nil
}

// appendOffset checks that f holds what this sink writes with cfg and
// returns where to go on writing: after the last whole CSV line or Arrow
// record batch (an end-of-stream marker or a part a crash cut short is
// written over), or 0 for an empty file.
func appendOffset(f *os.File, cfg Config) (int64, error) {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0, err
	}
	move := "; move it away or choose another file.path"
	if cfg.Gzip {
		if cfg.Format != "csv" {
			return 0, errors.New("exists, and a compressed Arrow stream cannot be written after" + move + " (or leave file.path empty for a new file per run)")
		}
		// A new gzip member follows the existing ones; they must read whole.
		zr, err := gzip.NewReader(f)
		if err != nil {
			return 0, fmt.Errorf("exists but is not gzip (%v)%s", err, move)
		}
		text, err := io.ReadAll(zr)
		if err != nil {
			return 0, fmt.Errorf("exists but does not read to its end (%v: cut short by a crash?); a member written after it would be unreadable%s", err, move)
		}
		if err := checkCSVHeader(text, cfg); err != nil {
			return 0, fmt.Errorf("%w%s", err, move)
		}
		if len(text) > 0 && text[len(text)-1] != '\n' {
			return 0, errors.New("ends in a cut-short line inside its compressed data" + move)
		}
		return st.Size(), nil
	}
	if cfg.Format == "csv" {
		text, err := io.ReadAll(f)
		if err != nil {
			return 0, err
		}
		if strings.HasPrefix(strings.Join(CSVHeader(cfg), ",")+"\n", string(text)) {
			return 0, nil // a header a crash cut short: start over
		}
		if err := checkCSVHeader(text, cfg); err != nil {
			return 0, fmt.Errorf("%w%s", err, move)
		}
		// A line a crash cut short is written over.
		return int64(bytes.LastIndexByte(text, '\n') + 1), nil
	}
	return arrowAppendOffset(f, move)
}

// checkCSVHeader reports whether text starts with the header cfg writes.
func checkCSVHeader(text []byte, cfg Config) error {
	want := strings.Join(CSVHeader(cfg), ",")
	first, _, whole := bytes.Cut(text, []byte("\n"))
	if !whole || string(first) != want {
		got := string(first)
		if len(got) > 200 {
			got = got[:200] + "..."
		}
		return fmt.Errorf("exists with other columns than this sink writes (csv_estimate and csv_clusters change them): its first line is %q, want %q", got, want)
	}
	return nil
}

// arrowAppendOffset reads the IPC stream in f and returns the end of its
// last whole record batch: a schema equal to scored.v1 must come first.
func arrowAppendOffset(f *os.File, move string) (int64, error) {
	cr := &countReader{r: bufio.NewReaderSize(f, 1<<20)}
	mr := ipc.NewMessageReader(cr)
	defer mr.Release()
	msg, err := mr.Message()
	if err != nil || msg.Type() != ipc.MessageSchema {
		// A schema message a crash cut short is written over.
		head := make([]byte, 64<<10)
		n, _ := f.ReadAt(head, 0)
		if st, err := f.Stat(); err == nil && st.Size() == int64(n) && bytes.HasPrefix(schemaStream(nil), head[:n]) {
			return 0, nil
		}
		return 0, errors.New("exists but is not an Arrow IPC stream" + move)
	}
	r, err := ipc.NewReader(io.NewSectionReader(f, 0, cr.n)) // f's offset stays with cr
	if err != nil {
		return 0, fmt.Errorf("exists but its schema does not read (%v)%s", err, move)
	}
	same := r.Schema().Equal(schemas.Scored)
	r.Release()
	if !same {
		return 0, errors.New("exists with another schema than scored.v1" + move)
	}
	end := cr.n
	for {
		msg, err := mr.Message()
		if err != nil { // the end-of-stream marker, the end of the file, or a message cut short
			return end, nil
		}
		if msg.Type() != ipc.MessageRecordBatch {
			return 0, fmt.Errorf("exists and holds a %v message, which this sink does not write%s", msg.Type(), move)
		}
		end = cr.n
	}
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// schemaStream is a scored.v1 IPC stream of no batches: the schema message
// an ipc.Writer puts first, then the 8-byte end-of-stream marker.
func schemaStream(mem memory.Allocator) []byte {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	var b bytes.Buffer
	w := ipc.NewWriter(&b, ipc.WithSchema(schemas.Scored), ipc.WithAllocator(mem))
	if err := w.Close(); err != nil {
		panic(err) // writing to memory
	}
	return b.Bytes()
}

// schemaMessageBytes is the size of the schema message an ipc.Writer puts
// first in a scored.v1 stream.
func schemaMessageBytes(mem memory.Allocator) int64 { return int64(len(schemaStream(mem))) - 8 }

// skipWriter drops the first skip bytes written through it.
type skipWriter struct {
	w    io.Writer
	skip int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	n := len(p)
	if s.skip > 0 {
		d := min(s.skip, int64(len(p)))
		s.skip -= d
		p = p[d:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if _, err := s.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

// Rows returns the number of rows Write accepted. In CSV that includes the
// rows not written because their status is not ok.
func (s *Sink) Rows() int64 { return s.rows }

// Write implements streams.Sink. It does not release rec and keeps no
// reference to it. After Close it returns an error wrapping ErrClosed and
// writes nothing.
func (s *Sink) Write(_ context.Context, rec arrow.RecordBatch) error {
	if s.closed {
		return fmt.Errorf("file sink %s: %w: Write after Close; make a new sink with file.New", s.cfg.Path, ErrClosed)
	}
	if rec == nil {
		return fmt.Errorf("file sink %s: Write of a nil batch", s.cfg.Path)
	}
	if !rec.Schema().Equal(schemas.Scored) {
		return fmt.Errorf("file sink %s: batch schema is not scored.v1", s.cfg.Path)
	}
	var err error
	if s.csv != nil {
		err = s.csv.write(rec)
	} else {
		err = s.ipcw.Write(rec)
	}
	if err == nil && !s.cfg.Buffered {
		err = s.sync()
	}
	if err != nil {
		return fmt.Errorf("file sink %s: %w", s.cfg.Path, err)
	}
	s.rows += rec.NumRows()
	return nil
}

// sync makes what was written durable: flush the buffer, fsync the file
// (standard output cannot be synced; flushing it is all there is).
func (s *Sink) sync() error {
	if err := s.bw.Flush(); err != nil {
		return err
	}
	if s.gz != nil {
		if err := s.gz.Flush(); err != nil {
			return err
		}
	}
	if s.f == os.Stdout {
		return nil
	}
	return s.f.Sync()
}

// Close implements streams.Sink: it ends the IPC stream, flushes, syncs and
// closes the file (not standard output). Calling it again does nothing and
// returns nil.
func (s *Sink) Close(context.Context) error {
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.ipcw != nil {
		errs = append(errs, s.ipcw.Close())
	}
	errs = append(errs, s.bw.Flush())
	if s.gz != nil {
		errs = append(errs, s.gz.Close())
	}
	if s.f != os.Stdout {
		errs = append(errs, s.f.Sync(), s.f.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("file sink %s: %w", s.cfg.Path, err)
	}
	return nil
}

// CSVHeader returns the CSV columns written for cfg: id, model, domain,
// correct, n_tokens, the 11 profile features, the 7 baselines, then p_correct
// and cluster_id, cluster_label when asked for.
func CSVHeader(cfg Config) []string {
	h := []string{"id", schemas.ColModel, schemas.ColDomain, schemas.ColCorrect, schemas.ColNTokens}
	h = append(h, schemas.ProfileFeatures...)
	h = append(h, schemas.Baselines...)
	if cfg.CSVEstimate {
		h = append(h, schemas.ColPCorrect)
	}
	if cfg.CSVClusters {
		h = append(h, schemas.ColClusterID, schemas.ColClusterLabel)
	}
	return h
}

type csvWriter struct {
	w      *bufio.Writer
	cfg    Config
	cols   []int // scored.v1 column per CSV column (id is trace_id)
	status int
	buf    []byte
}

func newCSVWriter(w *bufio.Writer, cfg Config) *csvWriter {
	c := &csvWriter{w: w, cfg: cfg, status: schemas.MustIndex(schemas.Scored, schemas.ColStatus)}
	for _, name := range CSVHeader(cfg) {
		if name == "id" {
			name = schemas.ColTraceID
		}
		c.cols = append(c.cols, schemas.MustIndex(schemas.Scored, name))
	}
	return c
}

func (c *csvWriter) header() error {
	_, err := c.w.WriteString(strings.Join(CSVHeader(c.cfg), ",") + "\n")
	return err
}

// write appends the rows whose status is ok: CSV has no status column, and
// rejected rows are reported elsewhere (dead-letter topic, score's report).
func (c *csvWriter) write(rec arrow.RecordBatch) error {
	n := int(rec.NumRows())
	status := rec.Column(c.status).(*array.String)
	for i := range n {
		if status.Value(i) != schemas.StatusOK {
			continue
		}
		b := c.buf[:0]
		for j, ci := range c.cols {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendCell(b, rec.Column(ci), i)
		}
		b = append(b, '\n')
		c.buf = b
		if _, err := c.w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// appendCell formats one value: floats in the shortest form that reads back
// exactly, booleans as 1/0, nulls as the empty string.
func appendCell(b []byte, col arrow.Array, i int) []byte {
	if col.IsNull(i) {
		return b
	}
	switch a := col.(type) {
	case *array.String:
		return appendCSVString(b, a.Value(i))
	case *array.Float64:
		return strconv.AppendFloat(b, a.Value(i), 'g', -1, 64)
	case *array.Float32:
		return strconv.AppendFloat(b, float64(a.Value(i)), 'g', -1, 32)
	case *array.Int32:
		return strconv.AppendInt(b, int64(a.Value(i)), 10)
	case *array.Boolean:
		if a.Value(i) {
			return append(b, '1')
		}
		return append(b, '0')
	default:
		return appendCSVString(b, col.ValueStr(i))
	}
}

func appendCSVString(b []byte, s string) []byte {
	if !strings.ContainsAny(s, ",\"\n\r") {
		return append(b, s...)
	}
	b = append(b, '"')
	b = append(b, strings.ReplaceAll(s, `"`, `""`)...)
	return append(b, '"')
}
