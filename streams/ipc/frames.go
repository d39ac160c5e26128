package ipc

import (
	"io"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// frameReader gives arrow-go's reader the messages of a stream held in
// memory, whose framing checkFrames has checked, without copying them: each
// message's metadata and body are slices of the stream's bytes, and the
// arrays of an uncompressed batch point into them. arrow-go's own stream
// reader copies every body into a zeroed buffer first, which cost the
// stream more CPU than profiling the rows did (`entrowatch bench pipeline`:
// decode 16.6% of worker time, profile 9.5%).
//
// The batches decoded thus share the bytes they were decoded from, which
// must not change while a batch is in use: a Kafka message's value is its
// own allocation, which nothing writes to after it is read.
type frameReader struct {
	frames []frame
	next   int
	msg    *ipc.Message
	refs   atomic.Int64
}

func newFrameReader(frames []frame) *frameReader {
	r := &frameReader{frames: frames}
	r.refs.Add(1)
	return r
}

func (r *frameReader) Message() (*ipc.Message, error) {
	if r.msg != nil {
		r.msg.Release()
		r.msg = nil
	}
	if r.next == len(r.frames) {
		return nil, io.EOF
	}
	f := r.frames[r.next]
	r.next++
	body := f.body
	if addr(body)%8 != 0 {
		// Arrays view their buffers as []float64, []int32...: a body that
		// does not start on an 8-byte boundary (bytes cut out of a larger
		// buffer) is copied to one that does.
		body = append(make([]byte, 0, len(body)+8), body...)
	}
	meta, bodyBuf := memory.NewBufferBytes(f.meta), memory.NewBufferBytes(body)
	r.msg = ipc.NewMessage(meta, bodyBuf)
	meta.Release() // NewMessage holds them
	bodyBuf.Release()
	return r.msg, nil
}

func (r *frameReader) Retain() { r.refs.Add(1) }

func (r *frameReader) Release() {
	if r.refs.Add(-1) == 0 && r.msg != nil {
		r.msg.Release()
		r.msg = nil
	}
}
