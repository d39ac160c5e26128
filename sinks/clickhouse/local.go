package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// LocalConfig configures a managed clickhouse-server child process.
type LocalConfig struct {
	// Dir holds the server's config, data and logs; created when missing and
	// reused across starts (the data persists). Default "clickhouse-data"
	// under the working directory (entrowatch-data/clickhouse).
	Dir string
	// Binary is the server executable; default "clickhouse-server" on PATH,
	// else /usr/sbin/clickhouse-server.
	Binary string
	// ReadyTimeout bounds the wait for /ping to answer; default 30s.
	ReadyTimeout time.Duration
	// StopTimeout bounds the graceful stop before SIGKILL; default 15s.
	StopTimeout time.Duration
	// TCPPort and HTTPPort pin the server's ports (127.0.0.1). 0: the ports
	// of the previous start under Dir when they are free (so a restarted
	// server keeps its address), else free ones.
	TCPPort, HTTPPort int
}

// DefaultLocalConfig is a server under ./entrowatch-data/clickhouse.
func DefaultLocalConfig() LocalConfig {
	return LocalConfig{Dir: filepath.Join("entrowatch-data", "clickhouse"), ReadyTimeout: 30 * time.Second, StopTimeout: 15 * time.Second}
}

// Server is a running managed clickhouse-server.
type Server struct {
	cmd      *exec.Cmd
	dir      string
	tcpPort  int
	httpPort int
	stopWait time.Duration
	log      *slog.Logger

	done    chan struct{} // closed when the process exited
	waitErr error

	stopOnce sync.Once
	stopErr  error
}

// ErrNoServerBinary is returned by StartLocal when no clickhouse-server
// executable is found.
var ErrNoServerBinary = errors.New("clickhouse-server not found (install it: apt-get install clickhouse-server, or pass a DSN)")

// FindServerBinary locates the clickhouse-server executable.
func FindServerBinary() (string, error) {
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", ErrNoServerBinary
}

// StartLocal starts clickhouse-server on free 127.0.0.1 ports with its
// config, data and logs under cfg.Dir, and waits until it answers. The
// process is stopped by Stop, and by the kernel if this process dies.
func StartLocal(ctx context.Context, cfg LocalConfig, log *slog.Logger) (*Server, error) {
	d := DefaultLocalConfig()
	if cfg.Dir == "" {
		cfg.Dir = d.Dir
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = d.ReadyTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = d.StopTimeout
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	bin := cfg.Binary
	if bin == "" {
		var err error
		if bin, err = FindServerBinary(); err != nil {
			return nil, err
		}
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("clickhouse local: data dir %q: %w", cfg.Dir, err)
	}
	for _, sub := range []string{"data", "data/tmp", "data/user_files", "data/format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("clickhouse local: creating %s: %w", dir, err)
		}
	}
	if err := stopLeftover(dir, cfg.StopTimeout, log); err != nil {
		return nil, err
	}
	ports, err := choosePorts(dir, cfg.TCPPort, cfg.HTTPPort)
	if err != nil {
		return nil, fmt.Errorf("clickhouse local: finding free ports: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ports"), fmt.Appendf(nil, "tcp_port %d\nhttp_port %d\ninterserver_http_port %d\n", ports[0], ports[1], ports[2]), 0o644); err != nil {
		return nil, fmt.Errorf("clickhouse local: %w", err)
	}
	s := &Server{dir: dir, tcpPort: ports[0], httpPort: ports[1], stopWait: cfg.StopTimeout, log: log, done: make(chan struct{})}
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(s.configXML(ports[2])), 0o644); err != nil {
		return nil, fmt.Errorf("clickhouse local: writing config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(usersXML), 0o644); err != nil {
		return nil, fmt.Errorf("clickhouse local: writing users: %w", err)
	}
	out, err := os.OpenFile(filepath.Join(dir, "log", "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("clickhouse local: %w", err)
	}
	s.cmd = exec.Command(bin, "--config-file="+filepath.Join(dir, "config.xml"))
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = out, out
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("clickhouse local: starting %s: %w", bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		out.Close()
		close(s.done)
	}()
	log.Info("clickhouse-server starting", "dir", dir, "tcp_port", s.tcpPort, "http_port", s.httpPort, "pid", s.cmd.Process.Pid)
	if err := s.waitReady(ctx, cfg.ReadyTimeout); err != nil {
		stopErr := s.Stop()
		return nil, errors.Join(err, stopErr)
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/ping", s.httpPort)
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
			resp.Body.Close()
			if strings.HasPrefix(string(body), "Ok") {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("clickhouse local: server exited during start (%v); see %s", s.waitErr, filepath.Join(s.dir, "log"))
		case <-ctx.Done():
			return fmt.Errorf("clickhouse local: server not ready after %s: %w; see %s", timeout, ctx.Err(), filepath.Join(s.dir, "log"))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DSN is the native-protocol address of the server's default database.
func (s *Server) DSN() string { return fmt.Sprintf("clickhouse://127.0.0.1:%d/default", s.tcpPort) }

// TCPPort and HTTPPort are the ports the server listens on (127.0.0.1 only).
func (s *Server) TCPPort() int { return s.tcpPort }

// HTTPPort is the server's HTTP interface port (127.0.0.1 only); see TCPPort.
func (s *Server) HTTPPort() int { return s.httpPort }

// Dir is the server's directory.
func (s *Server) Dir() string { return s.dir }

// Done is closed when the server process has exited (for supervision).
func (s *Server) Done() <-chan struct{} { return s.done }

// ExitErr is how the process ended; valid once Done is closed.
func (s *Server) ExitErr() error {
	<-s.done
	return s.waitErr
}

// Stop terminates the server (SIGTERM, then SIGKILL after the stop timeout)
// and waits for it. Safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		select {
		case <-s.done:
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(s.stopWait):
			s.log.Warn("clickhouse-server did not stop in time; killing it", "pid", s.cmd.Process.Pid)
			_ = s.cmd.Process.Kill()
			<-s.done
			s.stopErr = fmt.Errorf("clickhouse local: server killed after %s", s.stopWait)
		}
	})
	return s.stopErr
}

