package client_test

import (
	"context"
	"net"
	"testing"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// serveOn serves the trim service on addr until the returned function
// stops it as a SIGKILL would: the listener and every connection closed at
// once, nothing drained.
func serveOn(t *testing.T, addr string) (kill func()) {
	t.Helper()
	var lis net.Listener
	var err error
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if lis, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := trimsvc.New(64)
	srv := grpc.NewServer()
	pb.RegisterTrimServer(srv, trim.NewGRPCServer(trimsvc.NewServerSet(svc), lis.Addr().String(), log.NewNopLogger()))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return srv.Stop
}

// An instance killed and started again on its address 50ms later, the
// only instance its callers know: no call fails. Before, its connection's
// reconnect backoff (grpc's default, a second) kept it failing fast for a
// second after it was back, and Retry spent its three attempts on it in a
// millisecond.
func TestInstanceRestartedOnItsAddress(t *testing.T) {
	addr := testenv.ClosedAddr(t)
	kill := serveOn(t, addr)
	c, err := trim.NewClientFromInstancer(kitsd.FixedInstancer{addr},
		client.CallConfig{Retry: client.RetryConfig{Budget: noBudget}, EndpointerConfig: endpointerConfig(noEjection)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.TrimSpace(context.Background(), "x"); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
	run := loadgen.Start(context.Background(), c.Endpoint(), "x", loadgen.Options{Rate: 200, Duration: 2 * time.Second})
	time.Sleep(300 * time.Millisecond)
	kill()
	time.Sleep(50 * time.Millisecond)
	serveOn(t, addr)
	calls, _ := run.Wait()
	if failed := failures(t, calls); failed > 0 {
		t.Errorf("%d of %d calls failed across a 50ms restart", failed, len(calls))
	}
}
