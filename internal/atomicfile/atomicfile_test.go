package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteFileReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.json")
	require.NoError(t, WriteFile(path, []byte("first")))
	require.NoError(t, WriteFile(path, []byte("second")))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "second", string(b))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "no temporary file left behind")
}

// A write that cannot finish leaves the previous file as it was and no
// temporary file: the target is a directory here, so the rename fails
// after the bytes were written.
func TestWriteFileFailureKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "out")
	require.NoError(t, os.Mkdir(target, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(target, "keep"), []byte("x"), 0o644))
	err := WriteFile(target, []byte("new"))
	require.Error(t, err)
	require.Contains(t, err.Error(), target)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "the temporary file is removed")

	require.Error(t, WriteFile(filepath.Join(dir, "missing", "x"), nil), "a missing directory is an error")
}

func TestCreateTempHonoursUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	f, err := CreateTemp(t.TempDir(), ".p.", ".partial")
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	require.Regexp(t, `^\.p\.\d+\.partial$`, filepath.Base(f.Name()))

	syscall.Umask(0o022)
	g, err := CreateTemp(filepath.Dir(f.Name()), ".p.", ".partial")
	require.NoError(t, err)
	defer g.Close()
	st, err = g.Stat()
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm(), "not os.CreateTemp's 0600")
}
