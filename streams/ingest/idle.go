package ingest

import (
	"errors"
	"io"
	"sync"
	"time"
)

// errIdle is what an idleReader's Read returns when the input has given
// nothing for its idle time since the data it last returned: the Reader
// then ends the batch it holds (Config.FlushIdle). It is not an end: the
// next Read waits for more input.
var errIdle = errors.New("input idle")

// idleReader reads r in a goroutine so that a Read can stop waiting: a live
// pipe (tail -f | entrowatch ingest --in -) gives lines one by one, and
// without it the rows read would wait for a full batch. It reports idleness
// once per pause, then waits without a timer until input comes; input that
// never pauses is handed over every idleMaxWaits idle times. The
// goroutine ends at the end of r or its first error, or once stop is called
// (at once, or when its read in progress returns: one blocked in a read of
// standard input ends with the process, as with OpenContext's pipes).
type idleReader struct {
	r     io.Reader
	idle  time.Duration
	start sync.Once
	in    chan readResult // the goroutine's reads
	more  chan struct{}   // the goroutine may read again
	quit  chan struct{}   // closed by stop: the goroutine returns
	stops sync.Once
	cur   []byte    // what the last result holds that was not returned yet
	err   error     // the goroutine's final error, returned once cur is empty
	ended bool      // the goroutine has returned
	fresh bool      // data was returned since the last errIdle
	since time.Time // when the first data since the last errIdle was returned
}

// idleMaxWaits bounds how long input that never pauses (a trickle of one
// line every 150 ms, with FlushIdle 200 ms) is held: after this many idle
// times since the first data of a batch, the next read reports errIdle
// as a pause would.
const idleMaxWaits = 5

type readResult struct {
	b   []byte
	err error
}

func newIdleReader(r io.Reader, idle time.Duration) *idleReader {
	return &idleReader{r: r, idle: idle, in: make(chan readResult), more: make(chan struct{}, 1), quit: make(chan struct{})}
}

// stop ends the goroutine (see idleReader) when nothing will Read again.
func (ir *idleReader) stop() { ir.stops.Do(func() { close(ir.quit) }) }

func (ir *idleReader) loop() {
	buf := make([]byte, 64<<10)
	for {
		n, err := ir.r.Read(buf)
		select {
		case ir.in <- readResult{buf[:n], err}:
		case <-ir.quit:
			return
		}
		if err != nil {
			return
		}
		select {
		case <-ir.more: // the reader is done with buf
		case <-ir.quit:
			return
		}
	}
}

func (ir *idleReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(ir.cur) == 0 {
		if ir.ended {
			return 0, ir.err
		}
		if ir.fresh && time.Since(ir.since) >= idleMaxWaits*ir.idle {
			ir.fresh = false // held long enough: hand over what was read
			return 0, errIdle
		}
		ir.start.Do(func() { go ir.loop() })
		var res readResult
		if ir.fresh {
			t := time.NewTimer(ir.idle)
			select {
			case res = <-ir.in:
				t.Stop()
			case <-t.C:
				ir.fresh = false
				return 0, errIdle
			}
		} else {
			res = <-ir.in
		}
		if res.err != nil {
			ir.ended, ir.err = true, res.err
		}
		ir.cur = res.b
		if len(ir.cur) == 0 {
			if !ir.ended {
				ir.more <- struct{}{}
			}
			return 0, ir.err
		}
	}
	n := copy(p, ir.cur)
	ir.cur = ir.cur[n:]
	if len(ir.cur) == 0 && !ir.ended {
		ir.more <- struct{}{}
	}
	if !ir.fresh {
		ir.fresh, ir.since = true, time.Now()
	}
	return n, nil
}
