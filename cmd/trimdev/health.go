package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/ctxtime"
	"github.com/trimkit/trimkit/internal/localconsul"
)

// leader returns the name of the server that leads now, "" when there is
// none, as the first running agent that answers sees it.
func (f *fleet) leader(ctx context.Context) (string, error) {
	if f.cluster == nil {
		return "", errors.New("a dev agent has no servers to lead")
	}
	var lastErr error = errors.New("no consul agent is running")
	for i := range f.st.Consul {
		p := &f.st.Consul[i]
		a := f.cluster.Member(p.Name)
		if a == nil || !alive(p) {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		addr, err := a.Leader(qctx)
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		for _, s := range f.cluster.Servers {
			if addr != "" && s.ServerAddr == addr {
				return s.Name, nil
			}
		}
		return "", nil
	}
	return "", lastErr
}

// poll calls check every interval until it returns nil, and returns nil;
// or, once timeout has passed (or ctx ended), check's last error.
func poll(ctx context.Context, timeout, interval time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := check(ctx)
		if err == nil || !ctxtime.Sleep(ctx, interval) {
			return err
		}
	}
}

// waitLeader waits until a server other than not leads, and returns it.
func (f *fleet) waitLeader(ctx context.Context, not string, timeout time.Duration) (string, error) {
	var leader string
	err := poll(ctx, timeout, 50*time.Millisecond, func(ctx context.Context) error {
		var err error
		leader, err = f.leader(ctx)
		if err == nil && (leader == "" || leader == not) {
			err = fmt.Errorf("last: %q", leader)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("no new leader within %v (%w)", timeout, err)
	}
	return leader, nil
}

// waitRejoined waits until a, just started, is back: a server is a voter
// again and there is a leader; a client agent sees a server alive.
func (f *fleet) waitRejoined(ctx context.Context, a *localconsul.Agent, timeout time.Duration) error {
	c, err := a.API()
	if err != nil {
		return err
	}
	if err := poll(ctx, timeout, 100*time.Millisecond, func(ctx context.Context) error { return rejoined(ctx, c, a) }); err != nil {
		return fmt.Errorf("%s not back within %v: %w", a.Name, timeout, err)
	}
	return nil
}

func rejoined(ctx context.Context, c *api.Client, a *localconsul.Agent) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	if !a.IsServer() {
		members, err := c.Agent().Members(false)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.Tags["role"] == "consul" && m.Status == serfAlive {
				return nil
			}
		}
		return errors.New("it sees no server alive")
	}
	raft, err := c.Operator().RaftGetConfiguration(q)
	if err != nil {
		return err
	}
	for _, s := range raft.Servers {
		if s.Node == a.Name && s.Voter {
			return nil
		}
	}
	return errors.New("not a voter (yet)")
}

// serf's MemberStatus for an alive member and for one that left.
const (
	serfAlive = 1
	serfLeft  = 3
)

