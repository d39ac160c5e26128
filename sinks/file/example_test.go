package file_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/sinks/file"
)

// Scored rows written to a CSV file; the extension picks the format.
func ExampleSink() {
	dir, err := os.MkdirTemp("", "entrowatch-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	mem := memory.DefaultAllocator

	// A scored.v1 batch: three synthetic traces through the profile operator.
	traces := profile.Synthetic(mem, profile.SynthConfig{Traces: 3, Steps: 20, K: 5, Seed: 1, Model: "m"})
	defer traces.Release()
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	if err != nil {
		log.Fatal(err)
	}
	scored, err := op.Process(ctx, traces)
	if err != nil {
		log.Fatal(err)
	}
	defer scored[0].Release()

	path := filepath.Join(dir, "profiles.csv")
	s, err := file.New(file.Config{Path: path}, mem)
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Write(ctx, scored[0]); err != nil { // on disk when it returns
		log.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("rows:", s.Rows())

	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	fmt.Println(sc.Text())
	// Output:
	// rows: 3
	// id,model,domain,correct,n_tokens,mean,std,max,q10,q25,q50,q75,q90,skew,kurt,sea,nll_mean,nll_max,nll_sum,perplexity,min_token_prob,margin_mean,h_top5
}
