package proctest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logfmt/logfmt"
)

// Build builds the main package pkg (an import path or ./dir relative to
// the module root) into dir and returns the binary's path.
func Build(dir, pkg string) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// Process is a running command whose stderr is kept, line by line.
type Process struct {
	Cmd *exec.Cmd

	t      testing.TB
	stdout bytes.Buffer
	mu     sync.Mutex
	lines  []string
	newer  chan struct{} // closed and replaced on every new line
	exited chan struct{}
	err    error // of Wait, valid once exited is closed
}

// Start starts bin with args. The process is killed, if still running, and
// reaped when the test ends; it also dies with the test binary.
func Start(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, newer: make(chan struct{}), exited: make(chan struct{})}
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Stdout = &syncWriter{mu: &p.mu, w: &p.stdout}
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := p.Cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.collect(stderr)
		p.err = p.Cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.Cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(bin), strings.Join(p.Lines(), "\n"))
		}
	})
	return p
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

// Wait waits for the process to exit and returns its exit code.
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

// LogValue returns the value of key in a logfmt line, or "".
func LogValue(line, key string) string {
	d := logfmt.NewDecoder(strings.NewReader(line))
	for d.ScanRecord() {
		for d.ScanKeyval() {
			if string(d.Key()) == key {
				return string(d.Value())
			}
		}
	}
	return ""
}

type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}
