package clustertag

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// pseudoCorpus makes prompts of the given length over a 3,000-word
// vocabulary of pseudo-words in 10 topics (each topic favours its own 300
// words), mixed with stop words, like real questions.
func pseudoCorpus(n, words int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, 11))
	syl := strings.Fields("ka lo mi re tu sa ne vi po da ge lu ri fo ba te zo mu chi ra")
	vocab := make([]string, 3000)
	for i := range vocab {
		var b strings.Builder
		for s := 0; s < 2+i%3; s++ {
			b.WriteString(syl[rng.IntN(len(syl))])
		}
		vocab[i] = b.String()
	}
	out := make([]string, n)
	for i := range out {
		topic := rng.IntN(10)
		var b strings.Builder
		for w := 0; w < words; w++ {
			if w > 0 {
				b.WriteByte(' ')
			}
			switch r := rng.Float64(); {
			case r < 0.4:
				b.WriteString(stopWords[rng.IntN(len(stopWords))])
			case r < 0.85:
				b.WriteString(vocab[topic*300+rng.IntN(300)])
			default:
				b.WriteString(vocab[rng.IntN(len(vocab))])
			}
			if rng.IntN(12) == 0 {
				b.WriteByte(',')
			}
		}
		b.WriteByte('?')
		out[i] = b.String()
	}
	return out
}

func BenchmarkTag(b *testing.B) {
	train := pseudoCorpus(2000, 30, 1)
	for _, lsa := range []int{DefaultFitConfig().LSA, 0} {
		cfg := DefaultFitConfig()
		cfg.K = 10
		cfg.Restarts = 2
		cfg.LSA = lsa
		m, err := Fit(context.Background(), train, cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, words := range []int{10, 50, 200} {
			prompts := pseudoCorpus(1000, words, 2)
			var bytes int
			for _, p := range prompts {
				bytes += len(p)
			}
			name := fmt.Sprintf("words=%d", words)
			if lsa == 0 {
				name = "space=tfidf/" + name
			}
			b.Run(name, func(b *testing.B) {
				t := m.NewTagger()
				b.ReportAllocs()
				b.SetBytes(int64(bytes / len(prompts)))
				i := 0
				cpu := cpuTime()
				for b.Loop() {
					t.Tag(prompts[i%len(prompts)])
					i++
				}
				reportRates(b, b.N, cpu)
			})
		}
	}
}

func BenchmarkOperator(b *testing.B) {
	train := pseudoCorpus(2000, 30, 1)
	cfg := DefaultFitConfig()
	cfg.K = 10
	cfg.Restarts = 2
	m, err := Fit(context.Background(), train, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	mem := memory.NewGoAllocator()
	prompts := pseudoCorpus(1024, 50, 3)
	ptrs := make([]*string, len(prompts))
	doms := make([]*string, len(prompts))
	for i := range prompts {
		ptrs[i] = &prompts[i]
	}
	rec := scoredBatch(&testing.T{}, mem, ptrs, doms)
	defer rec.Release()
	op, err := New(Config{Model: m}, mem, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("rows=1024/words=50", func(b *testing.B) {
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			out, err := op.Process(context.Background(), rec)
			if err != nil {
				b.Fatal(err)
			}
			out[0].Release()
		}
		reportRates(b, b.N*int(rec.NumRows()), cpu)
	})
}

// cpuTime is the process's user+system CPU time. On a shared machine the
// wall clock overstates the cost, so benchmarks also report prompts per
// CPU-second (the per-core rate).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportRates(b *testing.B, prompts int, cpuStart time.Duration) {
	b.ReportMetric(float64(prompts)/b.Elapsed().Seconds(), "prompts/s")
	if cpu := cpuTime() - cpuStart; cpu > 0 {
		b.ReportMetric(float64(prompts)/cpu.Seconds(), "prompts/cpu-s")
	}
}
