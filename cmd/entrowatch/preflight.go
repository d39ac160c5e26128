package main

import (
	"errors"
	"fmt"

	"github.com/entrowatch/entrowatch/operators/clustertag"
	"github.com/entrowatch/entrowatch/operators/estimate"
)

// preflight reads every file the run configuration names (estimator,
// clusters, TLS material) and reports what is missing or malformed, each
// with its key, before anything starts: a missing estimator used to be
// reported after the managed ClickHouse had started and been migrated, and a
// missing Kafka CA file came with a hint about create_topics.
func preflight(cfg runConfig) error {
	var errs []error
	if cfg.Estimator != "" {
		if _, err := estimate.Load(cfg.Estimator); err != nil {
			errs = append(errs, fmt.Errorf("estimator: %w", err))
		}
	}
	if cfg.Clusters != "" {
		if _, err := clustertag.Load(cfg.Clusters); err != nil {
			errs = append(errs, fmt.Errorf("clusters: %w", err))
		}
	}
	if len(cfg.Kafka.Brokers) > 0 {
		errs = append(errs, cfg.Kafka.CheckFiles())
	}
	if cfg.Sink != "file" {
		errs = append(errs, cfg.ClickHouse.Conn.CheckFiles())
	}
	return errors.Join(errs...)
}
