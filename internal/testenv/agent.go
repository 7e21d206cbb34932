package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/localconsul"
)

// Agent is a running Consul dev agent, stopped when its test ends.
type Agent struct {
	*localconsul.Agent
	t testing.TB
}

// Consul starts a dev agent and waits until it has elected itself leader.
// It is stopped when the test ends, failed or not; it also dies with the
// test binary.
func Consul(t testing.TB) *Agent {
	t.Helper()
	la, err := localconsul.New(ConsulBinary(t), t.TempDir(), localconsul.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return Adopt(t, la)
}

// Adopt makes la, prepared by the test, its agent: started now, stopped
// when the test ends (on failure, with the end of its log).
func Adopt(t testing.TB, la *localconsul.Agent) *Agent {
	t.Helper()
	a := &Agent{Agent: la, t: t}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("consul log:\n%s", la.LogTail())
		}
		if err := a.Close(); err != nil {
			t.Errorf("stop consul: %v", err)
		}
	})
	if err := la.Start(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return a
}

// Restart stops the agent if it runs and starts it again on the same ports
// with an empty data directory, as an operator restarting a dev agent
// would: it forgets every registration.
func (a *Agent) Restart() {
	a.t.Helper()
	if err := a.Stop(); err != nil {
		a.t.Fatalf("stop consul before restart: %v", err)
	}
	if err := a.Agent.Start(30 * time.Second); err != nil {
		a.t.Fatal(err)
	}
}

// API returns a Consul API client for the agent.
func (a *Agent) API() *api.Client {
	a.t.Helper()
	c, err := a.Agent.API()
	if err != nil {
		a.t.Fatal(err)
	}
	return c
}

// WaitPassing waits, at most 20s, until the passing instances of service
// are exactly ids, and returns when it saw them so. On failure it logs the
// agent's checks.
func (a *Agent) WaitPassing(service string, ids ...string) time.Time {
	a.t.Helper()
	return WaitPassing(a.t, a.API(), service, localconsul.Exactly(ids...))
}

// WaitPassing waits, at most 20s (a check every 5s first runs at a random
// moment within it), until the passing instances of service,
// as c sees them, satisfy ok, and returns when it saw them so. On failure it
// logs the checks of c's agent and the service's checks in the catalog:
// whether the agent's view reached the servers.
func WaitPassing(t testing.TB, c *api.Client, service string, ok func([]string) bool) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := localconsul.WaitPassing(ctx, c, service, ok); err != nil {
		checks, cerr := c.Agent().Checks()
		for id, chk := range checks {
			t.Logf("agent check %s: %s %q", id, chk.Status, chk.Output)
		}
		catalog, _, herr := c.Health().Checks(service, nil)
		for _, chk := range catalog {
			t.Logf("catalog check %s on node %s: %s", chk.CheckID, chk.Node, chk.Status)
		}
		t.Fatalf("%v (agent checks err %v, %d catalog checks, err %v)", err, cerr, len(catalog), herr)
	}
	return time.Now()
}

// Datacenters starts one dev agent per name, each the single server of its
// datacenter, WAN-federated with the first, and waits until the first
// knows them all. Each is stopped when the test ends.
func Datacenters(t testing.TB, names ...string) []*Agent {
	t.Helper()
	var agents []*Agent
	for i, name := range names {
		o := localconsul.Options{Datacenter: name}
		if i > 0 {
			o.JoinWAN = []string{agents[0].SerfWANAddr}
		}
		la, err := localconsul.New(ConsulBinary(t), t.TempDir(), o)
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, Adopt(t, la))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		known, err := agents[0].API().Catalog().Datacenters()
		if err == nil && len(known) == len(names) {
			return agents
		}
		select {
		case <-ctx.Done():
			t.Fatalf("datacenters %q not federated within 30s: the first knows %q (%v)", names, known, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
