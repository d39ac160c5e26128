package ingest

import (
	"context"
	"errors"
	"io"
	"sync"
)

// ErrInterrupted is the error of a read of OpenContext's input once its
// context is done.
var ErrInterrupted = errors.New("interrupted while reading the input")

// interruptible makes the end of ctx end the reads of an input at once: a
// Read fails with ErrInterrupted from then on. A regular file is read
// directly, ctx checked before each read (an endless input such as
// /dev/zero never stopped otherwise). Standard input, a pipe, a FIFO or a
// device may block in a read for as long as its writer waits, so it is read
// by a goroutine through a pipe that the end of ctx closes; that goroutine
// ends with its read, or with the process. Close closes rc.
func interruptible(ctx context.Context, regular bool, rc io.ReadCloser) io.ReadCloser {
	if ctx.Done() == nil {
		return rc // never interrupted
	}
	if regular {
		return &ctxReader{ctx: ctx, rc: rc}
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, &ctxReader{ctx: ctx, rc: rc})
		pw.CloseWithError(err) // nil: EOF
	}()
	// Closing the writing end wakes a Read waiting on the pipe with the error.
	stop := context.AfterFunc(ctx, func() { pw.CloseWithError(ErrInterrupted) })
	return &pipeInput{pr: pr, pw: pw, rc: rc, stop: stop}
}

// ctxReader fails with ErrInterrupted once ctx is done.
type ctxReader struct {
	ctx context.Context
	rc  io.ReadCloser
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if r.ctx.Err() != nil {
		return 0, ErrInterrupted
	}
	return r.rc.Read(p)
}

func (r *ctxReader) Close() error { return r.rc.Close() }

// pipeInput is an input read through a pipe by a goroutine.
type pipeInput struct {
	pr   *io.PipeReader
	pw   *io.PipeWriter
	rc   io.ReadCloser
	stop func() bool
	once sync.Once
	err  error
}

func (p *pipeInput) Read(b []byte) (int, error) { return p.pr.Read(b) }

// Close ends the pipe (the copying goroutine stops at its next write) and
// closes the input. A read still blocked on standard input is not undone:
// the process's exit ends it.
func (p *pipeInput) Close() error {
	p.once.Do(func() {
		p.stop()
		p.pw.CloseWithError(ErrInterrupted)
		p.pr.Close() // a write of the copying goroutine fails: it ends
		p.err = p.rc.Close()
	})
	return p.err
}
