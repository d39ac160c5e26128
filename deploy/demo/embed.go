// Package demo bundles the data `entrowatch demo` replays: a sample of the
// tinylm decoding traces (see README.md), embedded so that the binary runs
// the demo from any directory.
package demo

import _ "embed"

// Traces is tinylm-sample.jsonl.gz: gzip JSON Lines, OpenAI chat-completion
// shape with top-20 logprobs plus the fields domain, prompt and correct.
//
//go:embed tinylm-sample.jsonl.gz
var Traces []byte
