package localconsul_test

import (
	"context"
	"testing"
	"time"

	"github.com/trimkit/trimkit/internal/localconsul"
	"github.com/trimkit/trimkit/internal/testenv"
)

func TestClusterFormsAndElectsAgain(t *testing.T) {
	c, err := localconsul.NewCluster(testenv.ConsulBinary(t), t.TempDir(), localconsul.ClusterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Start(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("3 servers and 2 clients formed in %v", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader, next, took, err := c.KillLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader || !next.Running() || leader.Running() {
		t.Fatalf("killed %s (running %v), new leader %s (running %v)", leader.Name, leader.Running(), next.Name, next.Running())
	}
	t.Logf("new leader %s %v after SIGKILL of %s", next.Name, took.Round(time.Millisecond), leader.Name)
	// The old leader comes back with its data and rejoins.
	if err := leader.Start(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitAlive(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOpenCluster finds a cluster's members again from its directory, as
// another process (demo restart) does, without starting anything.
func TestOpenCluster(t *testing.T) {
	bin := testenv.ConsulBinary(t)
	dir := t.TempDir()
	c, err := localconsul.NewCluster(bin, dir, localconsul.ClusterOptions{Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o, err := localconsul.OpenCluster(bin, dir)
	if err != nil {
		t.Fatal(err)
	}
	if want, have := len(c.Members()), len(o.Members()); want != have {
		t.Fatalf("want %d members, have %d", want, have)
	}
	for i, want := range c.Members() {
		have := o.Members()[i]
		if have.Name != want.Name || have.HTTPAddr != want.HTTPAddr || have.SerfLANAddr != want.SerfLANAddr ||
			have.ServerAddr != want.ServerAddr || have.LogPath != want.LogPath || have.IsServer() != want.IsServer() || have.URL() != want.URL() {
			t.Errorf("member %d: want %+v, have %+v", i, want, have)
		}
		if have.Running() {
			t.Errorf("%s running", have.Name)
		}
	}
	if o.Security == nil || o.Security.ManagementToken != c.Security.ManagementToken || o.Security.AgentToken != c.Security.AgentToken ||
		o.Security.CA.CertFile != c.Security.CA.CertFile || o.Security.CLICertFile != c.Security.CLICertFile {
		t.Errorf("security: want %+v, have %+v", c.Security, o.Security)
	}
	if o.Member("client-2") == nil || o.Member("nobody") != nil {
		t.Errorf("Member: client-2 %v, nobody %v", o.Member("client-2"), o.Member("nobody"))
	}
}
