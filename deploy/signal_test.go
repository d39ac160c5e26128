package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// lockedBuf is a bytes.Buffer written by a child process and read by the test.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// TestSecondSignalExits: the first SIGTERM starts the graceful stop (here a
// 60 s http.shutdown_delay); a second one ends the process at once instead
// of waiting it out, as an operator pressing Ctrl-C twice expects.
func TestSecondSignalExits(t *testing.T) {
	bin := buildEntrowatch(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir: %s
sink: file
broker:
  in_memory: true
  listen: %s
http:
  listen: %s
  shutdown_delay: 60s
metrics:
  listen: %s
`, filepath.Join(dir, "d"), freePort(t), freePort(t), freePort(t))), 0o644))
	var stderr lockedBuf
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(stderr.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", what, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("stream running")
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	waitFor("shutting down")
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20 s after a second SIGTERM (it waits out the 60 s shutdown delay):\n%s", stderr.String())
	}
}
