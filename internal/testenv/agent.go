package consultest

import (
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/localconsul"
)

// Agent is a running Consul dev agent, stopped when its test ends.
type Agent struct {
	*localconsul.Agent
	t testing.TB
}

// Start starts a dev agent and waits until it has elected itself leader. It
// is stopped when the test ends, failed or not; it also dies with the test
// binary.
func Start(t testing.TB) *Agent {
	t.Helper()
	la, err := localconsul.New(Binary(t), t.TempDir(), localconsul.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{Agent: la, t: t}
	t.Cleanup(func() {
		if err := a.Stop(); err != nil {
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
