package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// StartDetached starts bin in its own session with its output to logPath,
// so that it outlives the process that started it (make up), and returns
// its PID. While the starter runs, it reaps the child if it dies.
func StartDetached(bin, logPath string, args ...string) (int, error) {
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
	go func() { _ = cmd.Wait() }()
	return cmd.Process.Pid, nil
}

// StopPID stops a detached process by PID if it is still the process that
// was started (its executable is exe, so a reused PID is left alone):
// SIGTERM, up to grace to exit, then SIGKILL. It says what it did.
func StopPID(pid int, exe string, grace time.Duration) (string, error) {
	if pid <= 0 {
		return "never started", nil
	}
	if have, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || have != exe {
		return "already gone", nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return "", fmt.Errorf("signal pid %d: %w", pid, err)
	}
	for deadline := time.Now().Add(grace); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !Alive(pid) {
			return "stopped", nil
		}
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return "", fmt.Errorf("kill pid %d: %w", pid, err)
	}
	return fmt.Sprintf("killed after %v", grace), nil
}

// Alive reports whether pid runs; a zombie does not count.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
