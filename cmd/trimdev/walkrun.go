package main

import (
	"bytes"
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

	"github.com/trimkit/trimkit/internal/ctxtime"
	"github.com/trimkit/trimkit/internal/loadgen"
)

// walkSettle is how long the walkthrough's load goes on after the last
// step, so that every call a step touched has ended.
const walkSettle = 3 * time.Second

// walkthrough starts the cluster of `cluster` in cfg.state, runs every
// command of the walkthrough in order, exactly as printed, with the load
// of its first step in the background, and fails unless every command did
// what the walkthrough says and no call of the load failed.
func walkthrough(ctx context.Context, cfg config, w io.Writer) (err error) {
	if _, err := os.Stat(filepath.Join("cmd", "client")); err != nil {
		return fmt.Errorf("run the walkthrough from the repository's root (make walkthrough): its commands `go run ./cmd/client`: %w", err)
	}
	began := time.Now()
	f, setup, err := startCluster(ctx, cfg, w)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "walkthrough: cluster up in %v (state, logs: %s)\n", time.Since(began).Round(100*time.Millisecond), f.dir)
	failed := true
	defer func() {
		// The steps restarted members in processes of their own, which
		// recorded the new PIDs in the state file.
		err = errors.Join(err, f.reload(), f.teardown(w, "walkthrough", failed))
	}()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	leader, err := f.leader(lctx)
	cancel()
	if err != nil || leader == "" {
		return fmt.Errorf("no leader after the start: %q, %v", leader, err)
	}
	r := &walkRun{dir: f.dir, env: setup.clientEnv, vars: walkVars(f.dir, leader), w: w}
	err = r.run(ctx)
	failed = err != nil
	return err
}

// walkRun is a walkthrough in progress.
type walkRun struct {
	dir, env string
	vars     *strings.Replacer
	w        io.Writer
	load     *exec.Cmd
	loadOut  bytes.Buffer // its -json summary
	loadLog  string
	loadDone chan struct{}
}

func (r *walkRun) run(ctx context.Context) error {
	for i, s := range walkSteps() {
		fmt.Fprintf(r.w, "# %d. %s\n", i+1, r.vars.Replace(s.say[0]))
		if _, err := r.step(ctx, s); err != nil {
			r.stopLoad()
			return fmt.Errorf("step %d: %w", i+1, err)
		}
	}
	if r.load == nil {
		return errors.New("the walkthrough has no load")
	}
	ctxtime.Sleep(ctx, walkSettle)
	return r.stopLoad()
}

// step runs the commands of s in order, up to the first that fails, and
// returns each command run, as run, with how long it took.
func (r *walkRun) step(ctx context.Context, s walkStep) (ran []string, err error) {
	for _, c := range s.cmds {
		took, err := r.command(ctx, c)
		ran = append(ran, fmt.Sprintf("%s (%v)", r.vars.Replace(c.line), took))
		if err != nil {
			return ran, err
		}
	}
	return ran, nil
}

// command runs one command of a step, checks what it did, and returns
// how long it took.
func (r *walkRun) command(ctx context.Context, c walkCmd) (took time.Duration, err error) {
	line := r.vars.Replace(c.line)
	if c.load {
		return 0, r.startLoad(line)
	}
	cmd := r.shell(ctx, line)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	took = time.Since(start).Round(10 * time.Millisecond)
	var exit *exec.ExitError
	switch {
	case err != nil && !errors.As(err, &exit):
		return took, fmt.Errorf("%s: %w", line, err)
	case c.fails == "" && err != nil:
		return took, fmt.Errorf("%s: %v after %v:\n%s", line, err, took, out.String())
	case c.fails != "" && err == nil:
		return took, fmt.Errorf("%s: succeeded after %v; the walkthrough says it is refused:\n%s", line, took, out.String())
	case c.fails != "" && !strings.Contains(out.String(), c.fails):
		return took, fmt.Errorf("%s: refused after %v, but without saying %q:\n%s", line, took, c.fails, out.String())
	}
	outcome := "ok"
	if c.fails != "" {
		outcome = "refused, as it should be"
	}
	fmt.Fprintf(r.w, "$ %s   # %s, %v\n", line, outcome, took)
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l != "" {
			fmt.Fprintf(r.w, "    %s\n", l)
		}
	}
	if err := r.loadRunning(); err != nil {
		return took, fmt.Errorf("after %s: %w", line, err)
	}
	return took, nil
}

// shell is line run by bash after the walkthrough's `source client.env`,
// in a process group of its own, so that signals reach go run's child too.
func (r *walkRun) shell(ctx context.Context, line string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "bash", "-c", fmt.Sprintf("set -eo pipefail; source %q; %s", r.env, line))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// startLoad starts the load's command in the background, its summary in
// JSON, and waits until it has had time to find the instances.
func (r *walkRun) startLoad(line string) error {
	r.loadLog = filepath.Join(r.dir, "walkthrough-load.log")
	logFile, err := os.Create(r.loadLog)
	if err != nil {
		return err
	}
	// Not under ctx: the load is stopped with SIGINT, which lets the calls
	// in flight end and prints the summary.
	if !strings.Contains(line, "./cmd/client ") {
		return fmt.Errorf("the load %q: not a go run ./cmd/client", line)
	}
	line = strings.Replace(line, "./cmd/client ", "./cmd/client -json ", 1)
	cmd := r.shell(context.Background(), line)
	cmd.Stdout, cmd.Stderr = &r.loadOut, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("the load: %s: %w", line, err)
	}
	r.load, r.loadDone = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(r.loadDone)
	}()
	fmt.Fprintf(r.w, "$ %s &   # in the background, pid %d, log %s\n", line, cmd.Process.Pid, r.loadLog)
	time.Sleep(5 * time.Second) // go run builds it, it finds the instances
	return r.loadRunning()
}

func (r *walkRun) loadRunning() error {
	if r.load == nil {
		return nil
	}
	select {
	case <-r.loadDone:
		return fmt.Errorf("the load ended before the walkthrough did (%v): see %s", r.load.ProcessState, r.loadLog)
	default:
		return nil
	}
}

// stopLoad interrupts the load, waits for its summary and prints it; it
// fails when a call failed.
func (r *walkRun) stopLoad() error {
	if r.load == nil {
		return nil
	}
	_ = syscall.Kill(-r.load.Process.Pid, syscall.SIGINT)
	select {
	case <-r.loadDone:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-r.load.Process.Pid, syscall.SIGKILL)
		<-r.loadDone
		return fmt.Errorf("the load did not stop within 30s of SIGINT: see %s", r.loadLog)
	}
	var s loadgen.Summary
	if err := json.Unmarshal(r.loadOut.Bytes(), &s); err != nil {
		return fmt.Errorf("the load's summary: %w (%q; see %s)", err, r.loadOut.String(), r.loadLog)
	}
	fmt.Fprintf(r.w, "walkthrough: the load made %d calls (%d attempts), %d failed; p50 %.1fms p99 %.1fms p99.9 %.1fms max %.1fms\n",
		s.Requests, s.Attempts, s.Failures, s.P50ms, s.P99ms, s.P999ms, s.MaxMs)
	if s.Requests == 0 || s.Failures > 0 {
		return fmt.Errorf("%d of %d calls of the load failed: see %s", s.Failures, s.Requests, r.loadLog)
	}
	return nil
}