// healthy returns nil when every member runs, the servers have a leader
// and are all healthy voters (autopilot can lose one), every member is
// alive to the callers' agent, and every instance passes its check in the
// callers' agent's view; else what is not so.
func (f *fleet) healthy(ctx context.Context) error {
	var errs []error
	for _, p := range append(slices.Clone(f.st.Consul), f.st.Instances...) {
		if !alive(&p) {
			errs = append(errs, fmt.Errorf("%s (pid %d) is not running", p.Name, p.PID))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c, err := f.consulAPI()
	if err != nil {
		return err
	}
	q := (&api.QueryOptions{}).WithContext(ctx)
	if f.cluster != nil {
		health, err := c.Operator().AutopilotServerHealth(q)
		if err != nil {
			return fmt.Errorf("autopilot: %w", err)
		}
		if !health.Healthy || health.FailureTolerance < 1 || len(health.Servers) != len(f.cluster.Servers) {
			var servers []string
			for _, s := range health.Servers {
				servers = append(servers, fmt.Sprintf("%s(voter %t, healthy %t, leader %t)", s.Name, s.Voter, s.Healthy, s.Leader))
			}
			return fmt.Errorf("autopilot: healthy %t, failure tolerance %d, servers %s", health.Healthy, health.FailureTolerance, strings.Join(servers, " "))
		}
		members, err := c.Agent().Members(false)
		if err != nil {
			return err
		}
		status := map[string]int{}
		for _, m := range members {
			status[m.Name] = m.Status
		}
		for _, p := range f.st.Consul {
			if status[p.Name] != serfAlive {
				errs = append(errs, fmt.Errorf("%s is %s to the callers' agent", p.Name, serfStatus(status[p.Name])))
			}
		}
	}
	var ids []string
	for _, in := range f.st.Instances {
		ids = append(ids, in.ID)
	}
	if err := passing(ctx, c, ids...); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitPassing waits until the instances ids pass in the callers' agent's
// view.
func (f *fleet) waitPassing(ctx context.Context, timeout time.Duration, ids ...string) error {
	err := poll(ctx, timeout, 50*time.Millisecond, func(ctx context.Context) error {
		c, err := f.consulAPI()
		if err != nil {
			return errors.New("no consul agent is running")
		}
		return passing(ctx, c, ids...)
	})
	if err != nil {
		return fmt.Errorf("within %v: %w", timeout, err)
	}
	return nil
}

// waitLeaveDone makes sure, after the client agent name stopped, that the
// catalog no longer lists a node that left. A client agent that left
// (SIGTERM) is deregistered, node and services, by the leader's reconcile:
// at once when the leader handles the leave's event, but at times only at
// its next periodic reconcile, up to a minute later (seen in CI, and in 2
// runs of 4 here). An agent that comes back before that compares its
// services with a catalog that still lists them, finds them in sync, and
// is deregistered under its feet: its services are then missing until its
// next full anti-entropy sync, a minute or more later. So the node of an
// agent that left is deregistered here, as the leader would. An agent that
// failed (SIGKILL) stays in the catalog, and is left alone.
func (f *fleet) waitLeaveDone(ctx context.Context, name string, timeout time.Duration) error {
	err := poll(ctx, timeout, 50*time.Millisecond, func(ctx context.Context) error {
		c, err := f.consulAPI()
		if err != nil {
			return nil // nobody left to ask; nothing to race with either
		}
		members, err := c.Agent().Members(false)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.Name == name && m.Status != serfLeft {
				return nil
			}
		}
		node, _, err := c.Catalog().Node(name, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		if node != nil {
			if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: name}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
				return fmt.Errorf("deregister %s, which left: %w", name, err)
			}
			return fmt.Errorf("%s left, and the catalog still lists it", name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("within %v: %w", timeout, err)
	}
	return nil
}

// waitLocalPassing waits until the checks of the services ids registered
// with the agent a pass on a itself. Services registered elsewhere are
// not waited for.
func waitLocalPassing(ctx context.Context, a *localconsul.Agent, timeout time.Duration, ids ...string) error {
	c, err := a.API()
	if err != nil {
		return err
	}
	if err := poll(ctx, timeout, 50*time.Millisecond, func(ctx context.Context) error { return localPassing(ctx, c, ids...) }); err != nil {
		return fmt.Errorf("%s: within %v: %w", a.Name, timeout, err)
	}
	return nil
}

func localPassing(ctx context.Context, c *api.Client, ids ...string) error {
	checks, err := c.Agent().ChecksWithFilterOpts("", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	for _, ch := range checks {
		if slices.Contains(ids, ch.ServiceID) && ch.Status != api.HealthPassing {
			return fmt.Errorf("the check of %s is %s on its agent", ch.ServiceID, ch.Status)
		}
	}
	return nil
}

// passing returns nil when every one of ids passes its check in c's view.
func passing(ctx context.Context, c *api.Client, ids ...string) error {
	entries, _, err := c.Health().Service("trimsvc", "", true, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	var have []string
	for _, e := range entries {
		have = append(have, e.Service.ID)
	}
	for _, id := range ids {
		if !slices.Contains(have, id) {
			return fmt.Errorf("%s does not pass (passing: %v)", id, have)
		}
	}
	return nil
}

func serfStatus(s int) string {
	switch s {
	case 0:
		return "unknown"
	case serfAlive:
		return "alive"
	case 2:
		return "leaving"
	case serfLeft:
		return "left"
	case 4:
		return "failed"
	}
	return fmt.Sprint(s)
}
