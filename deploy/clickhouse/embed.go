// Package clickhouse holds entrowatch's versioned ClickHouse migrations:
// NNN_name.sql files applied in order by `entrowatch migrate`. {db} in a file
// stands for the target database. Statements end with ";" at the end of a
// line. An applied file must never change; add a new file instead.
package clickhouse

import "embed"

// Migrations holds the *.sql files of this directory.
//
//go:embed *.sql
var Migrations embed.FS
