// Package testutil holds small helpers the tests of several packages share.
package testutil

import (
	"bytes"
	"compress/gzip"
	"testing"
)

// Gzip returns b gzip-compressed.
func Gzip(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
