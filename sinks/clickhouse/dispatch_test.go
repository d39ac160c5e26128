package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

func TestDispatcherEpisodes(t *testing.T) {
	cfg, _ := migrated(t)
	ctx := context.Background()

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "alarms"))
	require.NoError(t, err)
	defer cluster.Close()

	var mu sync.Mutex
	var hooked []AlarmEvent
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 { // the first POST fails: the dispatcher must retry
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		var e AlarmEvent
		b, _ := io.ReadAll(r.Body)
		require.NoError(t, json.Unmarshal(b, &e))
		hooked = append(hooked, e)
	}))
	defer srv.Close()

	dcfg := DefaultDispatchConfig()
	dcfg.Kafka.Brokers, dcfg.Topic, dcfg.WebhookURL = cluster.ListenAddrs(), "alarms", srv.URL
	d, err := NewDispatcher(ctx, cfg, dcfg, nil)
	require.NoError(t, err)
	defer d.Close()

	write(t, cfg, dropTraffic(48))

	evs, err := d.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"accuracy_drop/m1/A/#1:firing", "cusum/m1/A/#1:firing"}, ids(evs))

	again, err := d.Poll(ctx)
	require.NoError(t, err)
	require.Empty(t, again, "an episode fires once")

	// A restarted dispatcher reads its state from ClickHouse.
	d2, err := NewDispatcher(ctx, cfg, dcfg, nil)
	require.NoError(t, err)
	evs2, err := d2.Poll(ctx)
	require.NoError(t, err)
	require.Empty(t, evs2)
	require.NoError(t, d2.Close())

	// Traffic recovers for six more hours: the accuracy drop resolves (CUSUM
	// keeps its memory longer).
	write(t, cfg, dropTraffic(54)[48*400:])
	res, err := d.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"accuracy_drop/m1/A/#1:resolved"}, ids(res))

	// Everything went to the webhook (after a retry) and to Kafka.
	mu.Lock()
	require.Equal(t, []string{"accuracy_drop/m1/A/#1:firing", "accuracy_drop/m1/A/#1:resolved", "cusum/m1/A/#1:firing"}, ids(hooked))
	require.Equal(t, 4, calls)
	mu.Unlock()

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: cluster.ListenAddrs(), Topic: "alarms", Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var got []AlarmEvent
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for len(got) < 3 {
		m, err := r.ReadMessage(rctx)
		require.NoError(t, err)
		var e AlarmEvent
		require.NoError(t, json.Unmarshal(m.Value, &e))
		require.Equal(t, e.key().String(), string(m.Key))
		require.True(t, strings.HasPrefix(e.ID, string(m.Key)+"#"), "the key is the id before #: %s %s", m.Key, e.ID)
		got = append(got, e)
	}
	require.Equal(t, ids(hooked), ids(got))
	require.Equal(t, "A", got[0].Domain)
	require.Greater(t, got[0].N, uint64(0))
}

