package clickhouse

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestValidateDSNHidesPassword: a DSN that does not parse is named in the
// error (every command and `run --print-config` report it) with its
// password masked, also when the password is what breaks the parse. Before,
// the parse-error branches quoted the DSN as given.
func TestValidateDSNHidesPassword(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"clickhouse://ew:S3cretPW_xyz@127.0.0.1:53825/ewdb?dial_timeout=zz", `DSN "clickhouse://ew:xxxxx@127.0.0.1:53825/ewdb?dial_timeout=zz": clickhouse [dsn parse]: dial timeout`},
		{"clickhouse://ew:S3cretPW_xyz@127.0.0.1:abc/ewdb", `DSN "clickhouse://ew:xxxxx@127.0.0.1:abc/ewdb": parse`},
		{"clickhouse://ew:S3cret/PW_xyz@127.0.0.1:9000/ewdb", `DSN "clickhouse://ew:xxxxx@127.0.0.1:9000/ewdb"`},
		{"clickhouse://ew:S3cret@PW_xyz@127.0.0.1:abc/ewdb", `DSN "clickhouse://ew:xxxxx@127.0.0.1:abc/ewdb"`},
		{"clickhouse://ew:S3cret?PW#xyz@127.0.0.1:abc/ewdb", `DSN "clickhouse://ew:xxxxx@127.0.0.1:abc/ewdb"`},
		{"clickhouse://ew@127.0.0.1:9000/ewdb?password=S3cretPW_xyz&dial_timeout=zz", `DSN "clickhouse://ew@127.0.0.1:9000/ewdb?password=xxxxx&dial_timeout=zz"`},
		{"ew:S3cretPW_xyz@127.0.0.1:8123/ewdb", `DSN "ew:xxxxx@127.0.0.1:8123/ewdb"`},
		{"http://ew:S3cretPW_xyz@127.0.0.1:8123/ewdb?Password=S3cretPW_xyz", `DSN "http://ew:xxxxx@127.0.0.1:8123/ewdb?Password=xxxxx": http:// is ClickHouse's HTTP interface`},
	} {
		err := Config{DSN: tc.dsn}.Validate()
		require.Error(t, err, tc.dsn)
		require.Contains(t, err.Error(), tc.want)
		require.NotContains(t, err.Error(), "S3cret", tc.dsn)
	}
}

// TestRedactDSN: what redactDSN leaves of a DSN.
func TestRedactDSN(t *testing.T) {
	for dsn, want := range map[string]string{
		"clickhouse://127.0.0.1:9000/default":                              "clickhouse://127.0.0.1:9000/default",
		"clickhouse://ew@127.0.0.1:9000/ewdb":                              "clickhouse://ew@127.0.0.1:9000/ewdb",
		"clickhouse://ew:pw@127.0.0.1:9000/ewdb?secure=true":               "clickhouse://ew:xxxxx@127.0.0.1:9000/ewdb?secure=true",
		"clickhouse://h:9000/db?http_proxy=http%3A%2F%2Fu%3Ap%40proxy&x=1": "clickhouse://h:9000/db?http_proxy=xxxxx&x=1",
		"clickhouse://h:9000/db?pass%77ord=pw":                             "clickhouse://h:9000/db?pass%77ord=xxxxx",
	} {
		require.Equal(t, want, redactDSN(dsn), dsn)
	}
}
