package clickhouse

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Replicas started together on a fresh database (the default config
// migrates at start) take turns: every one succeeds, each migration is
// recorded once, and no lock is left. Before, one of them failed on a
// statement the other had just run (an operator audit: "Table
// labels_unversioned already exists") and versions 1-8 were recorded twice.
func TestMigrateConcurrent(t *testing.T) {
	cfg := needServer(t)
	ctx := context.Background()
	const replicas = 3
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { _, errs[i] = Migrate(ctx, cfg, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "replica %d", i)
	}
	ms, err := Migrations()
	require.NoError(t, err)
	db := cfg.Database
	require.Equal(t, fmt.Sprintf("%d\t%d\n", len(ms), len(ms)),
		httpQuery(t, "SELECT count(), uniqExact(version) FROM "+db+".schema_migrations FORMAT TabSeparated"), "each migration recorded once")
	require.Equal(t, "0\n", httpQuery(t, "SELECT count() FROM system.tables WHERE database = '"+db+"' AND name = '"+lockTable+"' FORMAT TabSeparated"))
}

// A lock whose holder was killed (no heartbeat for lockStale) is taken
// over; a live one is waited for, until ctx ends.
func TestMigrateLockStaleAndLive(t *testing.T) {
	old := lockStale
	lockStale = 3 * time.Second
	t.Cleanup(func() { lockStale = old })
	conn, db, ms := migratedTo(t, 1)
	ctx := context.Background()
	lock := db + "." + lockTable

	// Held by a live process: its heartbeat is fresh, so migrate waits.
	require.NoError(t, conn.Exec(ctx, "CREATE TABLE "+lock+" (owner String, heartbeat DateTime('UTC') DEFAULT now()) ENGINE = Log"))
	httpQuery(t, "INSERT INTO "+lock+" (owner) VALUES ('other-host pid 1')")
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := migrate(wctx, conn, db, ms, nil)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, "1\n", httpQuery(t, "SELECT count() FROM "+db+".schema_migrations FORMAT TabSeparated"), "nothing applied while the lock is held")

	// Its holder stopped beating: taken over once stale, and released.
	httpQuery(t, "TRUNCATE TABLE "+lock)
	httpQuery(t, "INSERT INTO "+lock+" (owner, heartbeat) VALUES ('other-host pid 1', now() - 3600)")
	res, err := migrate(ctx, conn, db, ms, nil)
	require.NoError(t, err)
	require.Len(t, res.Applied, len(ms)-1)
	require.Equal(t, "0\n", httpQuery(t, "SELECT count() FROM system.tables WHERE database = '"+db+"' AND name = '"+lockTable+"' FORMAT TabSeparated"))

	// A lock created but never given a row (its holder killed at once) is
	// taken over too, lockStale after it was first seen.
	require.NoError(t, conn.Exec(ctx, "CREATE TABLE "+lock+" (owner String, heartbeat DateTime('UTC') DEFAULT now()) ENGINE = Log"))
	_, err = migrate(ctx, conn, db, ms, nil)
	require.NoError(t, err)
}