// TestDispatcherPartialWebhookFailure: an event the webhook refuses (500,
// after its retries) does not hold back the others of the poll: they reach
// both destinations and are recorded; the refused one is reported in an
// UndeliveredError, not recorded, and sent again at the next poll, to the
// webhook only (the topic has it already). Domains A and B both drop: four
// events; the webhook refuses the accuracy drop of A until told otherwise.
func TestDispatcherPartialWebhookFailure(t *testing.T) {
	cfg, _ := migrated(t)
	ctx := context.Background()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "alarms"))
	require.NoError(t, err)
	defer cluster.Close()
	var mu sync.Mutex
	refuse := true
	var hooked []AlarmEvent
	posts := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e AlarmEvent
		b, _ := io.ReadAll(r.Body)
		if json.Unmarshal(b, &e) != nil {
			http.Error(w, "not an event", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		posts[e.ID]++
		if refuse && e.ID == "accuracy_drop/m1/A/#1:firing" {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		hooked = append(hooked, e)
	}))
	defer srv.Close()
	dcfg := DefaultDispatchConfig()
	dcfg.Kafka.Brokers, dcfg.Topic, dcfg.WebhookURL, dcfg.WebhookRetries = cluster.ListenAddrs(), "alarms", srv.URL, 1
	d, err := NewDispatcher(ctx, cfg, dcfg, nil)
	require.NoError(t, err)
	defer d.Close()
	rows := dropTraffic(48)
	for i := range rows {
		if h := rows[i].ts.Sub(t0) / time.Hour; rows[i].domain == "B" && h >= 46 {
			rows[i].p -= 0.3
		}
	}
	write(t, cfg, rows)

	first, err := d.Poll(ctx)
	var ue *UndeliveredError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, []string{"accuracy_drop/m1/A/#1:firing"}, ids(ue.Events))
	require.ErrorContains(t, err, "500 Internal Server Error: boom")
	require.Equal(t, []string{"accuracy_drop/m1/B/#1:firing", "cusum/m1/A/#1:firing", "cusum/m1/B/#1:firing"}, ids(first),
		"the other events were delivered")
	mu.Lock()
	require.Equal(t, 2, posts["accuracy_drop/m1/A/#1:firing"], "one retry (webhook_retries 1)")
	require.Equal(t, ids(first), ids(hooked))
	refuse = false
	mu.Unlock()
	require.Equal(t, int64(4), topicEnd(t, cluster, "alarms"), "every event reached the topic once")

	// The next poll sends the failed event and nothing delivered already.
	second, err := d.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"accuracy_drop/m1/A/#1:firing"}, ids(second), "the failed event is sent again")
	third, err := d.Poll(ctx)
	require.NoError(t, err)
	require.Empty(t, third, "and recorded")
	mu.Lock()
	require.Len(t, hooked, 4)
	require.Equal(t, 3, posts["accuracy_drop/m1/A/#1:firing"])
	mu.Unlock()
	require.Equal(t, int64(4), topicEnd(t, cluster, "alarms"), "the retry went to the webhook only")
}

// TestDispatcherUndeliveredAfterRestart: an event that failed is recorded by
// no one, so a new dispatcher (the next alarms --once run) sends it, and
// only it, again.
func TestDispatcherUndeliveredAfterRestart(t *testing.T) {
	cfg, _ := migrated(t)
	ctx := context.Background()
	var mu sync.Mutex
	refuse := true
	var hooked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e AlarmEvent
		b, _ := io.ReadAll(r.Body)
		require.NoError(t, json.Unmarshal(b, &e))
		mu.Lock()
		defer mu.Unlock()
		if refuse && e.Kind == "cusum" {
			http.Error(w, "no cusum here", http.StatusUnprocessableEntity)
			return
		}
		hooked = append(hooked, e.ID)
	}))
	defer srv.Close()
	dcfg := DefaultDispatchConfig()
	dcfg.WebhookURL = srv.URL
	write(t, cfg, dropTraffic(48))

	d, err := NewDispatcher(ctx, cfg, dcfg, nil)
	require.NoError(t, err)
	first, err := d.Poll(ctx)
	require.ErrorContains(t, err, "rejected event cusum/m1/A/#1:firing: 422")
	require.Equal(t, []string{"accuracy_drop/m1/A/#1:firing"}, ids(first))
	require.NoError(t, d.Close())

	mu.Lock()
	refuse = false
	mu.Unlock()
	d2, err := NewDispatcher(ctx, cfg, dcfg, nil)
	require.NoError(t, err)
	defer d2.Close()
	second, err := d2.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"cusum/m1/A/#1:firing"}, ids(second))
	mu.Lock()
	require.Equal(t, []string{"accuracy_drop/m1/A/#1:firing", "cusum/m1/A/#1:firing"}, hooked)
	mu.Unlock()
}

// topicEnd is the end offset of partition 0 of topic: the number of
// messages produced to it.
func topicEnd(t *testing.T, cluster *kfake.Cluster, topic string) int64 {
	t.Helper()
	conn, err := kafka.DialLeader(context.Background(), "tcp", cluster.ListenAddrs()[0], topic, 0)
	require.NoError(t, err)
	defer conn.Close()
	end, err := conn.ReadLastOffset()
	require.NoError(t, err)
	return end
}

