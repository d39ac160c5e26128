package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// The summary's labeling-queue line names each entry's LLM when the queue
// holds several (demo --traces with two models), only the domain otherwise.
func TestDemoSummaryQueueNamesModels(t *testing.T) {
	line := func(q []queueRow) string {
		var b bytes.Buffer
		(&demoSummary{Queue: q}).write(&b, 9000, "default")
		for _, l := range bytes.Split(b.Bytes(), []byte("\n")) {
			if bytes.HasPrefix(l, []byte("labeling queue:")) {
				return string(l)
			}
		}
		t.Fatalf("no queue line in:\n%s", b.String())
		return ""
	}
	require.Equal(t, "labeling queue: first small/add2 (estimated 0.529), 2. parity, 3. count_char",
		line([]queueRow{{Model: "small", Domain: "add2", Est: 0.529}, {Model: "small", Domain: "parity"}, {Model: "small", Domain: "count_char"}}))
	require.Equal(t, "labeling queue: first small/add2 (estimated 0.529), 2. large/add2, 3. small/count_char",
		line([]queueRow{{Model: "small", Domain: "add2", Est: 0.529}, {Model: "large", Domain: "add2"}, {Model: "small", Domain: "count_char"}}))
}
