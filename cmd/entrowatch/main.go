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
	// The first signal starts the graceful stop (the commands drain, finish
	// or say what they left undone); a second one ends the process at once,
	// as without a handler. The default action is restored before the
	// context is cancelled: a second signal sent as soon as the stop shows
	// (in the log, on /readyz) must not find the handler still there, which
	// swallowed it.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		cancel()
	}()
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}
