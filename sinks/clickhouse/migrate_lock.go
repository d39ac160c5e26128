package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

// The migration lock is a table: CREATE TABLE of a name that exists fails
// on the server, atomically, so of the processes that create it at once one
// succeeds and holds the lock until it drops the table. The holder inserts
// a heartbeat row every lockHeartbeat; a lock without one for lockStale
// (its holder was killed) is taken over.
var (
	lockHeartbeat = 5 * time.Second
	lockStale     = 60 * time.Second
	lockPoll      = 500 * time.Millisecond
)

// lockTable is the lock's name in a database.
const lockTable = "schema_migration_lock"

// lockMigrations waits until this process holds the migration lock of db
// and returns the function that releases it. While another process holds
// it, it logs once whom it waits for; ctx ends the wait.
func lockMigrations(ctx context.Context, conn driver.Conn, db string, log *slog.Logger) (func(), error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s pid %d", host, os.Getpid())
	table := db + "." + lockTable
	logged := false
	var emptySince time.Time // a lock without a row yet: its holder starting, or killed before its first beat
	for {
		err := conn.Exec(ctx, "CREATE TABLE "+table+" (owner String, heartbeat DateTime('UTC') DEFAULT now()) ENGINE = Log")
		if err == nil {
			break
		}
		var ex *proto.Exception
		if !errors.As(err, &ex) || ex.Code != 57 { // TABLE_ALREADY_EXISTS
			return nil, fmt.Errorf("taking the migration lock (table %s): %w", table, err)
		}
		var age int64
		var holder string
		var beats uint64
		if err := conn.QueryRow(ctx, "SELECT toInt64(now()) - toInt64(max(heartbeat)), argMax(owner, heartbeat), count() FROM "+table).Scan(&age, &holder, &beats); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !errors.As(err, &ex) || ex.Code != 60 { // UNKNOWN_TABLE: released between our CREATE and this SELECT
				return nil, fmt.Errorf("reading the migration lock %s: %w", table, err)
			}
			continue
		}
		if beats == 0 && emptySince.IsZero() {
			emptySince = time.Now()
		}
		if beats > 0 {
			emptySince = time.Time{}
		}
		if beats > 0 && time.Duration(age)*time.Second > lockStale || beats == 0 && time.Since(emptySince) > lockStale {
			log.Warn("migration lock held without a heartbeat: its holder stopped; taking it over", "database", db, "holder", holder, "last_heartbeat_s", age)
			if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
				return nil, fmt.Errorf("dropping the stale migration lock %s: %w", table, err)
			}
			continue
		}
		if !logged {
			who := holder
			if beats == 0 {
				who = "another process (starting)"
			}
			log.Info("waiting for another migration of the database to finish", "database", db, "holder", who)
			logged = true
		}
		if sleep(ctx, lockPoll) != nil {
			return nil, ctx.Err()
		}
	}
	beat := func(ctx context.Context) error {
		return conn.Exec(ctx, "INSERT INTO "+table+" (owner) SELECT ?", owner) // not VALUES: the native protocol then waits for data blocks
	}
	if err := beat(ctx); err != nil {
		_ = conn.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS "+table)
		return nil, fmt.Errorf("taking the migration lock (table %s): %w", table, err)
	}
	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(lockHeartbeat)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				_ = beat(hctx) // a missed beat is retried at the next tick
			}
		}
	})
	return func() {
		stop()
		wg.Wait()
		// Not ctx: a cancelled migration still lets the others go on.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := conn.Exec(dctx, "DROP TABLE IF EXISTS "+table); err != nil {
			log.Warn("releasing the migration lock failed; the next migration takes it over once it is stale", "database", db, "err", err, "stale_after", lockStale)
		}
	}, nil
}
