package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/stretchr/testify/require"
)

// TestDispatcherKeyCollision: an alarm is the tuple (kind, model, domain,
// feature). Model "org", domain "a/b" degrades while model "org/a", domain
// "b" stays healthy; both joined to "accuracy_drop/org/a/b/", so the healthy
// check overwrote the firing one and nothing was announced (a tenant could
// silence another's alarms by naming). Now the degraded slice fires, once,
// with its own fields, and the healthy one records nothing.
func TestDispatcherKeyCollision(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	hook, hooked := eventHook(t)
	dcfg := DefaultDispatchConfig()
	dcfg.WebhookURL = hook
	d, err := NewDispatcher(ctx, cfg, dcfg, nil)
	require.NoError(t, err)
	defer d.Close()

	write(t, cfg, renamed(dropTraffic(48), "", map[string][2]string{"A": {"org", "a/b"}, "B": {"org/a", "b"}}))

	evs, err := d.Poll(ctx)
	require.NoError(t, err)
	want := []string{"accuracy_drop|org|a/b||#1:firing", "cusum|org|a/b||#1:firing"}
	require.Equal(t, want, fields(evs), "the degraded slice fires")
	require.Equal(t, []string{"accuracy_drop/org/a%2Fb/#1:firing", "cusum/org/a%2Fb/#1:firing"}, ids(evs))
	require.Equal(t, want, fields(hooked()))
	require.Equal(t, []string{"accuracy_drop|org|a/b||firing", "cusum|org|a/b||firing"}, storedStates(t, conn, cfg.Database))

	again, err := d.Poll(ctx)
	require.NoError(t, err)
	require.Empty(t, again)
	require.Len(t, hooked(), 2)
}

// TestDispatcherSlashModelEpisodes: model "meta-llama/L3" (Hugging Face ids
// hold a "/") fires, resolves because its traffic disappeared, and fires
// again: one event each, with the real model, domain and feature, nothing
// sent twice. Before, the resolution split the joined key back into model
// "meta-llama", domain "L3", feature "math/", recorded that, re-sent it at
// every poll, and lost or repeated the next episode's events.
func TestDispatcherSlashModelEpisodes(t *testing.T) {
	cfg, conn := migrated(t)
	ctx := context.Background()
	hook, hooked := eventHook(t)
	dcfg := DefaultDispatchConfig()
	dcfg.WebhookURL = hook
	d, err := NewDispatcher(ctx, cfg, dcfg, nil)
	require.NoError(t, err)
	defer d.Close()
	slices := map[string][2]string{"A": {"meta-llama/L3", "math"}, "B": {"m1", "B"}}
	poll := func() []AlarmEvent {
		t.Helper()
		evs, err := d.Poll(ctx)
		require.NoError(t, err)
		again, err := d.Poll(ctx)
		require.NoError(t, err)
		require.Empty(t, fields(again), "nothing is sent twice")
		return evs
	}

	write(t, cfg, renamed(dropTraffic(48), "", slices))
	evs := poll()
	require.Equal(t, []string{"accuracy_drop|meta-llama/L3|math||#1:firing", "cusum|meta-llama/L3|math||#1:firing"}, fields(evs))
	require.Equal(t, []string{"accuracy_drop/meta-llama%2FL3/math/#1:firing", "cusum/meta-llama%2FL3/math/#1:firing"}, ids(evs))

	// Traffic of another model only, 200 hours on: every window of the
	// slice has left the lookback.
	later := t0.Add(200 * time.Hour)
	write(t, cfg, []row{{id: "later-1", ts: later, model: "other", domain: "x", p: 0.8, correct: -1}})
	evs = poll()
	require.Equal(t, []string{"accuracy_drop|meta-llama/L3|math||#1:resolved", "cusum|meta-llama/L3|math||#1:resolved"}, fields(evs))
	require.Equal(t, []string{"accuracy_drop/meta-llama%2FL3/math/#1:resolved", "cusum/meta-llama%2FL3/math/#1:resolved"}, ids(evs))
	require.Equal(t, []string{"accuracy_drop|meta-llama/L3|math||resolved", "cusum|meta-llama/L3|math||resolved"}, storedStates(t, conn, cfg.Database),
		"recorded under the slice's own columns")

	// The slice comes back and degrades again: a second episode.
	back := renamed(dropTraffic(48), "back-", slices)
	for i := range back {
		back[i].ts = back[i].ts.Add(later.Sub(t0))
	}
	write(t, cfg, back)
	evs = poll()
	require.Equal(t, []string{"accuracy_drop|meta-llama/L3|math||#2:firing", "cusum|meta-llama/L3|math||#2:firing"}, fields(evs))
	require.Equal(t, []string{"accuracy_drop|meta-llama/L3|math||firing", "cusum|meta-llama/L3|math||firing"}, storedStates(t, conn, cfg.Database))

	require.Equal(t, []string{
		"accuracy_drop|meta-llama/L3|math||#1:firing", "accuracy_drop|meta-llama/L3|math||#1:resolved", "accuracy_drop|meta-llama/L3|math||#2:firing",
		"cusum|meta-llama/L3|math||#1:firing", "cusum|meta-llama/L3|math||#1:resolved", "cusum|meta-llama/L3|math||#2:firing",
	}, fields(hooked()), "the webhook got each event once")
}

