package client_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/overload"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// Only the balancers that read the load answers report (P2C,
// LeastLoaded's first choice) ask the instances for it, on both faces: a
// round-robin caller's calls carry no request for a load trailer, so an
// instance spends none on them.
func TestOnlyLoadAwareBalancersAskForLoad(t *testing.T) {
	agent := testenv.Consul(t)
	var asked, notAsked atomic.Int64
	count := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		if info.FullMethod != pb.Trim_TrimSpace_FullMethodName { // Consul's health checks
			return handler(ctx, req)
		}
		if overload.Requested(md) {
			asked.Add(1)
		} else {
			notAsked.Add(1)
		}
		return handler(ctx, req)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(count))
	svc, _ := trimsvc.New(64)
	pb.RegisterTrimServer(srv, trim.NewGRPCServer(trimsvc.NewServerSet(svc), "askload-1", log.NewNopLogger()))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveRegistered(t, agent, srv, lis, "askload", "askload-1")

	const calls = 5
	faces := map[string]func(t *testing.T, balancer string) func() error{
		"go-kit": func(t *testing.T, balancer string) func() error {
			c, err := trim.NewClientFromInstancer(kitsd.FixedInstancer{lis.Addr().String()}, client.CallConfig{Balancer: balancer})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return func() error { _, err := c.TrimSpace(context.Background(), " x "); return err }
		},
		"native": func(t *testing.T, balancer string) func() error {
			conn, err := client.NewConn(client.Config{Consul: sd.ConsulConfig{Address: agent.HTTPAddr}, Service: "askload", CallConfig: client.CallConfig{Balancer: balancer}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			tc := pb.NewTrimClient(conn)
			return func() error { _, err := tc.TrimSpace(context.Background(), &pb.TrimRequest{S: " x "}); return err }
		},
	}
	for face, newCall := range faces {
		for balancer, wantAsk := range map[string]bool{client.RoundRobinName: false, client.P2CName: true} {
			call := newCall(t, balancer)
			asked.Store(0)
			notAsked.Store(0)
			for range calls {
				if err := call(); err != nil {
					t.Fatalf("%s, %s: %v", face, balancer, err)
				}
			}
			want := map[bool]int64{true: calls, false: 0}
			if asked.Load() != want[wantAsk] || notAsked.Load() != want[!wantAsk] {
				t.Errorf("%s, %s: %d calls asked for the load, %d did not; want %d and %d", face, balancer, asked.Load(), notAsked.Load(), want[wantAsk], want[!wantAsk])
			}
		}
	}
}
