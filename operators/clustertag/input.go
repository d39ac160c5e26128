package clustertag

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/entrowatch/entrowatch/internal/csvin"
	"github.com/entrowatch/entrowatch/schemas"
)

// Doc is one prompt read for fitting or reporting.
type Doc struct {
	// Prompt is the prompt text: a JSONL "prompt" (a string or chat
	// messages, read as score reads it), the CSV prompt column or a trimmed
	// text line. "" only when the doc has an Embedding.
	Prompt string
	Domain string // "" when the input has none
	// Embedding is the JSONL "embedding" array or the parsed CSV embedding
	// column; nil when the input gives none for this prompt.
	Embedding []float32
}

// Docs is what ReadFile found.
type Docs struct {
	Docs       []Doc // in input order, at least one; skipped lines are not among them
	HasDomain  bool  // the input has a domain field or column
	Embeddings bool  // every doc carries an embedding
	Skipped    int   // JSONL lines or CSV rows without a prompt (and without an embedding)
	// TooLong are the numbers of the lines (JSONL, text) longer than
	// MaxLineBytes, skipped.
	TooLong []int
}

// MaxLineBytes bounds one line of JSONL or text input (as ingest's
// max_line_bytes does for score); longer lines are skipped and counted.
const MaxLineBytes = 64 << 20

