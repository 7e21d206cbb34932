package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/trimkit/trimkit/internal/addrfile"
)

// spawn starts bin in a session of its own, so that it outlives demo, with
// its output appended to logPath (a restarted process's log follows its
// previous run's), and returns its PID and a channel closed once it has
// exited. While demo runs it reaps the process.
func spawn(bin, logPath string, env []string, args ...string) (int, <-chan struct{}, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	fmt.Fprintf(f, "# trimdev: starting %s at %s\n", filepath.Base(bin), time.Now().Format(time.RFC3339))
	cmd := exec.Command(bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	return cmd.Process.Pid, exited, nil
}

// instanceArgs are the flags up and cluster give every instance before its
// own: where it registers, checked every second.
func instanceArgs(consulAddr string, extra ...string) []string {
	return append([]string{"-consul-addr", consulAddr, "-check-interval", "1s"}, extra...)
}

// startInstance starts the instance p describes: its flags (p.Args) on its
// recorded listen addresses, or on free ports when it has none yet; and
// when another process has taken its port meanwhile, on a free one (the
// note says so). It waits until the instance has bound its listeners and
// registered with its agent, and records its PID and addresses in p.
func startInstance(ctx context.Context, bin, dir string, p *stateProc) (note string, err error) {
	grpcAddr, httpAddr := cmp.Or(p.GRPC, "127.0.0.1:0"), cmp.Or(p.HTTP, "127.0.0.1:0")
	err = startInstanceOn(ctx, bin, dir, p, grpcAddr, httpAddr)
	if err != nil && errors.Is(err, errAddrInUse) {
		note = fmt.Sprintf("%s or %s was taken: on new ports", grpcAddr, httpAddr)
		err = startInstanceOn(ctx, bin, dir, p, "127.0.0.1:0", "127.0.0.1:0")
	}
	return note, err
}

var errAddrInUse = errors.New("address already in use")

func startInstanceOn(ctx context.Context, bin, dir string, p *stateProc, grpcAddr, httpAddr string) error {
	addrPath := filepath.Join(dir, p.Name+".addr.json")
	if err := os.Remove(addrPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var logStart int64
	if info, err := os.Stat(p.Log); err == nil {
		logStart = info.Size()
	}
	args := append([]string{"-grpc-addr", grpcAddr, "-http-addr", httpAddr, "-addr-file", addrPath}, p.Args...)
	pid, exited, err := spawn(bin, p.Log, p.Env, args...)
	if err != nil {
		return err
	}
	p.PID = pid
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	a, err := addrfile.Wait(ctx, addrPath, exited)
	if err != nil {
		tail := logSince(p.Log, logStart)
		if strings.Contains(tail, "address already in use") {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return fmt.Errorf("%s (log %s): %w\n%s", p.Name, p.Log, err, tail)
	}
	p.ID, p.Addr, p.GRPC, p.HTTP = a.ServiceID, a.Advertised, a.GRPC, a.HTTP
	// Registered with its agent: until then a restarted instance's
	// previous registration may still pass in the catalog.
	for !strings.Contains(logSince(p.Log, logStart), `msg="registered in consul"`) {
		select {
		case <-exited:
			return fmt.Errorf("%s exited before it registered (log %s):\n%s", p.Name, p.Log, logSince(p.Log, logStart))
		case <-ctx.Done():
			return fmt.Errorf("%s not registered (log %s): %w", p.Name, p.Log, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// logSince is what path holds after its first offset bytes, at most its
// last 2000.
func logSince(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	b = b[offset:]
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// lastLine is the last line of path, for saying why a process ended.
func lastLine(path string) string {
	lines := strings.Split(logSince(path, 0), "\n")
	return lines[len(lines)-1]
}
