package runner

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/streams"
	"github.com/entrowatch/entrowatch/streams/kafka"
)

// The child process of TestAssignedPartitionsDuringRebalance is a group
// member with a 5 s session that fetches (and commits nothing) until it is
// killed with SIGKILL: no LeaveGroup, so the group learns of its death only
// when its session expires.
const memberChildEnv = "ENTROWATCH_RUNNER_MEMBER_CHILD" // broker,topic,group

// memberChildSession is the child's source.session_timeout: how long the
// group waits for it after it died.
const memberChildSession = 5 * time.Second

// TestMemberChild is the child's entry point; it does nothing in a normal run.
func TestMemberChild(t *testing.T) {
	spec := os.Getenv(memberChildEnv)
	if spec == "" {
		t.Skip("only runs as the child process of TestAssignedPartitionsDuringRebalance")
	}
	f := strings.Split(spec, ",")
	c := kafka.DefaultConfig()
	c.Brokers = []string{f[0]}
	sc := sourceConfig(f[1], f[2])
	sc.SessionTimeout, sc.RebalanceTimeout = memberChildSession, memberChildSession
	src, err := kafka.NewSource(c, sc, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintln(os.Stderr, "member child:", err)
		os.Exit(1)
	}
	for { // until SIGKILL
		_, _ = src.Fetch(context.Background())
	}
}

// TestAssignedPartitionsDuringRebalance is the audit's scenario: a replica
// is killed (kill -9) and restarted at once. The restarted member's join
// starts a rebalance that waits for the dead member's session to expire,
// and meanwhile no replica consumes anything while their lag series are
// deleted, so no alert on lag could see it. entrowatch_stream_assigned_partitions
// says so on the replica that survived: 1 of the 2 partitions, 0 while the
// group waits for the dead member, 1 again once the restarted replica
// shares them; each new assignment is logged.
func TestAssignedPartitionsDuringRebalance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("assigned")
	topics(t, 2, topic, dead)

	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^TestMemberChild$")
	cmd.Env = append(os.Environ(), memberChildEnv+"="+strings.Join([]string{testBroker.Addr(), topic, group}, ","))
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	var once sync.Once
	wait := func() { once.Do(func() { _ = cmd.Wait() }) }
	defer func() { _ = cmd.Process.Kill(); wait() }()

	a, aLogs := startWithSourceWatermarks(t, topic, group, dead, mem)
	assigned := func(rp *replica) float64 { return testutil.ToFloat64(rp.r.m.assigned) }
	waitFor(t, "the partitions shared with the child", func() bool { return assigned(a) == 1 })
	require.Contains(t, aLogs.String(), "partitions assigned")

	require.NoError(t, cmd.Process.Kill()) // SIGKILL: no LeaveGroup
	wait()
	b, bLogs := startWithSourceWatermarks(t, topic, group, dead, mem) // the restart
	waitFor(t, "no partition on the surviving replica while the group waits for the dead member", func() bool { return assigned(a) == 0 })
	require.Zero(t, assigned(b), "nor on the restarted one")
	waitFor(t, "the partitions shared again once the dead member's session expired", func() bool {
		return assigned(a) == 1 && assigned(b) == 1
	})
	waitFor(t, "the new assignment logged", func() bool { return strings.Count(aLogs.String(), "msg=\"partitions assigned\"") >= 2 })
	require.Contains(t, aLogs.String(), "partitions revoked")
	require.Contains(t, bLogs.String(), "partitions assigned")
	require.GreaterOrEqual(t, testutil.ToFloat64(a.r.m.changes), 3.0, "assigned, revoked while the group waited, assigned again")
	a.stop(t)
	b.stop(t)
}

// startWithSourceWatermarks starts a replica like startOps whose
// Watermarks are its kafka Source's own, as entrowatch run wires them.
func startWithSourceWatermarks(t *testing.T, topic, group, dead string, mem memory.Allocator) (*replica, *logBuf) {
	t.Helper()
	var src *kafka.Source
	ready := make(chan struct{})
	wm := func(ctx context.Context) (map[int]kafka.PartitionOffsets, error) {
		select {
		case <-ready:
			return src.Watermarks(ctx)
		default:
			return map[int]kafka.PartitionOffsets{}, nil
		}
	}
	rp, logs := startOps(t, conn(), topic, group, dead, newMemSink(), mem, wm, nil)
	src = rp.src
	close(ready)
	return rp, logs
}

