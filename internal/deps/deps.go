// Package deps pins the module set while the packages that use these modules
// are written in parallel; it is removed once they all import them directly.
package deps

import (
	_ "github.com/ClickHouse/clickhouse-go/v2"
	_ "github.com/apache/arrow-go/v18/arrow/ipc"
	_ "github.com/chdb-io/chdb-go/chdb"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/segmentio/kafka-go"
	_ "github.com/stretchr/testify/require"
	_ "github.com/twmb/franz-go/pkg/kfake"
	_ "go.uber.org/goleak"
	_ "golang.org/x/sync/errgroup"
	_ "gonum.org/v1/gonum/optimize"
	_ "gopkg.in/yaml.v3"
)
