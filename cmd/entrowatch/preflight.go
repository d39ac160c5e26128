package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

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
			errs = append(errs, fmt.Errorf("estimator: %w%s", err, relativeTo(cfg.Estimator, err)))
		}
	}
	if cfg.Clusters != "" {
		if _, err := clustertag.Load(cfg.Clusters); err != nil {
			errs = append(errs, fmt.Errorf("clusters: %w%s", err, relativeTo(cfg.Clusters, err)))
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

// relativeTo says, for a relative path that does not exist, where it was
// looked for: paths in the configuration are relative to the directory
// entrowatch runs in, not to the configuration file.
func relativeTo(path string, err error) string {
	if filepath.IsAbs(path) || !errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	wd, werr := os.Getwd()
	if werr != nil {
		return ""
	}
	return fmt.Sprintf(" (a relative path is read from the working directory %s, not from the configuration file's)", wd)
}
