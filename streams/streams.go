// Package streams moves trace batches from Kafka through the operator chain to a
// sink, at least once: offsets are committed only after the sink confirms.
//
// The contracts every component honours are declared here: an Operator
// transforms record batches, a Sink makes them durable.
package streams

import (
	"context"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
)

// Operator transforms record batches. It must not release in; the batches it
// returns belong to the caller, who releases them. A row that cannot be
// processed becomes a row with a non-"ok" status (and is dead-lettered by the
// stream); an error return means the stream must stop.
type Operator interface {
	Name() string // metric label, log field, error prefix
	Process(ctx context.Context, in arrow.RecordBatch) ([]arrow.RecordBatch, error)
}

// Flusher is implemented by stateful operators (chunk reassembly) that hold
// rows back; Flush emits what they hold, e.g. on shutdown or timeout.
type Flusher interface {
	Flush(ctx context.Context) ([]arrow.RecordBatch, error)
}

// Sink makes batches durable. Write returning nil means the rows are durable
// and their offsets may be committed. Write must not release rec.
type Sink interface {
	Write(ctx context.Context, rec arrow.RecordBatch) error
	Close(ctx context.Context) error
}

// HealthReporter is implemented by sinks that know before a write fails
// that they cannot write now (a ClickHouse insert being retried): the
// stream's readiness (/readyz) follows Healthy.
type HealthReporter interface {
	Healthy() bool
}

// Holder is implemented by sinks that can tell which traces they already
// hold. The stream asks before it dead-letters a chunked trace as incomplete:
// after a restart, the last chunks of a trace that was completed and written
// before it come again without their first chunks, and such a remnant is
// counted, not dead-lettered. Held returns the ids of refs the sink holds; an
// error makes the stream dead-letter them all, as without a Holder.
type Holder interface {
	Held(ctx context.Context, refs []TraceRef) (map[string]bool, error)
}

// TraceRef names a trace to look up: its id, model, and the time of its
// latest chunk (zero when unknown), which bounds the search.
type TraceRef struct {
	ID    string
	Model string
	TS    time.Time
}
