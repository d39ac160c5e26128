package ipc

import (
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
// RecordBatch, DictionaryBatch.
func checkBounds(b []byte) error {
	pos := 0
	for msg := 0; ; msg++ {
		if len(b)-pos < 4 {
			if len(b) == pos && msg > 0 {
				return nil // stream ended without an end-of-stream marker
			}
			return fmt.Errorf("message %d: %d bytes left, want a length prefix", msg, len(b)-pos)
		}
		n := binary.LittleEndian.Uint32(b[pos:])
		pos += 4
		if n == 0xFFFFFFFF { // continuation marker, then the length
			if len(b)-pos < 4 {
				return fmt.Errorf("message %d: truncated length prefix", msg)
			}
			n = binary.LittleEndian.Uint32(b[pos:])
			pos += 4
		}
		if n == 0 {
			return nil // end of stream
		}
		if int64(n) > int64(len(b)-pos) {
			return fmt.Errorf("message %d: metadata of %d bytes, %d present", msg, n, len(b)-pos)
		}
		fb := fbuf{b: b[pos : pos+int(n)]}
		body, err := fb.message()
		if err != nil {
			return fmt.Errorf("message %d: %w", msg, err)
		}
		pos += int(n)
		if body < 0 || body > int64(len(b)-pos) {
			return fmt.Errorf("message %d: body of %d bytes, %d present", msg, body, len(b)-pos)
		}
		pos += int(body)
	}
}

// fbuf reads a flatbuffer defensively; every accessor checks bounds.
type fbuf struct {
	b      []byte
	depth  int
	visits int // tables visited: offsets may form cycles, so work is bounded
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
