package client_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/defaults"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// NewFromInstancer has no Consul to watch load reports in: asked for the
// least-loaded balancer, it says how to get one rather than balancing
// without the reports.
func TestNewFromInstancerLeastLoadedSaysHow(t *testing.T) {
	c, err := client.NewFromInstancer(kitsd.FixedInstancer{"127.0.0.1:1"}, client.CallConfig{Balancer: client.LeastLoadedName}, trim.Endpoints)
	if err == nil {
		c.Close()
		t.Fatal("least-loaded over a fixed Instancer: want an error")
	}
	for _, want := range []string{"load reports", "New", "NewLeastLoaded"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// NewEndpointer returns an error, and does not panic, for a nil argument or
// an option out of range.
func TestNewEndpointerErrors(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": ok("a")})
	logger := log.NewNopLogger()
	for _, tc := range []struct {
		name      string
		instancer kitsd.Instancer
		factory   kitsd.Factory
		logger    log.Logger
		opts      []epOpt
	}{
		{"nil instancer", nil, f.factory, logger, nil},
		{"nil factory", kitsd.FixedInstancer{"a"}, nil, logger, nil},
		{"nil logger", kitsd.FixedInstancer{"a"}, f.factory, nil, nil},
		{"all nil", nil, nil, nil, nil},
		{"negative close grace", kitsd.FixedInstancer{"a"}, f.factory, logger, []epOpt{withCloseGrace(-time.Second)}},
		{"ejected fraction over 1", kitsd.FixedInstancer{"a"}, f.factory, logger, []epOpt{withEjection(client.Ejection{MaxEjectedFraction: 2})}},
	} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%s: panicked: %v", tc.name, p)
				}
			}()
			e, err := client.NewEndpointer(tc.instancer, tc.factory, tc.logger, endpointerConfig(tc.opts...))
			if err == nil {
				e.Close()
				t.Errorf("%s: want an error", tc.name)
			} else if e != nil {
				t.Errorf("%s: an Endpointer with the error", tc.name)
			}
		}()
	}
	if len(f.closed) != 0 {
		t.Errorf("an Endpointer that was refused made connections")
	}
}

// RetryConfig.Retryable decides what is retried: one that also retries
// ResourceExhausted (an overloaded instance, say) moves on to the next
// instance, where the default returns the first answer.
func TestRetryableOfOnesOwn(t *testing.T) {
	byName := func() map[string]endpoint.Endpoint {
		return map[string]endpoint.Endpoint{"a": failing(codes.ResourceExhausted), "b": ok("b"), "c": ok("c")}
	}
	// The default: ResourceExhausted is an answer.
	f := newFakes(byName())
	call := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{})
	_, err := call(context.Background(), trimsvc.TrimRequest{S: "x"})
	if want, have := codes.ResourceExhausted, status.Code(err); want != have {
		t.Errorf("default: want %v, have %v (%v)", want, have, err)
	}
	if want, have := []string{"a"}, f.attempts(); !equal(want, have) {
		t.Errorf("default: attempts: want %v, have %v", want, have)
	}

	// Retrying ResourceExhausted too.
	var (
		mu   sync.Mutex
		seen []int
	)
	exhaustedToo := func(n int, err error) (bool, error) {
		mu.Lock()
		seen = append(seen, n)
		mu.Unlock()
		if status.Code(err) == codes.ResourceExhausted {
			return true, nil
		}
		return client.DefaultRetryable(n, err)
	}
	f = newFakes(byName())
	call = fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{Retryable: exhaustedToo})
	resp, err := call(context.Background(), trimsvc.TrimRequest{S: "x"})
	if err != nil || resp.(trim.TrimResponse).Instance != "b" {
		t.Fatalf("want b's answer, have %v, %v", resp, err)
	}
	if want, have := []string{"a", "b"}, f.attempts(); !equal(want, have) {
		t.Errorf("attempts: want %v, have %v", want, have)
	}
	if want, have := []int{1}, seen; !slices.Equal(want, have) {
		t.Errorf("Retryable asked with n: want %v, have %v", want, have)
	}

	// Every instance exhausted: MaxAttempts, and the last error.
	f = newFakes(map[string]endpoint.Endpoint{"a": failing(codes.ResourceExhausted), "b": failing(codes.ResourceExhausted), "c": failing(codes.ResourceExhausted)})
	call = fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{Retryable: exhaustedToo})
	_, err = call(context.Background(), trimsvc.TrimRequest{S: "x"})
	var re *client.RetryError
	if !errors.As(err, &re) || re.Attempts != defaults.MaxAttempts || status.Code(err) != codes.ResourceExhausted {
		t.Errorf("want a RetryError after %d attempts, ResourceExhausted, have %#v", defaults.MaxAttempts, err)
	}

	// A replacement ends the call with it.
	errMine := errors.New("mine")
	f = newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": ok("b")})
	call = fakeStack(t, f, []string{"a", "b"}, client.RetryConfig{Retryable: func(int, error) (bool, error) { return false, errMine }})
	if _, err := call(context.Background(), trimsvc.TrimRequest{S: "x"}); !errors.Is(err, errMine) {
		t.Errorf("want the replacement, have %v", err)
	}
	if want, have := 1, f.total(); want != have {
		t.Errorf("attempts after a replacement: want %d, have %d", want, have)
	}
}

