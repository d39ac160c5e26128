package ingest

import (
	"fmt"

	"github.com/entrowatch/entrowatch/schemas"
)

// A pretty-printed object inside JSON Lines. Open reframes a file that
// starts pretty-printed, but the framing is chosen from the first line: a
// JSON Lines log to which someone appended `jq .` or json.dumps(indent=2)
// output would otherwise be read a physical line at a time, every line a
// malformed_json reject (a 2-response file reported as 31). A line that is a
// lone "{", never a JSON Lines record, starts an object that the Reader
// gathers, line by line, until its braces close, and reads as one line
// numbered by its first. An object that never closes cannot swallow what
// follows: a line that starts an object of its own where the gathered one
// cannot hold it (a JSON Lines record, "{..." on one line, which no
// pretty-printer writes; or a lone "{" directly inside the object) ends the
// gathering, the fragment is one malformed_json reject and that line is read
// as usual. And an object that grows past MaxLineBytes is rejected as
// too_long there, the lines after it read as lines again.
type prettyObject struct {
	on         bool
	start      int64 // its first line
	buf        []byte
	depth      int
	inStr, esc bool
}

// gatherPretty adds one line of the object being gathered and reads the
// object once it is complete. It reports false when the line cannot belong
// to the object (see prettyObject): the fragment gathered so far was
// rejected and the caller reads the line as usual.
func (r *Reader) gatherPretty(line []byte) bool {
	p := &r.pretty
	if len(p.buf) > 0 && p.interrupted(line) {
		r.rejects = append(r.rejects, Reject{Line: p.start, ID: peekID(p.buf), Reason: schemas.ReasonMalformedJSON,
			Err: fmt.Errorf(`line %d opens an object (a lone "{") that does not close before line %d, which starts an object of its own; what lies between is not a response`,
				p.start, r.line)})
		*p = prettyObject{buf: p.buf[:0]}
		return false
	}
	if len(p.buf)+len(line)+1 > r.cfg.MaxLineBytes {
		r.rejects = append(r.rejects, Reject{Line: p.start, ID: peekID(p.buf), Reason: schemas.ReasonTooLong,
			Err: fmt.Errorf("a pretty-printed object (from line %d) longer than %d bytes (ingest max_line_bytes) at line %d; its lines after that are read as lines", p.start, r.cfg.MaxLineBytes, r.line)})
		*p = prettyObject{buf: p.buf[:0]}
		return true
	}
	if len(p.buf) > 0 {
		p.buf = append(p.buf, ' ')
	}
	p.buf = append(p.buf, line...)
	for _, c := range line {
		switch {
		case p.esc:
			p.esc = false
		case p.inStr:
			switch c {
			case '\\':
				p.esc = true
			case '"':
				p.inStr = false
			}
		case c == '"':
			p.inStr = true
		case c == '{' || c == '[':
			p.depth++
		case c == '}' || c == ']':
			p.depth--
		}
	}
	if p.depth <= 0 {
		r.endPretty()
	}
	return true
}

// interrupted reports whether line starts an object where the one being
// gathered cannot hold it: "{" followed by more on the same line (a JSON
// Lines record; pretty-printers put nothing after an opening brace, and
// an empty object "{}" is allowed), or a lone "{" directly inside the
// object, where a key must come.
func (p *prettyObject) interrupted(line []byte) bool {
	if p.inStr || len(line) == 0 || line[0] != '{' {
		return false
	}
	switch string(line) {
	case "{":
		return p.depth == 1
	case "{}", "{},":
		return false
	}
	return true
}

// endPretty reads the gathered object as the line it starts on.
func (r *Reader) endPretty() {
	p := &r.pretty
	line := r.line
	r.line = p.start
	if rej := r.addLine(p.buf); rej != nil {
		r.rejects = append(r.rejects, *rej)
	}
	r.line = line
	*p = prettyObject{buf: p.buf[:0]}
}
