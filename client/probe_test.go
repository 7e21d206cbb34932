package client_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// flakyTrim is a real trim server whose calls fail with Unavailable while
// failing is set.
type flakyTrim struct {
	pb.TrimServer
	failing *atomic.Bool
}

func (f flakyTrim) TrimSpace(ctx context.Context, req *pb.TrimRequest) (*pb.TrimResponse, error) {
	if f.failing.Load() {
		return nil, status.Error(codes.Unavailable, "injected")
	}
	return f.TrimServer.TrimSpace(ctx, req)
}

// healthCode answers every check with the error code it holds.
type healthCode struct {
	healthpb.UnimplementedHealthServer
	code codes.Code
}

func (h healthCode) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return nil, status.Error(h.code, "health: "+h.code.String())
}

// serveFlaky serves flakyTrim on 127.0.0.1:0, failing at first, with the
// health service health (none if nil), and returns its address.
func serveFlaky(t *testing.T, health healthpb.HealthServer) (addr string, failing *atomic.Bool) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	t.Cleanup(srv.Stop)
	svc, _ := trimsvc.New(64)
	failing = &atomic.Bool{}
	failing.Store(true)
	pb.RegisterTrimServer(srv, flakyTrim{trim.NewGRPCServer(trimsvc.NewServerSet(svc), "flaky", log.NewNopLogger()), failing})
	if health != nil {
		healthpb.RegisterHealthServer(srv, health)
	}
	go srv.Serve(lis)
	return lis.Addr().String(), failing
}

// msgLog is a logger that passes on the msg of each line, for a test to
// wait for.
type msgLog chan string

func (l msgLog) Log(kv ...interface{}) error {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "msg" {
			select {
			case l <- fmt.Sprint(kv[i+1]):
			default:
			}
		}
	}
	return nil
}

// waitFor returns the messages logged before msg, once msg is logged; it
// fails the test if msg is not logged within 10s.
func (l msgLog) waitFor(t *testing.T, msg string) (before []string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-l:
			if m == msg {
				return before
			}
			before = append(before, m)
		case <-timeout:
			counts := map[string]int{}
			for _, m := range before {
				counts[m]++
			}
			t.Fatalf("no %q logged within 10s; logged meanwhile (times each): %v", msg, counts)
		}
	}
}

// fastEjectionStack is a round-robin stack over the one instance at addr
// that ejects it for 20-40ms after two failures in a row, retries without
// a budget, and logs to logger.
func fastEjectionStack(t *testing.T, addr string, factory kitsd.Factory, logger log.Logger, opts ...epOpt) (*client.Endpointer, endpoint.Endpoint) {
	t.Helper()
	opts = append(opts, withEjection(client.Ejection{BaseTime: 20 * time.Millisecond, MaxTime: 40 * time.Millisecond, MaxEjectedFraction: 1}))
	e := newEndpointer(t, kitsd.FixedInstancer{addr}, factory, logger, opts...)
	call, err := client.Retry(client.NewRoundRobin(e), client.RetryConfig{MaxAttempts: 2, Budget: noBudget})
	if err != nil {
		t.Fatal(err)
	}
	return e, call
}

// An instance that cannot be probed, because it has no grpc.health.v1
// service (Unimplemented) or its health service does not know the service
// name (NotFound), is readmitted on probation when its ejection is over,
// as an instance behind a Factory without a gRPC connection is. Its next
// failure ejects it again; once it answers, it stays.
func TestUnprobeableInstanceReturnsOnProbation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		health healthpb.HealthServer
	}{
		{"no health service", nil},
		{"health service answers NotFound", healthCode{code: codes.NotFound}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, failing := serveFlaky(t, tc.health)
			m, _, cs := newMetrics()
			logs := make(msgLog, 100)
			e, call := fastEjectionStack(t, addr, client.Factory(trim.Endpoints), logs, withMetrics(m))

			callN(t, call, 1) // two failures in a row: ejected
			logs.waitFor(t, "instance ejected")
			before := logs.waitFor(t, "instance readmitted on probation")
			for _, msg := range before {
				if msg == "ejected instance failed its probe" {
					t.Errorf("an instance that cannot be probed failed its probe: logged %q", before)
				}
			}
			if want, have := 0, client.EjectedCount(e); want != have {
				t.Errorf("ejected after readmission: want %d, have %d", want, have)
			}

			// On probation, one failure ejects it again. (The call's retry,
			// on the one instance there is, waits before going round
			// again, and may meet it readmitted and eject it once more.)
			callN(t, call, 1)
			logs.waitFor(t, "instance ejected")
			ejections := cs["ejections"].sum()
			if ejections < 2 {
				t.Errorf("ejections after a failure on probation: want at least 2, have %v", ejections)
			}

			failing.Store(false)
			logs.waitFor(t, "instance readmitted on probation")
			if n := callN(t, call, 5); n != 0 {
				t.Errorf("%d of 5 calls failed after readmission", n)
			}
			if have := cs["ejections"].sum(); have != ejections {
				t.Errorf("ejections once it answers: want %v still, have %v", ejections, have)
			}
		})
	}
}

// Any other answer of the health service is a failed probe: the instance
// stays ejected.
func TestProbeErrorKeepsInstanceEjected(t *testing.T) {
	addr, _ := serveFlaky(t, healthCode{code: codes.Unavailable})
	logs := make(msgLog, 100)
	e, call := fastEjectionStack(t, addr, client.Factory(trim.Endpoints), logs)
	callN(t, call, 1)
	logs.waitFor(t, "instance ejected")
	for range 2 {
		for _, msg := range logs.waitFor(t, "ejected instance failed its probe") {
			if msg == "instance readmitted on probation" {
				t.Errorf("an instance whose probe failed was readmitted")
			}
		}
	}
	if want, have := 1, client.EjectedCount(e); want != have {
		t.Errorf("ejected: want %d, have %d", want, have)
	}
}
