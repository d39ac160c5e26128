package ipc_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	arrowipc "github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams/ipc"
)

// peak counts the bytes outstanding in the allocator underneath and their
// high-water mark.
type peak struct {
	memory.Allocator
	mu        sync.Mutex
	cur, high int
}

func (p *peak) add(n int) {
	p.mu.Lock()
	p.cur += n
	p.high = max(p.high, p.cur)
	p.mu.Unlock()
}

func (p *peak) Allocate(n int) []byte { p.add(n); return p.Allocator.Allocate(n) }
func (p *peak) Reallocate(n int, b []byte) []byte {
	p.add(n - len(b))
	return p.Allocator.Reallocate(n, b)
}
func (p *peak) Free(b []byte) { p.add(-len(b)); p.Allocator.Free(b) }

// compressed encodes rec as one IPC stream with the given compression.
func compressed(t testing.TB, rec arrow.RecordBatch, opt arrowipc.Option) []byte {
	var buf bytes.Buffer
	w := arrowipc.NewWriter(&buf, arrowipc.WithSchema(rec.Schema()), opt)
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// forge returns a copy of b with the uncompressed length of its
// compressed buffer i (from the end when i < 0) set to claim.
func forge(t testing.TB, b []byte, i int, claim int64) []byte {
	ps := ipc.CompressedPrefixes(b)
	require.NotEmpty(t, ps)
	if i < 0 {
		i += len(ps)
	}
	c := append([]byte{}, b...)
	binary.LittleEndian.PutUint64(c[ps[i]:], uint64(claim))
	return c
}

// TestDecodeForgedUncompressedLength: a compressed buffer whose length
// prefix claims far more than it holds (2^40 bytes once made the process die
// of a fatal out-of-memory on every restart) is a corrupt message, and
// decoding it never holds more than the decoding limit.
func TestDecodeForgedUncompressedLength(t *testing.T) {
	src := synth(memory.NewGoAllocator(), 1, 5)
	defer src.Release()
	for _, codec := range []struct {
		name string
		opt  arrowipc.Option
	}{{"zstd", arrowipc.WithZstd()}, {"lz4", arrowipc.WithLZ4()}} {
		good := compressed(t, src, codec.opt)
		limit := ipc.DecodeLimit(len(good))
		for _, tc := range []struct {
			name      string
			buf       int
			claim     int64
			overLimit bool
		}{
			{"1 TiB", 0, 1 << 40, true},
			{"1 TiB late", -1, 1 << 40, true},
			{"4x the limit", 3, int64(4 * limit), true},
			{"just under the limit", 3, int64(limit - 64), false},
			{"negative", 2, -7, false},
			{"max int64", 0, 1<<63 - 1, true},
		} {
			t.Run(codec.name+"/"+tc.name, func(t *testing.T) {
				p := &peak{Allocator: memory.NewGoAllocator()}
				mem := memory.NewCheckedAllocator(p)
				defer mem.AssertSize(t, 0)
				rec, err := ipc.Decode(forge(t, good, tc.buf, tc.claim), mem)
				if rec != nil {
					rec.Release()
				}
				require.ErrorIs(t, err, ipc.ErrCorrupt)
				if tc.overLimit {
					require.ErrorIs(t, err, ipc.ErrMemoryLimit)
				}
				require.LessOrEqual(t, p.high, limit)
			})
		}
		t.Run(codec.name+"/intact", func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			rec, err := ipc.Decode(good, mem)
			require.NoError(t, err)
			require.EqualValues(t, 1, rec.NumRows())
			rec.Release()
		})
	}
}

