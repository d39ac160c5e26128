// Package clickhouse puts scored responses into ClickHouse and reads back what
// users come for: rolling accuracy, drift alarms, the labeling queue and
// calibration. It holds the sink (streams.Sink over the native protocol), the
// schema migrations runner, the managed local clickhouse-server, the alarm
// dispatcher and the label request/import logic.
//
// Every SQL statement runs on ClickHouse 18.16 and on current releases: no
// window functions, DateTime64, Map or LowCardinality; every INSERT lists its
// columns. Idempotency: scored and labels are ReplacingMergeTree tables keyed by
// trace_id and every view reads them deduplicated (FINAL / argMax), so a
// redelivered trace changes no estimate, count or alarm.
package clickhouse

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Config says how to reach ClickHouse. Zero values take the documented defaults.
type Config struct {
	// DSN is clickhouse://[user:password@]host:port[/database][?secure=true&skip_verify=true].
	// Native protocol only (port 9000 by default; 9440 with TLS).
	DSN string `yaml:"dsn"`
	// Database overrides the DSN's database; default "default".
	Database string `yaml:"database"`
	// User and Password override the DSN's credentials when set.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// TLS enables TLS (as secure=true in the DSN); TLSSkipVerify disables
	// certificate verification (test setups only).
	TLS           bool `yaml:"tls"`
	TLSSkipVerify bool `yaml:"tls_skip_verify"`
	// TLSCAFile is a PEM file of the certificate authorities to trust
	// (a private CA) instead of the system's; it implies TLS.
	TLSCAFile string `yaml:"tls_ca_file"`
	// Compression of inserted blocks: "lz4" (default), "zstd" or "none"
	// ("none" saves CPU on a local server).
	Compression string `yaml:"compression"`
	// DialTimeout bounds connecting; default 10s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// ReadTimeout bounds the wait for any answer of the server to a query
	// or insert; default 60s (the DSN's read_timeout when set there). A
	// server that hangs is then an error that is retried and counted, not
	// a silent stall (clickhouse-go's own default is 5 min). Raise it for
	// heavy analytical queries on large tables.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// Retries is how often a failed insert is retried; default 5. Backoff
	// starts at RetryBackoff (default 200ms) and doubles up to MaxBackoff
	// (default 10s).
	Retries      int           `yaml:"retries"`
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	MaxBackoff   time.Duration `yaml:"max_backoff"`
	// InsertParallelism splits a written batch of at least 2 x 20,000 rows
	// into up to this many concurrent INSERTs; default 2.
	InsertParallelism int `yaml:"insert_parallelism"`
}

