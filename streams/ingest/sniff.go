package ingest

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// What an input is, by its content rather than its name: OpenContext refuses
// with one clear error, instead of one malformed_json reject per line, an
// input that is not responses at all: an Arrow IPC file or stream (what
// entrowatch score reads and writes), or a table (CSV or TSV, gzip or not,
// whatever its name). It looks only at the first bytes, through the
// buffered reader's Peek, so nothing is taken from a pipe; and it decides a
// JSON input (first byte "{" or "[") at its first byte, so a live stream is
// not held.

// ArrowInputError is OpenContext's error for an input that is Arrow IPC, in
// the file format ("ARROW1") or the stream format (a first message that
// starts with the continuation marker 0xFFFFFFFF), instead of JSON.
type ArrowInputError struct {
	Path   string // as given to OpenContext; "-" is standard input
	Stream bool   // the IPC stream format; else the file format
}

func (e *ArrowInputError) Error() string {
	format := "file"
	if e.Stream {
		format = "stream"
	}
	return fmt.Sprintf("%s is an Arrow IPC %s, not JSON responses", inputName(e.Path), format)
}

// inputName is how an error names the input at path.
func inputName(path string) string {
	if path == "-" {
		return "standard input"
	}
	return path
}

// errTable is the error for a table (by its name, or header) given where
// responses are read.
func errTable(path, why string) error {
	return fmt.Errorf("%s is a table, not responses%s: this reads OpenAI-compatible responses "+
		"(JSON Lines, a JSON array or server-sent events; .gz ok); a labelled CSV of features is read by entrowatch train and eval", inputName(path), why)
}

// sniffMost bounds what sniff peeks at: the first line and record of a
// table.
const sniffMost = 64 << 10

// sniff returns an error when the input br starts like an Arrow IPC file or
// stream, or like a table; nil otherwise (then it is read as JSON, and what
// is not JSON is rejected line by line).
func sniff(br *bufio.Reader, path string) error {
	b, _ := br.Peek(1)
	if len(b) == 0 {
		return nil
	}
	switch b[0] {
	case 'A':
		if h, _ := br.Peek(6); string(h) == "ARROW1" {
			return &ArrowInputError{Path: path}
		}
	case 0xff:
		if h, _ := br.Peek(4); bytes.Equal(h, []byte{0xff, 0xff, 0xff, 0xff}) {
			return &ArrowInputError{Path: path, Stream: true}
		}
	}
	if header, ok := tableHead(br); ok {
		return errTable(path, " (its first line is a header: "+header+")")
	}
	return nil
}

// peekUntil peeks at more and more of br, from its first from bytes (peeked
// already) on, one read at a time, until done
// says it has seen enough of what was peeked, the input ends (or fails:
// the error comes again with the reads that follow), or sniffMost bytes
// are buffered. It returns what was peeked and whether that is all the
// input holds.
func peekUntil(br *bufio.Reader, from int, done func(head []byte) bool) ([]byte, bool) {
	for n := max(from, 1); ; {
		head, err := br.Peek(n)
		if err != nil {
			return head, true
		}
		if done(head) || len(head) >= sniffMost {
			return head, false
		}
		// What is buffered already, else one byte more (one read).
		n = min(max(br.Buffered(), len(head)+1), sniffMost)
	}
}

// columnName is what a column name in a table's header looks like.
var columnName = regexp.MustCompile(`^[\pL_][\pL\pN_ .:/()%#+\-]{0,99}$`)

// tableHead reports whether br starts with a table: a header of two or more
// column names separated by commas, tabs or semicolons, then a record of as
// many fields (or nothing: a table of no rows). It returns the header for
// the error, shortened. An input that starts with anything else (a JSON
// value, or an SSE line) is decided at its first line without waiting for
// a second one.
func tableHead(br *bufio.Reader) (string, bool) {
	start := func(head []byte) int {
		t := bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\ufeff")), " \t\r\n")
		return len(head) - len(t)
	}
	head, _ := peekUntil(br, 1, func(h []byte) bool { s := start(h); return s < len(h) && utf8.FullRune(h[s:]) })
	i := start(head)
	if i == len(head) {
		return "", false
	}
	if c, _ := utf8.DecodeRune(head[i:]); !(unicode.IsLetter(c) || c == '_' || c == '"') {
		return "", false // JSON, SSE comments, numbers: not a header
	}
	head, all := peekUntil(br, i+1, func(h []byte) bool { return bytes.IndexByte(h[i:], '\n') >= 0 })
	nl := bytes.IndexByte(head[i:], '\n')
	if nl < 0 && !all {
		return "", false // a first line of 64 KiB is no header
	}
	line := head[i:]
	if nl >= 0 {
		line = head[i : i+nl]
	}
	line = bytes.TrimSuffix(line, []byte("\r"))
	sep := ','
	switch {
	case bytes.IndexByte(line, '\t') >= 0:
		sep = '\t'
	case bytes.IndexByte(line, ',') < 0 && bytes.IndexByte(line, ';') >= 0:
		sep = ';'
	}
	cr := csv.NewReader(bytes.NewReader(line))
	cr.Comma, cr.LazyQuotes = sep, true
	names, err := cr.Read()
	if err != nil || len(names) < 2 {
		return "", false
	}
	for _, n := range names {
		if !columnName.MatchString(strings.TrimSpace(n)) {
			return "", false
		}
	}
	shown := string(line)
	if len(shown) > 80 {
		shown = string(bytes.ToValidUTF8([]byte(shown[:77]), nil)) + "..."
	}
	if nl < 0 {
		return shown, true // the header is all there is: a table of no rows
	}
	// The first record, which may span lines (a quoted prompt): up to the
	// second line's end is enough to count its fields, mostly.
	rest := i + nl + 1
	head, all = peekUntil(br, rest, func(h []byte) bool { return bytes.IndexByte(h[rest:], '\n') >= 0 })
	body := head[rest:]
	if len(bytes.TrimSpace(body)) == 0 {
		return shown, all // no record yet: a table if nothing follows
	}
	cr = csv.NewReader(bytes.NewReader(body))
	cr.Comma, cr.LazyQuotes, cr.FieldsPerRecord = sep, true, len(names)
	_, err = cr.Read()
	switch {
	case err == nil:
		return shown, true
	case !all && cr.InputOffset() >= int64(len(body)) &&
		(body[len(body)-1] != '\n' || bytes.Count(body, []byte{'"'})%2 == 1):
		return shown, true // the record goes on past what was peeked
	case errors.Is(err, io.EOF):
		return shown, true
	}
	return "", false // a text whose first line had commas
}