// countedTrim is a real trim server that counts its calls and, with fail,
// answers each with Unavailable, as an overloaded or draining server
// does.
type countedTrim struct {
	pb.TrimServer
	calls atomic.Int64
	fail  bool
}

func (s *countedTrim) TrimSpace(ctx context.Context, req *pb.TrimRequest) (*pb.TrimResponse, error) {
	s.calls.Add(1)
	if s.fail {
		return nil, status.Error(codes.Unavailable, "injected: the instance answered Unavailable")
	}
	return s.TrimServer.TrimSpace(ctx, req)
}

// serveCounted serves a countedTrim on n loopback listeners, each an
// instance, and returns their addresses.
func serveCounted(t *testing.T, id string, n int, fail bool) (*countedTrim, []string) {
	t.Helper()
	svc, _ := trimsvc.New(64)
	s := &countedTrim{TrimServer: trim.NewGRPCServer(trimsvc.NewServerSet(svc), id, log.NewNopLogger()), fail: fail}
	srv := grpc.NewServer()
	pb.RegisterTrimServer(srv, s)
	var addrs []string
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, lis.Addr().String())
		go srv.Serve(lis)
	}
	t.Cleanup(srv.Stop)
	return s, addrs
}

// A call that is not idempotent is not retried once it may have reached
// an instance: an Unavailable the instance answered with ends it after one
// attempt, however many instances there are to retry on.
func TestNotIdempotentNotRetriedAfterReachingAnInstance(t *testing.T) {
	srv, addrs := serveCounted(t, "unavailable", 2, true)
	_, rm, cs := newMetrics()
	c, err := trim.NewClientFromInstancer(kitsd.FixedInstancer(addrs),
		client.CallConfig{Retry: client.RetryConfig{Budget: noBudget, Metrics: rm, Idempotent: func(any) bool { return true }},
			EndpointerConfig: endpointerConfig(noEjection)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Connections up first: the calls below reach an instance.
	if _, err := c.TrimSpace(context.Background(), "x"); status.Code(err) != codes.Unavailable {
		t.Fatalf("warm-up: want Unavailable, have %v", err)
	}
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		wantCalls int64
	}{
		{"WithIdempotent(ctx, false)", client.WithIdempotent(context.Background(), false), 1},
		{"WithIdempotent(ctx, true)", client.WithIdempotent(context.Background(), true), defaults.MaxAttempts},
		{"RetryConfig.Idempotent", context.Background(), defaults.MaxAttempts},
	} {
		srv.calls.Store(0)
		retries := cs["retries"].sum()
		_, err := c.TrimSpace(tc.ctx, "x")
		if want, have := codes.Unavailable, status.Code(err); want != have {
			t.Errorf("%s: want %v, have %v", tc.name, want, have)
		}
		if want, have := tc.wantCalls, srv.calls.Load(); want != have {
			t.Errorf("%s: calls the server got: want %d, have %d", tc.name, want, have)
		}
		var re *client.RetryError
		if !errors.As(err, &re) || int64(re.Attempts) != tc.wantCalls {
			t.Errorf("%s: want a RetryError after %d attempts, have %#v", tc.name, tc.wantCalls, err)
		}
		if want, have := float64(tc.wantCalls-1), cs["retries"].sum()-retries; want != have {
			t.Errorf("%s: retries: want %v, have %v", tc.name, want, have)
		}
	}
}

// RetryConfig.Idempotent says which requests are safe to send twice;
// WithIdempotent overrides it for one call.
func TestIdempotentByRequest(t *testing.T) {
	srv, addrs := serveCounted(t, "unavailable", 2, true)
	c, err := trim.NewClientFromInstancer(kitsd.FixedInstancer(addrs),
		client.CallConfig{Retry: client.RetryConfig{Budget: noBudget, Idempotent: func(req any) bool {
			return req.(trimsvc.TrimRequest).S != "not idempotent"
		}}, EndpointerConfig: endpointerConfig(noEjection)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_, _ = c.TrimSpace(context.Background(), "warm up") // connections up
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		s         string
		wantCalls int64
	}{
		{"by request", context.Background(), "not idempotent", 1},
		{"by request", context.Background(), "idempotent", defaults.MaxAttempts},
		{"WithIdempotent(ctx, true)", client.WithIdempotent(context.Background(), true), "not idempotent", defaults.MaxAttempts},
		{"WithIdempotent(ctx, false)", client.WithIdempotent(context.Background(), false), "idempotent", 1},
	} {
		srv.calls.Store(0)
		if _, err := c.TrimSpace(tc.ctx, tc.s); status.Code(err) != codes.Unavailable {
			t.Errorf("%q, %s: want Unavailable, have %v", tc.s, tc.name, err)
		}
		if want, have := tc.wantCalls, srv.calls.Load(); want != have {
			t.Errorf("%q, %s: calls the server got: want %d, have %d", tc.s, tc.name, want, have)
		}
	}
}

// A call that is not idempotent is still retried when its attempt
// certainly did not leave this process: its instance could not be
// connected to at all.
func TestNotIdempotentRetriedWhenItCouldNotConnect(t *testing.T) {
	good, addrs := serveCounted(t, "good", 1, false)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close() // nothing listens there now
	m, rm, cs := newMetrics()
	m.Retries, m.Hedges, m.BudgetExhausted = rm.Retries, rm.Hedges, rm.BudgetExhausted // the stack's, given once
	c, err := trim.NewClientFromInstancer(kitsd.FixedInstancer{dead, addrs[0]},
		client.CallConfig{Retry: client.RetryConfig{Budget: noBudget, Timeout: 5 * time.Second},
			EndpointerConfig: endpointerConfig(noEjection, withMetrics(m))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Round robin over two new instances: one of the first two calls starts
	// on the dead one.
	ctx := client.WithIdempotent(context.Background(), false)
	for i := range 2 {
		out, err := c.TrimSpace(ctx, " a b ")
		if err != nil || out != "ab" {
			t.Fatalf("call %d, not idempotent: want ab, have %q, %v", i+1, out, err)
		}
	}
	if want, have := 1.0, cs["attempts"].get("instance", dead, "outcome", "failed"); want != have {
		t.Errorf("failed attempts on the dead instance: want %v, have %v", want, have)
	}
	if want, have := 1.0, cs["retries"].sum(); want != have {
		t.Errorf("retries: want %v, have %v", want, have)
	}
	if want, have := int64(2), good.calls.Load(); want != have {
		t.Errorf("calls the good instance got: want %d, have %d", want, have)
	}
}

// picks is a Balancer that wraps another and records what Retry asked of
// it: what each call had tried at each pick, what it picked, and what it
// was told of each attempt.
type picks struct {
	client.Balancer
	mu    sync.Mutex
	tried [][]string
	got   []string
	done  []string
}

func instanceAddrs(insts []*client.Node) []string {
	out := []string{}
	for _, in := range insts {
		out = append(out, in.Addr())
	}
	return out
}

func (p *picks) Pick(tried []*client.Node) (*client.Node, error) {
	inst, err := p.Balancer.Pick(tried)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tried = append(p.tried, instanceAddrs(tried))
	if err == nil {
		p.got = append(p.got, inst.Addr())
	}
	return inst, err
}

func (p *picks) Done(inst *client.Node, err error) {
	p.mu.Lock()
	p.done = append(p.done, inst.Addr()+" "+status.Code(err).String())
	p.mu.Unlock()
	p.Balancer.Done(inst, err)
}

// A Balancer that wraps one of this package's keeps what the instances
// know: each retry still goes to an instance the call has not tried.
func TestBalancerWrapperKeepsRetriesMoving(t *testing.T) {
	for _, tc := range []struct {
		name string
		new  func(*client.Endpointer) client.Balancer
	}{
		{"round robin", func(e *client.Endpointer) client.Balancer { return client.NewRoundRobin(e) }},
		{"p2c", func(e *client.Endpointer) client.Balancer { return client.NewP2C(e) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": failing(codes.Unavailable), "c": failing(codes.Unavailable), "d": ok("d")})
			e := newEndpointer(t, kitsd.FixedInstancer{"a", "b", "c", "d"}, f.factory, log.NewNopLogger(), noEjection)
			p := &picks{Balancer: tc.new(e)}
			call, err := client.Retry(p, client.RetryConfig{MaxAttempts: 4, Timeout: 5 * time.Second, Budget: noBudget})
			if err != nil {
				t.Fatal(err)
			}
			for range 20 {
				f.reset()
				p.mu.Lock()
				p.tried, p.got, p.done = nil, nil, nil
				p.mu.Unlock()
				resp, err := call(context.Background(), trimsvc.TrimRequest{S: "x"})
				if err != nil || resp.(trim.TrimResponse).Instance != "d" {
					t.Fatalf("4 attempts over 4 instances, one good: want d's answer, have %v, %v (attempts %v)", resp, err, f.attempts())
				}
				p.mu.Lock()
				got, tried, done := slices.Clone(p.got), slices.Clone(p.tried), slices.Clone(p.done)
				p.mu.Unlock()
				if !equal(got, f.attempts()) {
					t.Errorf("picks %v, attempts %v: want the same", got, f.attempts())
				}
				if len(slices.Compact(slices.Sorted(slices.Values(got)))) != len(got) {
					t.Errorf("picks %v: want distinct instances", got)
				}
				for i := range tried {
					if !equal(tried[i], got[:i]) {
						t.Errorf("pick %d was told the call tried %v, want %v", i+1, tried[i], got[:i])
					}
				}
				if want, have := len(got), len(done); want != have || !strings.HasSuffix(done[len(done)-1], " OK") {
					t.Errorf("Done: want %d reports ending with OK, have %v", want, done)
				}
			}
		})
	}
}
