package grpcserver

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trimkit/trimkit/internal/testenv"
)

// Serve, with nothing but a server, a name and an address, reaches the
// agent of the environment, is listed passing as soon as it registers
// (SERVING first), answers on the address it registered, and leaves
// Consul before it stops.
func TestServe(t *testing.T) {
	agent := testenv.Consul(t)
	t.Setenv(api.HTTPAddrEnvName, agent.HTTPAddr)
	t.Setenv(api.HTTPTokenEnvName, "")
	c := agent.API()

	server := DefaultLimits.NewServer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, server, "served", "127.0.0.1:0") }()

	var entry *api.ServiceEntry
	eventually(t, "listed passing", func() bool {
		entries, _, err := c.Health().Service("served", "", true, nil)
		if err != nil || len(entries) != 1 {
			return false
		}
		entry = entries[0]
		return true
	})
	if want := "served-127.0.0.1-"; !strings.HasPrefix(entry.Service.ID, want) {
		t.Errorf("registered as %q, want the default ID %s<port>", entry.Service.ID, want)
	}
	if entry.Checks.AggregatedStatus() != api.HealthPassing {
		t.Errorf("listed with checks %v", entry.Checks.AggregatedStatus())
	}
	conn, err := grpc.NewClient(net.JoinHostPort(entry.Service.Address, strconv.Itoa(entry.Service.Port)), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health at the registered address: %v, %v", resp, err)
	}

	cancel()
	if err := wait(t, done); err != nil {
		t.Errorf("Serve after ctx ended: %v", err)
	}
	if registered(c, entry.Service.ID) {
		t.Error("still registered after Serve returned")
	}
}

// Serve says what is wrong with what it was given, and serves nothing.
func TestServeErrors(t *testing.T) {
	agent := testenv.Consul(t)
	t.Setenv(api.HTTPAddrEnvName, agent.HTTPAddr)
	for _, tc := range []struct {
		name          string
		server        Server
		service       string
		addr, wantErr string
	}{
		{"nil server", nil, "ok", "127.0.0.1:0", "nil server"},
		{"bad address", DefaultLimits.NewServer(), "ok", "127.0.0.1:notaport", "listen tcp"},
		{"bad name", DefaultLimits.NewServer(), "not/a/name", "127.0.0.1:0", "service name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Serve(context.Background(), tc.server, tc.service, tc.addr)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("want an error saying %q, have %v", tc.wantErr, err)
			}
		})
	}
}
