package clickhouse

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"

	chsql "github.com/entrowatch/entrowatch/deploy/clickhouse"
)

// Migration is one versioned SQL file.
type Migration struct {
	Version    uint32   // the file name's number, e.g. 1 for 001_tables.sql
	Name       string   // file name, e.g. "001_tables.sql"
	Checksum   string   // sha256 of the file
	Statements []string // with {db} still in place
}

var migrationName = regexp.MustCompile(`^(\d{3,})_[a-z0-9_]+\.sql$`)

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) { return loadMigrations(chsql.Migrations) }

func loadMigrations(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []Migration
	seen := map[uint32]string{}
	for _, n := range names {
		m := migrationName.FindStringSubmatch(n)
		if m == nil {
			return nil, fmt.Errorf("migration file %q: name it NNN_snake_case.sql", n)
		}
		v, _ := strconv.ParseUint(m[1], 10, 32)
		if prev, ok := seen[uint32(v)]; ok {
			return nil, fmt.Errorf("migrations %q and %q share version %d", prev, n, v)
		}
		seen[uint32(v)] = n
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		out = append(out, Migration{Version: uint32(v), Name: n, Checksum: hex.EncodeToString(sum[:]), Statements: SplitStatements(string(b))})
	}
	return out, nil
}

// SplitStatements splits SQL text at ";" ending a line and drops whole-line
// "--" comments and empty statements.
func SplitStatements(sql string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "--") {
			continue
		}
		if strings.HasSuffix(t, ";") {
			cur.WriteString(strings.TrimSuffix(strings.TrimRight(line, " \t\r"), ";"))
			flush()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return out
}

// Expand replaces {db} in a statement by the database name.
func Expand(stmt, db string) string { return strings.ReplaceAll(stmt, "{db}", db) }

// superseded are migration files that builds from main once applied and
// that were rewritten before a release (their views folded into other
// files): a database that holds one of them is upgraded by applying the
// current file of that version again, each view dropped before it is
// created (the database may hold another definition under the same name),
// and a superseded version beyond the newest one shipped is ignored: what it
// created is defined by the shipped files. Only files that create views and
// nothing else may be listed: recreating a view loses no data.
// testdata/superseded holds each of them (TestMigrateFromSuperseded).
var superseded = map[string]string{ // sha256 -> file name (commit that applied it)
	"c277e2994b1a1b3bf021bbe38a328bbc29d84b152a42c2c832a1c983ac7e82b9": "010_newest_state_weights.sql (543ae59 to 4474858)",
	"1992622e1b9e3cebcb7e647ef2c3045866b4eae988a0a7402aafb9daecd3d85c": "011_queue_returns.sql (e16260f)",
	"51ed24f10cb69dbcb53aae7cbd1f2044a7e83f4190b877e939f68120274ec952": "012_status_counts.sql (101add5)",
	"5caf6f869d65883e698074080c7bb71273573a1a20cdfb06a26ac40a42f7137e": "013_random_candidates.sql (5324909)",
	"9b3c60068cc80f4afde23c1f51f7a9e7b82d34afc9e84f3fd5dde55cb0a3f7a9": "014_queue_corrected.sql (4474858)",
}

// createView matches a statement that creates a view, capturing its name.
var createView = regexp.MustCompile(`^CREATE VIEW IF NOT EXISTS (\{db\}\.[A-Za-z0-9_]+) AS`)

// MigrateResult says what Migrate did.
type MigrateResult struct {
	Database string   // the database migrated (created when missing)
	Applied  []string // names applied by this run
	Version  uint32   // newest applied version after the run
	From     uint32   // newest version of this build's the database held before the run (0: none)
	// Newer is the newest version the database holds when a newer build of
	// entrowatch migrated it beyond this build's last migration, else 0.
	Newer uint32
}

// ErrNotMigrated is wrapped by CheckSchema's error for a database that
// lacks migrations of this build.
var ErrNotMigrated = errors.New("run entrowatch migrate")

// CheckSchema reports whether db holds every migration of this build, for
// the commands that read its views and tables: a database or schema that is
// missing, or one migrated by an older build, gives an error wrapping
// ErrNotMigrated that says so. A database a newer build migrated passes.
func CheckSchema(ctx context.Context, conn driver.Conn, db string) error {
	_, err := checkMigrations(ctx, conn, db)
	return err
}

