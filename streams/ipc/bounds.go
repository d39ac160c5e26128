package ipc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// checkBounds walks the framing and the flatbuffer metadata of every message
// in an Arrow IPC stream and checks that each table, string and vector it
// would read lies inside the bytes present. arrow-go trusts vector lengths
// (a corrupt schema claiming 2^32 fields makes it allocate tens of GB and the
// process dies of OOM, which no recover catches), so untrusted bytes from a
// topic are checked here first. It reads only what arrow's reader reads:
// Message, Schema, Field (recursively), KeyValue, DictionaryEncoding,
// RecordBatch, DictionaryBatch. It also checks what the bodies of record
// batches claim (see checkBody), against the decoding limit for len(b) bytes.
func checkBounds(b []byte) error {
	_, err := checkFrames(b, false)
	return err
}

// frame is one message of an IPC stream: its flatbuffer metadata and its
// body, as slices of the stream's bytes.
type frame struct{ meta, body []byte }

// checkFrames is checkBounds, returning the messages when keep is set.
func checkFrames(b []byte, keep bool) ([]frame, error) {
	var frames []frame
	if bytes.HasPrefix(b, []byte("ARROW1")) {
		return nil, errors.New("an Arrow IPC file (it starts with ARROW1): send the IPC stream format, one stream per message (arrow's ipc.NewWriter, not NewFileWriter)")
	}
	limit := DecodeLimit(len(b))
	pos := 0
	for msg := 0; ; msg++ {
		if len(b)-pos < 4 {
			if len(b) == pos && msg > 0 {
				return frames, nil // stream ended without an end-of-stream marker
			}
			return nil, fmt.Errorf("message %d: %d bytes left, want a length prefix", msg, len(b)-pos)
		}
		n := binary.LittleEndian.Uint32(b[pos:])
		pos += 4
		if n == 0xFFFFFFFF { // continuation marker, then the length
			if len(b)-pos < 4 {
				return nil, fmt.Errorf("message %d: truncated length prefix", msg)
			}
			n = binary.LittleEndian.Uint32(b[pos:])
			pos += 4
		}
		if n == 0 { // end of stream
			if pos != len(b) {
				return nil, fmt.Errorf("message %d: %d bytes after the end-of-stream marker (concatenated streams, or garbage); send one Arrow IPC stream per message", msg, len(b)-pos)
			}
			return frames, nil
		}
		if int64(n) > int64(len(b)-pos) {
			return nil, fmt.Errorf("message %d: metadata of %d bytes, %d present", msg, n, len(b)-pos)
		}
		fb := fbuf{b: b[pos : pos+int(n)]}
		body, err := fb.message()
		if err != nil {
			return nil, fmt.Errorf("message %d: %w", msg, err)
		}
		pos += int(n)
		if body < 0 || body > int64(len(b)-pos) {
			return nil, fmt.Errorf("message %d: body of %d bytes, %d present", msg, body, len(b)-pos)
		}
		if err := fb.checkBody(b[pos:pos+int(body)], limit); err != nil {
			return nil, fmt.Errorf("message %d: %w", msg, err)
		}
		if keep {
			frames = append(frames, frame{meta: b[pos-int(n) : pos : pos], body: b[pos : pos+int(body) : pos+int(body)]})
		}
		pos += int(body)
	}
}

// fbuf reads a flatbuffer defensively; every accessor checks bounds.
type fbuf struct {
	b      []byte
	depth  int
	visits int // tables visited: offsets may form cycles, so work is bounded
	batch  int // position of the message's RecordBatch table, 0 if none
}

var errFB = errors.New("flatbuffer out of bounds")

func (f *fbuf) u32(p int) (uint32, error) {
	if p < 0 || p+4 > len(f.b) {
		return 0, errFB
	}
	return binary.LittleEndian.Uint32(f.b[p:]), nil
}

func (f *fbuf) u8(p int) (byte, error) {
	if p < 0 || p >= len(f.b) {
		return 0, errFB
	}
	return f.b[p], nil
}

func (f *fbuf) u64(p int) (uint64, error) {
	if p < 0 || p+8 > len(f.b) {
		return 0, errFB
	}
	return binary.LittleEndian.Uint64(f.b[p:]), nil
}

func (f *fbuf) u16(p int) (uint16, error) {
	if p < 0 || p+2 > len(f.b) {
		return 0, errFB
	}
	return binary.LittleEndian.Uint16(f.b[p:]), nil
}

