package localconsul

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
	"time"
)

// Agent is a Consul dev agent on 127.0.0.1.
type Agent struct {
	// HTTPAddr is the HTTP API (and UI) address, host:port.
	HTTPAddr string
	// DNSPort is the DNS port (UDP and TCP).
	DNSPort int
	// LogPath is the agent's log file.
	LogPath string

	bin, dir, config string
	detach           bool
	cmd              *exec.Cmd
	exited           chan struct{}
	started          bool // once: its ports are its own from then on
}

// Options for New.
type Options struct {
	// Detach starts the agent in its own session so that it outlives the
	// process that started it (make up). Otherwise it dies with its parent.
	Detach bool
}

// New prepares an agent that runs bin with its data and log in dir, on free
// loopback ports. Start it with Start.
func New(bin, dir string, opts Options) (*Agent, error) {
	a := &Agent{
		LogPath: filepath.Join(dir, "consul.log"),
		bin:     bin,
		dir:     dir,
		config:  filepath.Join(dir, "agent.hcl"),
		detach:  opts.Detach,
	}
	if err := a.pickPorts(); err != nil {
		return nil, err
	}
	return a, nil
}

// pickPorts chooses free ports and writes the agent's configuration.
func (a *Agent) pickPorts() error {
	ports, err := FreePorts(6)
	if err != nil {
		return err
	}
	a.HTTPAddr, a.DNSPort = fmt.Sprintf("127.0.0.1:%d", ports[0]), ports[1]
	hcl := fmt.Sprintf(`data_dir = %q
node_name = "trimkit-local"
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
`, filepath.Join(a.dir, "data"), ports[0], ports[1], ports[2], ports[3], ports[4], ports[5])
	if err := os.WriteFile(a.config, []byte(hcl), 0o600); err != nil {
		return fmt.Errorf("write consul config: %w", err)
	}
	return nil
}

// errPortTaken marks an agent that could not bind one of its ports.
var errPortTaken = errors.New("a port was taken before consul could bind it")

// Start starts the agent with an empty data directory (a dev agent keeps
// nothing across restarts) and waits, at most timeout, for it to elect
// itself leader. A port is free when picked but nothing holds it for the
// agent, so another process can take it first: on its first start the
// agent then gets new ports and tries again, a few times. A restart keeps
// its ports (callers know its address).
func (a *Agent) Start(timeout time.Duration) error {
	for tries := 1; ; tries++ {
		err := a.start(timeout)
		if !errors.Is(err, errPortTaken) || a.started || tries == 5 {
			if err == nil {
				a.started = true
			}
			return err
		}
		if err := a.pickPorts(); err != nil {
			return err
		}
	}
}

func (a *Agent) start(timeout time.Duration) error {
	if a.cmd != nil {
		return errors.New("consul agent already started")
	}
	if err := os.RemoveAll(filepath.Join(a.dir, "data")); err != nil {
		return fmt.Errorf("clear consul data dir: %w", err)
	}
	logFile, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open consul log: %w", err)
	}
	var logStart int64 // this run's part of the log starts here
	if info, err := logFile.Stat(); err == nil {
		logStart = info.Size()
	}
	cmd := exec.Command(a.bin, "agent", "-dev", "-config-file", a.config)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if a.detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start consul: %w", err)
	}
	a.cmd, a.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}(a.exited)
	if err := a.waitLeader(timeout); err != nil {
		_ = a.Stop()
		if b, rerr := os.ReadFile(a.LogPath); rerr == nil && int64(len(b)) >= logStart &&
			strings.Contains(string(b[logStart:]), "address already in use") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return fmt.Errorf("consul at %s: %w\n%s", a.HTTPAddr, err, a.LogTail())
	}
	return nil
}

// PID is the agent's process ID, 0 when not running.
func (a *Agent) PID() int {
	if a.cmd == nil {
		return 0
	}
	return a.cmd.Process.Pid
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

// LogTail returns the end of the agent's log, for error messages.
func (a *Agent) LogTail() string {
	b, err := os.ReadFile(a.LogPath)
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
		// A query of its own bound: whatever holds the port may not be the
		// agent, and may never answer.
		qctx, qcancel := context.WithTimeout(ctx, time.Second)
		leader, err := a.Leader(qctx)
		qcancel()
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

// FreePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close() // held until all are found, so they are distinct
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
