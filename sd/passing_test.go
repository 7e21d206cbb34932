package sd_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/sd"
)

// An instance registered with Register (ready and serving, as
// grpcserver.Instance registers it) is listed as passing at once, not one
// check interval later, when the agent's first run of its check would
// list it.
func TestRegisterListsAServingInstanceAtOnce(t *testing.T) {
	agent := testenv.Consul(t)
	c := agent.API()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer() // SERVING for "" from the start
	healthgrpc.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	host, port, _ := net.SplitHostPort(lis.Addr().String())
	p, _ := strconv.Atoi(port)

	passing := func(id string) bool {
		t.Helper()
		entries, _, err := c.Health().Service("ready", "", true, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Service.ID == id {
				return true
			}
		}
		return false
	}
	// A long interval: the agent's first run of the check comes at a
	// random point of the first minute.
	reg := func(id string) *sd.Registrar {
		r, err := sd.NewRegistrar(sd.NewClient(c), sd.Registration{ID: id, Name: "ready", Address: host, Port: p,
			CheckInterval: time.Minute, DeregisterAfter: time.Minute}, log.NewNopLogger())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg("ready-1").Register(ctx); err != nil {
		t.Fatal(err)
	}
	if !passing("ready-1") {
		t.Error("an instance registered by Register is not listed as passing at once")
	}

}
