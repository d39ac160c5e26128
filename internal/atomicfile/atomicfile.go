// Package atomicfile writes files that appear whole or not at all: the bytes
// go to a new file beside the target, which is then renamed over it. A crash
// or a full disk leaves the previous file as it was, never a truncated one
// that looks like a result.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
)

// CreateTemp creates a new file in dir named prefix + a random number +
// suffix, as os.CreateTemp does, but with the mode os.Create gives: 0666 less
// the process's umask (applied by the kernel), not CreateTemp's 0600, and
// not a forced 0644 that would ignore an operator's umask 077.
func CreateTemp(dir, prefix, suffix string) (*os.File, error) {
	for range 10000 {
		name := filepath.Join(dir, prefix+strconv.FormatUint(uint64(rand.Uint32()), 10)+suffix)
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, &fs.PathError{Op: "createtemp", Path: filepath.Join(dir, prefix+"*"+suffix), Err: fs.ErrExist}
}

// WriteFile writes b to path through a temporary file in path's directory
// (named ".BASE.N.partial") renamed into place, with the mode os.Create
// gives. On error path is unchanged and the temporary file removed.
func WriteFile(path string, b []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := CreateTemp(dir, "."+base+".", ".partial")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync() // the bytes reach the disk before the name does
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
