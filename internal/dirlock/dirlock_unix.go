//go:build unix

// Package dirlock gives one process at a time a directory: a second
// entrowatch on the same data directory fails at once instead of sharing
// (and rewriting) the files of the broker or the managed ClickHouse.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Lock takes an exclusive lock on dir (the file entrowatch.lock in it,
// holding this process's pid) for this process; key names the setting that
// gave dir, for the message when another process holds it. The lock goes
// with the process: a crash leaves nothing to clean up.
func Lock(dir, key string) (unlock func() error, err error) {
	path := filepath.Join(dir, "entrowatch.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", key, dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := ""
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = fmt.Sprintf(" (pid %d)", pid)
			}
			return nil, fmt.Errorf("%s %s is in use by another entrowatch process%s: give each process its own %s", key, dir, holder, key)
		}
		return nil, fmt.Errorf("locking %s %s: %w", key, dir, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() error {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return f.Close()
	}, nil
}
