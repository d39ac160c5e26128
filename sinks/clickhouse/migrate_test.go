package clickhouse

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

func TestSplitStatements(t *testing.T) {
	sql := "-- header\nCREATE TABLE {db}.a (x UInt8) -- trailing comment\n  ENGINE = Memory;\n\n-- only a comment;\nSELECT 1;\nSELECT 2"
	require.Equal(t, []string{
		"CREATE TABLE {db}.a (x UInt8) -- trailing comment\n  ENGINE = Memory",
		"SELECT 1",
		"SELECT 2",
	}, SplitStatements(sql))
	require.Equal(t, "SELECT * FROM d.t JOIN d.u", Expand("SELECT * FROM {db}.t JOIN {db}.u", "d"))
}

func TestLoadMigrations(t *testing.T) {
	ms, err := loadMigrations(fstest.MapFS{
		"002_b.sql": {Data: []byte("SELECT 2;")},
		"001_a.sql": {Data: []byte("SELECT 1;\nSELECT 11;")},
	})
	require.NoError(t, err)
	require.Len(t, ms, 2)
	require.Equal(t, uint32(1), ms[0].Version)
	require.Len(t, ms[0].Statements, 2)
	require.NotEqual(t, ms[0].Checksum, ms[1].Checksum)

	_, err = loadMigrations(fstest.MapFS{"1-bad.sql": {Data: []byte("SELECT 1;")}})
	require.ErrorContains(t, err, "NNN_snake_case.sql")
	_, err = loadMigrations(fstest.MapFS{"001_a.sql": {}, "0001_b.sql": {}})
	require.ErrorContains(t, err, "share version 1")

	// The shipped migrations load and are numbered 1..n without gaps.
	shipped, err := Migrations()
	require.NoError(t, err)
	for i, m := range shipped {
		require.Equal(t, uint32(i+1), m.Version, m.Name)
		require.NotEmpty(t, m.Statements, m.Name)
	}
}