// TestDecodeForgedZstdWindow: a zstd frame declaring a 512 MiB window made
// the decompressor allocate 512 MiB, outside any allocator, to decode a
// 400-byte buffer.
func TestDecodeForgedZstdWindow(t *testing.T) {
	src := synth(memory.NewGoAllocator(), 1, 5)
	defer src.Release()
	good := compressed(t, src, arrowipc.WithZstd())
	bad := append([]byte{}, good...)
	for _, p := range ipc.CompressedPrefixes(bad) {
		frame := bad[p+8:]
		require.Equal(t, []byte{0x28, 0xb5, 0x2f, 0xfd}, frame[:4])
		if frame[4]&0x20 == 0 { // has a window descriptor
			frame[5] = 19 << 3 // 2^(10+19) = 512 MiB
		}
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	rec, err := ipc.Decode(bad, mem)
	if rec != nil {
		rec.Release()
	}
	require.ErrorIs(t, err, ipc.ErrCorrupt)
	require.ErrorContains(t, err, "window of 536870912 bytes")
}

// TestOpenFileForgedUncompressedLength: entrowatch score --in reads files
// with the same limits as the stream, in both formats.
func TestOpenFileForgedUncompressedLength(t *testing.T) {
	src := synth(memory.NewGoAllocator(), 2, 5)
	defer src.Release()
	dir := t.TempDir()
	var stream, file bytes.Buffer
	w := arrowipc.NewWriter(&stream, arrowipc.WithSchema(src.Schema()), arrowipc.WithZstd())
	fw, err := arrowipc.NewFileWriter(&file, arrowipc.WithSchema(src.Schema()), arrowipc.WithZstd())
	require.NoError(t, err)
	for range 2 {
		require.NoError(t, w.Write(src))
		require.NoError(t, fw.Write(src))
	}
	require.NoError(t, w.Close())
	require.NoError(t, fw.Close())
	streamBytes := stream.Bytes()
	fileBytes := file.Bytes()
	ps := ipc.CompressedPrefixes(streamBytes)
	// The file format embeds the stream after 8 bytes of magic.
	require.Equal(t, streamBytes[ps[0]:ps[0]+16], fileBytes[8+ps[0]:8+ps[0]+16])

	for _, tc := range []struct {
		name string
		data []byte
		ok   int // batches read before the error
	}{
		{"stream, first batch", forge(t, streamBytes, 0, 1<<40), 0},
		{"stream, second batch", forge(t, streamBytes, len(ps)/2, 1<<40), 1},
		{"file, first batch", forgeAt(fileBytes, 8+ps[0], 1<<40), 0},
		{"file, second batch", forgeAt(fileBytes, 8+ps[len(ps)/2], 1<<40), 1},
		{"file, footer size", forgeFooter(fileBytes, 1<<31-1), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "x.arrow")
			require.NoError(t, os.WriteFile(path, tc.data, 0o644))
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			r, err := ipc.OpenFile(path, mem)
			if tc.ok < 0 {
				require.ErrorIs(t, err, ipc.ErrCorrupt)
				return
			}
			require.NoError(t, err)
			defer r.Close()
			for range tc.ok {
				rec, err := r.Next()
				require.NoError(t, err)
				rec.Release()
			}
			_, err = r.Next()
			require.ErrorIs(t, err, ipc.ErrCorrupt)
			_, err2 := r.Next()
			require.Equal(t, err, err2, "the error sticks")
		})
	}
}

func forgeAt(b []byte, pos int, claim int64) []byte {
	c := append([]byte{}, b...)
	binary.LittleEndian.PutUint64(c[pos:], uint64(claim))
	return c
}

func forgeFooter(b []byte, size uint32) []byte {
	c := append([]byte{}, b...)
	binary.LittleEndian.PutUint32(c[len(c)-10:], size)
	return c
}

// TestBoundedAllocator: refusals happen before the allocator underneath is
// asked; Reclaim frees what a failed decode abandoned, and a late Free of it
// is not passed on twice.
func TestBoundedAllocator(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	a := ipc.NewBoundedAllocator(mem, 1000)
	b := a.Allocate(600)
	b = a.Reallocate(900, b) // 300 more
	require.PanicsWithError(t, "over the decoding memory limit: allocating 101 bytes after 900 would pass the limit of 1000", func() { a.Allocate(101) })
	require.Equal(t, 900, mem.CurrentAlloc())
	c := a.Allocate(100)
	a.Free(c)
	require.Panics(t, func() { a.Allocate(1) }, "the limit is on bytes allocated, not outstanding")
	require.Equal(t, 900, mem.CurrentAlloc())
	a.Reclaim()
	require.Equal(t, 0, mem.CurrentAlloc())
	a.Free(b) // late release of an abandoned buffer
}

