package ingest

import (
	"bufio"
	"bytes"
	"io"
)

// JSON that is not JSON Lines. People save responses as one JSON array, or
// as pretty-printed objects one after the other; Open turns both into JSON
// Lines on the fly (one line per array element or top-level object), so that
// the Reader's line-level checks, NaN handling and reports apply unchanged
// (a report's "line N" is then the N-th response). Streaming, in constant
// memory: a reframer tracks strings and nesting and rewrites only separators
// and layout whitespace.
//
// Whatever follows a top-level value is read too: arrays one after another
// ("[...][...]", as appending to a file of arrays gives), objects after an
// array, one per line or pretty-printed. A top-level "[" opens an array whose
// elements are values; between top-level values, commas are skipped and a
// newline ends anything that is not an object or array (it becomes a line of
// its own, which the Reader rejects as malformed_json). Nothing is dropped.

// reframeMode says how the input is framed.
type reframeMode int

const (
	framedLines  reframeMode = iota // JSON Lines: as is
	framedArray                     // [ {...}, {...} ]
	framedValues                    // {...} {...}, pretty-printed
)

// detectFraming peeks at the start of br: an array, pretty-printed objects
// (a first line that is a lone "{"), or JSON Lines. It reads only as far as
// it needs (the first non-blank byte and, for an object, its first line; at
// most 64 KiB), so that a live stream on a pipe is framed as soon as its
// first line arrives, not once 64 KiB have.
func detectFraming(br *bufio.Reader) reframeMode {
	const most = 64 << 10
	for n := 1; ; {
		head, err := br.Peek(n)
		t := bytes.TrimLeft(head, " \t\r\n\ufeff")
		nl := -1
		if len(t) > 0 {
			nl = bytes.IndexByte(t, '\n')
		}
		switch {
		case len(t) > 0 && t[0] == '[':
			return framedArray
		case len(t) > 0 && t[0] != '{':
			return framedLines
		case len(t) > 0 && (nl >= 0 || err != nil || len(head) >= most):
			first := t
			if nl >= 0 {
				first = t[:nl]
			}
			if string(bytes.TrimSpace(first)) == "{" {
				return framedValues
			}
			return framedLines
		case err != nil || len(head) >= most:
			return framedLines
		}
		// What is buffered already, else one byte more (one read).
		n = min(max(br.Buffered(), len(head)+1), most)
	}
}

// reframer rewrites arrays and sequences of JSON values as JSON Lines.
type reframer struct {
	src     io.Reader
	in      []byte
	out     []byte
	next    int // out[next:] is still to be read
	depth   int // nesting inside the current value
	inStr   bool
	esc     bool
	inArray bool // inside a top-level array: its elements are the values
	empty   bool // nothing of the current value written yet
	err     error
}

func newReframer(src io.Reader) *reframer {
	return &reframer{src: src, in: make([]byte, 64<<10), empty: true}
}

func (r *reframer) Read(p []byte) (int, error) {
	for r.next == len(r.out) {
		if r.err != nil {
			return 0, r.err
		}
		r.out, r.next = r.out[:0], 0 // the buffer is reused: it holds one input chunk's output
		n, err := r.src.Read(r.in)
		r.feed(r.in[:n])
		if err != nil {
			if !r.empty {
				r.out = append(r.out, '\n') // a last value without its closing separator
				r.empty = true
			}
			r.err = err
		}
	}
	n := copy(p, r.out[r.next:])
	r.next += n
	return n, nil
}

// structural marks the bytes a reframer acts on outside strings.
var structural = func() (t [256]bool) {
	for _, c := range []byte("\"{}[], \t\r\n") {
		t[c] = true
	}
	return t
}()

func (r *reframer) feed(b []byte) {
	for i := 0; i < len(b); {
		if r.inStr {
			if r.esc {
				r.put(b[i])
				r.esc = false
				i++
				continue
			}
			// The string's text goes over in one copy, up to its closing
			// quote or a backslash (two IndexByte scans beat IndexAny).
			j := bytes.IndexByte(b[i:], '"')
			seg := b[i:]
			if j >= 0 {
				seg = b[i : i+j]
			}
			if k := bytes.IndexByte(seg, '\\'); k >= 0 {
				r.putRun(b[i : i+k+1])
				r.esc = true
				i += k + 1
				continue
			}
			if j < 0 {
				r.putRun(b[i:])
				return
			}
			r.putRun(b[i : i+j+1])
			r.inStr = false
			i += j + 1
			continue
		}
		c := b[i]
		if !structural[c] { // numbers, true, false, null: copied as a run
			j := i + 1
			for j < len(b) && !structural[b[j]] {
				j++
			}
			r.putRun(b[i:j])
			i = j
			continue
		}
		i++
		switch {
		case r.depth > 0:
			r.inValue(c)
		case r.inArray:
			r.inArrayTop(c)
		default:
			r.atTop(c)
		}
	}
}

// inValue handles a structural byte inside an object or array value.
func (r *reframer) inValue(c byte) {
	switch c {
	case '"':
		r.inStr = true
		r.put(c)
	case '{', '[':
		r.depth++
		r.put(c)
	case '}', ']':
		r.depth--
		r.put(c)
		if r.depth == 0 && !r.inArray {
			r.endValue() // a top-level object or array is complete
		}
	case ',':
		r.put(c)
	default: // layout whitespace: one space inside a value
		r.put(' ')
	}
}

// inArrayTop handles a structural byte between the elements of a top-level array.
func (r *reframer) inArrayTop(c byte) {
	switch c {
	case '"':
		r.inStr = true
		r.put(c)
	case '{', '[':
		r.depth++
		r.put(c)
	case ',':
		r.endValue()
	case ']':
		r.endValue()
		r.inArray = false
	case '}': // stray: part of a malformed element
		r.put(c)
	default: // layout whitespace: none between elements
		if !r.empty {
			r.put(' ')
		}
	}
}

// atTop handles a structural byte between top-level values.
func (r *reframer) atTop(c byte) {
	switch c {
	case '"':
		r.inStr = true
		r.put(c)
	case '{':
		r.endValue() // after a scalar on the same line: a value of its own
		r.depth++
		r.put(c)
	case '[':
		r.endValue()
		r.inArray = true
	case ',':
		if !r.empty {
			r.put(c)
		} // else a separator between top-level values: {...},{...} or [...],[...]
	case '\n':
		r.endValue() // ends a scalar or other text between values
	case '}', ']': // stray: a malformed value
		r.put(c)
	default:
		if !r.empty {
			r.put(' ')
		}
	}
}

func (r *reframer) putRun(b []byte) {
	if len(b) > 0 {
		r.out = append(r.out, b...)
		r.empty = false
	}
}

func (r *reframer) put(c byte) {
	r.out = append(r.out, c)
	r.empty = false
}

func (r *reframer) endValue() {
	if !r.empty {
		r.out = append(r.out, '\n')
	}
	r.empty = true
}
