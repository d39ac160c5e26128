package ingest_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/streams/ingest"
)

// BenchmarkReader measures the JSON adapter on the golden fixtures
// (OpenAI chat shape with 20 alternatives per step).
func BenchmarkReader(b *testing.B) {
	f, err := os.Open("../../operators/profile/testdata/valid.jsonl.gz")
	if err != nil {
		b.Skip(err)
	}
	zr, _ := gzip.NewReader(f)
	data, _ := io.ReadAll(zr)
	f.Close()
	mem := memory.NewGoAllocator()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r := ingest.NewReader(bytes.NewReader(data), ingest.DefaultConfig(), mem)
		for {
			rec, err := r.Next()
			if err != nil {
				break
			}
			rec.Release()
		}
		r.Release()
	}
}

// BenchmarkOpenStreams measures chunks of streams that never finish, more of
// them than max_open_streams: each new one pushes out the oldest.
func BenchmarkOpenStreams(b *testing.B) {
	var buf bytes.Buffer
	for i := range 30000 {
		fmt.Fprintf(&buf, `{"id":"s%d","object":"chat.completion.chunk","choices":[{"index":0,"logprobs":{"content":[{"logprob":-1,"top_logprobs":[{"logprob":-1}]}]},"finish_reason":null}]}`+"\n", i)
	}
	data := buf.Bytes()
	mem := memory.NewGoAllocator()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r := ingest.NewReader(bytes.NewReader(data), ingest.DefaultConfig(), mem)
		for {
			rec, err := r.Next()
			if err != nil {
				break
			}
			rec.Release()
		}
		r.Release()
	}
}
