package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/operators/profile"
	"github.com/entrowatch/entrowatch/schemas"
	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// The child process of TestCrashKill9 runs a replica that appends the
// trace_ids it writes to a file (fsync'd before Write returns) until it is
// killed with SIGKILL: no drain, no commit, no LeaveGroup, sockets reset by
// the kernel, exactly like a crashed or OOM-killed pod.
const childEnv = "ENTROWATCH_RUNNER_CRASH_CHILD" // broker,topic,group,dead,outfile

// TestCrashChild is the child's entry point; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("only runs as the child process of TestCrashKill9")
	}
	f := strings.Split(spec, ",")
	if err := crashChild(f[0], f[1], f[2], f[3], f[4]); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// idFileSink appends one trace_id per line and syncs before returning.
type idFileSink struct {
	f *os.File
}

func (s *idFileSink) Write(_ context.Context, rec arrow.RecordBatch) error {
	ids := rec.Column(schemas.MustIndex(rec.Schema(), schemas.ColTraceID)).(*array.String)
	var b strings.Builder
	for i := 0; i < ids.Len(); i++ {
		b.WriteString(ids.Value(i))
		b.WriteByte('\n')
	}
	time.Sleep(5 * time.Millisecond) // a slow sink, so that the parent kills mid-stream
	if _, err := s.f.WriteString(b.String()); err != nil {
		return err
	}
	return s.f.Sync()
}

func (s *idFileSink) Close(context.Context) error { return s.f.Close() }

func crashChild(addr, topic, group, dead, out string) error {
	log := slog.New(slog.DiscardHandler)
	conn := kafka.DefaultConfig()
	conn.Brokers = []string{addr}
	src, err := kafka.NewSource(conn, sourceConfig(topic, group), log)
	if err != nil {
		return err
	}
	dcfg := kafka.DefaultProducerConfig()
	dcfg.Topic = dead
	dlq, err := kafka.NewProducer(conn, dcfg, log)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	mem := memory.NewGoAllocator()
	chain := func() ([]streams.Operator, error) {
		op, err := profile.New(profile.DefaultConfig(), mem, log)
		return []streams.Operator{op}, err
	}
	cfg := DefaultConfig()
	cfg.CommitInterval = 20 * time.Millisecond
	cfg.SinkBatchRows = 20
	r, err := New(cfg, Parts{Source: src, DeadLetter: dlq, Chain: chain, Sink: &idFileSink{f: f}}, mem, log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	return r.Run(context.Background()) // until SIGKILL
}

func readIDs(t *testing.T, path string) map[string]int {
	t.Helper()
	out := map[string]int{}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return out
	}
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			out[line]++
		}
	}
	return out
}

func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("kill9")
	topics(t, 4, topic)
	topics(t, 1, dead)
	want := ids("k9", 600)
	// Half before the kill, half after: the kill is mid-stream however fast
	// the child runs.
	prod := producer(t, topic)
	produceTraces(t, prod, want[:len(want)/2], 5)

	out := t.TempDir() + "/written"
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{testBroker.Addr(), topic, group, dead, out}, ","))
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	var once sync.Once
	wait := func() { once.Do(func() { _ = cmd.Wait() }) }
	defer func() { _ = cmd.Process.Kill(); wait() }()
	waitFor(t, "the child to write a third", func() bool { return len(readIDs(t, out)) >= len(want)/3 })
	waitFor(t, "a commit by the child", func() bool {
		c, _ := offsets(t, topic, group, 4)
		for _, o := range c {
			if o > 0 {
				return true
			}
		}
		return false
	})
	require.NoError(t, cmd.Process.Kill()) // SIGKILL
	wait()
	produceTraces(t, prod, want[len(want)/2:], 5)
	before := readIDs(t, out)
	require.Less(t, len(before), len(want), "killed mid-stream")

	sink := newMemSink()
	rp := startReplica(t, topic, group, dead, sink, mem, nil)
	waitFor(t, "every trace after the kill", func() bool {
		for _, id := range want {
			if before[id] == 0 && !sink.has(id) {
				return false
			}
		}
		return true
	})
	waitCommitted(t, topic, group, 4)
	rp.stop(t)
	again := 0
	for id := range before {
		if sink.has(id) {
			again++
		}
	}
	t.Logf("child wrote %d traces before SIGKILL; the restart wrote %d, %d of them again (redelivered, deduplicated by trace_id)",
		len(before), len(sink.writes), again)
	committed, end := offsets(t, topic, group, 4)
	require.Equal(t, end, committed)
}