// TestAssignmentLoggedOnce: after a rebalance the new assignment was not
// logged when the first fetch of a partition came before the refresh of
// the assignment (every stream.lag_interval, 5 s): the fetch marked it
// assigned, so the refresh saw nothing new ("partitions assigned" twice in
// 15 minutes despite 5 rebalances). Each new assignment is logged once now;
// the assigned-partitions gauge follows the fetch at once.
func TestAssignmentLoggedOnce(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	topic, dead, group := names("assignlog")
	topics(t, 1, topic, dead)
	rp, logs := startOps(t, conn(), topic, group, dead, newMemSink(), mem, nil, nil)
	assignedLines := func() int { return strings.Count(logs.String(), `msg="partitions assigned"`) }
	gauge := func() float64 { return testutil.ToFloat64(rp.r.m.assigned) }
	changes := func() float64 { return testutil.ToFloat64(rp.r.m.changes) }

	rp.r.refreshLag(map[int]kafka.PartitionOffsets{0: {High: 10, Next: 0}, 1: {High: 10, Next: 0}})
	require.Equal(t, 1, assignedLines())
	require.Equal(t, 2.0, gauge())
	rp.r.refreshLag(map[int]kafka.PartitionOffsets{0: {High: 10, Next: 0}, 1: {High: 10, Next: 0}})
	require.Equal(t, 1, assignedLines(), "the same assignment is not logged again")
	require.Equal(t, 1.0, changes(), "the first assignment is a change, the same one again is not")

	rp.r.refreshLag(map[int]kafka.PartitionOffsets{}) // a rebalance
	require.Contains(t, logs.String(), `msg="partitions revoked (rebalance): their lag and uncommitted series are deleted" topic=`+topic+` partitions=0,1`)
	require.Zero(t, gauge(), "nothing consumed during the rebalance")
	require.Equal(t, 2.0, changes())

	// The rebalance gives partition 1 back; its first message comes before
	// the next refresh.
	rp.r.fetched(kafka.Message{Topic: topic, Partition: 1, Offset: 4, HighWaterMark: 10})
	require.Equal(t, 1.0, gauge(), "consuming partition 1 as soon as it is fetched from")
	require.Equal(t, 2.0, changes(), "a fetch is not counted: the refresh counts the change")
	rp.r.refreshLag(map[int]kafka.PartitionOffsets{1: {High: 10, Next: 4}})
	require.Equal(t, 2, assignedLines(), "the new assignment is logged:\n%s", logs.String())
	require.Contains(t, logs.String(), `msg="partitions assigned" topic=`+topic+` partitions=1 assigned=1`)
	require.Equal(t, 1.0, gauge())
	require.Equal(t, 3.0, changes())
	rp.stop(t)
}

// TestAssignedGaugeNeedsWatermarks: without Parts.Watermarks the runner
// does not know its assignment, and exports no assigned-partitions series
// (a 0 would say that nothing is consumed).
func TestAssignedGaugeNeedsWatermarks(t *testing.T) {
	topic, dead, group := names("assignreg")
	src, err := kafka.NewSource(conn(), sourceConfig(topic, group), nil)
	require.NoError(t, err)
	defer src.Close()
	dcfg := kafka.DefaultProducerConfig()
	dcfg.Topic = dead
	dlq, err := kafka.NewProducer(conn(), dcfg, nil)
	require.NoError(t, err)
	defer dlq.Close()
	for _, wm := range []func(context.Context) (map[int]kafka.PartitionOffsets, error){nil, src.Watermarks} {
		reg := prometheus.NewRegistry()
		_, err := New(DefaultConfig(), Parts{Source: src, DeadLetter: dlq, Chain: func() ([]streams.Operator, error) { return nil, nil }, Sink: newMemSink(), Watermarks: wm}, nil, nil, reg)
		require.NoError(t, err)
		n, err := testutil.GatherAndCount(reg, "entrowatch_stream_assigned_partitions", "entrowatch_stream_assignment_changes_total")
		require.NoError(t, err)
		if wm == nil {
			require.Zero(t, n)
		} else {
			require.Equal(t, 2, n)
		}
	}
}