// FuzzOpenFile: arbitrary file contents never panic, and the allocator
// returns to zero once the reader is closed.
func FuzzOpenFile(f *testing.F) {
	defer ipc.SetDecodeFloor(1 << 20)() // 1 MiB per mutated size claim, not 64
	src := synth(memory.NewGoAllocator(), 2, 3)
	defer src.Release()
	for _, opt := range []arrowipc.Option{arrowipc.WithZstd(), arrowipc.WithLZ4(), arrowipc.WithSchema(src.Schema())} {
		var buf bytes.Buffer
		fw, err := arrowipc.NewFileWriter(&buf, arrowipc.WithSchema(src.Schema()), opt)
		require.NoError(f, err)
		require.NoError(f, fw.Write(src))
		require.NoError(f, fw.Close())
		f.Add(buf.Bytes())
		f.Add(compressed(f, src, opt))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "f.arrow")
		require.NoError(t, os.WriteFile(path, data, 0o644))
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		defer mem.AssertSize(t, 0)
		r, err := ipc.OpenFile(path, mem)
		if err != nil {
			return
		}
		defer r.Close()
		for range 100 {
			rec, err := r.Next()
			if err != nil {
				return
			}
			rec.Release()
		}
	})
}

// TestDataAfterEndOfStream: what follows the end-of-stream marker (a second
// stream, as `cat a.arrow b.arrow` makes, or garbage) is an error, on a topic
// and in a file, not silently dropped (the second stream's rows were lost).
func TestDataAfterEndOfStream(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	src := synth(memory.NewGoAllocator(), 2, 3)
	defer src.Release()
	one := compressed(t, src, arrowipc.WithSchema(src.Schema()))

	rec, err := ipc.Decode(one, mem)
	require.NoError(t, err)
	rec.Release()
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		"two streams":    append(append([]byte{}, one...), one...),
		"garbage":        append(append([]byte{}, one...), "GARBAGE"...),
		"one zero after": append(append([]byte{}, one...), 0),
	} {
		_, err := ipc.Decode(b, mem)
		require.ErrorIs(t, err, ipc.ErrCorrupt, name)
		require.ErrorContains(t, err, "after the end-of-stream marker", name)

		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".arrow")
		require.NoError(t, os.WriteFile(path, b, 0o644))
		r, err := ipc.OpenFile(path, mem)
		require.NoError(t, err, name) // the first stream's schema reads
		var rows int64
		for {
			rec, err := r.Next()
			if err != nil {
				require.NotErrorIs(t, err, io.EOF, name)
				require.ErrorContains(t, err, "after the end-of-stream marker", name)
				break
			}
			rows += rec.NumRows()
			rec.Release()
		}
		require.NoError(t, r.Close())
	}
}

// TestDecodeFileFormat: an Arrow IPC file sent where a stream is expected
// says so (it read as "metadata of 1330795073 bytes").
func TestDecodeFileFormat(t *testing.T) {
	src := synth(memory.NewGoAllocator(), 1, 3)
	defer src.Release()
	var buf bytes.Buffer
	fw, err := arrowipc.NewFileWriter(&buf, arrowipc.WithSchema(src.Schema()))
	require.NoError(t, err)
	require.NoError(t, fw.Write(src))
	require.NoError(t, fw.Close())
	_, err = ipc.Decode(buf.Bytes(), memory.NewGoAllocator())
	require.ErrorIs(t, err, ipc.ErrCorrupt)
	require.ErrorContains(t, err, "send the IPC stream format")
}
