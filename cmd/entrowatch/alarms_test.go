package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

// alarms --list shows what fires now: the state of each alarm's latest
// evaluated window. Domain A's accuracy fell in hour 47; hour 48 has just
// begun (20 responses, min_n is 50), which must not hide the drop (before,
// the list read the newest window and said "0 alarms firing").
func TestAlarmsListPartialWindow(t *testing.T) {
	dsn := migratedServer(t)
	dropOfA(t, dsn, 4820)

	stdout, stderr, code := runCLI(t, "alarms", "--clickhouse", dsn, "--list")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Equal(t, "2 alarms firing", lines[len(lines)-1], stdout)
	require.Contains(t, stdout, "accuracy_drop  m1     A")
	require.Contains(t, stdout, "2026-03-02T23:00:00Z", "the window of hour 47, the newest one evaluated")
	require.Contains(t, stdout, "cusum")
}

// alarms --once delivers every event the webhook accepts although it
// refuses another one (500, after its retries): the accepted ones are printed
// and recorded, the refused one is reported and the exit status is 1; the
// next run delivers it, and only it. Before, the refusal aborted the poll and
// the events after it waited for a later run.
func TestAlarmsOnceWebhookRefusesOne(t *testing.T) {
	dsn := migratedServer(t)
	ctx := context.Background()
	cfg := clickhouse.DefaultConfig()
	cfg.DSN = dsn
	conn, err := clickhouse.Open(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	// Domains A and B both drop in hour 47: four alarms (accuracy_drop and
	// cusum of each).
	require.NoError(t, conn.Exec(ctx, `INSERT INTO default.scored (trace_id, ts, model, domain, p_correct, status)
SELECT concat(dom, toString(number)), toDateTime('2026-03-01 00:00:00', 'UTC') + intDiv(number, 100) * 3600 + number % 100 * 30, 'm1', dom,
    if(intDiv(number, 100) >= 47, 0.3, 0.8) + number % 5 / 50, 'ok'
FROM system.numbers ARRAY JOIN ['A', 'B'] AS dom LIMIT 9600`))

	var mu sync.Mutex
	refuse := true
	var hooked []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e clickhouse.AlarmEvent
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if refuse && e.ID == "cusum/m1/A/#1:firing" {
			http.Error(w, "cannot store this one", http.StatusInternalServerError)
			return
		}
		hooked = append(hooked, e.ID)
	}))
	defer hook.Close()

	args := []string{"alarms", "--clickhouse", dsn, "--webhook", hook.URL, "--webhook-retries", "0", "--once"}
	stdout, stderr, code := runCLI(t, args...)
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "alarms: 3 new events published, 1 not delivered (the next run sends them again)")
	require.Contains(t, stderr, "cusum/m1/A/#1:firing")
	require.Contains(t, stderr, "500 Internal Server Error: cannot store this one")
	require.Equal(t, 3, strings.Count(stdout, "\n"), stdout)
	require.NotContains(t, stdout, "cusum/m1/A/#1:firing")
	mu.Lock()
	require.ElementsMatch(t, []string{"accuracy_drop/m1/A/#1:firing", "accuracy_drop/m1/B/#1:firing", "cusum/m1/B/#1:firing"}, hooked)
	refuse = false
	mu.Unlock()

	stdout, stderr, code = runCLI(t, args...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stderr, "alarms: 1 new events published")
	require.Contains(t, stdout, `"id":"cusum/m1/A/#1:firing"`)
	require.Equal(t, 1, strings.Count(stdout, "\n"), stdout)
	mu.Lock()
	require.Len(t, hooked, 4, "nothing announced twice")
	mu.Unlock()
}

