package client_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/overload"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/transport/grpcserver"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// shedding refuses every call for overload, as grpcserver's admission does.
func shedding() endpoint.Endpoint {
	err := overload.NewMarker().Shed("server busy: 10 calls in flight, its limit (adaptive concurrency limit); try another instance")
	return func(context.Context, interface{}) (interface{}, error) {
		return nil, trim.FromStatus(err)
	}
}

func TestShedIsRetriedElsewhereAndNeverEjects(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": shedding(), "b": ok("b"), "c": ok("c")})
	m, rm, cs := newMetrics()
	// Ejection on, after 2 failures in a row: sheds are not failures.
	opts := []epOpt{withMetrics(m), withEjection(client.Ejection{ConsecutiveFailures: 2, BaseTime: time.Hour})}
	// Not idempotent either: a shed call did no work, so it may go again.
	call := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{Metrics: rm, Idempotent: func(any) bool { return false }}, opts...)
	if n := callN(t, call, 30); n != 0 {
		t.Fatalf("%d of 30 calls failed", n)
	}
	if have := cs["ejections"].sum(); have != 0 {
		t.Errorf("ejections: %v, want none: a full instance is not a broken one", have)
	}
	if have := cs["attempts"].get("instance", "a", "outcome", "shed"); have < 10 {
		t.Errorf("shed attempts on a: %v, want round robin's 10", have)
	}
	if have := cs["retries"].sum(); have != cs["attempts"].get("instance", "a", "outcome", "shed") {
		t.Errorf("retries %v, want one per shed attempt", have)
	}
}

func TestP2CSteersAwayFromAnInstanceThatSheds(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": shedding(), "b": ok("b"), "c": ok("c")})
	e := newEndpointer(t, kitsd.FixedInstancer{"a", "b", "c"}, f.factory, log.NewNopLogger(), noEjection)
	call, err := client.Retry(client.NewP2C(e), client.RetryConfig{Budget: noBudget})
	if err != nil {
		t.Fatal(err)
	}
	if n := callN(t, call, 300); n != 0 {
		t.Fatalf("%d of 300 calls failed", n)
	}
	if have := f.count("a"); have > 30 {
		t.Errorf("the instance that sheds got %d attempts of 300 calls, want at most 10%%", have)
	}
}

func TestWholeFleetShedsClientThrottlesItselfThenRecovers(t *testing.T) {
	names := []string{"a", "b", "c"}
	f := newFakes(map[string]endpoint.Endpoint{"a": shedding(), "b": shedding(), "c": shedding()})
	_, rm, _ := newMetrics()
	throttled := newCounter()
	rm.Throttled = throttled
	call := fakeStack(t, f, names, client.RetryConfig{Metrics: rm, Budget: client.DefaultRetryBudget, Throttle: client.Throttle{Window: 300 * time.Millisecond}})
	var refused, throttledErrs int
	const calls = 400
	for range calls {
		_, err := call(context.Background(), trimsvc.TrimRequest{S: "x"})
		var te *client.ThrottledError
		switch {
		case errors.As(err, &te):
			throttledErrs++
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("a throttled call: %v, want ResourceExhausted", status.Code(err))
			}
		case overload.IsShed(err):
			refused++
		default:
			t.Fatalf("a call to a fleet that sheds everything: %v", err)
		}
	}
	// K = 2: about half the calls go out (requests - 2 accepts, with no
	// accepts, throttles all but 1/(requests+1)... of a window that
	// forgets): most are refused by the client, some still probe.
	if throttledErrs < calls/2 || refused == 0 {
		t.Errorf("of %d calls: %d throttled, %d sent and shed; want most throttled, some still sent", calls, throttledErrs, refused)
	}
	if throttled.sum() != float64(throttledErrs) {
		t.Errorf("throttled counter %v, want %d", throttled.sum(), throttledErrs)
	}
	// The fleet has room again: within the window, calls go out again.
	for _, name := range names {
		f.set(name, ok(name))
	}
	time.Sleep(300 * time.Millisecond)
	if n := callN(t, call, 100); n != 0 {
		t.Errorf("%d of 100 calls failed one window after the fleet recovered", n)
	}
}

func TestThrottleDisabledSendsEveryCall(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": shedding(), "b": shedding()})
	call := fakeStack(t, f, []string{"a", "b"}, client.RetryConfig{MaxAttempts: 1, Throttle: client.Throttle{Disabled: true}})
	for range 200 {
		_, err := call(context.Background(), trimsvc.TrimRequest{S: "x"})
		if !overload.IsShed(err) {
			t.Fatalf("with throttling off: %v, want the instance's refusal", err)
		}
	}
	if f.total() != 200 {
		t.Errorf("attempts %d, want all 200 sent", f.total())
	}
}

// TestAnswersCarryTheLoadToTheInstance serves trim behind grpcserver's
// limits and calls it through a client Factory: the load in each answer's
// trailer reaches the *Node the balancers compare.
func TestAnswersCarryTheLoadToTheInstance(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	limits := grpcserver.Limits{Concurrency: grpcserver.FixedLimit(4)}
	s := grpc.NewServer(limits.ServerOptions()...)
	svc, err := trimsvc.New(trimsvc.DefaultMaxInputBytes)
	if err != nil {
		t.Fatal(err)
	}
	pb.RegisterTrimServer(s, trim.NewGRPCServer(trimsvc.NewServerSet(svc), "one", log.NewNopLogger()))
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()
	e := newEndpointer(t, kitsd.FixedInstancer{lis.Addr().String()}, client.Factory(trim.Endpoints), log.NewNopLogger())
	if _, ok := client.ReportedLoad(client.Instances(e)[0]); ok {
		t.Fatal("a load before any answer")
	}
	call, err := client.Retry(client.NewP2C(e), client.RetryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call(context.Background(), trimsvc.TrimRequest{S: " x "}); err != nil {
		t.Fatal(err)
	}
	if load, ok := client.ReportedLoad(client.Instances(e)[0]); !ok || load != 0 {
		t.Errorf("load after an answer from an idle instance: %v, %v; want 0, fresh", load, ok)
	}
}
