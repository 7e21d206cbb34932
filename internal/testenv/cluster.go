package testenv

import (
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/trimkit/trimkit/internal/localconsul"
)

// Cluster starts 3 Consul servers and 2 client agents on loopback (see
// localconsul.Cluster) and waits until they have a leader and see each
// other alive. They are stopped when the test ends, failed or not (on
// failure with the end of each member's log); they also die with the test
// binary.
func Cluster(t testing.TB) *localconsul.Cluster {
	t.Helper()
	return ClusterWith(t, localconsul.ClusterOptions{})
}

// ClusterWith is Cluster as opts say (the number of client agents, and so
// on).
func ClusterWith(t testing.TB, opts localconsul.ClusterOptions) *localconsul.Cluster {
	t.Helper()
	c, err := localconsul.NewCluster(ConsulBinary(t), t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, a := range c.Members() {
				t.Logf("%s log:\n%s", a.Name, a.LogTail())
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	if err := c.Start(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// API returns a Consul API client for agent a.
func API(t testing.TB, a *localconsul.Agent) *api.Client {
	t.Helper()
	c, err := a.API()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