// alarms without a destination is a usage error, and the usage says one is
// required.
func TestAlarmsNeedsDestination(t *testing.T) {
	_, stderr, code := runCLI(t, "alarms", "--clickhouse", "clickhouse://127.0.0.1:1", "--once")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "no destination: give --webhook URL and/or --topic T --brokers H:P,..")
	out, _, code := runCLI(t, "alarms", "-h")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Usage: entrowatch alarms --clickhouse DSN (--webhook URL | --topic T --brokers H:P,.. | both)")
	require.Contains(t, out, "One destination is required")
}

// TestAlarmsMetrics: alarms --metrics shows the dispatcher's own health to
// Prometheus: polls, failed polls (here a webhook refusing every event, so
// each poll fails), events published, the time of the last successful poll,
// and /readyz 503 when no poll succeeded for 3 intervals. The dispatcher,
// which pages on accuracy drift, had no metrics: its death or a dead webhook
// went unseen.
func TestAlarmsMetrics(t *testing.T) {
	dsn := migratedServer(t)
	dropOfA(t, dsn, 4800)
	ctx := context.Background()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	defer hook.Close()

	addr := freeAddr(t)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var stdout bytes.Buffer
	stderr := &syncWriter{b: &strings.Builder{}}
	go func() {
		done <- dispatch(cctx, []string{"alarms", "--clickhouse", dsn, "--webhook", hook.URL, "--webhook-retries", "0",
			"--interval", "200ms", "--metrics", addr}, &stdout, stderr)
	}()
	var body string
	deadline := time.Now().Add(30 * time.Second) // a guard against hanging, not a speed assertion
	for time.Now().Before(deadline) {
		if _, body = get("http://" + addr + "/metrics"); strings.Contains(body, "entrowatch_alarms_poll_errors_total 3") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Contains(t, body, "entrowatch_alarms_poll_errors_total 3", body)
	require.Regexp(t, `entrowatch_alarms_polls_total [3-9]`, body)
	require.Contains(t, body, "entrowatch_alarms_last_success_timestamp_seconds 0")
	for time.Now().Before(deadline) {
		if code, _ := get("http://" + addr + "/readyz"); code == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, why := get("http://" + addr + "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, "no poll succeeded for 3 intervals")
	require.Contains(t, why, "no poll succeeded")
	cancel()
	require.Equal(t, 0, <-done)
}

// TestAlarmMetricsSuccess: a successful poll sets the time of the last
// success and counts the events.
func TestAlarmMetricsSuccess(t *testing.T) {
	m := newAlarmMetrics(time.Minute)
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	m.observe(now, 2, nil)
	m.observe(now.Add(time.Minute), 0, errors.New("clickhouse: connection refused"))
	require.Equal(t, 2.0, testutil.ToFloat64(m.polls))
	require.Equal(t, 1.0, testutil.ToFloat64(m.errs))
	require.Equal(t, 2.0, testutil.ToFloat64(m.events))
	require.Equal(t, float64(now.Unix()), testutil.ToFloat64(m.last))
}

// dropOfA stores n responses of model m1, domain A, 100 an hour from
// 2026-03-01 00:00 UTC, whose accuracy falls from about 0.8 to 0.3 in hour
// 47: accuracy_drop and cusum fire there.
func dropOfA(t *testing.T, dsn string, n int) {
	t.Helper()
	ctx := context.Background()
	cfg := clickhouse.DefaultConfig()
	cfg.DSN = dsn
	conn, err := clickhouse.Open(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.Exec(ctx, fmt.Sprintf(`INSERT INTO default.scored (trace_id, ts, model, domain, p_correct, status)
SELECT concat('r', toString(number)), toDateTime('2026-03-01 00:00:00', 'UTC') + intDiv(number, 100) * 3600 + number %% 100 * 30, 'm1', 'A',
    if(intDiv(number, 100) >= 47, 0.3, 0.8) + number %% 5 / 50, 'ok'
FROM system.numbers LIMIT %d`, n)))
}

// TestAlarmsTenantTextAndWebhookSecrets: what alarms prints comes from
// tenants (model, domain) and from the webhook (its reply), and the webhook
// URL is a secret. A domain with an escape sequence and a newline is quoted
// in --list (it coloured the terminal and forged a table row) and
// percent-encoded in event ids; a webhook reply with control characters is
// quoted; errors on stderr, with --once and in the polling log (alarm poll
// failed), name the webhook as scheme://host:port/… (they printed its
// credentials, path token and query).
func TestAlarmsTenantTextAndWebhookSecrets(t *testing.T) {
	dsn := migratedServer(t)
	ctx := context.Background()
	cfg := clickhouse.DefaultConfig()
	cfg.DSN = dsn
	conn, err := clickhouse.Open(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	evil := "\x1b[31mRED\x1b[0m\nFAKE-ROW"
	require.NoError(t, conn.Exec(ctx, `INSERT INTO default.scored (trace_id, ts, model, domain, p_correct, status)
SELECT concat('r', toString(number)), toDateTime('2026-03-01 00:00:00', 'UTC') + intDiv(number, 100) * 3600 + number % 100 * 30, 'esc-model', ?,
    if(intDiv(number, 100) >= 47, 0.3, 0.8) + number % 5 / 50, 'ok'
FROM system.numbers LIMIT 4800`, evil))

	t.Run("list", func(t *testing.T) {
		stdout, stderr, code := runCLI(t, "alarms", "--clickhouse", dsn, "--list")
		require.Equal(t, 0, code, stderr)
		require.NotContains(t, stdout, "\x1b")
		require.NotContains(t, stdout, "\nFAKE-ROW")
		require.Contains(t, stdout, `esc-model  "\x1b[31mRED\x1b[0m\nFAKE-ROW"  `)
		require.Contains(t, stdout, "2 alarms firing")
	})

	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, "bad\n\x1b[31mFAKE LOG LINE level=ERROR msg=pwned\n"+strings.Repeat("A", 100))
	}))
	defer hook.Close()
	host := strings.TrimPrefix(hook.URL, "http://")
	webhook := "http://user:HookPass@" + host + "/services/T0/B0/HOOKSECRET123?token=HOOKSECRET456"
	rejected := "alarms: webhook http://" + host + "/… rejected event accuracy_drop/esc-model/%1B[31mRED%1B[0m%0AFAKE-ROW/#1:firing: 400 Bad Request: "
	noSecrets := func(t *testing.T, stderr string) {
		t.Helper()
		for _, s := range []string{"HookPass", "HOOKSECRET", "services", "token", "\x1b", "\nFAKE"} {
			require.NotContains(t, stderr, s)
		}
	}

	t.Run("once", func(t *testing.T) {
		_, stderr, code := runCLI(t, "alarms", "--clickhouse", dsn, "--webhook", webhook, "--once")
		require.Equal(t, 1, code, stderr)
		require.Contains(t, stderr, rejected+`"bad\n\x1b[31mFAKE LOG LINE`)
		noSecrets(t, stderr)
	})

	t.Run("polling", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stderr := &syncWriter{b: &strings.Builder{}}
		done := make(chan int, 1)
		go func() {
			done <- dispatch(cctx, []string{"alarms", "--clickhouse", dsn, "--webhook", webhook, "--interval", "200ms"}, io.Discard, stderr)
		}()
		deadline := time.Now().Add(30 * time.Second) // a guard against hanging, not a speed assertion
		for time.Now().Before(deadline) && !strings.Contains(stderr.String(), "alarm poll failed") {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		require.Equal(t, 0, <-done)
		require.Contains(t, stderr.String(), "alarm poll failed")
		require.Contains(t, stderr.String(), rejected) // in the log's quoted err="..."
		noSecrets(t, stderr.String())
	})
}

