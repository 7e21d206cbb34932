package consultest

import (
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// API returns a Consul API client for the agent.
func (a *Agent) API() *api.Client {
	a.t.Helper()
	c, err := a.Agent.API()
	if err != nil {
		a.t.Fatal(err)
	}
	return c
}

// WaitPassing waits, at most 5s, until the passing instances of service are
// exactly ids, and returns when it saw them so. On failure it logs the
// agent's checks.
func (a *Agent) WaitPassing(service string, ids ...string) time.Time {
	a.t.Helper()
	c := a.API()
	want := append([]string(nil), ids...)
	sort.Strings(want)
	deadline := time.Now().Add(5 * time.Second)
	for {
		entries, _, err := c.Health().Service(service, "", true, nil)
		have := make([]string, 0, len(entries))
		for _, e := range entries {
			have = append(have, e.Service.ID)
		}
		sort.Strings(have)
		if err == nil && strings.Join(have, ",") == strings.Join(want, ",") {
			return time.Now()
		}
		if time.Now().After(deadline) {
			checks, cerr := c.Agent().Checks()
			for id, chk := range checks {
				a.t.Logf("agent check %s: %s %q", id, chk.Status, chk.Output)
			}
			a.t.Fatalf("passing %s: want %v, have %v within 5s (err %v, checks err %v)", service, want, have, err, cerr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
