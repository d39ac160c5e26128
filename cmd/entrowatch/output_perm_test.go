//go:build unix

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOutputPermUmask: output files (score CSVs, estimators, label
// requests: anything written through atomicPath; cluster artifacts) get the mode os.Create
// gives, 0666 less the umask; an operator's umask 077 keeps them private.
// Before, they were forced to 0644. The umask is per process, so the files
// are written by a child (this test binary, started by sh after `umask
// 077`; TestOutputPermChild), not by this process, whose other tests run
// alongside.
func TestOutputPermUmask(t *testing.T) {
	dir := t.TempDir()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to set the child's umask:", err)
	}
	cmd := exec.Command(sh, "-c", `umask 077 && exec "$0" -test.run='^TestOutputPermChild$' -test.v`, os.Args[0])
	cmd.Env = append(os.Environ(), "ENTROWATCH_TEST_PERM_DIR="+dir)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "--- PASS: TestOutputPermChild", "%s", out)
	for _, name := range []string{"scored.csv", "est.json", "direct.txt", "clusters.json"} {
		st, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err, name)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "%s under umask 077", name)
	}
}

// TestOutputPermChild writes the files TestOutputPermUmask checks; it does
// nothing unless started by it.
func TestOutputPermChild(t *testing.T) {
	dir := os.Getenv("ENTROWATCH_TEST_PERM_DIR")
	if dir == "" {
		t.Skip("run by TestOutputPermUmask")
	}
	scored := filepath.Join(dir, "scored.csv")
	_, errs, code := runCLI(t, "score", "--in", fixtures+"valid.jsonl.gz", "--out", scored, "--quiet")
	require.Equal(t, 0, code, errs)
	_, errs, code = runCLI(t, "train", "--in", scored, "--out", filepath.Join(dir, "est.json"), "--features", "mean,std", "--transfer=false")
	require.Equal(t, 0, code, errs)
	writeAtomic(t, filepath.Join(dir, "direct.txt"))
	csvPath, _ := clusterPrompts(t, t.TempDir())
	_, errs, code = runCLI(t, "cluster", "fit", "--in", csvPath, "--out", filepath.Join(dir, "clusters.json"), "--k", "3")
	require.Equal(t, 0, code, errs)
}

// TestOutputPermKeepsStricterMode: a result replacing a file is never more
// open than that file was (the umask here is the usual 022; an operator
// who made a report 0600 keeps it 0600). Before, it became 0644.
func TestOutputPermKeepsStricterMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.txt")
	require.NoError(t, os.WriteFile(path, []byte("old\n"), 0o600))
	require.NoError(t, os.Chmod(path, 0o600))
	writeAtomic(t, path)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "new\n", string(b))
}

// writeAtomic writes "new\n" to path through atomicPath, as the commands do.
func writeAtomic(t *testing.T, path string) {
	t.Helper()
	tmp, commit, err := atomicPath(path)
	require.NoError(t, err)
	defer commit(false)
	f, err := os.Create(tmp)
	require.NoError(t, err)
	_, err = f.WriteString("new\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, commit(true))
}
