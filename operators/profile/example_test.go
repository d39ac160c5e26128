package profile_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams/ingest"
)

// A chat completion with logprobs, read from JSON Lines and profiled.
func ExampleOperator() {
	const responses = `{"id":"r1","model":"gpt-x","choices":[{"index":0,"finish_reason":"stop","logprobs":{"content":[` +
		`{"token":"4","logprob":-0.01,"top_logprobs":[{"token":"4","logprob":-0.01},{"token":"5","logprob":-4.6}]},` +
		`{"token":".","logprob":-0.5,"top_logprobs":[{"token":".","logprob":-0.5},{"token":"!","logprob":-1.0}]}]}}]}` + "\n"

	mem := memory.DefaultAllocator
	cfg := ingest.DefaultConfig()
	cfg.Float64 = true // exact features for offline scoring
	r := ingest.NewReader(strings.NewReader(responses), cfg, mem)
	defer r.Release()
	op, err := profile.New(profile.DefaultConfig(), mem, nil)
	if err != nil {
		log.Fatal(err)
	}
	for {
		traces, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		out, err := op.Process(context.Background(), traces)
		traces.Release() // the scored batch keeps what it needs
		if err != nil {
			log.Fatal(err)
		}
		scored := out[0]
		col := func(name string) *array.Float64 {
			return scored.Column(schemas.MustIndex(schemas.Scored, name)).(*array.Float64)
		}
		id := scored.Column(schemas.MustIndex(schemas.Scored, schemas.ColTraceID)).(*array.String)
		status := scored.Column(schemas.MustIndex(schemas.Scored, schemas.ColStatus)).(*array.String)
		n := scored.Column(schemas.MustIndex(schemas.Scored, schemas.ColNTokens)).(*array.Int32)
		for i := range int(scored.NumRows()) {
			fmt.Printf("%s status=%s n_tokens=%d\n", id.Value(i), status.Value(i), n.Value(i))
			for _, name := range []string{"mean", "max", "nll_mean", "perplexity"} {
				fmt.Printf("  %-10s %.6f\n", name, col(name).Value(i))
			}
		}
		scored.Release()
	}
	// Output:
	// r1 status=ok n_tokens=2
	//   mean       0.363642
	//   max        0.671145
	//   nll_mean   0.255000
	//   perplexity 1.290462
}
