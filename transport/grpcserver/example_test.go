package grpcserver_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-kit/log"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/grpcserver"
)

// testService stands for your service.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

// A server's whole main: bounded by Limits, registered in the local Consul
// agent once it serves, and on SIGTERM out of Consul and drained before it
// stops. grpc.health.v1, which Consul's check calls, is added by Run.
func ExampleInstance_Run() {
	logger := log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	lis, err := net.Listen("tcp", ":8080")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	limits := grpcserver.Limits{MaxRecvMsgSize: 64 << 10} // the largest request, and a margin
	server := limits.NewServer()
	testgrpc.RegisterTestServiceServer(server, testService{})

	// What callers dial: the listener's host, or this host's address for a
	// wildcard one. ID, check interval and deregister-after take their
	// defaults.
	reg, err := sd.Registration{Name: "tester"}.At(lis.Addr())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	consul, err := sd.ConsulConfig{}.NewClient() // CONSUL_HTTP_*, else 127.0.0.1:8500
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	registrar, err := sd.NewRegistrar(consul, reg, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}

	in := &grpcserver.Instance{
		Server:    server,
		Listener:  limits.Listener(lis),
		Registrar: registrar,
		Logger:    logger,
	}
	if err := in.Run(ctx); err != nil { // nil after a clean stop on a signal
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// A server with mutual TLS: callers need a certificate of their CA; Consul
// agents, whose certificates come from another CA, may only check health.
// The files are read again when they change, and on SIGHUP.
func ExampleTLS() {
	tlsOpts, reload, err := grpcserver.TLS{
		CertFile:          "server.pem",
		KeyFile:           "server-key.pem",
		ClientCAFile:      "callers-ca.pem",
		HealthCheckCAFile: "consul-agents-ca.pem",
	}.ServerOptions()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	server := grpcserver.Limits{}.NewServer(tlsOpts...)
	testgrpc.RegisterTestServiceServer(server, testService{})

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := reload(); err != nil {
				fmt.Fprintln(os.Stderr, "TLS files not reloaded; serving with those loaded last:", err)
			}
		}
	}()
	// Serve it with an Instance, as in Instance.Run's example.
}

// The adaptive concurrency limit tuned for a service that keeps many slow
// calls in flight (each waits on a database, say): it may run up to 512 at
// once, starts at 64, and sheds the rest at once, marked, so that callers
// try another instance. Without Concurrency, Limits makes one with
// DefaultAdaptive's settings.
func ExampleNewAdaptiveLimit() {
	limit, err := grpcserver.NewAdaptiveLimit(grpcserver.AdaptiveConfig{Min: 16, Max: 512, Initial: 64})
	if err != nil {
		fmt.Println(err)
		return
	}
	limits := grpcserver.Limits{MaxCallsInFlight: 512, Concurrency: limit}
	server := limits.NewServer()
	testgrpc.RegisterTestServiceServer(server, testService{})
	// Serve it with an Instance, as in Instance.Run's example.
	fmt.Println(limit, "starts at", limit.Limit())
	// Output: adaptive concurrency limit starts at 64
}

// A fixed concurrency limit, for a service whose capacity is known (a pool
// of 8 workers) or whose latency says nothing about its load; and the load
// left out of its answers, for callers that cannot use it.
func ExampleFixedLimit() {
	limits := grpcserver.Limits{Concurrency: grpcserver.FixedLimit(8), OmitLoad: true}
	server := limits.NewServer()
	testgrpc.RegisterTestServiceServer(server, testService{})
	fmt.Println(limits.Concurrency, limits.Concurrency.Limit())
	// Output: fixed concurrency limit 8
}

// The connection limits tuned for an instance that many callers reach
// over slow links: room for 4,096 connections, of which at most 512 may be
// still in their handshake (however many a caller without a certificate
// opens), and 5s for a caller's first bytes. An established connection is
// never closed for a newcomer. Serve on the returned listener.
func ExampleLimits_Listener() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	limits := grpcserver.Limits{MaxConnections: 4096, MaxPendingConnections: 512, FirstByteTimeout: 5 * time.Second}
	if err := limits.Validate(); err != nil {
		fmt.Println(err)
		return
	}
	server := limits.NewServer()
	testgrpc.RegisterTestServiceServer(server, testService{})
	limited := limits.Listener(lis)
	defer limited.Close()
	// Serve it with an Instance, as in Instance.Run's example.
	fmt.Println(limits.WithDefaults().HandshakeTimeout)
	// Output: 10s
}
