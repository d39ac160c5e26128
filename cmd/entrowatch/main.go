// Command entrowatch estimates an LLM's accuracy per traffic slice from the
// log-probabilities it already returns. See README.md and DESIGN.md.
//
// This package is the only place that reads flags, environment and config
// files, and the only place components are wired together.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
