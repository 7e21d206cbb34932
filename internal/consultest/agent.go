package consultest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Agent is a running Consul dev agent.
type Agent struct {
	// HTTPAddr is the agent's HTTP API address, host:port on loopback.
	HTTPAddr string
	// DNSPort is the agent's DNS port (UDP and TCP).
	DNSPort int

	t       testing.TB
	bin     string
	dir     string
	config  string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Start starts a dev agent and waits until it has elected itself leader. It
// is stopped when the test ends, failed or not.
func Start(t testing.TB) *Agent {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	ports := freePorts(t, 6)
	a := &Agent{
		HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		DNSPort:  ports[1],
		t:        t,
		bin:      bin,
		dir:      dir,
		config:   filepath.Join(dir, "agent.hcl"),
		logPath:  filepath.Join(dir, "consul.log"),
	}
	hcl := fmt.Sprintf(`data_dir = %q
node_name = "consultest"
bind_addr = "127.0.0.1"
client_addr = "127.0.0.1"
disable_update_check = true
ports {
  http = %d
  dns = %d
  grpc = %d
  grpc_tls = -1
  serf_lan = %d
  serf_wan = %d
  server = %d
}
`, filepath.Join(dir, "data"), ports[0], ports[1], ports[2], ports[3], ports[4], ports[5])
	if err := os.WriteFile(a.config, []byte(hcl), 0o600); err != nil {
		t.Fatalf("write consul config: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
			t.Errorf("stop consul: %v", err)
		}
	})
	a.Restart()
	return a
}

// Restart starts the agent again on the same ports after Stop, as an
// operator restarting a dev agent would; a dev agent forgets every
// registration. Called on a running agent, it stops it first.
func (a *Agent) Restart() {
	a.t.Helper()
	if err := a.Stop(); err != nil {
		a.t.Fatalf("stop consul before restart: %v", err)
	}
	// A dev agent keeps nothing across restarts; with a data_dir it would
	// restore its local services, so start from an empty one.
	if err := os.RemoveAll(filepath.Join(a.dir, "data")); err != nil {
		a.t.Fatalf("clear consul data dir: %v", err)
	}
	logFile, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		a.t.Fatalf("open consul log: %v", err)
	}
	cmd := exec.Command(a.bin, "agent", "-dev", "-config-file", a.config)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The agent dies with the test binary, even when a test panics.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		a.t.Fatalf("start consul: %v", err)
	}
	a.cmd, a.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}(a.exited)
	if err := a.waitLeader(30 * time.Second); err != nil {
		a.t.Fatalf("consul at %s: %v\n%s", a.HTTPAddr, err, a.LogTail())
	}
}

// Stop stops the agent (SIGTERM, then SIGKILL after 10s) and reaps it. It
// is a no-op when the agent is not running.
func (a *Agent) Stop() error {
	if a.cmd == nil {
		return nil
	}
	defer func() { a.cmd = nil }()
	select {
	case <-a.exited:
		return nil
	default:
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal consul: %w", err)
	}
	select {
	case <-a.exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	if err := a.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill consul: %w", err)
	}
	<-a.exited
	return nil
}

// LogTail returns the end of the agent's log, for failure messages.
func (a *Agent) LogTail() string {
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		return fmt.Sprintf("(no consul log: %v)", err)
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Leader returns what /v1/status/leader answers: the leader's RPC address.
func (a *Agent) Leader(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.HTTPAddr+"/v1/status/leader", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status leader: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return strings.Trim(string(bytes.TrimSpace(body)), `"`), nil
}

func (a *Agent) waitLeader(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var lastErr error
	for {
		leader, err := a.Leader(ctx)
		if err == nil && leader != "" {
			return nil
		}
		if err == nil {
			err = errors.New("no leader yet")
		}
		lastErr = err
		select {
		case <-a.exited:
			return fmt.Errorf("agent exited before electing a leader: %w", lastErr)
		case <-ctx.Done():
			return fmt.Errorf("no leader within %v: %w", timeout, lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago. Holding all listeners until the end keeps the n distinct.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