// DefaultConfig is a local server on the standard native port.
func DefaultConfig() Config {
	return Config{
		DSN:          "clickhouse://127.0.0.1:9000/default",
		DialTimeout:  10 * time.Second,
		ReadTimeout:  60 * time.Second,
		Retries:      5,
		RetryBackoff: 200 * time.Millisecond,
		MaxBackoff:   10 * time.Second,

		InsertParallelism: 2,
	}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// RedactDSN is dsn for messages and printed configuration, with its
// credentials replaced by xxxxx (see redactDSN).
func RedactDSN(dsn string) string { return redactDSN(dsn) }

// redactDSN is dsn for messages, with its credentials replaced by xxxxx:
// the userinfo's password and the password and http_proxy query parameters.
// It works on the raw string, so it also hides them in a DSN that does not
// parse (an unescaped "/", "@" or "?" in the password, a bad port), masking
// too much rather than too little when the DSN is malformed.
func redactDSN(dsn string) string {
	s := dsn
	if q := strings.IndexByte(s, '?'); q >= 0 {
		segs := strings.Split(s[q+1:], "&")
		for i, seg := range segs {
			key, _, ok := strings.Cut(seg, "=")
			if k, err := url.QueryUnescape(key); err == nil {
				key = k
			}
			if key = strings.ToLower(key); ok && (key == "password" || key == "http_proxy") {
				segs[i] = seg[:strings.IndexByte(seg, '=')+1] + "xxxxx"
			}
		}
		s = s[:q+1] + strings.Join(segs, "&")
	}
	from := 0
	if i := strings.Index(s, "://"); i >= 0 {
		from = i + len("://")
	}
	// The last "@": a password can hold an unescaped "@".
	if at := strings.LastIndexByte(s[from:], '@'); at >= 0 {
		if colon := strings.IndexByte(s[from:from+at], ':'); colon >= 0 {
			s = s[:from+colon+1] + "xxxxx" + s[from+at:]
		}
	}
	return s
}

// Validate reports the first bad field.
func (c Config) Validate() error {
	if c.DSN == "" {
		return errors.New("clickhouse: empty DSN; give clickhouse://host:9000/database")
	}
	if u, err := url.Parse(c.DSN); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		return fmt.Errorf("clickhouse: DSN %q: %s", redactDSN(c.DSN), protocolHint(c.DSN))
	}
	if _, err := ch.ParseDSN(c.DSN); err != nil {
		if h := protocolHint(c.DSN); h != "" {
			return fmt.Errorf("clickhouse: DSN %q: %w; %s", redactDSN(c.DSN), err, h)
		}
		return fmt.Errorf("clickhouse: DSN %q: %w (expected clickhouse://[user:password@]host:port[/database])", redactDSN(c.DSN), err)
	}
	if c.Database != "" && !identRE.MatchString(c.Database) {
		return fmt.Errorf("clickhouse: database name %q: use letters, digits and _", c.Database)
	}
	switch c.Compression {
	case "", "lz4", "zstd", "none":
	default:
		return fmt.Errorf("clickhouse: compression %q: use lz4, zstd or none", c.Compression)
	}
	if c.Retries < 0 {
		return fmt.Errorf("clickhouse: retries %d < 0", c.Retries)
	}
	if c.ReadTimeout < 0 || c.DialTimeout < 0 {
		return fmt.Errorf("clickhouse: dial_timeout %v, read_timeout %v: want > 0 (0 = default)", c.DialTimeout, c.ReadTimeout)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.DialTimeout <= 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = d.ReadTimeout
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = d.RetryBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.InsertParallelism <= 0 {
		c.InsertParallelism = d.InsertParallelism
	}
	return c
}

// options turns c into clickhouse-go options (native protocol, LZ4).
func (c Config) options() (*ch.Options, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	d := DefaultConfig()
	o, err := ch.ParseDSN(c.DSN)
	if err != nil {
		return nil, err
	}
	o.Protocol = ch.Native
	if c.Database != "" {
		o.Auth.Database = c.Database
	}
	if o.Auth.Database == "" {
		o.Auth.Database = "default"
	}
	if c.User != "" {
		o.Auth.Username = c.User
	}
	if c.Password != "" {
		o.Auth.Password = c.Password
	}
	if c.TLS || c.TLSSkipVerify || c.TLSCAFile != "" {
		if o.TLS == nil {
			o.TLS = &tls.Config{}
		}
		o.TLS.InsecureSkipVerify = c.TLSSkipVerify
	}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("clickhouse: tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("clickhouse: tls_ca_file %s: no PEM certificate in it", c.TLSCAFile)
		}
		o.TLS.RootCAs = pool
	}
	o.DialTimeout = c.DialTimeout
	if c.ReadTimeout != d.ReadTimeout || !dsnHas(c.DSN, "read_timeout") {
		o.ReadTimeout = c.ReadTimeout
	}
	switch c.Compression {
	case "", "lz4":
		o.Compression = &ch.Compression{Method: ch.CompressionLZ4}
	case "zstd":
		o.Compression = &ch.Compression{Method: ch.CompressionZSTD}
	case "none":
		o.Compression = nil
	}
	return o, nil
}

// DatabaseName is the database c addresses: Database, else the DSN's, else
// "default".
func (c Config) DatabaseName() string {
	o, err := c.options()
	if err != nil {
		return "default"
	}
	return o.Auth.Database
}

// Open connects to the server of c and pings it. The connection's default
// database must already exist unless create is set, in which case Open
// creates it first (migrations do).
func Open(ctx context.Context, c Config) (driver.Conn, error) {
	o, err := c.options()
	if err != nil {
		return nil, err
	}
	conn, err := ch.Open(o)
	if err != nil {
		return nil, fmt.Errorf("clickhouse: connecting to %v: %w%s", o.Addr, err, hintSuffix(c.DSN))
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		var ex *ch.Exception
		if errors.As(err, &ex) {
			// The server answered (wrong password, unknown database): it
			// runs and the address is right; its message says what is wrong.
			if ex.Code == 81 { // UNKNOWN_DATABASE
				return nil, fmt.Errorf("clickhouse: %v: database %s has no entrowatch tables (%w): %w --clickhouse DSN first (it creates the database)", o.Addr, o.Auth.Database, err, ErrNotMigrated)
			}
			return nil, fmt.Errorf("clickhouse: %v (database %s): %w", o.Addr, o.Auth.Database, err)
		}
		return nil, fmt.Errorf("clickhouse: ping %v (database %s): %w; %s", o.Addr, o.Auth.Database, err, pingAdvice(ctx, c.DSN, o.Addr))
	}
	return conn, nil
}