// table checks the table at t and returns a lookup of its field positions
// (0 when the field is absent). Presence follows the flatbuffers runtime that
// arrow reads with exactly (slot below the vtable size, offset not 0), so that
// no field arrow reads goes unchecked; a position it returns may lie outside
// the buffer, and every reader of a position checks it.
func (f *fbuf) table(t int) (func(i int) int, error) {
	f.visits++
	if f.visits > 1<<14 {
		return nil, errors.New("more than 16384 tables in one message's metadata")
	}
	so, err := f.u32(t)
	if err != nil {
		return nil, err
	}
	vt := t - int(int32(so))
	vsize, err := f.u16(vt)
	if err != nil {
		return nil, err
	}
	tsize, err := f.u16(vt + 2)
	if err != nil || vsize < 4 || vt+int(vsize) > len(f.b) || t+int(tsize) > len(f.b) {
		return nil, errFB
	}
	return func(i int) int {
		slot := 4 + 2*i
		if slot >= int(vsize) {
			return 0
		}
		off, err := f.u16(vt + slot) // an odd vtable size leaves half a slot: read as the runtime does
		if err != nil {
			return len(f.b) // present but unreadable: its reader fails
		}
		if off == 0 {
			return 0
		}
		return t + int(off)
	}, nil
}

// deref follows the uoffset stored at p.
func (f *fbuf) deref(p int) (int, error) {
	o, err := f.u32(p)
	if err != nil {
		return 0, err
	}
	q := p + int(o)
	if q < 0 || q >= len(f.b) {
		return 0, errFB
	}
	return q, nil
}

// vector checks the vector whose uoffset is at p, with elements of elem bytes,
// and returns its first element's position and length.
func (f *fbuf) vector(p, elem int) (int, int, error) {
	v, err := f.deref(p)
	if err != nil {
		return 0, 0, err
	}
	n, err := f.u32(v)
	if err != nil {
		return 0, 0, err
	}
	if int64(n)*int64(elem) > int64(len(f.b)-v-4) {
		return 0, 0, fmt.Errorf("vector of %d elements in %d bytes", n, len(f.b)-v-4)
	}
	return v + 4, int(n), nil
}

// tables checks a vector of tables at p with check applied to each.
func (f *fbuf) tables(p int, check func(t int) error) error {
	if p == 0 {
		return nil
	}
	start, n, err := f.vector(p, 4)
	if err != nil {
		return err
	}
	for i := range n {
		t, err := f.deref(start + 4*i)
		if err != nil {
			return err
		}
		if err := check(t); err != nil {
			return err
		}
	}
	return nil
}

func (f *fbuf) str(p int) error {
	if p == 0 {
		return nil
	}
	_, _, err := f.vector(p, 1)
	return err
}

// Message { version, header_type, header, bodyLength, custom_metadata }
func (f *fbuf) message() (int64, error) {
	root, err := f.deref(0)
	if err != nil {
		return 0, err
	}
	m, err := f.table(root)
	if err != nil {
		return 0, err
	}
	var body int64
	if p := m(3); p != 0 {
		if p+8 > len(f.b) {
			return 0, errFB
		}
		body = int64(binary.LittleEndian.Uint64(f.b[p:]))
	}
	if err := f.tables(m(4), f.keyValue); err != nil {
		return 0, err
	}
	ht := 0
	if p := m(1); p != 0 {
		v, err := f.u8(p)
		if err != nil {
			return 0, err
		}
		ht = int(v)
	}
	hp := m(2)
	if hp == 0 {
		return body, nil
	}
	h, err := f.deref(hp)
	if err != nil {
		return 0, err
	}
	switch ht {
	case 1:
		err = f.schema(h)
	case 2: // DictionaryBatch { id, data: RecordBatch, isDelta }
		var d func(int) int
		if d, err = f.table(h); err == nil && d(1) != 0 {
			var rb int
			if rb, err = f.deref(d(1)); err == nil {
				err = f.recordBatch(rb)
			}
		}
	case 3:
		err = f.recordBatch(h)
	default:
		_, err = f.table(h)
	}
	return body, err
}

// Schema { endianness, fields, custom_metadata, features }
func (f *fbuf) schema(t int) error {
	s, err := f.table(t)
	if err != nil {
		return err
	}
	if err := f.tables(s(1), f.field); err != nil {
		return err
	}
	if err := f.tables(s(2), f.keyValue); err != nil {
		return err
	}
	if p := s(3); p != 0 {
		if _, _, err := f.vector(p, 8); err != nil {
			return err
		}
	}
	return nil
}