// TestDispatcherPartialWindow: an alarm's state is that of its latest
// evaluated window (min_n responses and a baseline); a newer window with
// fewer responses changes nothing. Domain A's accuracy drops by 0.4 from
// hour 47 on and the newest window, hour 48, holds 40 responses (min_n is
// 50): the drop is announced from hour 47 (before, the partial window hid
// it). 15 more responses make hour 48 evaluable, still firing: nothing new.
// One response at the start of hour 49 is not a recovery: nothing resolves
// (before, it resolved both alarms).
func TestDispatcherPartialWindow(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer hook.Close()
	dcfg := DefaultDispatchConfig()
	dcfg.WebhookURL = hook.URL
	d, err := NewDispatcher(ctx, cfg, dcfg, nil)
	require.NoError(t, err)
	defer d.Close()

	all := traffic{hours: 50, perHour: 200, seed: 1, shift: func(h int, r *row, rng *rand.Rand) {
		if h >= 47 {
			r.p -= 0.4
		}
	}}.rows()
	hour := func(h int, dom string, from, to int) []row { // rows j in [from, to) of domain dom in hour h
		base := h*400 + map[string]int{"A": 0, "B": 200}[dom]
		return all[base+from : base+to]
	}
	write(t, cfg, append(append(all[:48*400:48*400], hour(48, "A", 0, 40)...), hour(48, "B", 0, 40)...))
	evs, err := d.Poll(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"accuracy_drop/m1/A/#1:firing", "cusum/m1/A/#1:firing"}, ids(evs))
	require.Equal(t, t0.Add(47*time.Hour), evs[0].WindowStart, "announced from the newest evaluated window")

	write(t, cfg, append(hour(48, "A", 40, 55), hour(48, "B", 40, 55)...))
	evs, err = d.Poll(ctx)
	require.NoError(t, err)
	require.Empty(t, evs)

	write(t, cfg, hour(49, "A", 0, 1))
	evs, err = d.Poll(ctx)
	require.NoError(t, err)
	require.Empty(t, evs, "one response of a new window is no recovery")

	cs, err := CurrentAlarms(ctx, conn, cfg.Database)
	require.NoError(t, err)
	var firing []string
	for _, c := range cs {
		if c.Firing {
			firing = append(firing, fmt.Sprintf("%s/%s %s n=%d", c.Kind, c.Domain, c.WindowStart.Format("15:04"), c.N))
		}
	}
	require.Equal(t, []string{"accuracy_drop/A 00:00 n=55", "cusum/A 00:00 n=55"}, firing, "the state of hour 48, evaluated at 55 responses")
	var young uint64
	require.NoError(t, conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".alarm_checks WHERE window_start = ? AND evaluated = 0", t0.Add(49*time.Hour)).Scan(&young))
	require.NotZero(t, young, "hour 49 is checked but not evaluated")
}

// dropTraffic is the given hours of model m1's traffic in which the accuracy
// of domain A drops in hours 46-47 (an accuracy_drop and a CUSUM episode).
func dropTraffic(hours int) []row {
	shift := func(h int, r *row, rng *rand.Rand) {
		if h >= 46 && h < 48 {
			r.p -= 0.3
		}
	}
	return traffic{hours: hours, perHour: 200, seed: 1, shift: shift}.rows()
}

func ids(evs []AlarmEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	sort.Strings(out)
	return out
}

func TestDispatchConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg DispatchConfig
		err string
	}{
		{DispatchConfig{}, "no destination"},
		{DispatchConfig{Topic: "a"}, "needs brokers"},
		{DispatchConfig{WebhookURL: "ftp://x"}, "http:// or https://"},
		{DispatchConfig{WebhookURL: "http://x"}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.err == "" {
			require.NoError(t, err)
		} else {
			require.ErrorContains(t, err, tc.err)
		}
	}
}
