package testenv

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestStartElectsLeader(t *testing.T) {
	a := Consul(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	leader, err := a.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(leader)
	if err != nil {
		t.Fatalf("leader %q: %v", leader, err)
	}
	if want, have := "127.0.0.1", host; want != have {
		t.Errorf("leader host: want %s, have %s", want, have)
	}

	// Stop really stops it, and Restart brings it back on the same address.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Leader(ctx); err == nil {
		t.Fatal("agent still answers after Stop")
	}
	a.Restart()
	if leader, err := a.Leader(ctx); err != nil || leader == "" {
		t.Fatalf("after restart: leader %q, err %v", leader, err)
	}
}