// Field { name, nullable, type_type, type, dictionary, children, custom_metadata }
func (f *fbuf) field(t int) error {
	f.depth++
	defer func() { f.depth-- }()
	if f.depth > 64 {
		return errors.New("fields nested more than 64 deep")
	}
	fl, err := f.table(t)
	if err != nil {
		return err
	}
	if err := f.str(fl(0)); err != nil {
		return err
	}
	if p := fl(3); p != 0 {
		tt, err := f.deref(p)
		if err != nil {
			return err
		}
		typ, err := f.table(tt)
		if err != nil {
			return err
		}
		// Timestamp's timezone (field 1) is a string; Union's typeIds
		// (field 1) a vector of int32. Bound both as vectors.
		var kind byte // type_type
		if p := fl(2); p != 0 {
			if kind, err = f.u8(p); err != nil {
				return err
			}
		}
		if p := typ(1); p != 0 && kind == 10 {
			if err := f.str(p); err != nil {
				return err
			}
		}
		if p := typ(1); p != 0 && kind == 14 {
			if _, _, err := f.vector(p, 4); err != nil {
				return err
			}
		}
	}
	if p := fl(4); p != 0 {
		d, err := f.deref(p)
		if err != nil {
			return err
		}
		de, err := f.table(d)
		if err != nil {
			return err
		}
		if p := de(1); p != 0 {
			it, err := f.deref(p)
			if err != nil {
				return err
			}
			if _, err := f.table(it); err != nil {
				return err
			}
		}
	}
	if err := f.tables(fl(5), f.field); err != nil {
		return err
	}
	return f.tables(fl(6), f.keyValue)
}

// KeyValue { key, value }
func (f *fbuf) keyValue(t int) error {
	kv, err := f.table(t)
	if err != nil {
		return err
	}
	if err := f.str(kv(0)); err != nil {
		return err
	}
	return f.str(kv(1))
}

// RecordBatch { length, nodes: [FieldNode 16 B], buffers: [Buffer 16 B], compression, variadicBufferCounts }
func (f *fbuf) recordBatch(t int) error {
	rb, err := f.table(t)
	if err != nil {
		return err
	}
	f.batch = t
	for _, i := range []int{1, 2} {
		if p := rb(i); p != 0 {
			if _, _, err := f.vector(p, 16); err != nil {
				return err
			}
		}
	}
	if p := rb(3); p != 0 {
		c, err := f.deref(p)
		if err != nil {
			return err
		}
		if _, err := f.table(c); err != nil {
			return err
		}
	}
	if p := rb(4); p != 0 {
		if _, _, err := f.vector(p, 8); err != nil {
			return err
		}
	}
	return nil
}

// checkBody checks the body of a message whose metadata f checked: every
// buffer of its record batch lies inside body, and, when the batch is
// compressed, each buffer's uncompressed length (the int64 in front of it)
// and their sum are at most limit, and every zstd frame declares a window of
// at most max(2 x that length, minZstdWindow). arrow-go allocates the claimed
// length, and its zstd decoder a ring of the declared window, before
// decompressing a byte: a few forged bytes would otherwise cost gigabytes.
func (f *fbuf) checkBody(body []byte, limit int) error {
	if f.batch == 0 {
		return nil
	}
	rb, err := f.table(f.batch)
	if err != nil {
		return err
	}
	codec := -1 // uncompressed
	if p := rb(3); p != 0 {
		t, err := f.deref(p)
		if err != nil {
			return err
		}
		c, err := f.table(t)
		if err != nil {
			return err
		}
		codec = 0 // LZ4_FRAME, the default
		if p := c(0); p != 0 {
			v, err := f.u8(p)
			if err != nil {
				return err
			}
			codec = int(v)
		}
	}
	p := rb(2)
	if p == 0 {
		return nil
	}
	start, n, err := f.vector(p, 16)
	if err != nil {
		return err
	}
	var total int64
	for i := range n {
		o, _ := f.u64(start + 16*i) // inside the vector checked above
		l, _ := f.u64(start + 16*i + 8)
		off, length := int64(o), int64(l)
		if off < 0 || length < 0 || off > int64(len(body)) || length > int64(len(body))-off {
			return fmt.Errorf("buffer %d (offset %d, %d bytes) lies outside the %d-byte body", i, off, length, len(body))
		}
		if codec < 0 || length == 0 {
			continue
		}
		if length < 8 {
			return fmt.Errorf("compressed buffer %d of %d bytes has no room for its uncompressed length", i, length)
		}
		buf := body[off : off+length]
		claim := int64(binary.LittleEndian.Uint64(buf))
		if claim == -1 {
			continue // stored uncompressed
		}
		if claim < 0 {
			return fmt.Errorf("compressed buffer %d claims a negative uncompressed length, %d", i, claim)
		}
		if claim > int64(limit)-total {
			return fmt.Errorf("compressed buffer %d of %d bytes claims %d bytes uncompressed, after %d for the buffers before it; the limit for this message is %d (%w)",
				i, length, claim, total, limit, ErrMemoryLimit)
		}
		total += claim
		if codec == 1 { // ZSTD
			if err := checkZstd(buf[8:], max(2*claim, minZstdWindow)); err != nil {
				return fmt.Errorf("compressed buffer %d: %w", i, err)
			}
		}
	}
	return nil
}

