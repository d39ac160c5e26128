package ipc

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// maxMetadata bounds the flatbuffer metadata of one message in a file; real
// schemas take kilobytes.
const maxMetadata = 64 << 20

// FileReader reads trace.v1 batches from an Arrow IPC file, in either the
// stream format or the random-access file format. Both are read front to
// back as a stream of messages (the file format's footer is not consulted),
// and each message is checked as Decode checks a Kafka message: the bounds of
// its metadata and the claims of its compressed buffers, and decoding it
// allocates at most DecodeLimit of its size.
type FileReader struct {
	f    *os.File
	mem  *BoundedAllocator
	msgs *messages
	rd   *ipc.Reader
	err  error // after a corrupt batch, every Next returns it
}

// OpenFile opens path and checks that its schema is trace.v1. Errors about
// the contents wrap ErrCorrupt or ErrSchema.
func OpenFile(path string, mem memory.Allocator) (*FileReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := newFileReader(f, mem)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func newFileReader(f *os.File, mem memory.Allocator) (*FileReader, error) {
	br := bufio.NewReaderSize(f, 64<<10)
	head, _ := br.Peek(6)
	fileFormat := string(head) == "ARROW1"
	left, err := streamLength(f, br)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	r := &FileReader{f: f, mem: NewBoundedAllocator(mem, decodeFloor)}
	r.msgs = &messages{r: br, left: left, mem: r.mem, fileFormat: fileFormat}
	r.msgs.refs.Add(1)
	r.rd, err = ipc.NewReaderFromMessageReader(r.msgs, ipc.WithAllocator(r.mem))
	if err != nil { // the reader released msgs
		r.mem.Reclaim()
		return nil, corrupt(err)
	}
	if err := CheckTrace(r.rd.Schema()); err != nil {
		r.rd.Release()
		return nil, err
	}
	return r, nil
}

// streamLength positions br at the first message and returns how many bytes
// of messages follow (-1 when f is not a regular file): all of a stream-format
// file, and what lies between the magic and the footer of a file-format one.
func streamLength(f *os.File, br *bufio.Reader) (int64, error) {
	size := int64(-1)
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	head, _ := br.Peek(8)
	if len(head) < 6 || string(head[:6]) != "ARROW1" {
		return size, nil
	}
	if len(head) < 8 {
		return 0, errors.New("file ends inside the ARROW1 magic")
	}
	if _, err := br.Discard(8); err != nil {
		return 0, err
	}
	if size < 0 {
		return -1, nil // read up to the end-of-stream marker before the footer
	}
	var tail [10]byte
	if size < 8+10 {
		return 0, fmt.Errorf("an Arrow file of %d bytes has no room for a footer", size)
	}
	if _, err := f.ReadAt(tail[:], size-10); err != nil {
		return 0, fmt.Errorf("reading the footer: %w", err)
	}
	if string(tail[4:]) != "ARROW1" {
		return 0, errors.New("the Arrow file does not end with ARROW1: truncated?")
	}
	footer := int64(binary.LittleEndian.Uint32(tail[:4]))
	if footer > size-8-10 {
		return 0, fmt.Errorf("footer of %d bytes in a %d-byte file", footer, size)
	}
	return size - 8 - 10 - footer, nil
}

// Schema is the file's schema.
func (r *FileReader) Schema() *arrow.Schema { return r.rd.Schema() }

// Next returns the next validated batch, or io.EOF. The caller releases it.
// After an error wrapping ErrCorrupt, it returns that error again.
func (r *FileReader) Next() (rec arrow.RecordBatch, err error) {
	if r.err != nil {
		return nil, r.err
	}
	defer func() {
		if p := recover(); p != nil {
			if rec != nil {
				rec.Release()
			}
			rec, err = nil, corrupt(p)
		}
		if err != nil && err != io.EOF { // a corrupt batch may wrap io.EOF (a recovered panic)
			r.err = err
			r.mem.Reclaim() // what the failed batch abandoned
		}
	}()
	if !r.rd.Next() {
		if err := r.rd.Err(); err != nil { // nil at a clean end; an EOF inside a message (a recovered panic wrapping io.EOF) is corruption
			return nil, corrupt(err)
		}
		return nil, io.EOF
	}
	rec = r.rd.RecordBatch()
	rec.Retain()
	if err := Validate(rec); err != nil {
		rec.Release()
		return nil, err
	}
	if err := checkIDs(rec); err != nil {
		rec.Release()
		return nil, err
	}
	return rec, nil
}

// Unterminated reports, once Next has returned io.EOF, that the file is in
// the stream format and ended without the end-of-stream marker. The Arrow
// format allows a writer to close a stream without one, but it is also what
// a stream file cut short between two batches looks like (a copy
// interrupted, a writer that crashed): the batches read are whole, later
// ones may be missing. (A cut inside a batch, or a file-format file missing
// its footer, is an error from Next or OpenFile.)
func (r *FileReader) Unterminated() bool { return r.msgs.unterminated && !r.msgs.fileFormat }

// Close releases the reader and closes the file.
func (r *FileReader) Close() error {
	r.rd.Release()
	return r.f.Close()
}

// messages is an ipc.MessageReader over the messages of a file, which checks
// each before arrow-go sees it and gives each its own allocation budget.
type messages struct {
	r    *bufio.Reader
	left int64 // bytes of messages left; -1 if unknown
	mem  *BoundedAllocator
	msg  *ipc.Message // valid until the next call, as arrow-go's own reader
	refs atomic.Int64
	n    int // messages read
	// fileFormat is the random-access format, whose footer says where the
	// messages end; unterminated is a stream that ended without its
	// end-of-stream marker.
	fileFormat, unterminated bool
}

func (m *messages) Retain() { m.refs.Add(1) }

func (m *messages) Release() {
	if m.refs.Add(-1) == 0 && m.msg != nil {
		m.msg.Release()
		m.msg = nil
	}
}

func (m *messages) read(p []byte) error {
	if m.left >= 0 && int64(len(p)) > m.left {
		return fmt.Errorf("%d bytes left in the file, want %d", m.left, len(p))
	}
	if _, err := io.ReadFull(m.r, p); err != nil {
		return err
	}
	if m.left >= 0 {
		m.left -= int64(len(p))
	}
	return nil
}

// Message returns the next message, or io.EOF after the last.
func (m *messages) Message() (*ipc.Message, error) {
	if m.msg != nil {
		m.msg.Release()
		m.msg = nil
	}
	i := m.n
	m.n++
	if m.left == 0 {
		m.unterminated = true // no end-of-stream marker
		return nil, io.EOF
	}
	var pre [4]byte
	if err := m.read(pre[:]); err != nil {
		if errors.Is(err, io.EOF) && m.left < 0 {
			m.unterminated = true
			return nil, io.EOF
		}
		return nil, fmt.Errorf("message %d: length prefix: %w", i, err)
	}
	n := binary.LittleEndian.Uint32(pre[:])
	if n == 0xFFFFFFFF {
		if err := m.read(pre[:]); err != nil {
			return nil, fmt.Errorf("message %d: length prefix: %w", i, err)
		}
		n = binary.LittleEndian.Uint32(pre[:])
	}
	if n == 0 { // end of stream: nothing may follow but the file format's footer
		if m.left > 0 {
			return nil, fmt.Errorf("message %d: %d bytes after the end-of-stream marker (concatenated streams, or garbage); entrowatch reads one Arrow IPC stream per file", i, m.left)
		}
		if _, err := m.r.Peek(1); m.left < 0 && err == nil { // not a regular file: look
			return nil, fmt.Errorf("message %d: data after the end-of-stream marker (concatenated streams, or garbage); entrowatch reads one Arrow IPC stream per input", i)
		}
		return nil, io.EOF
	}
	if n > maxMetadata || m.left >= 0 && int64(n) > m.left {
		return nil, fmt.Errorf("message %d: metadata of %d bytes, %d left in the file (limit %d)", i, n, m.left, maxMetadata)
	}
	meta := make([]byte, n)
	if err := m.read(meta); err != nil {
		return nil, fmt.Errorf("message %d: metadata: %w", i, err)
	}
	fb := fbuf{b: meta}
	bodyLen, err := fb.message()
	if err != nil {
		return nil, fmt.Errorf("message %d: %w", i, err)
	}
	if bodyLen < 0 || m.left >= 0 && bodyLen > m.left {
		return nil, fmt.Errorf("message %d: body of %d bytes, %d left in the file", i, bodyLen, m.left)
	}
	var data []byte
	if m.left < 0 { // not a regular file: read what is there before allocating
		if data, err = io.ReadAll(io.LimitReader(m.r, bodyLen)); err == nil && int64(len(data)) < bodyLen {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, fmt.Errorf("message %d: body of %d bytes: %w", i, bodyLen, err)
		}
	}
	m.mem.reset(DecodeLimit(int(n) + int(bodyLen)))
	body := memory.NewResizableBuffer(m.mem)
	defer body.Release() // the message holds its own reference
	body.Resize(int(bodyLen))
	if data != nil {
		copy(body.Bytes(), data)
	} else if err := m.read(body.Bytes()); err != nil {
		return nil, fmt.Errorf("message %d: body: %w", i, err)
	}
	if err := fb.checkBody(body.Bytes(), DecodeLimit(int(n)+int(bodyLen))); err != nil {
		return nil, fmt.Errorf("message %d: %w", i, err)
	}
	m.msg = ipc.NewMessage(memory.NewBufferBytes(meta), body)
	return m.msg, nil
}
