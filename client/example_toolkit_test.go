package client_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/sd"
)

// healthEndpoints is the EndpointFunc of these examples: any service's
// generated client works the same way; grpc.health.v1 is one every
// trimkit instance serves.
func healthEndpoints(conn *grpc.ClientConn) endpoint.Endpoint {
	c := healthpb.NewHealthClient(conn)
	return func(ctx context.Context, request any) (any, error) {
		req, ok := request.(*healthpb.HealthCheckRequest)
		if !ok {
			return nil, fmt.Errorf("unexpected request %T", request)
		}
		return c.Check(ctx, req)
	}
}

// The stack built by hand, piece by piece, over Consul: what New does in
// one call. Each piece can be replaced: another go-kit Instancer, another
// Factory, a Balancer of your own.
func Example_handBuilt() {
	logger := log.NewLogfmtLogger(os.Stderr)
	// The zero ConsulConfig is the Consul CLI's environment:
	// CONSUL_HTTP_ADDR, else 127.0.0.1:8500.
	consul, err := sd.ConsulConfig{}.NewClient()
	if err != nil {
		fmt.Println(err)
		return
	}
	instancer, err := sd.NewInstancer(consul, logger, "orders", nil, true)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer instancer.Stop()

	endpointer, err := client.NewEndpointer(instancer, client.Factory(healthEndpoints), logger,
		client.EndpointerConfig{Ejection: client.Ejection{ConsecutiveFailures: 3}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer endpointer.Close()

	call, err := client.Retry(client.NewP2C(endpointer), client.RetryConfig{MaxAttempts: 3, Timeout: time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	resp, err := call(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Println(err) // an *sd.NoInstancesError when Consul has no passing instance
		return
	}
	fmt.Println(resp.(*healthpb.HealthCheckResponse).GetStatus())
}

// counting is a Balancer that wraps another and counts its picks by
// instance: the wrapped balancer's policy, tiers and untried-first picks
// all stay, because Retry asks the wrapper, and the instances record
// their own outcomes.
type counting struct {
	client.Balancer
	mu    sync.Mutex
	picks map[string]int
}

func (c *counting) Pick(tried []*client.Node) (*client.Node, error) {
	inst, err := c.Balancer.Pick(tried)
	if err == nil {
		c.mu.Lock()
		c.picks[inst.Addr()]++
		c.mu.Unlock()
	}
	return inst, err
}

// A Balancer of your own that wraps one of the package's: it sees each
// pick, and Retry still moves a failed call on to an instance it has not
// tried.
func ExampleBalancer_wrapper() {
	a, stopA := serveHealth(healthpb.HealthCheckResponse_SERVING)
	defer stopA()
	b, stopB := serveHealth(healthpb.HealthCheckResponse_SERVING)
	defer stopB()

	endpointer, err := client.NewEndpointer(kitsd.FixedInstancer{a, b}, client.Factory(healthEndpoints), log.NewNopLogger(), client.EndpointerConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer endpointer.Close()
	balancer := &counting{Balancer: client.NewRoundRobin(endpointer), picks: map[string]int{}}
	call, err := client.Retry(balancer, client.RetryConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for range 10 {
		if _, err := call(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			fmt.Println(err)
			return
		}
	}
	// Round robin alternates between the two once both are connected
	// (while one connects, calls go to the other): every call was picked,
	// and both instances were.
	fmt.Println(balancer.picks[a]+balancer.picks[b], balancer.picks[a] > 0 && balancer.picks[b] > 0)
	// Output: 10 true
}

// A retry policy of your own: retry every ResourceExhausted too, on top of
// the default rule, which retries only the refusals marked as shed load
// (a trimkit server's; another server's may mean the call did work); and
// say which requests are not safe to send twice.
func ExampleRetryConfig_policy() {
	cfg := client.RetryConfig{
		MaxAttempts: 3,
		Retryable: func(n int, err error) (bool, error) {
			if status.Code(err) == codes.ResourceExhausted {
				return true, nil
			}
			return client.DefaultRetryable(n, err)
		},
		// Health checks are safe to repeat; a service's "create" would not be.
		Idempotent: func(request any) bool {
			_, check := request.(*healthpb.HealthCheckRequest)
			return check
		},
	}
	busy, stopBusy := serveHealth(healthpb.HealthCheckResponse_SERVING, codes.ResourceExhausted)
	defer stopBusy()
	ok, stopOK := serveHealth(healthpb.HealthCheckResponse_SERVING)
	defer stopOK()
	endpointer, err := client.NewEndpointer(kitsd.FixedInstancer{busy, ok}, client.Factory(healthEndpoints), log.NewNopLogger(), client.EndpointerConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer endpointer.Close()
	call, err := client.Retry(client.NewRoundRobin(endpointer), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	failed := 0
	for range 10 {
		if _, err := call(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			failed++
		}
	}
	// Under the same policy, one call that must not be sent twice.
	_, err = call(client.WithIdempotent(context.Background(), false), &healthpb.HealthCheckRequest{})
	var retryErr *client.RetryError
	fmt.Println("failed:", failed, "attempts of a non-idempotent call:", attemptsOf(err, &retryErr))
	// Output: failed: 0 attempts of a non-idempotent call: 1
}

func attemptsOf(err error, target **client.RetryError) int {
	if errors.As(err, target) {
		return (*target).Attempts
	}
	return 1 // it succeeded on its first attempt
}

// serveHealth serves grpc.health.v1 on a loopback port; with refuse, every
// call fails with that code.
func serveHealth(s healthpb.HealthCheckResponse_ServingStatus, refuse ...codes.Code) (addr string, stop func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	var opts []grpc.ServerOption
	if len(refuse) > 0 {
		opts = append(opts, grpc.UnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
			return nil, status.Error(refuse[0], "busy")
		}))
	}
	srv := grpc.NewServer(opts...)
	h := health.NewServer()
	h.SetServingStatus("", s)
	healthpb.RegisterHealthServer(srv, h)
	go srv.Serve(lis)
	return lis.Addr().String(), srv.Stop
}

// Fail-static tuned: hold the instances alive on their connections when
// one update of discovery removes more than a third of them, for at most a
// minute. client.FailStatic{Disabled: true} obeys the catalog to the
// letter instead.
func ExampleFailStatic() {
	c, err := client.New(client.Config{Service: "orders", CallConfig: client.CallConfig{
		EndpointerConfig: client.EndpointerConfig{FailStatic: client.FailStatic{Fraction: 1.0 / 3, MaxAge: time.Minute}},
	}}, healthEndpoints)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	resp, err := c.Endpoint()(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.(*healthpb.HealthCheckResponse).GetStatus())
}

// Client-side throttling tuned: while the instances shed calls for
// overload, send about three calls per call they accept (K 3), counted
// over the last 5s; calls over that fail at once, unsent, with a
// *ThrottledError. client.Throttle{Disabled: true} sends every call.
func ExampleThrottle() {
	c, err := client.New(client.Config{Service: "orders", CallConfig: client.CallConfig{
		Retry: client.RetryConfig{Throttle: client.Throttle{K: 3, Window: 5 * time.Second}},
	}}, healthEndpoints)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_, err = c.Endpoint()(context.Background(), &healthpb.HealthCheckRequest{})
	var throttled *client.ThrottledError
	if errors.As(err, &throttled) {
		fmt.Println("not sent: the fleet refused", throttled.Requests-throttled.Accepts, "of the last", throttled.Requests, "calls")
	}
}

// Subsetting: each caller of a large service connects to 20 of its
// instances. Callers numbered 1, 2, 3, ... (here from REPLICA, a replica's
// index) lay their subsets so that every instance has as many callers as
// any other.
func ExampleCallConfig_subset() {
	replica, err := strconv.Atoi(cmp.Or(os.Getenv("REPLICA"), "1"))
	if err != nil {
		fmt.Println("REPLICA:", err)
		return
	}
	c, err := client.New(client.Config{Service: "orders", CallConfig: client.CallConfig{
		EndpointerConfig: client.EndpointerConfig{Subset: 20, SubsetCaller: replica},
	}}, healthEndpoints)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	resp, err := c.Endpoint()(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.(*healthpb.HealthCheckResponse).GetStatus())
}

// An Endpointer of your own with a subset: at most 2 of the instances
// (more while its members cannot be reached), this caller numbered 7.
func ExampleEndpointerConfig_subset() {
	logger := log.NewLogfmtLogger(os.Stderr)
	instancer := kitsd.FixedInstancer{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"}
	endpointer, err := client.NewEndpointer(instancer, client.Factory(healthEndpoints), logger,
		client.EndpointerConfig{Subset: 2, SubsetCaller: 7})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer endpointer.Close()
	endpoints, _ := endpointer.Endpoints()
	fmt.Println(len(endpoints), "of 3 instances")
}

// A classification of one's own: in this service an instance answers
// NotFound when its cache lost its data, which is the instance's failure,
// not the caller's; everything else as by default. Ejection, the balancers
// and Retry all go by it: the NotFound is retried on another instance and
// counts against the one that answered it.
func ExampleEjection_classify() {
	classify := func(err error) client.Class {
		if status.Code(err) == codes.NotFound {
			return client.InstanceFailure
		}
		return client.DefaultClassify(err)
	}
	lost, stopLost := serveHealth(healthpb.HealthCheckResponse_SERVING, codes.NotFound)
	defer stopLost()
	ok, stopOK := serveHealth(healthpb.HealthCheckResponse_SERVING)
	defer stopOK()
	endpointer, err := client.NewEndpointer(kitsd.FixedInstancer{lost, ok}, client.Factory(healthEndpoints), log.NewNopLogger(),
		client.EndpointerConfig{Ejection: client.Ejection{Classify: classify}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer endpointer.Close()
	call, err := client.Retry(client.NewRoundRobin(endpointer), client.RetryConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	failed := 0
	for range 10 {
		if _, err := call(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			failed++
		}
	}
	fmt.Println("failed:", failed)
	// Output: failed: 0
}
