package broker

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDataDir: with a data dir, records survive a restart of the broker.
func TestDataDir(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Topics = []string{"kept"}
	cfg.Partitions = 1
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	b, err := Start(cfg, log)
	require.NoError(t, err)
	tr := &kafkago.Transport{}
	w := &kafkago.Writer{Addr: kafkago.TCP(b.Addr()), Topic: "kept", RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, Transport: tr}
	require.NoError(t, w.WriteMessages(ctx, kafkago.Message{Value: []byte("one")}, kafkago.Message{Value: []byte("two")}))
	require.NoError(t, w.Close())
	tr.CloseIdleConnections()
	require.NoError(t, b.Close(ctx))

	b, err = Start(cfg, log)
	require.NoError(t, err)
	defer b.Close(ctx)
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{b.Addr()}, Topic: "kept", MaxWait: 50 * time.Millisecond})
	defer r.Close()
	for _, want := range []string{"one", "two"} {
		m, err := r.ReadMessage(ctx)
		require.NoError(t, err)
		require.Equal(t, want, string(m.Value))
	}
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, DefaultConfig().Validate())
	for name, mut := range map[string]func(*Config){
		"listen":            func(c *Config) { c.Listen = "9092" },
		"partitions":        func(c *Config) { c.Partitions = 0 },
		"max_message_bytes": func(c *Config) { c.MaxMessageBytes = 10 },
	} {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			mut(&c)
			require.ErrorContains(t, c.Validate(), "broker."+name)
		})
	}
}

// TestRetention: batches beyond the size bound are dropped, so the broker's
// memory or disk stays bounded under endless traffic.
func TestRetention(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Topics = []string{"bounded"}
	cfg.Partitions = 1
	cfg.RetentionBytes = 4096
	cfg.RetentionCheck = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer b.Close(ctx)
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafkago.Writer{Addr: kafkago.TCP(b.Addr()), Topic: "bounded", RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, Transport: tr}
	for i := range 20 {
		require.NoError(t, w.WriteMessages(ctx, kafkago.Message{Value: make([]byte, 1000+i)}))
	}
	require.NoError(t, w.Close())
	conn, err := kafkago.DialLeader(ctx, "tcp", b.Addr(), "bounded", 0)
	require.NoError(t, err)
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	var first int64
	for time.Now().Before(deadline) {
		if first, err = conn.ReadFirstOffset(); err == nil && first > 10 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Greater(t, first, int64(10), "the oldest batches beyond 4 KiB were not dropped")
	last, err := conn.ReadLastOffset()
	require.NoError(t, err)
	require.EqualValues(t, 20, last, "the newest are kept")
}

// TestNilLogger: a nil logger discards; Start neither crashes nor leaks the
// listener and the retention goroutine (goleak checks at the end).
func TestNilLogger(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RetentionCheck = 10 * time.Millisecond
	var b *Broker
	require.NotPanics(t, func() {
		var err error
		b, err = Start(cfg, nil)
		require.NoError(t, err)
	})
	require.NotEmpty(t, b.Addr())
	require.NoError(t, b.Close(context.Background()))
}

// TestRetentionOnDisk: with a data dir the size bound holds on disk too.
// Retention deletes whole segments, and kfake's 100 MiB default segment kept
// every byte of a partition bounded at 2 MB (14.7 MB in an audit); segments
// of an eighth of the bound keep it near the bound.
func TestRetentionOnDisk(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Topics = []string{"bounded"}
	cfg.Partitions = 1
	cfg.Retention = 0
	cfg.RetentionBytes = 2 << 20
	cfg.RetentionCheck = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer b.Close(ctx)
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafkago.Writer{Addr: kafkago.TCP(b.Addr()), Topic: "bounded", RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, Transport: tr}
	value := make([]byte, 100<<10)
	for range 100 { // 10 MB
		require.NoError(t, w.WriteMessages(ctx, kafkago.Message{Value: value}))
	}
	require.NoError(t, w.Close())
	size := func() int64 {
		var n int64
		filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
					n += fi.Size()
				}
			}
			return nil
		})
		return n
	}
	require.Eventually(t, func() bool { return size() < 4<<20 }, 10*time.Second, 20*time.Millisecond,
		"10 MB produced, bound 2 MiB: the data dir should shrink below 4 MiB, holds %d bytes", size())
	require.Equal(t, int64(1<<20), segmentBytes(1<<20))
	require.Equal(t, int64(100<<20), segmentBytes(0))
	require.Equal(t, int64(100<<20), segmentBytes(1<<40))
}

