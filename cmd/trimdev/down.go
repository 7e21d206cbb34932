package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trimkit/trimkit/internal/proc"
)

// How long down gives each process after SIGTERM before SIGKILL: enough
// to deregister and leave when the servers have a leader. Without one, an
// instance's deregistration waits for a leader that does not come (the
// agent holds the request about 7s) and a client agent's leave does not
// complete either, so they are given a moment and killed.
const (
	downGrace         = 10 * time.Second
	downGraceNoLeader = 2 * time.Second
)

// down stops what up, cluster or chaos started, by the PIDs recorded in
// cfg.state, all of a kind at once, keeps their logs and the state file in
// cfg.state/last/, and removes the rest of what they left there.
func down(cfg config, w io.Writer) error {
	f, err := openFleet(cfg)
	if errors.Is(err, errNotUp) {
		fmt.Fprintf(w, "down: %v\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	return f.down(w)
}

// down stops every process of f, moves their logs and a copy of the state
// file to f.dir/last/ (replacing an earlier down's) and says so, and
// removes the rest of the setup (removeState).
func (f *fleet) down(w io.Writer) error {
	dcs := f.leaderless()
	if len(dcs) > 0 {
		servers, whose := "the servers have", ""
		if dcs[0] != "" {
			servers = fmt.Sprintf("the servers of %s have", strings.Join(dcs, " and "))
			whose = " in " + strings.Join(dcs, " and ")
		}
		fmt.Fprintf(w, "down: %s no leader (quorum lost?): leaving and deregistering cannot complete, so SIGKILL after %v%s\n", servers, downGraceNoLeader, whose)
	}
	lines, err := f.stopAll(graceOutside(dcs))
	for _, l := range lines {
		fmt.Fprintf(w, "down: %s\n", l)
	}
	if err != nil {
		return err
	}
	last, err := keepLast(f.dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "down: logs of what was stopped: %s%c\n", last, filepath.Separator)
	return removeState(f.dir)
}

// leaderless are the datacenters whose servers answer that none of them
// leads ("" for the only one); none for a dev agent.
func (f *fleet) leaderless() []string {
	if f.cluster == nil {
		return nil
	}
	var dcs []string
	for _, dc := range f.datacenters() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		leader, err := f.leaderIn(ctx, dc)
		cancel()
		if err == nil && leader == "" {
			dcs = append(dcs, dc)
		}
	}
	return dcs
}

// graceOutside is how long down gives a process after SIGTERM: downGrace,
// but downGraceNoLeader in the datacenters leaderless names.
func graceOutside(leaderless []string) func(stateProc) time.Duration {
	return func(p stateProc) time.Duration {
		if slices.Contains(leaderless, p.Datacenter) {
			return downGraceNoLeader
		}
		return downGrace
	}
}

// stopAll stops every process of the fleet, instances first (they
// deregister through their agent), then the Consul agents, all of a kind
// at once, each given grace(it) after SIGTERM before SIGKILL, and says
// what happened to each, in order. A process frozen (SIGSTOP, by the chaos
// soak) is thawed first, so that it can act on SIGTERM.
func (f *fleet) stopAll(grace func(stateProc) time.Duration) ([]string, error) {
	for _, p := range f.processes() {
		_ = sendSignal(p, syscall.SIGCONT)
	}
	consul := slices.Clone(f.st.Consul)
	slices.Reverse(consul) // client agents first in the lines printed
	var lines []string
	var errs []error
	groups := [][]stateProc{f.st.Instances, consul}
	if f.st.Jaeger != nil {
		// After the instances, which send their last spans as they exit.
		groups = slices.Insert(groups, 1, []stateProc{*f.st.Jaeger})
	}
	for _, group := range groups {
		out, groupErrs := atOnce(len(group), func(i int) (string, error) {
			p := group[i]
			what, err := proc.StopPID(p.PID, p.Exe, grace(p))
			if err != nil {
				return "", fmt.Errorf("%s: %w", p.Name, err)
			}
			return fmt.Sprintf("%s pid %d: %s", p.Name, p.PID, what), nil
		})
		for _, o := range out {
			if o != "" {
				lines = append(lines, o)
			}
		}
		errs = append(errs, groupErrs...)
	}
	return lines, errors.Join(errs...)
}

// atOnce runs f(0), ..., f(n-1) at once and returns what each said, in
// order, and their errors.
func atOnce(n int, f func(i int) (string, error)) ([]string, []error) {
	out, errs := make([]string, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = f(i)
		}()
	}
	wg.Wait()
	return out, errs
}
