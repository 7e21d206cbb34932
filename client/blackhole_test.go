package client_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/loadgen"
	"github.com/trimkit/trimkit/internal/testenv"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/sd"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// How a blackHole instance answers the trim calls it gets.
const (
	answering  = iota
	allFail    // Internal at once, every call
	halfFail   // Internal at once, every other call
	blackHoles = 3
)

// blackHole is a trim instance registered in Consul, with a gRPC health
// check that keeps passing whatever its calls do.
type blackHole struct {
	addr     string
	mode     atomic.Int32
	calls    atomic.Int64 // trim calls it got
	mu       sync.Mutex
	firstErr time.Time // when it first failed a call
}

func (b *blackHole) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if info.FullMethod != pb.Trim_TrimSpace_FullMethodName {
		return handler(ctx, req)
	}
	n := b.calls.Add(1)
	switch b.mode.Load() {
	case allFail:
	case halfFail:
		if n%2 == 0 {
			return handler(ctx, req)
		}
	default:
		return handler(ctx, req)
	}
	b.mu.Lock()
	if b.firstErr.IsZero() {
		b.firstErr = time.Now()
	}
	b.mu.Unlock()
	return nil, status.Error(codes.Internal, "database pool broken")
}

func (b *blackHole) firstFailure() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.firstErr
}

// startBlackHoles starts n instances of service in-process, registers
// them with agent, and waits until their checks pass.
func startBlackHoles(t *testing.T, agent *testenv.Agent, service string, n int) []*blackHole {
	t.Helper()
	var hs []*blackHole
	var ids []string
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b := &blackHole{addr: lis.Addr().String()}
		srv := grpc.NewServer(grpc.UnaryInterceptor(b.intercept))
		svc, err := trimsvc.New(trimsvc.DefaultMaxInputBytes)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("%s-%d", service, i)
		pb.RegisterTrimServer(srv, trim.NewGRPCServer(trimsvc.NewServerSet(svc), id, log.NewNopLogger()))
		serveRegistered(t, agent, srv, lis, service, id)
		hs = append(hs, b)
		ids = append(ids, id)
	}
	agent.WaitPassing(service, ids...)
	return hs
}

// serveRegistered serves srv, with a health service, on lis, and
// registers it with agent as id of service, with a gRPC check every
// second; the test's end stops it.
func serveRegistered(t *testing.T, agent *testenv.Agent, srv *grpc.Server, lis net.Listener, service, id string) {
	t.Helper()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	reg, err := sd.NewRegistrar(sd.NewClient(agent.API()), sd.Registration{
		ID: id, Name: service, Address: "127.0.0.1", Port: lis.Addr().(*net.TCPAddr).Port, CheckInterval: time.Second,
	}, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// An instance that fails calls at once while its health check passes (a
// black hole) costs callers next to nothing: under an open loop of 1000
// calls a second for 8s, at most 1% of calls fail, and the instance is
// ejected within a second of its first failure (by its failures in a row
// when it fails every call, by its success rate when it fails every other
// one) or, under P2C, stops drawing calls at once. When every instance
// fails, nothing is ejected and each call fails with the instances' own
// error.
func TestBlackHoleInstance(t *testing.T) {
	agent := testenv.Consul(t)
	for i, tc := range []struct {
		name      string
		balancer  string
		mode      int32
		bad       int  // instances that fail
		mustEject bool // the bad instance must be ejected within 1s
		ejection  client.Ejection
	}{
		{"fails every call, round robin", client.RoundRobinName, allFail, 1, true, client.Ejection{}},
		{"fails every call, p2c", client.P2CName, allFail, 1, false, client.Ejection{}},
		{"fails every other call, round robin", client.RoundRobinName, halfFail, 1, true, client.Ejection{}},
		// The failures in a row of the case before come of calls that
		// end out of order; without that rule, the success rate ejects.
		{"fails every other call, success rate alone", client.RoundRobinName, halfFail, 1, true, client.Ejection{ConsecutiveFailures: 1 << 20}},
		{"fails every other call, p2c", client.P2CName, halfFail, 1, false, client.Ejection{}},
		{"every instance fails every call", client.RoundRobinName, allFail, blackHoles, false, client.Ejection{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			service := fmt.Sprintf("blackhole%d", i)
			insts := startBlackHoles(t, agent, service, blackHoles)
			events := &eventLog{seen: map[string][]time.Time{}}
			m, _, cs := newMetrics()
			c, err := trim.NewClient(client.Config{
				Consul:     sd.ConsulConfig{Address: agent.HTTPAddr},
				Service:    service,
				CallConfig: client.CallConfig{Balancer: tc.balancer, EndpointerConfig: endpointerConfig(withMetrics(m), withEjection(tc.ejection))},
			}, client.WithLogger(events))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			waitInstances(t, c.Endpoint(), blackHoles)
			for _, b := range insts[:tc.bad] {
				b.mode.Store(tc.mode)
				b.calls.Store(0)
			}

			calls, _ := loadgen.Start(context.Background(), c.Endpoint(), "b l a c k", loadgen.Options{Rate: 1000, Duration: 8 * time.Second}).Wait()
			var failed, theirs int
			for _, call := range calls {
				if call.Err != nil {
					failed++
					if status.Code(call.Err) == codes.Internal {
						theirs++
					}
				}
			}
			var total int64
			for _, b := range insts {
				total += b.calls.Load()
			}
			share := float64(insts[0].calls.Load()) / float64(max(total, 1))
			ejections := cs["ejections"].sum()
			t.Logf("%d calls, %d failed; the first instance got %.2f%% of %d attempts; %v ejections", len(calls), failed, 100*share, total, ejections)

			if tc.bad == blackHoles {
				if failed != len(calls) || theirs != failed {
					t.Errorf("every instance fails: want every call to fail with Internal, have %d of %d failed, %d with Internal", failed, len(calls), theirs)
				}
				if ejections != 0 {
					t.Errorf("every instance fails: want no ejection, have %v", ejections)
				}
				return
			}
			if failed > len(calls)/100 {
				t.Errorf("failed calls: want at most 1%%, have %d of %d (first: %v)", failed, len(calls), firstErr(calls))
			}
			if have := cs["ejections"].sum() - cs["ejections"].get("instance", insts[0].addr); have != 0 {
				t.Errorf("healthy instances ejected %v times", have)
			}
			if tc.mustEject {
				first := insts[0].firstFailure()
				ejected, ok := events.first("instance ejected")
				if !ok {
					t.Fatal("the bad instance was never ejected")
				}
				if why := events.firstAfter(); tc.ejection.ConsecutiveFailures != 0 && !strings.HasPrefix(why, "success rate") {
					t.Errorf("want ejection by success rate, have after %q", why)
				}
				if d := ejected.Sub(first); d > time.Second {
					t.Errorf("ejected %v after its first failure, want within 1s", d.Round(time.Millisecond))
				} else {
					t.Logf("ejected %v after its first failure, after %s", d.Round(time.Millisecond), events.firstAfter())
				}
			}
			// Each readmission on probation costs a failure, or, failing
			// every other call, a window of them.
			if share > 0.1 {
				t.Errorf("the bad instance got %.1f%% of the attempts, want at most 10%%", 100*share)
			}
		})
	}
}

func firstErr(calls []loadgen.Call) error {
	for _, c := range calls {
		if c.Err != nil {
			return c.Err
		}
	}
	return nil
}
