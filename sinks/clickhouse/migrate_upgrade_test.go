package clickhouse

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMigrateFindsStatementDone: the server finished a statement that
// cannot run twice, but migrate died before recording it (killed between
// the two). Running migrate again failed for good: 009's rename with "Table
// labels_unversioned already exists", 013's ADD COLUMN with "column with
// this name already exists", and the operator had no way on without
// reading the SQL. Now such a statement is found done and migrate goes on.
func TestMigrateFindsStatementDone(t *testing.T) {
	ctx := context.Background()
	conn, db, ms := migratedTo(t, 8)
	httpQuery(t, Expand("INSERT INTO {db}.labels (trace_id, correct, source, ts, ts_ms) VALUES ('a', 1, 'h', '2026-03-01 05:00:00', 0), ('b', 0, 'h', '2026-03-01 04:00:00', 0)", db))

	// 009's first three statements, the rename included, done but not recorded.
	m9 := ms[8]
	require.Contains(t, m9.Statements[2], "RENAME TABLE")
	for _, s := range m9.Statements[:3] {
		require.NoError(t, conn.Exec(ctx, Expand(s, db)))
	}
	res, err := migrate(ctx, conn, db, ms[:12], nil)
	require.NoError(t, err)
	require.Equal(t, uint32(8), res.From)
	require.Equal(t, "a\t1\nb\t0\n", httpQuery(t, Expand("SELECT trace_id, correct FROM {db}.labels_latest ORDER BY trace_id FORMAT TabSeparated", db)))

	// 013's ADD COLUMN done, not recorded.
	m13 := ms[12]
	require.Contains(t, m13.Statements[0], "ADD COLUMN expires_at")
	require.NoError(t, conn.Exec(ctx, Expand(m13.Statements[0], db)))
	res, err = migrate(ctx, conn, db, ms, nil)
	require.NoError(t, err)
	require.Equal(t, uint32(12), res.From)
	require.Equal(t, ms[len(ms)-1].Version, res.Version)
	require.NoError(t, CheckSchema(ctx, conn, db))

	// A statement that failed for another reason still stops migrate.
	done, err := alreadyDone(ctx, conn, db, "RENAME TABLE {db}.labels TO {db}.nope")
	require.NoError(t, err)
	require.False(t, done, "a rename whose target does not exist is not done")
	done, err = alreadyDone(ctx, conn, db, "RENAME TABLE {db}.labels TO {db}.label_requests")
	require.NoError(t, err)
	require.False(t, done, "a rename whose source holds rows is not done")
	done, err = alreadyDone(ctx, conn, db, "ALTER TABLE {db}.label_requests ADD COLUMN nope UInt8")
	require.NoError(t, err)
	require.False(t, done)
}

// TestMigrateRefusesUserTable: a table of the user's that carries a name a
// migration drops (to create a view) is not dropped with its rows, and one
// in the place of a view is not silently kept: migrate stops and says how
// to go on. Before, 011/013 dropped a user's status_counts table without a
// word.
func TestMigrateRefusesUserTable(t *testing.T) {
	ctx := context.Background()
	conn, db, ms := migratedTo(t, 10)
	require.NoError(t, conn.Exec(ctx, "CREATE TABLE "+db+".status_counts (day Date, n UInt64) ENGINE = MergeTree ORDER BY day"))
	httpQuery(t, "INSERT INTO "+db+".status_counts VALUES ('2026-11-01', 42)")

	_, err := migrate(ctx, conn, db, ms, nil)
	require.ErrorContains(t, err, "holds a table status_counts (engine MergeTree) that no entrowatch migration created")
	require.ErrorContains(t, err, "RENAME TABLE "+db+".status_counts TO "+db+".status_counts_yours")
	require.Equal(t, "42\n", httpQuery(t, "SELECT n FROM "+db+".status_counts FORMAT TabSeparated"), "the user's row is kept")

	require.NoError(t, conn.Exec(ctx, "RENAME TABLE "+db+".status_counts TO "+db+".status_counts_yours"))
	res, err := migrate(ctx, conn, db, ms, nil)
	require.NoError(t, err)
	require.Equal(t, ms[len(ms)-1].Version, res.Version)
	require.Equal(t, "42\n", httpQuery(t, "SELECT n FROM "+db+".status_counts_yours FORMAT TabSeparated"))

	// A view of entrowatch's is dropped and recreated as always (superseded
	// files, 008's intervals): guardName lets views through.
	require.NoError(t, guardName(ctx, conn, db, "DROP TABLE IF EXISTS {db}.accuracy"))
	require.NoError(t, guardName(ctx, conn, db, "DROP TABLE IF EXISTS {db}.labels_unversioned"))

	// A table where a view is created.
	require.NoError(t, conn.Exec(ctx, "CREATE TABLE "+db+".mine (x UInt8) ENGINE = Memory"))
	require.ErrorContains(t, guardName(ctx, conn, db, "CREATE VIEW IF NOT EXISTS {db}.mine AS SELECT 1"), "would leave your table in its place")
}

// TestMigrateNewerDatabase: a database a newer entrowatch migrated beyond
// this build's last migration is reported (Newer), not called "up to date
// at version N" of this build's.
func TestMigrateNewerDatabase(t *testing.T) {
	cfg := needServer(t)
	ctx := context.Background()
	conn, db, err := openServer(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close()
	ms, err := Migrations()
	require.NoError(t, err)
	_, err = migrate(ctx, conn, db, ms, nil)
	require.NoError(t, err)
	last := ms[len(ms)-1].Version
	require.NoError(t, conn.Exec(ctx, "INSERT INTO "+db+".schema_migrations (version, name, checksum) SELECT ?, '999_future.sql', 'abc'", last+1))
	res, err := migrate(ctx, conn, db, ms, nil)
	require.NoError(t, err)
	require.Empty(t, res.Applied)
	require.Equal(t, last+1, res.Newer)
	require.Equal(t, last, res.From)
}
