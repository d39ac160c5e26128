package clickhouse

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/entrowatch/entrowatch/internal/freezeproxy"
)

// TestReadTimeout: a server that stops answering on an open connection
// (kill -STOP; here a proxy that stops forwarding) is an error after
// read_timeout, not a silent stall of clickhouse-go's default 5 minutes.
func TestReadTimeout(t *testing.T) {
	cfg := needServer(t)
	u, err := url.Parse(cfg.DSN)
	require.NoError(t, err)
	proxy, err := freezeproxy.Start(u.Host)
	require.NoError(t, err)
	defer proxy.Close()
	cfg.DSN = "clickhouse://" + proxy.Addr() + "/default"
	cfg.Database = "default"
	cfg.ReadTimeout = 300 * time.Millisecond
	ctx := context.Background()
	conn, err := Open(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.Exec(ctx, "SELECT 1"))
	proxy.Freeze()
	defer proxy.Thaw()
	done := make(chan error, 1)
	go func() { done <- conn.Exec(ctx, "SELECT 2") }()
	select {
	case err := <-done:
		require.Error(t, err)
		require.ErrorContains(t, err, "timeout")
	case <-time.After(60 * time.Second):
		t.Fatal("a query to a server that stopped answering did not fail within 60 s: read_timeout is not applied")
	}
}

func TestConnOptions(t *testing.T) {
	o, err := Config{DSN: "clickhouse://127.0.0.1:9000/db"}.options()
	require.NoError(t, err)
	require.Equal(t, 60*time.Second, o.ReadTimeout, "default")
	o, err = Config{DSN: "clickhouse://127.0.0.1:9000/db?read_timeout=5s"}.options()
	require.NoError(t, err)
	require.Equal(t, 5*time.Second, o.ReadTimeout, "the DSN's when the config leaves the default")
	o, err = Config{DSN: "clickhouse://127.0.0.1:9000/db?read_timeout=5s", ReadTimeout: 2 * time.Second}.options()
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, o.ReadTimeout, "the config's when set")
	require.ErrorContains(t, Config{DSN: "clickhouse://127.0.0.1:9000", ReadTimeout: -time.Second}.Validate(), "read_timeout")

	// tls_ca_file: a private CA, trusted instead of the system's.
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	o, err = Config{DSN: "clickhouse://127.0.0.1:9440/db", TLSCAFile: ca}.options()
	require.NoError(t, err)
	require.NotNil(t, o.TLS, "a CA file implies TLS")
	require.NotNil(t, o.TLS.RootCAs)
	require.False(t, o.TLS.InsecureSkipVerify)

	_, err = Config{DSN: "clickhouse://127.0.0.1:9440/db", TLSCAFile: filepath.Join(dir, "missing.pem")}.options()
	require.ErrorContains(t, err, "tls_ca_file")
	bad := filepath.Join(dir, "bad.pem")
	require.NoError(t, os.WriteFile(bad, []byte("not a certificate"), 0o600))
	_, err = Config{DSN: "clickhouse://127.0.0.1:9440/db", TLSCAFile: bad}.options()
	require.ErrorContains(t, err, "no PEM certificate")
}

// TestOpenAnsweredErrorNoAdvice: an error the server answered (unknown
// database) is reported as is, without "is the server running and the DSN
// right?", which sent operators looking at the wrong thing.
func TestOpenAnsweredErrorNoAdvice(t *testing.T) {
	cfg := needServer(t)
	cfg.Database = "no_such_database_here"
	_, err := Open(context.Background(), cfg)
	require.Error(t, err)
	require.Contains(t, err.Error(), "no_such_database_here")
	require.NotContains(t, err.Error(), "is the server running")
}
