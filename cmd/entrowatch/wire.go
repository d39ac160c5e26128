package main

import (
	"errors"
	"log/slog"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/streams"
)

// newEstimateOperator loads an estimator artifact into the estimate operator.
func newEstimateOperator(path string, mem memory.Allocator, log *slog.Logger) (streams.Operator, error) {
	return nil, errors.New("--estimator: the estimate operator is not in this build yet")
}

// newClusterOperator loads a topic-cluster artifact into the clustertag operator.
func newClusterOperator(path string, mem memory.Allocator, log *slog.Logger) (streams.Operator, error) {
	return nil, errors.New("--clusters: the clustertag operator is not in this build yet")
}