// TestAlarmKeyString: the key in event ids and Kafka message keys names one
// alarm: "%", "/", "#", control characters and invalid UTF-8 are
// percent-encoded, so no two tuples give one string and an id prints on one
// line; other characters stay as they are.
func TestAlarmKeyString(t *testing.T) {
	for _, tc := range []struct {
		key  alarmKey
		want string
	}{
		{alarmKey{"accuracy_drop", "m1", "math", ""}, "accuracy_drop/m1/math/"},
		{alarmKey{"psi", "meta-llama/L3", "math", "max"}, "psi/meta-llama%2FL3/math/max"},
		{alarmKey{"psi", "org", "a/b", ""}, "psi/org/a%2Fb/"},
		{alarmKey{"psi", "org/a", "b", ""}, "psi/org%2Fa/b/"},
		{alarmKey{"psi", "org%2Fa", "b", ""}, "psi/org%252Fa/b/"},
		{alarmKey{"cusum", "llama3:8b", "x#1:firing", ""}, "cusum/llama3:8b/x%231:firing/"},
		{alarmKey{"cusum", "m", "\x1b[31mRED\x1b[0m\nFAKE-ROW", ""}, "cusum/m/%1B[31mRED%1B[0m%0AFAKE-ROW/"},
		{alarmKey{"cusum", "m", "bad\xffutf8 é\u0085", ""}, "cusum/m/bad%FFutf8 é%C2%85/"},
	} {
		require.Equal(t, tc.want, tc.key.String(), "%#v", tc.key)
	}
	// Injective over tuples of awkward parts.
	parts := []string{"", "a", "/", "a/", "/a", "%", "%2F", "#", "a#1", "\n", "%0A"}
	seen := map[string]alarmKey{}
	for _, m := range parts {
		for _, dm := range parts {
			for _, f := range parts {
				k := alarmKey{"psi", m, dm, f}
				s := k.String()
				prev, dup := seen[s]
				require.False(t, dup, "%#v and %#v both give %q", prev, k, s)
				seen[s] = k
			}
		}
	}
}

// renamed gives the rows of domain A and B the model and domain of slices
// ("A" and "B"), and prefixes their ids.
func renamed(rows []row, prefix string, slices map[string][2]string) []row {
	for i := range rows {
		s := slices[rows[i].domain]
		rows[i].id = prefix + rows[i].id
		rows[i].model, rows[i].domain = s[0], s[1]
	}
	return rows
}

// fields is "kind|model|domain|feature|#episode:status" of each event, sorted.
func fields(evs []AlarmEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%s|%s|%s|%s|#%d:%s", e.Kind, e.Model, e.Domain, e.Feature, e.Episode, e.Status)
	}
	sort.Strings(out)
	return out
}

// storedStates is "kind|model|domain|feature|state" of each key of db's
// alarm_state (its newest version), sorted.
func storedStates(t *testing.T, conn driver.Conn, db string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT kind, model, domain, feature, argMax(state, version) FROM "+db+".alarm_state GROUP BY kind, model, domain, feature ORDER BY kind, model, domain, feature")
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k, m, d, f, s string
		require.NoError(t, rows.Scan(&k, &m, &d, &f, &s))
		out = append(out, k+"|"+m+"|"+d+"|"+f+"|"+s)
	}
	require.NoError(t, rows.Err())
	return out
}

// eventHook is a webhook that accepts every event; hooked returns those it
// received.
func eventHook(t *testing.T) (url string, hooked func() []AlarmEvent) {
	t.Helper()
	var mu sync.Mutex
	var got []AlarmEvent
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e AlarmEvent
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []AlarmEvent {
		mu.Lock()
		defer mu.Unlock()
		return append([]AlarmEvent(nil), got...)
	}
}