// minZstdWindow is the largest zstd window accepted whatever the buffer's
// size: 8 MiB, the default window of klauspost/compress's streaming encoder.
const minZstdWindow = 8 << 20

// checkZstd walks the frames of a zstd buffer and checks that none declares
// a window (or, for a single-segment frame, a content size) over maxWindow.
func checkZstd(b []byte, maxWindow int64) error {
	for frame := 0; len(b) > 0; frame++ {
		if len(b) < 4 {
			return fmt.Errorf("zstd frame %d: %d bytes, want a magic number", frame, len(b))
		}
		magic := binary.LittleEndian.Uint32(b)
		if magic&0xFFFFFFF0 == 0x184D2A50 { // skippable frame
			if len(b) < 8 || int64(binary.LittleEndian.Uint32(b[4:])) > int64(len(b)-8) {
				return fmt.Errorf("zstd frame %d: truncated skippable frame", frame)
			}
			b = b[8+binary.LittleEndian.Uint32(b[4:]):]
			continue
		}
		if magic != 0xFD2FB528 {
			return fmt.Errorf("zstd frame %d: magic number %#x, want 0xfd2fb528", frame, magic)
		}
		if len(b) < 5 {
			return fmt.Errorf("zstd frame %d: truncated header", frame)
		}
		fhd := b[4]
		pos := 5
		single := fhd&0x20 != 0
		var window int64
		if !single {
			if len(b) <= pos {
				return fmt.Errorf("zstd frame %d: truncated header", frame)
			}
			exp, mant := int64(b[pos]>>3), int64(b[pos]&7)
			base := int64(1) << (10 + exp)
			window = base + base/8*mant
			pos++
		}
		pos += [4]int{0, 1, 2, 4}[fhd&3] // dictionary id
		fcsLen := [4]int{0, 2, 4, 8}[fhd>>6]
		if fcsLen == 0 && single {
			fcsLen = 1
		}
		if len(b) < pos+fcsLen {
			return fmt.Errorf("zstd frame %d: truncated header", frame)
		}
		var fcs uint64
		for i := range fcsLen {
			fcs |= uint64(b[pos+i]) << (8 * i)
		}
		if fcsLen == 2 {
			fcs += 256
		}
		pos += fcsLen
		if single {
			if fcs > uint64(maxWindow) {
				window = maxWindow + 1
			} else {
				window = int64(fcs)
			}
		}
		if window > maxWindow {
			return fmt.Errorf("zstd frame %d declares a window of %d bytes, over the %d its buffer may use", frame, window, maxWindow)
		}
		for last := false; !last; {
			if len(b) < pos+3 {
				return fmt.Errorf("zstd frame %d: truncated block header", frame)
			}
			h := int(b[pos]) | int(b[pos+1])<<8 | int(b[pos+2])<<16
			pos += 3
			last = h&1 != 0
			switch size := h >> 3; (h >> 1) & 3 {
			case 0, 2: // raw, compressed
				pos += size
			case 1: // RLE
				pos++
			default:
				return fmt.Errorf("zstd frame %d: reserved block type", frame)
			}
			if pos > len(b) {
				return fmt.Errorf("zstd frame %d: truncated block", frame)
			}
		}
		if fhd&0x04 != 0 { // content checksum
			pos += 4
		}
		if pos > len(b) {
			return fmt.Errorf("zstd frame %d: truncated checksum", frame)
		}
		b = b[pos:]
	}
	return nil
}
