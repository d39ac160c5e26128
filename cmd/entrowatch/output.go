package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/entrowatch/entrowatch/internal/atomicfile"
)

// sameFile reports whether a and b name one existing file.
func sameFile(a, b string) bool {
	if a == "-" || b == "-" {
		return false
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// samePath reports whether a and b name the same path once made absolute
// and their symbolic links followed, also to files that do not exist yet (a
// dangling link is where a write would land); "-" is never the same as
// anything.
func samePath(a, b string) bool {
	if a == "-" || b == "-" || a == "" || b == "" {
		return false
	}
	return resolvePath(a) == resolvePath(b)
}

// resolvePath is path made absolute with its links followed as far as they
// lead (at most 40, as the kernel), whether or not the target exists.
func resolvePath(path string) string {
	p, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	for range 40 {
		dir, base := filepath.Split(p)
		if d, err := filepath.EvalSymlinks(dir); err == nil {
			dir = d
		}
		p = filepath.Join(dir, base)
		target, err := os.Readlink(p)
		if err != nil {
			return p // not a link (or missing): where a write lands
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(dir, target)
		}
		p = target
	}
	return p
}

// atomicPath returns a temporary path next to path to write to, and a commit
// function that renames it into place (ok) or removes it (not ok); "-" is
// written directly. Output that appears only complete never leaves a
// truncated file that looks like a result, and never clobbers a previous
// result with a failed run.
func atomicPath(path string) (tmp string, commit func(ok bool) error, err error) {
	if path == "-" {
		return path, func(bool) error { return nil }, nil
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", nil, fmt.Errorf("cannot write %s: directory %s does not exist", path, filepath.Clean(dir))
	}
	f, err := atomicfile.CreateTemp(dir, "."+base+".", ".partial")
	if err != nil {
		return "", nil, fmt.Errorf("cannot write %s: %w", path, err)
	}
	tmp = f.Name()
	// A result never ends up more open than the file it replaces.
	if old, err := os.Lstat(path); err == nil && old.Mode().IsRegular() {
		st, err := f.Stat()
		if err == nil && st.Mode().Perm()&^old.Mode().Perm() != 0 {
			err = f.Chmod(st.Mode().Perm() & old.Mode().Perm())
		}
		if err != nil {
			f.Close()
			os.Remove(tmp)
			return "", nil, fmt.Errorf("cannot write %s: %w", path, err)
		}
	}
	f.Close()
	done := false
	return tmp, func(ok bool) error {
		if done { // the first call decides; a deferred commit(false) after commit(true) is a no-op
			return nil
		}
		done = true
		if !ok {
			os.Remove(tmp)
			return nil
		}
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("writing %s: %w", path, err)
		}
		return nil
	}, nil
}

// artifactOutput prepares writing out, an artifact made from the files ins,
// before the work: out may not be one of them (named inputIs in the error),
// and an unwritable out fails now, not after minutes of fitting. Write to
// tmp, then commit(true); defer commit(false) for the error paths.
func artifactOutput(out, inputIs string, ins ...string) (tmp string, commit func(ok bool) error, err error) {
	for _, in := range ins {
		if sameFile(in, out) {
			return "", nil, fmt.Errorf("--out %s is %s: writing it would destroy what is being read", out, inputIs)
		}
	}
	return atomicPath(out)
}
