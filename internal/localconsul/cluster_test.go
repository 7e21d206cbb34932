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
