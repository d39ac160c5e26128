package main

import (
	"fmt"
	"log/slog"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"gopkg.in/yaml.v3"

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

// clusterDomainFrom is the run config's clusters_domain_from: which domain
// the estimates are sliced by when clusters is set (clustertag's
// domain_from). "" is the default, caller_else_cluster, and prints as such.
// A value clustertag does not know is refused while the config is read.
type clusterDomainFrom string

func (d *clusterDomainFrom) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	switch s {
	case clustertag.DomainFromCaller, clustertag.DomainFromCluster, clustertag.DomainFromCallerElseCluster:
		*d = clusterDomainFrom(s)
		return nil
	}
	return fmt.Errorf("line %d, clusters_domain_from %q: want %s (the caller's domain, null when it gave none), %s (the cluster label on every row) or %s (the default: the caller's domain, else the cluster label)",
		n.Line, s, clustertag.DomainFromCaller, clustertag.DomainFromCluster, clustertag.DomainFromCallerElseCluster)
}

func (d clusterDomainFrom) MarshalYAML() (any, error) {
	if d == "" {
		return clustertag.DomainFromCallerElseCluster, nil
	}
	return string(d), nil
}
