package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/proc"
	"github.com/trimkit/trimkit/sd"
)

// When, after the load starts, the demo stops, kills and freezes an
// instance, and how the freeze phase's load goes.
const (
	sigtermAfter = time.Second
	sigkillAfter = 2 * time.Second
	sigstopAfter = time.Second
	freezeRate   = "500"
	freezeFor    = 4 * time.Second
)

func demo(ctx context.Context, cfg config, w io.Writer) (err error) {
	bins, err := binaries(cfg.bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "trimkit-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	agent, err := localconsul.New(bins.consul, dir, localconsul.Options{})
	if err != nil {
		return err
	}
	if err := agent.Start(30 * time.Second); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, agent.Close()) }()
	fmt.Fprintf(w, "consul dev agent: UI %s/ui, DNS 127.0.0.1:%d\n", agent.URL(), agent.DNSPort)

	var insts []*proc.Trimsvc
	defer func() {
		for _, in := range insts {
			in.Stop(10 * time.Second)
		}
	}()
	for range cfg.instances {
		in, err := proc.StartTrimsvc(bins.trimsvc, agent.HTTPAddr, "-drain", "1s")
		if err != nil {
			return err
		}
		insts = append(insts, in)
	}
	if err := waitPassing(ctx, agent, len(insts)); err != nil {
		return err
	}
	fmt.Fprintln(w, "registered and passing in consul:")
	for _, in := range insts {
		fmt.Fprintf(w, "  %-32s %s (pid %d)\n", in.ID, in.Addr, in.PID())
	}

	fmt.Fprintf(w, "load: %d requests from %d callers through cmd/client; SIGTERM %s after %v, SIGKILL %s after %v\n",
		cfg.n, cfg.c, insts[0].ID, sigtermAfter, insts[1].ID, sigkillAfter)
	load, err := proc.Start(bins.client, "-consul-addr", agent.HTTPAddr, "-n", fmt.Sprint(cfg.n), "-c", fmt.Sprint(cfg.c), "-json", "  hello,\ttrimkit  ")
	if err != nil {
		return err
	}
	defer load.Kill()
	start := time.Now()
	termDuring, err := signalAt(ctx, load, insts[0], syscall.SIGTERM, start.Add(sigtermAfter))
	if err != nil {
		return err
	}
	killDuring, err := signalAt(ctx, load, insts[1], syscall.SIGKILL, start.Add(sigkillAfter))
	if err != nil {
		return err
	}
	s, code, err := summary(ctx, load)
	if err != nil {
		return err
	}
	termCode, err := insts[0].Wait(ctx)
	if err != nil {
		return err
	}

	fmt.Fprintf(w, "\nper-instance distribution:\n")
	printDistribution(w, s.PerInstance, map[string]string{
		insts[0].ID: fmt.Sprintf("SIGTERM: deregistered, drained, exit %d", termCode),
		insts[1].ID: "SIGKILL",
	})
	fmt.Fprintf(w, "requests %d, failures %d, %.0f req/s, latency p50 %.2fms p90 %.2fms p99 %.2fms\n",
		s.Requests, s.Failures, s.RPS, s.P50ms, s.P90ms, s.P99ms)
	for _, l := range load.Lines() {
		fmt.Fprintf(w, "  client: %s\n", l)
	}
	switch {
	case !termDuring || !killDuring:
		return fmt.Errorf("the load finished before the SIGTERM/SIGKILL; raise -n")
	case s.Failures > 0 || code != 0:
		return fmt.Errorf("%d of %d requests failed (client exit %d)", s.Failures, s.Requests, code)
	case termCode != 0:
		return fmt.Errorf("the SIGTERMed instance exited %d, want 0", termCode)
	}
	fmt.Fprintln(w, "OK: no request failed while one instance was stopped and another killed")
	return freeze(ctx, bins, agent, insts[2], &insts, w)
}