func (s *Server) configXML(interPort int) string {
	p := func(sub string) string { return filepath.Join(s.dir, sub) + "/" }
	return `<?xml version="1.0"?>
<!-- Written by entrowatch for its managed local server; rewritten on each start. -->
<yandex>
  <logger>
    <level>warning</level>
    <log>` + filepath.Join(s.dir, "log", "server.log") + `</log>
    <errorlog>` + filepath.Join(s.dir, "log", "server.err.log") + `</errorlog>
    <size>50M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>` + strconv.Itoa(s.tcpPort) + `</tcp_port>
  <http_port>` + strconv.Itoa(s.httpPort) + `</http_port>
  <interserver_http_port>` + strconv.Itoa(interPort) + `</interserver_http_port>
  <path>` + p("data") + `</path>
  <tmp_path>` + p("data/tmp") + `</tmp_path>
  <user_files_path>` + p("data/user_files") + `</user_files_path>
  <format_schema_path>` + p("data/format_schemas") + `</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
`
}

const usersXML = `<?xml version="1.0"?>
<!-- Written by entrowatch: user "default" without password, from 127.0.0.1 only. -->
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
`

// choosePorts returns the tcp, http and interserver ports: the pinned ones
// (checked free), else those recorded in dir/ports when all are free, else
// free ones.
func choosePorts(dir string, tcp, http int) ([]int, error) {
	if tcp != 0 || http != 0 {
		free, err := freePorts(3)
		if err != nil {
			return nil, err
		}
		if tcp != 0 {
			free[0] = tcp
		}
		if http != 0 {
			free[1] = http
		}
		for _, p := range free[:2] {
			if !portFree(p) {
				return nil, fmt.Errorf("port %d is in use (pinned in the configuration)", p)
			}
		}
		return free, nil
	}
	if b, err := os.ReadFile(filepath.Join(dir, "ports")); err == nil {
		var last [3]int
		if n, _ := fmt.Sscanf(string(b), "tcp_port %d\nhttp_port %d\ninterserver_http_port %d", &last[0], &last[1], &last[2]); n == 3 &&
			portFree(last[0]) && portFree(last[1]) && portFree(last[2]) {
			return last[:], nil
		}
	}
	return freePorts(3)
}