// CheckSchemaAt is CheckSchema on the server and database of cfg, for
// `run` with clickhouse.migrate off. newer is the database's newest
// migration when a newer build of entrowatch took it beyond this build's
// last one, else 0.
func CheckSchemaAt(ctx context.Context, cfg Config) (newer uint32, err error) {
	conn, db, err := openServer(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return checkMigrations(ctx, conn, db)
}

func checkMigrations(ctx context.Context, conn driver.Conn, db string) (uint32, error) {
	ms, err := Migrations()
	if err != nil {
		return 0, err
	}
	var applied uint32
	var n uint64
	err = conn.QueryRow(ctx, "SELECT toUInt32(max(version)), count() FROM "+db+".schema_migrations").Scan(&applied, &n)
	var ex *proto.Exception
	if errors.As(err, &ex) && (ex.Code == 60 || ex.Code == 81) { // UNKNOWN_TABLE, UNKNOWN_DATABASE
		return 0, fmt.Errorf("database %s has no entrowatch tables (%s): %w --clickhouse DSN first", db, ex.Message, ErrNotMigrated)
	}
	if err != nil {
		return 0, fmt.Errorf("reading the migrations applied to %s: %w", db, err)
	}
	want := ms[len(ms)-1].Version
	if n == 0 {
		return 0, fmt.Errorf("database %s has no entrowatch migration applied: %w --clickhouse DSN first", db, ErrNotMigrated)
	}
	if applied < want {
		return 0, fmt.Errorf("database %s is at migration %d and this build needs %d (%s): %w --clickhouse DSN to apply the rest", db, applied, want, ms[len(ms)-1].Name, ErrNotMigrated)
	}
	if applied > want {
		return applied, nil
	}
	return 0, nil
}

// MigrateMinReadTimeout is the least read timeout Migrate uses, whatever
// cfg says: a migration may copy a large table (009).
const MigrateMinReadTimeout = 30 * time.Minute

// Migrate creates the database of cfg when missing and applies the pending
// migrations in order, recording each in {db}.schema_migrations and each
// statement of one in {db}.schema_migration_steps, so that a migration that
// stopped part way resumes after its last statement that succeeded. Running
// it again applies nothing. It refuses to run when an applied file has
// changed.
func Migrate(ctx context.Context, cfg Config, log *slog.Logger) (MigrateResult, error) {
	// A migration may copy a large table (009): the read timeout that turns
	// a hung server into an error must not cut it short.
	cfg.ReadTimeout = max(cfg.ReadTimeout, MigrateMinReadTimeout)
	conn, db, err := openServer(ctx, cfg)
	if err != nil {
		return MigrateResult{}, err
	}
	defer conn.Close()
	ms, err := Migrations()
	if err != nil {
		return MigrateResult{}, err
	}
	return migrate(ctx, conn, db, ms, log)
}

func migrate(ctx context.Context, conn driver.Conn, db string, ms []Migration, log *slog.Logger) (MigrateResult, error) {
	res := MigrateResult{Database: db}
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS " + db,
		"CREATE TABLE IF NOT EXISTS " + db + ".schema_migrations (version UInt32, name String, checksum String, applied_at DateTime('UTC') DEFAULT now()) ENGINE = MergeTree ORDER BY version",
		"CREATE TABLE IF NOT EXISTS " + db + ".schema_migration_steps (version UInt32, checksum String, statement UInt32, applied_at DateTime('UTC') DEFAULT now()) ENGINE = MergeTree ORDER BY (version, statement)",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			return res, fmt.Errorf("migrate %s: %w", db, err)
		}
	}
	// Replicas started together (the default config migrates at start)
	// take turns: the second reads what the first applied and applies
	// nothing, instead of running the same statements at the same time.
	unlock, err := lockMigrations(ctx, conn, db, log)
	if err != nil {
		return res, fmt.Errorf("migrate %s: %w", db, err)
	}
	defer unlock()
	applied := map[uint32][]string{} // version -> checksums applied (more than one after a superseded file)
	rows, err := conn.Query(ctx, "SELECT version, checksum FROM "+db+".schema_migrations")
	if err != nil {
		return res, fmt.Errorf("migrate %s: reading applied versions: %w", db, err)
	}
	for rows.Next() {
		var v uint32
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			rows.Close()
			return res, err
		}
		applied[v] = append(applied[v], sum)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, err
	}
	last := ms[len(ms)-1].Version
	for v := range applied {
		if v > last {
			res.Newer = max(res.Newer, v)
		} else {
			res.From = max(res.From, v)
		}
	}
	for _, m := range ms {
		recreate := false // the version holds a superseded file: recreate its views
		if sums, ok := applied[m.Version]; ok {
			if slices.Contains(sums, m.Checksum) {
				res.Version = max(res.Version, m.Version)
				continue
			}
			for _, sum := range sums {
				if _, ok := superseded[sum]; !ok {
					return res, fmt.Errorf("migrate %s: %s changed after it was applied (the database holds version %d from a file with checksum %.12s, this build's has %.12s): a database migrated by another build of entrowatch needs a build whose migrations agree with it (the same release or a newer one); if you edited the file, restore it and put the change in a new migration file", db, m.Name, m.Version, sum, m.Checksum)
				}
			}
			recreate = true
			if log != nil {
				log.Info("migration superseded: applying the current file again", "database", db, "migration", m.Name, "applied", superseded[sums[0]])
			}
		}
		// A migration that stopped part way (the server or the connection
		// went away) resumes after its last statement that succeeded: not
		// every statement can run twice (009 renames a table).
		var done uint32
		if err := conn.QueryRow(ctx, "SELECT toUInt32(max(statement)) FROM "+db+".schema_migration_steps WHERE version = ? AND checksum = ?", m.Version, m.Checksum).Scan(&done); err != nil {
			return res, fmt.Errorf("migrate %s: reading the progress of %s: %w", db, m.Name, err)
		}
		if done > 0 && log != nil {
			log.Info("migration resumed", "database", db, "migration", m.Name, "after_statement", done)
		}
		for i, stmt := range m.Statements {
			if uint32(i+1) <= done {
				continue
			}
			if v := createView.FindStringSubmatch(stmt); recreate && v != nil {
				if err := conn.Exec(ctx, Expand("DROP TABLE IF EXISTS "+v[1], db)); err != nil {
					return res, fmt.Errorf("migrate %s: %s statement %d: dropping the superseded view: %w", db, m.Name, i+1, err)
				}
			}
			if err := guardName(ctx, conn, db, stmt); err != nil {
				return res, fmt.Errorf("migrate %s: %s statement %d: %w", db, m.Name, i+1, err)
			}
			if err := conn.Exec(ctx, Expand(stmt, db)); err != nil {
				// The server may have done a statement whose success never
				// reached us (the connection or this process went away):
				// one that cannot run twice then fails. Done is done.
				if done, cerr := alreadyDone(ctx, conn, db, stmt); cerr != nil || !done {
					return res, fmt.Errorf("migrate %s: %s statement %d: %w (entrowatch migrate resumes here once the cause is fixed)", db, m.Name, i+1, err)
				}
				if log != nil {
					log.Info("migration statement found done", "database", db, "migration", m.Name, "statement", i+1, "err", err)
				}
			}
			if err := conn.Exec(ctx, "INSERT INTO "+db+".schema_migration_steps (version, checksum, statement) SELECT ?, ?, ?", m.Version, m.Checksum, uint32(i+1)); err != nil {
				return res, fmt.Errorf("migrate %s: recording %s statement %d: %w", db, m.Name, i+1, err)
			}
		}
		if err := conn.Exec(ctx, "INSERT INTO "+db+".schema_migrations (version, name, checksum) SELECT ?, ?, ?", m.Version, m.Name, m.Checksum); err != nil {
			return res, fmt.Errorf("migrate %s: recording %s: %w", db, m.Name, err)
		}
		if log != nil {
			log.Info("migration applied", "database", db, "migration", m.Name)
		}
		res.Applied = append(res.Applied, m.Name)
		res.Version = max(res.Version, m.Version)
	}
	return res, nil
}

