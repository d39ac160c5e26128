// Package file is the local sink: scored rows to an Arrow IPC stream file or
// to CSV. It implements streams.Sink: Write returns once the rows are on disk
// (flushed and fsynced), so the stream may commit their offsets.
package file

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
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
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	if c.Path == "" {
		return errors.New("file sink: path is empty")
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
		return fmt.Errorf("file sink: format %q, want arrow or csv", c.Format)
	}
	return nil
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

// New creates (truncates) the file. A nil mem means memory.DefaultAllocator
// (the Arrow format encodes through it; CSV does not allocate Arrow memory).
func New(cfg Config, mem memory.Allocator) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	f := os.Stdout
	if cfg.Path != "-" {
		var err error
		if f, err = os.Create(cfg.Path); err != nil {
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
		if err := s.csv.header(); err != nil {
			f.Close()
			return nil, fmt.Errorf("file sink %s: %w", cfg.Path, err)
		}
	} else {
		s.ipcw = ipc.NewWriter(s.bw, ipc.WithSchema(schemas.Scored), ipc.WithAllocator(mem))
	}
	return s, nil
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