// eachLine calls fn with every line of r (without its line ending) and its
// number, and returns the numbers of the lines longer than max bytes, which
// it skips without holding more than max bytes of them.
func eachLine(r io.Reader, max int, fn func(line int, b []byte) error) ([]int, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var long []int
	var buf []byte
	for line := 1; ; line++ {
		buf = buf[:0]
		over, eof := false, false
		for {
			chunk, err := br.ReadSlice('\n')
			if !over {
				if len(buf)+len(bytes.TrimRight(chunk, "\r\n")) > max {
					over, buf = true, buf[:0]
				} else {
					buf = append(buf, chunk...)
				}
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if errors.Is(err, io.EOF) {
				eof = true
			} else if err != nil {
				return long, fmt.Errorf("line %d: %w", line, err)
			}
			break
		}
		switch {
		case over:
			long = append(long, line)
		case eof && len(buf) == 0:
		default:
			if err := fn(line, bytes.TrimRight(buf, "\r\n")); err != nil {
				return long, err
			}
		}
		if eof {
			return long, nil
		}
	}
}

// Input formats.
const (
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
	FormatText  = "text"
)

// FormatOf guesses the input format from the file name (after a .gz suffix):
// .jsonl/.json/.ndjson are JSON Lines, .csv is CSV, anything else text lines.
func FormatOf(path string) string {
	p := strings.TrimSuffix(strings.ToLower(path), ".gz")
	switch {
	case strings.HasSuffix(p, ".jsonl"), strings.HasSuffix(p, ".json"), strings.HasSuffix(p, ".ndjson"):
		return FormatJSONL
	case strings.HasSuffix(p, ".csv"):
		return FormatCSV
	}
	return FormatText
}

// ReadFile reads prompts from path (gzip when it ends in .gz) in the format
// FormatOf names.
func ReadFile(path string) (*Docs, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReaderSize(f, 1<<20)
	if strings.HasSuffix(strings.ToLower(path), ".gz") {
		gz, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%s: not gzip: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	d, err := Read(r, FormatOf(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// Read reads prompts in the given format.
func Read(r io.Reader, format string) (*Docs, error) {
	switch format {
	case FormatJSONL:
		return readJSONL(r, MaxLineBytes)
	case FormatCSV:
		return readCSV(r)
	case FormatText:
		return readText(r, MaxLineBytes)
	}
	return nil, fmt.Errorf("unknown input format %q (want jsonl, csv or text)", format)
}

// jsonDoc holds the only fields of an OpenAI response line we read.
type jsonDoc struct {
	Prompt    json.RawMessage `json:"prompt"`
	Domain    *string         `json:"domain"`
	Embedding []float32       `json:"embedding"`
}

// promptText reads a prompt field as `entrowatch score` and ingest do
// (schemas.PromptText); absent or null is "".
func promptText(raw json.RawMessage) (string, error) {
	s, _, err := schemas.PromptText(raw)
	return s, err
}

func readJSONL(r io.Reader, maxLine int) (*Docs, error) {
	out := &Docs{}
	lines, withEmb := 0, 0
	long, err := eachLine(r, maxLine, func(line int, b []byte) error {
		lines = line
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			return nil
		}
		var j jsonDoc
		if err := json.Unmarshal(b, &j); err != nil {
			return fmt.Errorf("line %d: not a JSON object: %v", line, err)
		}
		prompt, err := promptText(j.Prompt)
		if err != nil {
			return fmt.Errorf("line %d: \"prompt\": %v", line, err)
		}
		if prompt == "" && len(j.Embedding) == 0 {
			out.Skipped++
			return nil
		}
		d := Doc{Prompt: prompt, Embedding: j.Embedding}
		if j.Domain != nil {
			d.Domain = *j.Domain
			out.HasDomain = true
		}
		if len(d.Embedding) > 0 {
			withEmb++
		}
		out.Docs = append(out.Docs, d)
		return nil
	})
	out.TooLong = long
	if err != nil {
		return nil, err
	}
	if len(out.Docs) == 0 {
		if len(long) > 0 {
			return nil, fmt.Errorf("every line with content is longer than %d bytes (%d lines skipped, the first line %d)", maxLine, len(long), long[0])
		}
		return nil, fmt.Errorf("no line has a \"prompt\" (or \"embedding\") field (%d lines): cluster fit needs the prompts; add a top-level \"prompt\" (a string or chat messages) to each line", lines)
	}
	out.Embeddings = withEmb == len(out.Docs)
	return out, nil
}

func readCSV(r io.Reader) (*Docs, error) {
	cr := csvin.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty CSV: want a header with a prompt column")
		}
		return nil, fmt.Errorf("CSV header: %w", err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	pi, okP := col["prompt"]
	ei, okE := col["embedding"]
	if !okP && !okE {
		return nil, fmt.Errorf("no prompt column in the CSV header (have %s): name the column with the prompt text \"prompt\"", strings.Join(head, ","))
	}
	di, okD := col["domain"]
	out := &Docs{HasDomain: okD}
	withEmb := 0
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("CSV: %w", err)
		}
		var d Doc
		if okP && pi < len(rec) {
			d.Prompt = rec[pi]
		}
		if okD && di < len(rec) {
			d.Domain = rec[di]
		}
		if okE && ei < len(rec) && strings.TrimSpace(rec[ei]) != "" {
			v, err := parseVector(rec[ei])
			if err != nil {
				return nil, fmt.Errorf("CSV row %d: embedding: %w", line, err)
			}
			d.Embedding = v
			withEmb++
		}
		if d.Prompt == "" && len(d.Embedding) == 0 {
			out.Skipped++
			continue
		}
		out.Docs = append(out.Docs, d)
	}
	if len(out.Docs) == 0 {
		return nil, errors.New("no row has a prompt: the CSV is empty or its prompt column is blank")
	}
	out.Embeddings = okE && withEmb == len(out.Docs)
	return out, nil
}

// parseVector reads "[0.1, 0.2]" or "0.1 0.2" or "0.1;0.2".
func parseVector(s string) ([]float32, error) {
	s = strings.Trim(strings.TrimSpace(s), "[]")
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\t' })
	out := make([]float32, len(f))
	for i, x := range f {
		v, err := strconv.ParseFloat(x, 32)
		if err != nil {
			return nil, fmt.Errorf("value %d %q is not a number", i+1, x)
		}
		out[i] = float32(v)
	}
	return out, nil
}

func readText(r io.Reader, maxLine int) (*Docs, error) {
	out := &Docs{}
	long, err := eachLine(r, maxLine, func(_ int, b []byte) error {
		if s := strings.TrimSpace(string(b)); s != "" {
			out.Docs = append(out.Docs, Doc{Prompt: s})
		}
		return nil
	})
	out.TooLong = long
	if err != nil {
		return nil, err
	}
	if len(out.Docs) == 0 {
		if len(long) > 0 {
			return nil, fmt.Errorf("every line with content is longer than %d bytes (%d lines skipped, the first line %d)", maxLine, len(long), long[0])
		}
		return nil, errors.New("no non-empty line: want one prompt per line")
	}
	return out, nil
}
