package main

import (
	"log/slog"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/entrowatch/entrowatch/operators/clustertag"
	"github.com/entrowatch/entrowatch/operators/estimate"
	"github.com/entrowatch/entrowatch/streams"
)

// newEstimateOperator loads an estimator artifact into the estimate operator.
func newEstimateOperator(path string, mem memory.Allocator, log *slog.Logger) (streams.Operator, error) {
	cfg := estimate.DefaultConfig()
	cfg.Path = path
	return estimate.New(cfg, mem, log)
}

// newClusterOperator loads a topic-cluster artifact into the clustertag
// operator; domainFrom is caller, cluster or caller_else_cluster ("" is the default).
func newClusterOperator(path, domainFrom string, mem memory.Allocator, log *slog.Logger) (streams.Operator, error) {
	cfg := clustertag.DefaultConfig()
	cfg.Path = path
	if domainFrom != "" {
		cfg.DomainFrom = domainFrom
	}
	return clustertag.New(cfg, mem, log)
}
