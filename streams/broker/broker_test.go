package broker

import (
	"context"
	"log/slog"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
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