// TestCommandsHideDSNPassword: a ClickHouse DSN that does not parse is
// reported with its password masked, by alarms, migrate and run
// --print-config (the deploy pipeline's preflight, whose output lands in CI
// logs). Before, the DSN was echoed as given.
func TestCommandsHideDSNPassword(t *testing.T) {
	dir := t.TempDir()
	for _, dsn := range []string{
		"clickhouse://ew:S3cretPW_xyz@127.0.0.1:9000/ewdb?dial_timeout=zz",
		"clickhouse://ew:S3cretPW_xyz@127.0.0.1:abc/ewdb",
		"clickhouse://ew:S3cret/PW_xyz@127.0.0.1:9000/ewdb",
	} {
		cfg := writeFile(t, dir, fmt.Sprintf("data_dir: %s\nsink: clickhouse\nclickhouse:\n  conn:\n    dsn: %q\n", dir, dsn))
		for _, args := range [][]string{
			{"alarms", "--clickhouse", dsn, "--list"},
			{"alarms", "--clickhouse", dsn, "--once", "--webhook", "http://127.0.0.1:1/"},
			{"migrate", "--clickhouse", dsn},
			{"run", "--config", cfg, "--print-config"},
		} {
			stdout, stderr, code := runCLI(t, args...)
			require.Equal(t, 1, code, "%v: %s", args, stderr)
			require.Contains(t, stderr, `clickhouse: DSN "clickhouse://ew:xxxxx@127.0.0.1:`, args)
			require.NotContains(t, stdout+stderr, "S3cret", args)
		}
	}
}

