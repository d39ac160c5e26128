package ipc

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Decoding one message (or, in a file, one record batch) may allocate at most
// DecodeLimit(size) bytes: DecodeRatio times its size on the wire, and never
// less than MinDecodeBytes. A 1 MiB Kafka message may thus decompress to
// 64 MiB; what claims more is corrupt.
const (
	DecodeRatio    = 64
	MinDecodeBytes = 64 << 20
)

// ErrMemoryLimit is the panic value (wrapped) of a BoundedAllocator refusing
// an allocation; decoding errors caused by it wrap it too.
var ErrMemoryLimit = errors.New("over the decoding memory limit")

// DecodeLimit is the number of bytes decoding size bytes of Arrow IPC may
// allocate: max(MinDecodeBytes, DecodeRatio*size).
func DecodeLimit(size int) int {
	if size > math.MaxInt/DecodeRatio {
		return math.MaxInt
	}
	return max(decodeFloor, DecodeRatio*size)
}

// decodeFloor is MinDecodeBytes; fuzz tests lower it (SetDecodeFloor) so that
// each input decodes in milliseconds rather than allocating 64 MiB per
// mutated size claim.
var decodeFloor = MinDecodeBytes

// BoundedAllocator is a memory.Allocator for decoding untrusted Arrow IPC.
// It refuses, before asking the allocator underneath, any allocation that
// would take the bytes allocated since it was made past its limit, so that a
// compressed buffer claiming 2^40 bytes once uncompressed becomes an error
// instead of a fatal out-of-memory (which no recover catches). It refuses by
// panicking with an error wrapping ErrMemoryLimit; arrow-go's IPC readers
// recover their panics into errors. Use one per message:
//
//	mem := ipc.NewBoundedAllocator(mem, ipc.DecodeLimit(len(msg)))
//	rd, err := ipc.NewReader(bytes.NewReader(msg), ipc.WithAllocator(mem))
//	... on any error, once rd is released: mem.Reclaim()
//
// Buffers it allocated are freed through it, to the allocator underneath.
type BoundedAllocator struct {
	mem memory.Allocator

	mu    sync.Mutex
	limit int
	used  int
	live  map[uintptr][]byte   // allocated since the last reset, not yet freed
	gone  map[uintptr]struct{} // reclaimed: a late Free is not passed on
}

// NewBoundedAllocator allocates from mem (nil: memory.DefaultAllocator) at
// most limit bytes in all.
func NewBoundedAllocator(mem memory.Allocator, limit int) *BoundedAllocator {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	return &BoundedAllocator{mem: mem, limit: limit, live: map[uintptr][]byte{}}
}

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// take counts n more bytes, or panics if they do not fit; a holds mu.
func (a *BoundedAllocator) take(n int) {
	if n < 0 {
		panic(fmt.Errorf("%w: allocating %d bytes", ErrMemoryLimit, n))
	}
	if n > a.limit-a.used {
		panic(fmt.Errorf("%w: allocating %d bytes after %d would pass the limit of %d", ErrMemoryLimit, n, a.used, a.limit))
	}
	a.used += n
}

// track records b as live; a holds mu.
func (a *BoundedAllocator) track(b []byte) {
	if len(b) == 0 {
		return
	}
	p := addr(b)
	a.live[p] = b
	delete(a.gone, p)
}

// Allocate implements memory.Allocator: it counts size bytes against the
// limit, panicking with an error wrapping ErrMemoryLimit when they do not
// fit, then allocates them from the allocator underneath.
func (a *BoundedAllocator) Allocate(size int) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.take(size)
	b := a.mem.Allocate(size)
	a.track(b)
	return b
}

// Reallocate implements memory.Allocator: it resizes b to size through the
// allocator underneath. Growth counts against the limit as Allocate's bytes
// do (and panics the same way); shrinking gives nothing back to it.
func (a *BoundedAllocator) Reallocate(size int, b []byte) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if size < 0 || size > len(b) {
		a.take(size - len(b))
	}
	if len(b) > 0 {
		delete(a.live, addr(b))
	}
	out := a.mem.Reallocate(size, b)
	a.track(out)
	return out
}

// Free implements memory.Allocator: it returns b to the allocator
// underneath, unless Reclaim has freed it already. The limit counts bytes
// allocated, so freeing does not make room for more.
func (a *BoundedAllocator) Free(b []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(b) > 0 {
		p := addr(b)
		if _, ok := a.gone[p]; ok {
			delete(a.gone, p)
			return
		}
		delete(a.live, p)
	}
	a.mem.Free(b)
}

// Reclaim frees, to the allocator underneath, every buffer allocated since
// the last reset and not yet freed, and ignores a later Free of any of them.
// Call it after a failed decode, once the reader is released: arrow-go's
// readers recover from a panic in the middle of loading a batch and abandon
// the buffers loaded so far, which a checked allocator would report as leaks.
// Nothing may use those buffers afterwards.
func (a *BoundedAllocator) Reclaim() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gone == nil {
		a.gone = map[uintptr]struct{}{}
	}
	for p, b := range a.live {
		a.mem.Free(b)
		a.gone[p] = struct{}{}
	}
	clear(a.live)
}

// reset starts a new budget of limit bytes, for the next message of a file.
// Buffers allocated so far belong to batches handed to the caller: Reclaim
// leaves them alone.
func (a *BoundedAllocator) reset(limit int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.limit, a.used = limit, 0
	clear(a.live)
}
