// Package broker runs an embedded Kafka-protocol broker in-process (franz-go's
// kfake), so that one machine needs no Kafka to run entrowatch. It speaks the
// real Kafka wire protocol: any Kafka client, ours included, talks to it over
// TCP exactly as it would to a Kafka cluster.
//
// The embedded broker is a single node meant for one machine, demos, tests and
// benchmarks; production deployments point entrowatch at a real Kafka cluster.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/entrowatch/entrowatch/internal/dirlock"
)

// Config configures the embedded broker. The zero value is not valid; start
// from DefaultConfig.
type Config struct {
	// Listen is the host:port the broker listens on. Default "127.0.0.1:0"
	// (a free port, read it back with Addr).
	Listen string `yaml:"listen"`
	// DataDir, when set, persists topics, offsets and consumer groups there
	// (segments are written as they are produced) and reloads them on start.
	// Default "": in memory, lost on exit. entrowatch run defaults it to
	// <data_dir>/broker unless InMemory is set.
	DataDir string `yaml:"data_dir"`
	// InMemory keeps everything in memory even where a caller would default
	// DataDir (entrowatch run): for throwaway runs and benchmarks. Default
	// false.
	InMemory bool `yaml:"in_memory"`
	// Partitions is the partition count of topics created on first use.
	// Default 4.
	Partitions int `yaml:"partitions"`
	// Topics are created at start with Partitions partitions. Default none.
	Topics []string `yaml:"topics"`
	// MaxMessageBytes is the broker's limit on one produced record batch
	// (Kafka's message.max.bytes). Default 1048588, Kafka's default.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MinSessionTimeout is the smallest consumer-group session timeout the
	// broker accepts. Default 6s, Kafka's default; tests lower it.
	MinSessionTimeout time.Duration `yaml:"min_session_timeout"`
	// Retention drops record batches older than this, consumed or not
	// (Kafka's log.retention.ms). Default 24h; 0 keeps them forever.
	Retention time.Duration `yaml:"retention"`
	// RetentionBytes bounds each partition: the oldest batches beyond it are
	// dropped, consumed or not (Kafka's log.retention.bytes). Default 1 GiB;
	// 0 = no bound. With the defaults the broker's memory or disk stays
	// bounded under endless traffic.
	RetentionBytes int64 `yaml:"retention_bytes"`
	// RetentionCheck is how often retention is applied. Default 1m.
	RetentionCheck time.Duration `yaml:"retention_check"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:0",
		Partitions:        4,
		MaxMessageBytes:   1048588,
		MinSessionTimeout: 6 * time.Second,
		Retention:         24 * time.Hour,
		RetentionBytes:    1 << 30,
		RetentionCheck:    time.Minute,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("broker.listen %q: want host:port (e.g. 127.0.0.1:9092): %w", c.Listen, err)
	}
	if c.Partitions < 1 {
		return fmt.Errorf("broker.partitions %d: want at least 1", c.Partitions)
	}
	if c.MaxMessageBytes < 1024 {
		return fmt.Errorf("broker.max_message_bytes %d: want at least 1024", c.MaxMessageBytes)
	}
	if c.MinSessionTimeout < 0 {
		return fmt.Errorf("broker.min_session_timeout %v: want >= 0", c.MinSessionTimeout)
	}
	if c.Retention < 0 || c.RetentionBytes < 0 {
		return fmt.Errorf("broker.retention %v, broker.retention_bytes %d: want >= 0 (0 = unbounded)", c.Retention, c.RetentionBytes)
	}
	if (c.Retention > 0 || c.RetentionBytes > 0) && c.RetentionCheck <= 0 {
		return fmt.Errorf("broker.retention_check %v: want > 0 when a retention is set", c.RetentionCheck)
	}
	return nil
}

// Broker is a running embedded broker. Close it to stop listening; with a
// DataDir, Close also persists the state.
type Broker struct {
	c      *kfake.Cluster
	addr   string
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	unlock func() error // of DataDir
}

// Start starts the broker and returns once it accepts connections. A nil log
// discards. The caller owns the broker and must Close it.
func Start(cfg Config, log *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host, portStr, _ := net.SplitHostPort(cfg.Listen)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("broker.listen %q: port is not a number", cfg.Listen)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
		kfake.ClusterID("entrowatch"),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.GroupMinSessionTimeout(cfg.MinSessionTimeout),
		kfake.BrokerConfigs(map[string]string{
			"message.max.bytes":   strconv.Itoa(cfg.MaxMessageBytes),
			"log.retention.ms":    strconv.FormatInt(retentionOrNone(cfg.Retention.Milliseconds()), 10),
			"log.retention.bytes": strconv.FormatInt(retentionOrNone(cfg.RetentionBytes), 10),
			"log.segment.bytes":   strconv.FormatInt(segmentBytes(cfg.RetentionBytes), 10),
		}),
		kfake.WithLogger(&logger{log: log}),
	}
	unlock := func() error { return nil }
	if cfg.DataDir != "" && !cfg.InMemory {
		// Two brokers on one data_dir (a run and an entrowatch broker,
		// two runs with the same broker.data_dir) would rewrite each
		// other's files.
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("broker.data_dir: %w", err)
		}
		if unlock, err = dirlock.Lock(cfg.DataDir, "broker.data_dir"); err != nil {
			return nil, err
		}
		keepEmptyPartitions(cfg.DataDir, log)
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if len(cfg.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(cfg.Partitions), cfg.Topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("starting embedded broker on %s: %w (set broker.listen to a free address, or kafka.brokers to use a running Kafka)", cfg.Listen, err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) == 0 {
		c.Close()
		unlock()
		return nil, errors.New("embedded broker started without a listener")
	}
	b := &Broker{c: c, addr: addrs[0], stop: make(chan struct{}), done: make(chan struct{}), unlock: unlock}
	if cfg.Retention > 0 || cfg.RetentionBytes > 0 {
		// kfake applies retention only when asked (or for topics with
		// their own retention settings).
		go func() {
			defer close(b.done)
			t := time.NewTicker(cfg.RetentionCheck)
			defer t.Stop()
			for {
				select {
				case <-b.stop:
					return
				case <-t.C:
					c.ApplyRetention()
				}
			}
		}()
	} else {
		close(b.done)
	}
	dataDir := cfg.DataDir
	if cfg.InMemory || dataDir == "" {
		dataDir = "(in memory)"
	}
	log.Info("embedded broker started", "addr", b.addr, "data_dir", dataDir, "partitions", cfg.Partitions,
		"retention", cfg.Retention, "retention_bytes_per_partition", cfg.RetentionBytes)
	return b, nil
}

// segmentBytes is the size at which a partition's log rolls to a new
// segment file. Retention deletes whole segments only, so a partition holds
// up to retention_bytes plus one segment on disk: Kafka's 100 MiB segments
// would leave a 2 MB bound at 100 MB. An eighth of the bound, between 1 MiB
// and 100 MiB, keeps the overshoot at an eighth.
func segmentBytes(retention int64) int64 {
	const lo, hi = 1 << 20, 100 << 20
	if retention <= 0 {
		return hi
	}
	return min(max(retention/8, lo), hi)
}

// retentionOrNone maps 0 (unbounded here) to Kafka's -1.
func retentionOrNone(v int64) int64 {
	if v <= 0 {
		return -1
	}
	return v
}

// Addr returns the host:port clients connect to.
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker; with a DataDir it first persists the state. The
// context is accepted for symmetry with the other components; kfake's close
// does not block on clients.
func (b *Broker) Close(context.Context) error {
	b.once.Do(func() {
		close(b.stop)
		<-b.done
		b.c.Close()
		b.unlock()
	})
	return nil
}

// logger forwards kfake's errors to slog, and its warnings about its files
// (a write that failed: a full disk under data_dir) at most once per
// diskWarnEvery each; its other warnings (the group protocol's) at debug.
// Its info and debug levels log every request and stay off.
type logger struct {
	log   *slog.Logger
	mu    sync.Mutex
	last  map[string]time.Time // format -> when last logged
	quiet map[string]int       // format -> lines not logged since
}

// diskWarnEvery is the least time between two warnings of one kind about
// the broker's files: a full disk fails every produce.
const diskWarnEvery = 30 * time.Second

// diskWarning reports a kfake warning about its files.
func diskWarning(format string) bool {
	for _, p := range []string{"persist", "rebuildSegments", "partition %s-%d", "delete topic", "compact", "load session", "pids.log", "groups.log"} {
		if strings.HasPrefix(format, p) {
			return true
		}
	}
	return false
}

func (l *logger) Logf(level kfake.LogLevel, format string, args ...any) {
	switch {
	case level == kfake.LogLevelError:
		l.log.Error("broker: " + fmt.Sprintf(format, args...))
	case level == kfake.LogLevelWarn && diskWarning(format):
		l.mu.Lock()
		if l.last == nil {
			l.last, l.quiet = map[string]time.Time{}, map[string]int{}
		}
		now := time.Now()
		if now.Sub(l.last[format]) < diskWarnEvery {
			l.quiet[format]++
			l.mu.Unlock()
			return
		}
		quiet := l.quiet[format]
		l.last[format], l.quiet[format] = now, 0
		l.mu.Unlock()
		l.log.Warn("broker: writing its files under data_dir failed (is the disk full?): "+fmt.Sprintf(format, args...), "not_logged_since_last", quiet)
	case level == kfake.LogLevelWarn:
		l.log.Debug("broker: " + fmt.Sprintf(format, args...))
	}
}
