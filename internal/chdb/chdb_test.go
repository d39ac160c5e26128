package chdb

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDB(t *testing.T) {
	db, err := Open(t.TempDir())
	if errors.Is(err, ErrNoLibrary) {
		t.Skip(err)
	}
	require.NoError(t, err)
	defer db.Close()

	out, err := db.Exec("SELECT number, toString(number * 2) FROM numbers(3)")
	require.NoError(t, err)
	require.Equal(t, "0\t0\n1\t2\n2\t4\n", out)

	out, err = db.Exec("CREATE TABLE t (a Int32) ENGINE = MergeTree ORDER BY a")
	require.NoError(t, err)
	require.Empty(t, out)

	_, err = db.Exec("SELECT no_such_column")
	require.ErrorContains(t, err, "UNKNOWN_IDENTIFIER")

	// One session per process: a second Open fails until the first closes.
	_, err = Open(t.TempDir())
	require.Error(t, err)
	db.Close()
	db.Close()
	again, err := Open(t.TempDir())
	require.NoError(t, err)
	defer again.Close()
	out, err = again.Exec("EXISTS TABLE t")
	require.NoError(t, err)
	require.Equal(t, "0\n", out, "a new directory is a new database")
}