var (
	dropTable  = regexp.MustCompile(`^DROP TABLE IF EXISTS \{db\}\.([A-Za-z0-9_]+)$`)
	renameStmt = regexp.MustCompile(`^RENAME TABLE (.+)$`)
	renamePair = regexp.MustCompile(`^\{db\}\.([A-Za-z0-9_]+) TO \{db\}\.([A-Za-z0-9_]+)$`)
	addColumn  = regexp.MustCompile(`^ALTER TABLE \{db\}\.([A-Za-z0-9_]+) ADD COLUMN ([A-Za-z0-9_]+) `)
)

// droppedTables are the tables (not views) a migration drops on purpose:
// 009's copy of the labels it replaced.
var droppedTables = map[string]bool{"labels_unversioned": true}

// guardName refuses a statement that would destroy or hide an object of
// the user's that happens to carry a name entrowatch uses: migrations drop
// and recreate views, and a table of that name (not entrowatch's) would be
// dropped with its rows, or kept in place of the view without a word.
func guardName(ctx context.Context, conn driver.Conn, db, stmt string) error {
	name, what := "", ""
	if m := dropTable.FindStringSubmatch(stmt); m != nil && !droppedTables[m[1]] {
		name, what = m[1], "drops it, to create entrowatch's view of that name"
	} else if m := createView.FindStringSubmatch(stmt); m != nil {
		name, what = strings.TrimPrefix(m[1], "{db}."), "creates entrowatch's view of that name, and would leave your table in its place"
	}
	if name == "" {
		return nil
	}
	engine, err := tableEngine(ctx, conn, db, name)
	if err != nil || engine == "" || engine == "View" || engine == "MaterializedView" {
		return err
	}
	return fmt.Errorf("database %s holds a table %s (engine %s) that no entrowatch migration created; this migration %s: "+
		"rename yours (RENAME TABLE %s.%s TO %s.%s_yours) and run entrowatch migrate again", db, name, engine, what, db, name, db, name)
}

