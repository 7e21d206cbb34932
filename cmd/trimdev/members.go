package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/consul/api"
)

// members runs the member commands on what up or cluster left running:
// status, and kill, stop or restart of the members named in cfg.args
// ("leader" names the server that leads now, "dc2-leader" dc2's).
func members(ctx context.Context, cfg config, w io.Writer) error {
	f, err := openFleet(cfg)
	if err != nil {
		return err
	}
	if cfg.cmd == "status" {
		return f.status(ctx, w)
	}
	if len(cfg.args) == 0 {
		return fmt.Errorf("trimdev %s: name a member: %v, or %s", cfg.cmd, f.names(), strings.Join(f.leaderNames(), ", "))
	}
	for _, name := range cfg.args {
		if err := f.member(ctx, cfg.cmd, name, w); err != nil {
			return err
		}
	}
	return nil
}

// leaderNames are the names that stand for the server that leads now:
// leader, and with several datacenters dc2-leader for dc2's.
func (f *fleet) leaderNames() []string {
	names := []string{"leader"}
	for _, dc := range f.datacenters()[1:] {
		names = append(names, dc+"-leader")
	}
	return names
}

func (f *fleet) member(ctx context.Context, cmd, name string, w io.Writer) error {
	wasLeader := false
	if i := slices.Index(f.leaderNames(), name); i >= 0 {
		dc := f.datacenters()[i]
		leader, err := f.leaderIn(ctx, dc)
		if err != nil {
			return err
		}
		if leader == "" {
			return fmt.Errorf("no server%s leads now (quorum lost?)", inDC(dc))
		}
		name, wasLeader = leader, true
	}
	p, a, err := f.find(name)
	if err != nil {
		return err
	}
	if !wasLeader && cmd == "kill" && a != nil && a.IsServer() {
		leader, _ := f.leaderIn(ctx, p.Datacenter) // a kill goes on whatever the answer
		wasLeader = leader == name
	}
	pid, began := p.PID, time.Now()
	switch cmd {
	case "kill":
		if err := kill(p); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: %s pid %d killed (SIGKILL)\n", cmd, name, pid)
		if !wasLeader {
			break
		}
		if running, all := f.serversRunning(p.Datacenter); 2*running <= all {
			fmt.Fprintf(w, "%s: %s led; too few servers run for a quorum (%d of %d): none leads until more start\n", cmd, name, running, all)
			break
		}
		next, err := f.waitLeader(ctx, p.Datacenter, name, 30*time.Second)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: %s led; %s leads now, %v after the kill\n", cmd, name, next, time.Since(began).Round(time.Millisecond))
	case "stop":
		what, err := stop(p, downGrace)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: %s pid %d %s (SIGTERM)\n", cmd, name, pid, what)
	case "restart":
		was := "was not running"
		if alive(p) {
			was = fmt.Sprintf("pid %d stopped (SIGTERM)", pid)
		}
		note, err := f.restart(ctx, name)
		if note != "" {
			fmt.Fprintf(w, "%s: %s: %s\n", cmd, name, note)
		}
		if err != nil {
			return err
		}
		back := "back"
		switch _, a, _ := f.find(name); {
		case a != nil && a.IsServer() && note != "":
			back = "up,"
		case a != nil && a.IsServer():
			back = "back as a voter, with a leader,"
		case a != nil:
			back = "back, a server alive to it and the instances passing,"
		default:
			back = fmt.Sprintf("back on %s, passing,", p.Addr)
		}
		fmt.Fprintf(w, "%s: %s %s; pid %d %s %v after\n", cmd, name, was, p.PID, back, time.Since(began).Round(time.Millisecond))
	}
	return nil
}

// status prints every member: running or not, and as the cluster sees it
// (with several datacenters, as its datacenter sees it).
func (f *fleet) status(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	serf, raft, checks := map[string]string{}, map[string]string{}, map[string]string{}
	leaders := map[string]bool{}
	var noLeader []string
	c, err := f.consulAPI()
	if err == nil {
		for _, dc := range f.datacenters() {
			q := (&api.QueryOptions{AllowStale: true, Datacenter: dc}).WithContext(ctx)
			if lan, err := f.agentAPI(dc); err == nil {
				if ms, err := lan.Agent().Members(false); err == nil {
					for _, m := range ms {
						serf[m.Name] = serfStatus(m.Status)
					}
				}
			}
			if f.cluster != nil {
				leader, _ := f.leaderIn(ctx, dc)
				leaders[leader] = leader != ""
				if leader == "" {
					noLeader = append(noLeader, dc)
				}
				if cfg, err := c.Operator().RaftGetConfiguration(q); err == nil {
					for _, s := range cfg.Servers {
						raft[s.Node] = "nonvoter"
						if s.Voter {
							raft[s.Node] = "voter"
						}
					}
				}
			}
			if entries, _, err := c.Health().Service("trimsvc", "", false, q); err == nil {
				for _, e := range entries {
					checks[e.Service.ID] = e.Checks.AggregatedStatus()
				}
			}
		}
	}
	// Columns as wide as their widest cell, whatever the names, PIDs and
	// addresses.
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", "member", "pid", "process", "address", "as the cluster sees it")
	for _, p := range f.st.Consul {
		seen := "serf " + orNone(serf[p.Name])
		if _, a, _ := f.find(p.Name); a != nil && a.IsServer() {
			seen += ", raft " + orNone(raft[p.Name])
			if leaders[p.Name] {
				seen += ", leader"
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", p.Name, p.PID, running(&p), orNone(p.Addr), seen)
	}
	for _, p := range f.st.Instances {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\tcheck %s\n", p.Name, p.PID, running(&p), orNone(p.Addr), orNone(checks[p.ID]))
	}
	if ferr := tw.Flush(); ferr != nil {
		return errors.Join(err, ferr)
	}
	for _, dc := range noLeader {
		fmt.Fprintf(w, "no server%s leads (quorum lost?)\n", inDC(dc))
	}
	if slices.ContainsFunc(append(slices.Clone(f.st.Consul), f.st.Instances...), func(p stateProc) bool { return !alive(&p) }) {
		fmt.Fprintf(w, "start a member again with: %s NAME\n", demoCommand(f.dir, "restart"))
	}
	return err
}

func running(p *stateProc) string {
	if alive(p) {
		return "running"
	}
	return "dead"
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// signalName is how a fault's signal is printed.
func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGSTOP:
		return "SIGSTOP"
	}
	return sig.String()
}

// demoCommand is how to run trimdev's command sub on the state in dir: the
// flag goes between the command and the member names.
func demoCommand(dir, sub string) string {
	if filepath.Clean(dir) == ".run" {
		return "bin/trimdev " + sub
	}
	return "bin/trimdev " + sub + " -state " + dir
}