// freeze is the demo's second phase: two new instances join the one left,
// checked by Consul every 5s (its default), and under open-loop load one of
// them is frozen with SIGSTOP: it still accepts connections and its check
// has not failed yet, but it answers nothing. The client ejects it from its
// own calls; no call may fail.
func freeze(ctx context.Context, bins binPaths, agent *localconsul.Agent, survivor *proc.Trimsvc, insts *[]*proc.Trimsvc, w io.Writer) error {
	var fresh []*proc.Trimsvc
	for range 2 {
		in, err := proc.StartTrimsvc(bins.trimsvc, agent.HTTPAddr, "-drain", "1s", "-check-interval", "5s")
		if err != nil {
			return err
		}
		fresh = append(fresh, in)
		*insts = append(*insts, in)
	}
	if err := waitPassing(ctx, agent, 3); err != nil {
		return err
	}
	frozen := fresh[0]
	fmt.Fprintf(w, "\nphase 2: %s and two new instances (consul checks them every 5s); open-loop load at %s calls/s for %v through cmd/client; SIGSTOP %s after %v\n",
		survivor.ID, freezeRate, freezeFor, frozen.ID, sigstopAfter)
	load, err := proc.Start(bins.client, "-consul-addr", agent.HTTPAddr, "-rate", freezeRate, "-duration", freezeFor.String(), "-json", "  hello,\ttrimkit  ")
	if err != nil {
		return err
	}
	defer load.Kill()
	defer frozen.Signal(syscall.SIGCONT) // so that it can be stopped
	if _, err := signalAt(ctx, load, frozen, syscall.SIGSTOP, time.Now().Add(sigstopAfter)); err != nil {
		return err
	}
	stoppedAt := time.Now()
	ejection := "not ejected"
	if _, err := load.WaitLine(`msg="instance ejected" instance=`+frozen.Addr, 3*time.Second); err == nil {
		ejection = fmt.Sprintf("ejected by the client %v later; consul's check then: %s", time.Since(stoppedAt).Round(time.Millisecond), checkStatus(agent, frozen.ID))
	}
	s, code, err := summary(ctx, load)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "per-instance distribution:\n")
	printDistribution(w, s.PerInstance, map[string]string{frozen.ID: "SIGSTOP: " + ejection})
	fmt.Fprintf(w, "requests %d, failures %d, attempts %d, latency p50 %.2fms p99 %.2fms p99.9 %.2fms max %.2fms\n",
		s.Requests, s.Failures, s.Attempts, s.P50ms, s.P99ms, s.P999ms, s.MaxMs)
	if s.Failures > 0 || code != 0 {
		return fmt.Errorf("%d of %d requests failed while an instance was frozen (client exit %d)", s.Failures, s.Requests, code)
	}
	fmt.Fprintln(w, "OK: no request failed while an instance was frozen; the client stopped sending to it long before consul's check could notice")
	return nil
}

// printDistribution prints how many calls each instance answered, in
// order of ID, with a note beside the instances that have one.
func printDistribution(w io.Writer, perInstance map[string]int, notes map[string]string) {
	for _, id := range slices.Sorted(maps.Keys(perInstance)) {
		note := ""
		if n, ok := notes[id]; ok {
			note = "  <- " + n
		}
		fmt.Fprintf(w, "  %-32s %7d%s\n", id, perInstance[id], note)
	}
}

// checkStatus is the status of service id's check in agent, or why it is
// not known.
func checkStatus(agent *localconsul.Agent, id string) string {
	c, err := agent.API()
	if err != nil {
		return err.Error()
	}
	checks, err := c.Agent().Checks()
	if err != nil {
		return err.Error()
	}
	if chk, ok := checks[sd.Registration{ID: id}.CheckID()]; ok {
		return chk.Status
	}
	return "no check"
}

// signalAt sends sig to in at when and reports whether load was still
// running then.
func signalAt(ctx context.Context, load *proc.Process, in *proc.Trimsvc, sig syscall.Signal, when time.Time) (bool, error) {
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-time.After(time.Until(when)):
	}
	during := true
	select {
	case <-load.Exited():
		during = false
	default:
	}
	if err := in.Signal(sig); err != nil {
		return during, fmt.Errorf("signal %s: %w", in.ID, err)
	}
	return during, nil
}

type binPaths struct{ consul, trimsvc, client string }

func binaries(dir string) (binPaths, error) {
	b := binPaths{consul: filepath.Join(dir, "consul"), trimsvc: filepath.Join(dir, "trimsvc"), client: filepath.Join(dir, "client")}
	for _, p := range []string{b.consul, b.trimsvc, b.client} {
		if _, err := os.Stat(p); err != nil {
			return b, fmt.Errorf("%s missing: run `make demo`, which builds it (%w)", p, err)
		}
	}
	return b, nil
}

// waitPassing waits, at most 10s, until n instances of trimsvc pass in
// agent.
func waitPassing(ctx context.Context, agent *localconsul.Agent, n int) error {
	c, err := agent.API()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = localconsul.WaitPassing(ctx, c, "trimsvc", localconsul.Count(n))
	return err
}

// summary waits for the client to exit and returns the JSON summary it
// printed, and its exit code.
func summary(ctx context.Context, load *proc.Process) (loadgen.Summary, int, error) {
	var s loadgen.Summary
	code, err := load.Wait(ctx)
	if err != nil {
		return s, code, err
	}
	if err := json.Unmarshal([]byte(load.Stdout()), &s); err != nil {
		return s, code, fmt.Errorf("client (exit %d) printed no summary: %w\n%s", code, err, load.Lines())
	}
	return s, code, nil
}