// tableEngine is the engine of db.name, or "" when there is none.
func tableEngine(ctx context.Context, conn driver.Conn, db, name string) (string, error) {
	var n uint64
	var engine string
	if err := conn.QueryRow(ctx, "SELECT count(), any(engine) FROM system.tables WHERE database = ? AND name = ?", db, name).Scan(&n, &engine); err != nil {
		return "", fmt.Errorf("looking up %s.%s: %w", db, name, err)
	}
	if n == 0 {
		return "", nil
	}
	return engine, nil
}

// alreadyDone reports whether the effect of a statement that cannot run
// twice is in the database: a RENAME whose targets exist and whose sources
// (those not also targets) do not, or exist empty (created again by the
// statement before, which is then undone), an ADD COLUMN whose column
// exists.
func alreadyDone(ctx context.Context, conn driver.Conn, db, stmt string) (bool, error) {
	exists := func(name string) (bool, error) {
		e, err := tableEngine(ctx, conn, db, name)
		return e != "", err
	}
	if m := renameStmt.FindStringSubmatch(stmt); m != nil {
		targets := map[string]bool{}
		var pairs [][2]string
		for _, p := range strings.Split(m[1], ",") {
			pm := renamePair.FindStringSubmatch(strings.TrimSpace(p))
			if pm == nil {
				return false, nil
			}
			pairs = append(pairs, [2]string{pm[1], pm[2]})
			targets[pm[2]] = true
		}
		// A source that is not also a target may exist again, empty: the
		// CREATE TABLE IF NOT EXISTS before the rename (009's) ran again.
		var recreated []string
		for _, p := range pairs {
			if ok, err := exists(p[1]); err != nil || !ok {
				return false, err
			}
			if !targets[p[0]] {
				if ok, err := exists(p[0]); err != nil || !ok {
					continue
				}
				var n uint64
				if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+p[0]).Scan(&n); err != nil || n > 0 {
					return false, err
				}
				recreated = append(recreated, p[0])
			}
		}
		for _, name := range recreated {
			if err := conn.Exec(ctx, "DROP TABLE "+db+"."+name); err != nil {
				return false, err
			}
		}
		return true, nil
	}
	if m := addColumn.FindStringSubmatch(stmt); m != nil {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?", db, m[1], m[2]).Scan(&n); err != nil {
			return false, err
		}
		return n > 0, nil
	}
	return false, nil
}
