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
	// The first signal starts the graceful stop (the commands drain, finish
	// or say what they left undone); a second one ends the process at once,
	// as without a handler.
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
