package proc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a running child command whose stdout is kept and whose stderr
// is kept line by line.
type Process struct {
	Cmd *exec.Cmd

	mu     sync.Mutex
	stdout bytes.Buffer
	lines  []string
	newer  chan struct{} // closed and replaced on every new line
	exited chan struct{}
	err    error // of Wait, valid once exited is closed
}

// Start starts bin with args. The child gets SIGKILL when its parent dies,
// so that nothing outlives a crashed demo or test.
func Start(bin string, args ...string) (*Process, error) {
	p := &Process{newer: make(chan struct{}), exited: make(chan struct{})}
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Stdout = &lockedWriter{mu: &p.mu, w: &p.stdout}
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := p.Cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		p.collect(stderr)
		p.err = p.Cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *Process) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, sc.Text())
		close(p.newer)
		p.newer = make(chan struct{})
		p.mu.Unlock()
	}
}

// PID is the process ID.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Lines returns the stderr lines so far.
func (p *Process) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Stdout returns what the process wrote to stdout so far.
func (p *Process) Stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

// WaitLine waits for a stderr line containing substr and returns it.
func (p *Process) WaitLine(substr string, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for seen := 0; ; {
		p.mu.Lock()
		lines, newer := p.lines[seen:], p.newer
		seen = len(p.lines)
		p.mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, substr) {
				return l, nil
			}
		}
		select {
		case <-newer:
		case <-p.exited:
			// Lines are all collected before exited closes.
			for _, l := range p.Lines()[seen:] {
				if strings.Contains(l, substr) {
					return l, nil
				}
			}
			return "", fmt.Errorf("process exited (%v) without logging %q", p.err, substr)
		case <-deadline:
			return "", fmt.Errorf("no line with %q within %v", substr, timeout)
		}
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Exited is closed once the process has exited and been reaped.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Wait waits for the process to exit and returns its exit code (-1 when a
// signal ended it).
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.exited:
	case <-ctx.Done():
		return -1, fmt.Errorf("process still running: %w", ctx.Err())
	}
	var exitErr *exec.ExitError
	switch {
	case p.err == nil:
		return 0, nil
	case errors.As(p.err, &exitErr):
		return exitErr.ExitCode(), nil
	default:
		return -1, p.err
	}
}

// Stop sends SIGTERM, waits up to grace for the process to exit, then kills
// it; it returns once the process is reaped. It is a no-op on a process that
// has exited.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.Kill()
	}
}

// Kill kills the process if it still runs and reaps it.
func (p *Process) Kill() {
	select {
	case <-p.exited:
	default:
		_ = p.Cmd.Process.Kill()
		<-p.exited
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s *lockedWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}
