package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/entrowatch/entrowatch/internal/words"
	"github.com/entrowatch/entrowatch/sinks/clickhouse"
)

const migrateSynopsis = `--clickhouse DSN [--database DB] [--list]

Creates or upgrades the ClickHouse schema (tables scored, labels,
label_requests, alarm_settings, alarm_state and the views on them) from the
versioned SQL in deploy/clickhouse (built into the binary). Applied versions
are recorded in <database>.schema_migrations, so running it again applies only
what is new. Works with ClickHouse 18.16 and later.

DSN: clickhouse://[user@]host:port[/database][?secure=true] (native protocol,
port 9000; 9440 with TLS). The password is read from
$ENTROWATCH_CLICKHOUSE_PASSWORD.`

// chFlags are the ClickHouse connection flags shared by migrate, alarms and
// labels.
type chFlags struct {
	dsn, database, user, caFile *string
	tls, skipVerify             *bool
	readTimeout                 *time.Duration
}

func addClickHouseFlags(fs *flag.FlagSet) chFlags {
	readHelp := "how long to wait for an answer of the server before giving up (the views over large tables can take minutes)"
	readDefault := 5 * time.Minute
	if fs.Name() == "entrowatch migrate" {
		// clickhouse.Migrate waits at least this long: a migration may copy
		// a large table.
		readDefault = clickhouse.MigrateMinReadTimeout
		readHelp = fmt.Sprintf("how long to wait for an answer of the server before giving up; at least %v, since a migration may copy a large table", clickhouse.MigrateMinReadTimeout)
	}
	return chFlags{
		dsn:         fs.String("clickhouse", "", "ClickHouse DSN, clickhouse://[user@]host:9000[/database] (required)"),
		database:    fs.String("database", "", "database (overrides the DSN's; default \"default\")"),
		user:        fs.String("user", "", "user (overrides the DSN's); password from $ENTROWATCH_CLICKHOUSE_PASSWORD"),
		tls:         fs.Bool("tls", false, "connect with TLS (as secure=true in the DSN)"),
		skipVerify:  fs.Bool("tls-skip-verify", false, "with TLS, do not verify the server certificate (tests only)"),
		caFile:      fs.String("tls-ca", "", "PEM `file` of a private CA to trust (implies --tls)"),
		readTimeout: fs.Duration("read-timeout", readDefault, readHelp),
	}
}

// config builds the connection config, or errUsage when --clickhouse is missing.
func (f chFlags) config(fs *flag.FlagSet) (clickhouse.Config, error) {
	if *f.dsn == "" {
		fmt.Fprintln(fs.Output(), "--clickhouse DSN is required (e.g. clickhouse://127.0.0.1:9000/default)")
		fs.Usage()
		return clickhouse.Config{}, errUsage
	}
	c := clickhouse.DefaultConfig()
	c.DSN, c.Database, c.User = *f.dsn, *f.database, *f.user
	c.TLS, c.TLSSkipVerify, c.TLSCAFile = *f.tls, *f.skipVerify, *f.caFile
	c.ReadTimeout = *f.readTimeout
	if c.ReadTimeout <= 0 {
		return c, badFlag("--read-timeout %v: want > 0", c.ReadTimeout)
	}
	c.Password = os.Getenv("ENTROWATCH_CLICKHOUSE_PASSWORD")
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate", migrateSynopsis, stderr)
	chf := addClickHouseFlags(fs)
	list := fs.Bool("list", false, "list the migrations built into this binary and exit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *list {
		ms, err := clickhouse.Migrations()
		if err != nil {
			return err
		}
		for _, m := range ms {
			fmt.Fprintf(stdout, "%03d %s (%s, sha256 %s)\n", m.Version, m.Name, words.Count(len(m.Statements), "statement"), m.Checksum)
		}
		return nil
	}
	cfg, err := chf.config(fs)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := clickhouse.Migrate(ctx, cfg, log)
	if err != nil {
		return err
	}
	switch {
	case res.Newer > 0:
		fmt.Fprintf(stdout, "database %s: at version %d, migrated by a newer entrowatch (this build's migrations end at %d): nothing to apply; "+
			"this build runs against it with its own migrations' columns and views (docs/deploy.md, Upgrades and rollback)\n", res.Database, res.Newer, res.Version)
	case len(res.Applied) == 0:
		fmt.Fprintf(stdout, "database %s: up to date at version %d\n", res.Database, res.Version)
	case res.From == 0:
		fmt.Fprintf(stdout, "database %s: applied %s; now at version %d\n", res.Database, strings.Join(res.Applied, ", "), res.Version)
	default:
		fmt.Fprintf(stdout, "database %s: was at version %d; applied %s; now at version %d\n", res.Database, res.From, strings.Join(res.Applied, ", "), res.Version)
	}
	return nil
}
