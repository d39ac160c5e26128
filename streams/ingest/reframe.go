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

// reframeMode says how the input is framed.
type reframeMode int

const (
	framedLines  reframeMode = iota // JSON Lines: as is
	framedArray                     // [ {...}, {...} ]
	framedValues                    // {...} {...}, pretty-printed
)

// detectFraming peeks at the start of br: an array, pretty-printed objects
// (a first line that is a lone "{"), or JSON Lines.
func detectFraming(br *bufio.Reader) reframeMode {
	head, _ := br.Peek(64 << 10)
	t := bytes.TrimLeft(head, " \t\r\n\ufeff")
	switch {
	case len(t) > 0 && t[0] == '[':
		return framedArray
	case len(t) > 0 && t[0] == '{':
		first := t
		if i := bytes.IndexByte(t, '\n'); i >= 0 {
			first = t[:i]
		}
		if string(bytes.TrimSpace(first)) == "{" {
			return framedValues
		}
	}
	return framedLines
}

// reframer rewrites an array or a sequence of JSON values as JSON Lines.
type reframer struct {
	src    io.Reader
	mode   reframeMode
	in     []byte
	out    []byte
	next   int // out[next:] is still to be read
	depth  int
	inStr  bool
	esc    bool
	opened bool // array: the "[" was consumed
	closed bool // array: the "]" was consumed
	empty  bool // nothing of the current value written yet
	err    error
}

func newReframer(src io.Reader, mode reframeMode) *reframer {
	return &reframer{src: src, mode: mode, in: make([]byte, 64<<10), empty: true}
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
		if r.mode == framedArray && !r.opened {
			if c == '[' {
				r.opened = true
			}
			i++
			continue // whitespace (or a byte-order mark) before the array
		}
		if r.closed {
			return // after the array's "]"
		}
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
		switch c {
		case '"':
			r.inStr = true
			r.put(c)
		case '{', '[':
			r.depth++
			r.put(c)
		case '}', ']':
			if r.mode == framedArray && r.depth == 0 && c == ']' {
				r.endValue()
				r.closed = true
				continue
			}
			r.depth--
			r.put(c)
			if r.mode == framedValues && r.depth == 0 {
				r.endValue()
			}
		case ',':
			if r.mode == framedArray && r.depth == 0 {
				r.endValue()
				continue
			}
			r.put(c)
		default: // layout whitespace: one space inside a value, none between values
			if !r.empty {
				r.put(' ')
			}
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
