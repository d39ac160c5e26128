// Package chdb runs SQL on chDB, current ClickHouse as a library (libchdb.so
// from npm's @chdb/lib-linux-x64-gnu), so tests can check that SQL written for
// the ClickHouse 18.16 the project targets also runs on current versions.
//
// The library is loaded with purego directly rather than through chdb-go,
// whose package init panics when the library is missing, which would fail a
// whole test binary instead of skipping one test. Here a missing library is
// an error from Open that wraps ErrNoLibrary, and the caller skips.
package chdb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// ErrNoLibrary is wrapped by the errors of Library and Open when libchdb.so
// is not installed.
var ErrNoLibrary = errors.New("libchdb.so not installed")

// npmPath is where scripts/deps.sh (make deps) installs the library, relative
// to the repository root.
const npmPath = ".cache/npm/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so"

// Library finds libchdb.so: $CHDB_LIB_PATH if that file exists, else the npm
// install under the repository root (the nearest directory above the working
// directory with a go.mod).
func Library() (string, error) {
	if p := os.Getenv("CHDB_LIB_PATH"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding libchdb.so: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, npmPath)
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("%w: neither at $CHDB_LIB_PATH nor at %s; make deps installs it", ErrNoLibrary, p)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%w: $CHDB_LIB_PATH is unset or names no file, and no repository root (go.mod) is above the working directory", ErrNoLibrary)
		}
		dir = parent
	}
}

// conn is chdb_connection: a pointer to this struct is what chdb_connect
// returns, its field what chdb_query takes.
type conn struct{ internal unsafe.Pointer }

// api holds the library's functions.
type api struct {
	connect   func(argc int, argv []*byte) *conn
	closeConn func(c *conn)
	query     func(c unsafe.Pointer, query string, format string) unsafe.Pointer
	errorOf   func(res unsafe.Pointer) string
	buffer    func(res unsafe.Pointer) *byte
	length    func(res unsafe.Pointer) uint
	destroy   func(res unsafe.Pointer)
}

// The library is process-wide state (one embedded server), so it is loaded
// once per process and never unloaded.
var (
	loadOnce sync.Once
	loaded   *api
	loadErr  error
)

func load() (*api, error) {
	loadOnce.Do(func() {
		lib, err := Library()
		if err != nil {
			loadErr = err
			return
		}
		h, err := purego.Dlopen(lib, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			loadErr = fmt.Errorf("loading %s: %w", lib, err)
			return
		}
		a := &api{}
		for _, f := range []struct {
			fn   any
			name string
		}{
			{&a.connect, "chdb_connect"},
			{&a.closeConn, "chdb_close_conn"},
			{&a.query, "chdb_query"},
			{&a.errorOf, "chdb_result_error"},
			{&a.buffer, "chdb_result_buffer"},
			{&a.length, "chdb_result_length"},
			{&a.destroy, "chdb_destroy_query_result"},
		} {
			// Dlsym first: RegisterLibFunc panics on a missing symbol
			// (a libchdb too old for the connection API).
			sym, err := purego.Dlsym(h, f.name)
			if err != nil {
				loadErr = fmt.Errorf("loading %s: %w; install a current @chdb/lib-linux-x64-gnu", lib, err)
				return
			}
			purego.RegisterFunc(f.fn, sym)
		}
		loaded = a
	})
	return loaded, loadErr
}

// DB is a chDB session whose data lives in a directory. It is not safe for
// concurrent use.
type DB struct {
	api  *api
	conn *conn
}

// Open loads the library (once per process) and opens a session with its data
// in dir. Close it before opening another: chDB runs one embedded server per
// process.
func Open(dir string) (*DB, error) {
	a, err := load()
	if err != nil {
		return nil, err
	}
	var argv []*byte
	for _, s := range []string{"clickhouse", "--path=" + dir} {
		b := append([]byte(s), 0)
		argv = append(argv, &b[0])
	}
	c := a.connect(len(argv), argv)
	if c == nil || c.internal == nil {
		return nil, fmt.Errorf("chdb_connect --path=%s failed (is another session still open?)", dir)
	}
	return &DB{api: a, conn: c}, nil
}

// Exec runs one statement and returns its result as TabSeparated text ("" for
// statements without a result).
func (db *DB) Exec(q string) (string, error) {
	if db.conn == nil {
		return "", errors.New("chdb: Exec on a closed DB")
	}
	res := db.api.query(db.conn.internal, q, "TabSeparated")
	if res == nil {
		return "", nil
	}
	defer db.api.destroy(res)
	if e := db.api.errorOf(res); e != "" {
		return "", errors.New(e)
	}
	n := int(db.api.length(res))
	if n == 0 {
		return "", nil
	}
	return string(unsafe.Slice(db.api.buffer(res), n)), nil
}

// Close ends the session. Calling it twice is harmless.
func (db *DB) Close() {
	if db.conn != nil {
		db.api.closeConn(db.conn)
		db.conn = nil
	}
}
