package clickhouse

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDispatcherWebhookErrorsHideURL: a webhook URL's credentials, path and
// query are often its secret (Slack's /services/T../B../XXXX, ?token=), and
// a poll's error is logged (alarm poll failed) and printed (alarms --once).
// Errors name the webhook as scheme://host:port/… only, whichever way the
// POST fails, and quote a reply that holds control characters, which would
// otherwise reach the terminal or forge log lines. Before, the URL was
// printed verbatim and the reply raw.
func TestDispatcherWebhookErrorsHideURL(t *testing.T) {
	cfg, _ := migrated(t)
	ctx := context.Background()
	write(t, cfg, dropTraffic(48))
	reply := "bad\n\x1b[31mFAKE LOG LINE level=ERROR msg=pwned\n" + strings.Repeat("A", 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusBadRequest
		if strings.HasPrefix(r.URL.Path, "/e500/") {
			code = http.StatusInternalServerError
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(reply))
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there: connection refused

	secret := "/services/T0/B0/HOOKSECRET123?token=HOOKSECRET456"
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		name, addr, path, want string
	}{
		{"rejected", host, "/e400", "rejected event accuracy_drop/m1/A/#1:firing: 400 Bad Request: " + `"bad\n\x1b[31mFAKE LOG LINE`},
		{"retried", host, "/e500", "attempts: status 500 Internal Server Error: " + `"bad\n\x1b[31mFAKE`},
		{"unreachable", closed, "", `Post "http://` + closed + `/…": dial tcp`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dcfg := DefaultDispatchConfig()
			dcfg.WebhookURL, dcfg.WebhookRetries = "http://user:HookPass@"+tc.addr+tc.path+secret, 1
			d, err := NewDispatcher(ctx, cfg, dcfg, nil)
			require.NoError(t, err)
			defer d.Close()
			_, err = d.Poll(ctx)
			require.Error(t, err)
			msg := err.Error()
			require.Contains(t, msg, "alarms: webhook http://"+tc.addr+"/…")
			require.Contains(t, msg, tc.want)
			for _, s := range []string{"HookPass", "HOOKSECRET", "services", "token", "\x1b", "\nFAKE"} {
				require.NotContains(t, msg, s)
			}
			if tc.name == "retried" {
				// Retries go to the first event; the others of the poll are
				// tried once, and say so rather than "after 1 attempts".
				require.Contains(t, msg, "not accepted after 2 attempts")
				require.Contains(t, msg, "not accepted, tried once (retries are spent on the first failing event of a poll)")
				require.NotContains(t, msg, "after 1 attempts")
			}
		})
	}
}

// TestDispatcherWebhookRedirectNotFollowed: a 3xx from the webhook is an
// error that names the status, not a reason to POST the event (or, for a
// 302, GET) wherever Location points, internal addresses included. Before,
// the client followed it and the event reached the other server.
func TestDispatcherWebhookRedirectNotFollowed(t *testing.T) {
	cfg, _ := migrated(t)
	ctx := context.Background()
	write(t, cfg, dropTraffic(48))
	var stolen atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { stolen.Add(1) }))
	defer target.Close()
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusFound} {
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/stolen?token=LOCATIONSECRET", code)
		}))
		dcfg := DefaultDispatchConfig()
		dcfg.WebhookURL = hook.URL + "/hook"
		d, err := NewDispatcher(ctx, cfg, dcfg, nil)
		require.NoError(t, err)
		evs, err := d.Poll(ctx)
		require.Empty(t, evs)
		require.ErrorContains(t, err, hook.URL+"/…: event accuracy_drop/m1/A/#1:firing: "+fmt.Sprint(code)+" "+http.StatusText(code))
		require.ErrorContains(t, err, "redirects are not followed")
		require.NotContains(t, err.Error(), "LOCATIONSECRET")
		require.NoError(t, d.Close())
		hook.Close()
	}
	require.Zero(t, stolen.Load(), "no request reached the redirect's target")
}

// TestDispatchConfigValidateHidesWebhook: a webhook URL refused at the
// start is not echoed either.
func TestDispatchConfigValidateHidesWebhook(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"hooks.example/services/T0/B0/HOOKSECRET", "alarms: webhook (URL not shown): want an http:// or https:// URL"},
		{"ftp://user:HOOKSECRET@hooks.example/x", "alarms: webhook ftp://hooks.example/…: want an http:// or https:// URL"},
		{"https://hooks.example/services/%zz?token=HOOKSECRET", "alarms: webhook https://…: not a valid URL"},
		{"https://user:HOOK SECRET@hooks.example/x", "alarms: webhook https://…: not a valid URL"},
	} {
		err := DispatchConfig{WebhookURL: tc.url}.Validate()
		require.ErrorContains(t, err, tc.want, tc.url)
		require.NotContains(t, err.Error(), "SECRET", tc.url)
	}
}

// TestHookName: how messages name a webhook.
func TestHookName(t *testing.T) {
	for raw, want := range map[string]string{
		"https://hooks.slack.com/services/T0/B0/XXXX": "https://hooks.slack.com/…",
		"http://127.0.0.1:8080":                       "http://127.0.0.1:8080",
		"http://127.0.0.1:8080/":                      "http://127.0.0.1:8080",
		"http://127.0.0.1:8080/?token=x":              "http://127.0.0.1:8080/…",
		"http://u:p@[::1]:8080/":                      "http://[::1]:8080/…",
		"https://hooks.example/x#frag":                "https://hooks.example/…",
	} {
		require.Equal(t, want, hookName(raw), raw)
	}
}