// TestPrintConfigHidesQueryPassword: a DSN that parses but carries the
// password as a query parameter is printed by run --print-config (and the
// start-up log) with it masked; url.URL.Redacted left it in clear.
func TestPrintConfigHidesQueryPassword(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, fmt.Sprintf("data_dir: %s\nsink: clickhouse\nclickhouse:\n  conn:\n    dsn: %q\n", dir,
		"clickhouse://ew@127.0.0.1:9000/ewdb?password=S3cretQ&dial_timeout=2s"))
	stdout, stderr, code := runCLI(t, "run", "--config", cfg, "--print-config")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "password=xxxxx&dial_timeout=2s")
	require.NotContains(t, stdout+stderr, "S3cretQ")
}

// TestAlarmsWaitsForClickHouse: a dispatcher started while ClickHouse
// cannot be reached waits for it, serving /healthz and /metrics, /readyz
// 503 after 3 intervals, instead of exiting at once (a crash loop with no
// metrics, which no alert saw: recheck9 F3). A DSN that cannot work still
// ends it.
func TestAlarmsWaitsForClickHouse(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	stderr := &syncWriter{b: &strings.Builder{}}
	go func() {
		done <- dispatch(ctx, []string{"alarms", "--clickhouse", "clickhouse://127.0.0.1:1", "--webhook", "http://127.0.0.1:1/",
			"--interval", "100ms", "--metrics", addr}, io.Discard, stderr)
	}()
	waitLog(t, stderr, "clickhouse not reachable; retrying")
	select {
	case code := <-done:
		t.Fatalf("alarms exited (%d) while ClickHouse was unreachable:\n%s", code, stderr.String())
	default:
	}
	code, _ := get("http://" + addr + "/healthz")
	require.Equal(t, http.StatusOK, code)
	code, why := get("http://" + addr + "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, "not ready from the start while ClickHouse is not reached")
	require.Contains(t, why, "ClickHouse not reached yet")
	_, body := get("http://" + addr + "/metrics")
	require.Contains(t, body, "entrowatch_alarms_last_success_timestamp_seconds 0")
	require.Contains(t, body, "entrowatch_alarms_polls_total 0", "a connection attempt is not a poll")
	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("alarms did not stop while waiting for ClickHouse")
	}

	_, errs, code := runCLI(t, "alarms", "--clickhouse", "clickhouse://127.0.0.1:abc/db", "--webhook", "http://127.0.0.1:1/", "--metrics", freeAddr(t))
	require.Equal(t, 1, code, "a DSN that does not parse is not waited on: %s", errs)
	require.NotContains(t, errs, "retrying")
}
