package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/proc"
)

// state is what up records for down.
type state struct {
	Consul    stateProc   `json:"consul"`
	HTTPAddr  string      `json:"consul_http_addr"`
	DNSPort   int         `json:"consul_dns_port"`
	Instances []stateProc `json:"instances"`
}

type stateProc struct {
	PID  int    `json:"pid"`
	Exe  string `json:"exe"` // absolute path, checked before signalling
	ID   string `json:"id,omitempty"`
	Addr string `json:"addr,omitempty"`
	Log  string `json:"log"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func up(ctx context.Context, cfg config, w io.Writer) (err error) {
	if _, err := os.Stat(statePath(cfg.state)); err == nil {
		return fmt.Errorf("%s exists: already up? run `make down` first", statePath(cfg.state))
	}
	bins, err := binaries(cfg.bin)
	if err != nil {
		return err
	}
	// Record what /proc/PID/exe will show, so down can tell its own
	// processes from a reused PID.
	for _, p := range []*string{&bins.consul, &bins.trimsvc} {
		if *p, err = filepath.EvalSymlinks(*p); err != nil {
			return err
		}
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(cfg.state, 0o755); err != nil {
		return err
	}
	agent, err := localconsul.New(bins.consul, cfg.state, localconsul.Options{Detach: true})
	if err != nil {
		return err
	}
	if err := agent.Start(30 * time.Second); err != nil {
		return err
	}
	st := state{
		Consul:   stateProc{PID: agent.PID(), Exe: bins.consul, Log: agent.LogPath},
		HTTPAddr: agent.HTTPAddr,
		DNSPort:  agent.DNSPort,
	}
	// Whatever fails from here on, leave a state that down can clean up.
	defer func() {
		if werr := writeState(cfg.state, st); werr != nil {
			err = errors.Join(err, werr)
		}
		if err != nil {
			err = fmt.Errorf("%w (run `make down` to stop what started)", err)
		}
	}()
	for i := range cfg.instances {
		logPath := filepath.Join(cfg.state, fmt.Sprintf("trimsvc-%d.log", i+1))
		p, err := startDetached(bins.trimsvc, logPath, "-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0",
			"-consul-addr", agent.HTTPAddr, "-check-interval", "1s")
		if err != nil {
			return err
		}
		sp := stateProc{PID: p, Exe: bins.trimsvc, Log: logPath}
		st.Instances = append(st.Instances, sp)
		line, err := waitLogLine(ctx, logPath, `msg="serving gRPC"`, 10*time.Second)
		if err != nil {
			return err
		}
		st.Instances[i].ID, st.Instances[i].Addr = proc.LogValue(line, "service_id"), proc.LogValue(line, "advertised")
	}
	if err := agent.WaitPassingCount(ctx, "trimsvc", cfg.instances, 10*time.Second); err != nil {
		return err
	}
	fmt.Fprintf(w, "up: consul dev agent pid %d, UI http://%s/ui\n", st.Consul.PID, agent.HTTPAddr)
	for _, in := range st.Instances {
		fmt.Fprintf(w, "  %-32s %s (pid %d, log %s)\n", in.ID, in.Addr, in.PID, in.Log)
	}
	fmt.Fprintf(w, `try:
  go run ./cmd/client -consul-addr %[1]s "  hello  world  "
  go run ./cmd/client -consul-addr %[1]s -n 10000 -c 8 x
  grpcurl -plaintext %[2]s list
  dig @127.0.0.1 -p %[3]d trimsvc.service.consul SRV
  curl -s 'http://%[1]s/v1/health/service/trimsvc?passing'
then: make down
`, agent.HTTPAddr, st.Instances[0].Addr, agent.DNSPort)
	return nil
}

func down(cfg config, w io.Writer) error {
	b, err := os.ReadFile(statePath(cfg.state))
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(w, "down: nothing is up (no %s)\n", statePath(cfg.state))
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("read %s: %w", statePath(cfg.state), err)
	}
	var errs []error
	for _, p := range append(st.Instances, st.Consul) { // consul last
		stopped, err := stopPID(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "down: %s pid %d: %s\n", filepath.Base(p.Exe), p.PID, stopped)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.RemoveAll(cfg.state)
}

// stopPID sends SIGTERM to p if it is still the process up started (its
// executable matches), waits up to 10s and then kills it.
func stopPID(p stateProc) (string, error) {
	if p.PID <= 0 {
		return "never started", nil
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	if err != nil || exe != p.Exe {
		return "already gone", nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil {
		return "", fmt.Errorf("signal pid %d: %w", p.PID, err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !alive(p.PID) {
			return "stopped", nil
		}
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return "", fmt.Errorf("kill pid %d: %w", p.PID, err)
	}
	return "killed after 10s", nil
}

// alive reports whether pid runs; a zombie does not count.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// startDetached starts bin in its own session with output to logPath, so it
// outlives the demo command, and returns its PID.
func startDetached(bin, logPath string, args ...string) (int, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", bin, err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reaped if it dies while we run
	return pid, nil
}

// waitLogLine polls logPath for a line containing substr.
func waitLogLine(ctx context.Context, logPath, substr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if f, err := os.Open(logPath); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if strings.Contains(sc.Text(), substr) {
					f.Close()
					return sc.Text(), nil
				}
			}
			f.Close()
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no %q in %s within %v", substr, logPath, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func writeState(dir string, st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(statePath(dir), b, 0o644)
}