// TestLoggerDiskWarnings: kfake's warnings about its files (a write that
// failed on a full disk) reach the log, once per diskWarnEvery with a count;
// before, every warning was at debug, and a full data_dir showed only as
// "an unexpected server error" in the producers' errors.
func TestLoggerDiskWarnings(t *testing.T) {
	var buf bytes.Buffer
	l := &logger{log: slog.New(slog.NewTextHandler(&buf, nil))}
	for range 5 {
		l.Logf(kfake.LogLevelWarn, "persist batch %s-%d: %v", "traces", 0, errors.New("write: no space left on device"))
	}
	l.Logf(kfake.LogLevelWarn, "OffsetCommit STALE: group=%s", "g")
	require.Equal(t, 1, strings.Count(buf.String(), "level=WARN"), buf.String())
	require.Contains(t, buf.String(), "is the disk full?")
	require.Contains(t, buf.String(), "no space left on device")
	require.NotContains(t, buf.String(), "STALE", "the group protocol's warnings stay at debug")
	l.last["persist batch %s-%d: %v"] = time.Now().Add(-diskWarnEvery)
	l.Logf(kfake.LogLevelWarn, "persist batch %s-%d: %v", "traces", 0, errors.New("write: no space left on device"))
	require.Contains(t, buf.String(), "not_logged_since_last=4")
}

// TestRestartAfterRetentionDeletedAll: a partition whose every batch
// retention deleted keeps its offsets across a restart. kfake ignores the
// snapshot of a partition without segment files and starts it again at 0,
// while the groups' committed offsets stay: the next messages, acknowledged,
// got offsets below a group's position and were never read (an audit lost
// 300 responses this way, every signal green).
func TestRestartAfterRetentionDeletedAll(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Topics = []string{"gone"}
	cfg.Partitions = 1
	cfg.Retention = 300 * time.Millisecond
	cfg.RetentionCheck = 20 * time.Millisecond
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offsets := func(b *Broker) (int64, int64) {
		conn, err := kafkago.DialLeader(ctx, "tcp", b.Addr(), "gone", 0)
		require.NoError(t, err)
		defer conn.Close()
		first, last, err := conn.ReadOffsets()
		require.NoError(t, err)
		return first, last
	}
	produce := func(b *Broker, values ...string) {
		tr := &kafkago.Transport{}
		defer tr.CloseIdleConnections()
		w := &kafkago.Writer{Addr: kafkago.TCP(b.Addr()), Topic: "gone", RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, Transport: tr}
		for _, v := range values {
			require.NoError(t, w.WriteMessages(ctx, kafkago.Message{Value: []byte(v)}))
		}
		require.NoError(t, w.Close())
	}

	b, err := Start(cfg, log)
	require.NoError(t, err)
	produce(b, "a", "b", "c")
	require.Eventually(t, func() bool { first, _ := offsets(b); return first == 3 }, 10*time.Second, 20*time.Millisecond,
		"retention deletes every batch")
	require.NoError(t, b.Close(ctx))

	for restart := 1; restart <= 2; restart++ { // the second: after a restart without traffic
		b, err = Start(cfg, log)
		require.NoError(t, err)
		first, last := offsets(b)
		require.Equal(t, [2]int64{3, 3}, [2]int64{first, last}, "restart %d: the log starts and ends where it did", restart)
		require.NoError(t, b.Close(ctx))
	}
	b, err = Start(cfg, log)
	require.NoError(t, err)
	defer b.Close(ctx)
	produce(b, "d")
	first, last := offsets(b)
	require.Equal(t, [2]int64{3, 4}, [2]int64{first, last}, "the next message is offset 3")
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{b.Addr()}, Topic: "gone", MaxWait: 50 * time.Millisecond, StartOffset: kafkago.FirstOffset})
	defer r.Close()
	m, err := r.ReadMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "d", string(m.Value))
	require.EqualValues(t, 3, m.Offset)
}