// portFree reports whether 127.0.0.1:port can be bound now.
func portFree(port int) bool {
	if port <= 0 || port > 65535 {
		return false
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// Supervisor keeps a managed server running: when the process exits on its
// own (killed, crashed, out of memory), it is started again on the same
// ports, so clients reconnect to the same address.
type Supervisor struct {
	cfg   LocalConfig
	log   *slog.Logger
	mu    sync.Mutex
	cur   *Server
	stop  chan struct{}
	done  chan struct{}
	exits atomic.Int64
}

// Exits is the number of times the server exited on its own (and was
// started again), for a metric: a crash loop shows there.
func (v *Supervisor) Exits() int64 { return v.exits.Load() }

// Supervise watches s, started from cfg, until Stop.
func Supervise(s *Server, cfg LocalConfig, log *slog.Logger) *Supervisor {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg.TCPPort, cfg.HTTPPort = s.tcpPort, s.httpPort
	v := &Supervisor{cfg: cfg, log: log, cur: s, stop: make(chan struct{}), done: make(chan struct{})}
	go v.loop()
	return v
}

// Server returns the server currently running (or last started).
func (v *Supervisor) Server() *Server {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cur
}

func (v *Supervisor) loop() {
	defer close(v.done)
	backoff := time.Second
	for {
		cur := v.Server()
		select {
		case <-v.stop:
			return
		case <-cur.Done():
		}
		v.exits.Add(1)
		v.log.Error("managed clickhouse-server exited on its own; starting it again on the same ports",
			"exit", cur.ExitErr(), "log", filepath.Join(cur.dir, "log"), "tcp_port", cur.tcpPort)
		for {
			select {
			case <-v.stop:
				return
			case <-time.After(backoff):
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-v.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			next, err := StartLocal(ctx, v.cfg, v.log)
			cancel()
			if err == nil {
				v.mu.Lock()
				v.cur = next
				v.mu.Unlock()
				v.log.Info("managed clickhouse-server running again", "tcp_port", next.tcpPort, "pid", next.cmd.Process.Pid)
				backoff = time.Second
				break
			}
			backoff = min(2*backoff, 30*time.Second)
			v.log.Error("managed clickhouse-server did not start again; retrying", "err", err, "retry_in", backoff)
		}
	}
}

// Stop stops supervising and stops the server.
func (v *Supervisor) Stop() error {
	select {
	case <-v.stop:
	default:
		close(v.stop)
	}
	<-v.done
	return v.Server().Stop()
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// stopLeftover stops a clickhouse-server still running on dir from an
// earlier start whose parent died (kill -9 of entrowatch run): it holds the
// data directory's lock, so a new server exits at once ("Another server
// instance in same directory is already running"). The parent's death sent
// it SIGTERM, so it is usually on its way out: it gets wait to exit, then
// SIGKILL (a stopped or hung one never exits). Only a process whose command
// line names dir's config.xml is touched: the caller owns dir (run holds the
// data_dir lock), so such a process is a leftover. Where /proc is missing
// this does nothing.
func stopLeftover(dir string, wait time.Duration, log *slog.Logger) error {
	b, err := os.ReadFile(filepath.Join(dir, "data", "status"))
	if err != nil {
		return nil
	}
	var pid int
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PID: "); ok {
			pid, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if pid <= 0 || pid == os.Getpid() {
		return nil
	}
	ours := func() bool {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && strings.Contains(string(cmdline), filepath.Join(dir, "config.xml"))
	}
	if !ours() {
		return nil
	}
	log.Warn("a clickhouse-server left by an earlier run still holds the data directory; stopping it", "pid", pid, "dir", dir)
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	_ = p.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(wait)
	for ours() {
		if time.Now().After(deadline) {
			_ = p.Signal(syscall.SIGKILL)
			deadline = time.Now().Add(wait)
			for ours() {
				if time.Now().After(deadline) {
					return fmt.Errorf("clickhouse local: the clickhouse-server left by an earlier run (pid %d) still holds %s after SIGKILL; stop it and start again", pid, dir)
				}
				time.Sleep(50 * time.Millisecond)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