// openServer connects without selecting the configured database (so it can be
// created), returning the database name separately.
func openServer(ctx context.Context, c Config) (driver.Conn, string, error) {
	o, err := c.options()
	if err != nil {
		return nil, "", err
	}
	db := o.Auth.Database
	if !identRE.MatchString(db) {
		return nil, "", fmt.Errorf("clickhouse: database name %q: use letters, digits and _", db)
	}
	o.Auth.Database = "default"
	conn, err := ch.Open(o)
	if err != nil {
		return nil, "", fmt.Errorf("clickhouse: connecting to %v: %w%s", o.Addr, err, hintSuffix(c.DSN))
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, "", fmt.Errorf("clickhouse: ping %v: %w; %s", o.Addr, err, pingAdvice(ctx, c.DSN, o.Addr))
	}
	return conn, db, nil
}

// httpPorts are ClickHouse's default HTTP ports and the native ports that
// correspond to them (plain, TLS).
var httpPorts = map[string]string{"8123": "9000", "8443": "9440"}

// protocolHint explains a DSN that addresses ClickHouse's HTTP interface (an
// http:// or https:// scheme, port 8123 or 8443) or has no scheme, with the
// native DSN to give instead; "" when the DSN looks native.
func protocolHint(dsn string) string {
	if !strings.Contains(dsn, "://") {
		// "host:port" parses as a scheme "host"; read it as a native address.
		u, err := url.Parse("clickhouse://" + dsn)
		if err != nil || u.Host == "" {
			return ""
		}
		h := "a DSN starts with clickhouse:// (native protocol, default port 9000): give " + nativeDSN(u, false)
		if httpPorts[u.Port()] != "" {
			h = fmt.Sprintf("port %s is ClickHouse's HTTP port; %s", u.Port(), h)
		}
		return h
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return ""
	}
	tls := u.Scheme == "https" || u.Port() == "8443" || u.Query().Get("secure") == "true"
	switch {
	case u.Scheme == "http" || u.Scheme == "https":
		return fmt.Sprintf("%s:// is ClickHouse's HTTP interface; entrowatch reaches ClickHouse over its native protocol (default port 9000, 9440 with TLS): give %s",
			u.Scheme, nativeDSN(u, tls))
	case httpPorts[u.Port()] != "":
		return fmt.Sprintf("port %s is ClickHouse's HTTP port; entrowatch reaches ClickHouse over its native protocol (default port 9000, 9440 with TLS): give %s",
			u.Port(), nativeDSN(u, tls))
	}
	return ""
}

// hintSuffix is protocolHint as the tail of a connection error ("" or "; hint").
func hintSuffix(dsn string) string {
	if h := protocolHint(dsn); h != "" {
		return "; " + h
	}
	return ""
}

// pingAdvice says what to check when the server does not answer a ping.
// An address whose port answers ClickHouse's HTTP /ping is an HTTP port
// given for the native one (the managed server logs both): a native
// handshake with it only times out.
func pingAdvice(ctx context.Context, dsn string, addrs []string) string {
	if h := protocolHint(dsn); h != "" {
		return h
	}
	for _, a := range addrs {
		if answersHTTPPing(ctx, a) {
			return fmt.Sprintf("%s answers ClickHouse's HTTP /ping: it is the server's HTTP port, and entrowatch speaks the native protocol: give the server's tcp_port (9000 by default; `entrowatch run` logs it as tcp_port and in query_with)", a)
		}
	}
	return "is the server running and the DSN right?"
}

// answersHTTPPing reports whether addr answers GET /ping with ClickHouse's
// "Ok." within a second.
func answersHTTPPing(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/ping", nil)
	if err != nil {
		return false
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 16))
	return res.StatusCode == http.StatusOK && strings.TrimSpace(string(b)) == "Ok."
}

// nativeDSN rewrites u as a native-protocol DSN: scheme clickhouse, an HTTP
// port (or none) replaced by the native one, the database kept, credentials
// and other parameters left out.
func nativeDSN(u *url.URL, tls bool) string {
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host = "127.0.0.1"
	}
	if p, ok := httpPorts[port]; ok {
		port = p
	} else if port == "" || u.Scheme == "http" || u.Scheme == "https" {
		// Another port of the HTTP interface says nothing of the native
		// one: the default is the best guess.
		port = "9000"
		if tls {
			port = "9440"
		}
	}
	out := url.URL{Scheme: "clickhouse", Host: net.JoinHostPort(host, port), Path: u.Path}
	if tls {
		out.RawQuery = "secure=true"
	}
	return out.String()
}

// backoff returns the wait before retry attempt (1-based).
func (c Config) backoff(attempt int) time.Duration {
	d := c.RetryBackoff
	for i := 1; i < attempt && d < c.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.MaxBackoff)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// dsnHas reports whether the DSN's query sets key.
func dsnHas(dsn, key string) bool {
	u, err := url.Parse(dsn)
	return err == nil && u.Query().Has(key)
}

// CheckFiles reads the files the configuration names (tls_ca_file), so that
// a missing or malformed one is reported before anything connects.
func (c Config) CheckFiles() error {
	if c.TLSCAFile == "" {
		return nil
	}
	_, err := c.options()
	return err
}
