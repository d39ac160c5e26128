// Package csvin opens the CSV files people hand to entrowatch (labelled
// tables, label files, prompt lists) as encoding/csv reads them, after
// dropping a UTF-8 byte-order mark, as spreadsheets and R's
// fileEncoding="UTF-8-BOM" write at the start of a file.
package csvin

import (
	"bufio"
	"encoding/csv"
	"io"
)

// bom is the UTF-8 encoding of U+FEFF.
const bom = "\ufeff"

// NewReader returns a csv.Reader of r without r's leading byte-order mark,
// if it has one. Left in, the mark is part of the first header name, and a
// quoted first name ("model",...) becomes a parse error: encoding/csv sees
// a quote inside an unquoted field.
func NewReader(r io.Reader) *csv.Reader {
	return csv.NewReader(SkipBOM(r))
}

// SkipBOM returns r without its leading byte-order mark, if it has one.
func SkipBOM(r io.Reader) io.Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	if b, err := br.Peek(len(bom)); err == nil && string(b) == bom {
		br.Discard(len(bom))
	}
	return br
}
