package client_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// fakes maps an instance name to the endpoint the fake factory builds for
// it, counts the calls each gets, and reports each close on closed.
type fakes struct {
	mu     sync.Mutex
	byName map[string]endpoint.Endpoint
	calls  map[string]int
	order  []string
	closed chan string
}

func newFakes(byName map[string]endpoint.Endpoint) *fakes {
	return &fakes{byName: byName, calls: map[string]int{}, closed: make(chan string, 10)}
}

func (f *fakes) factory(instance string) (endpoint.Endpoint, io.Closer, error) {
	f.mu.Lock()
	_, ok := f.byName[instance]
	f.mu.Unlock()
	if !ok {
		return nil, nil, errors.New("no fake for " + instance)
	}
	return func(ctx context.Context, req interface{}) (interface{}, error) {
		f.mu.Lock()
		f.calls[instance]++
		f.order = append(f.order, instance)
		e := f.byName[instance]
		f.mu.Unlock()
		return e(ctx, req)
	}, closerFunc(func() error { f.closed <- instance; return nil }), nil
}

// set changes what instance does from now on.
func (f *fakes) set(instance string, e endpoint.Endpoint) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byName[instance] = e
}

// reset forgets the attempts so far.
func (f *fakes) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.order = nil
	clear(f.calls)
}

func (f *fakes) count(instance string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[instance]
}

func (f *fakes) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.order)
}

func (f *fakes) attempts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.order...)
}

type closerFunc func() error

func (c closerFunc) Close() error { return c() }

func ok(name string) endpoint.Endpoint {
	return func(context.Context, interface{}) (interface{}, error) {
		return trim.TrimResponse{TrimResponse: trimsvc.TrimResponse{S: "ok"}, Instance: name}, nil
	}
}

func failing(code codes.Code) endpoint.Endpoint {
	return func(context.Context, interface{}) (interface{}, error) {
		return nil, trim.FromStatus(status.Error(code, code.String()))
	}
}

// hanging blocks until its call is cancelled and reports how long that took.
func hanging(waited chan<- time.Duration) endpoint.Endpoint {
	return func(ctx context.Context, _ interface{}) (interface{}, error) {
		start := time.Now()
		<-ctx.Done()
		waited <- time.Since(start)
		return nil, trim.FromStatus(status.FromContextError(ctx.Err()).Err())
	}
}

// noEjection and noBudget turn off what would change a test of Retry's own
// mechanics over a few calls: ejection and the retry budget (each has tests
// of its own). fakeStack applies both unless the test says otherwise.
var (
	noEjection = withEjection(client.Ejection{Disabled: true})
	noBudget   = client.RetryBudget{Disabled: true}
)

// newEndpointer is client.NewEndpointer, closed when the test ends.
// epOpt changes an EndpointerConfig, as the tests build theirs.
type epOpt func(*client.EndpointerConfig)

func withEjection(e client.Ejection) epOpt {
	return func(c *client.EndpointerConfig) { c.Ejection = e }
}
func withFailStatic(f client.FailStatic) epOpt {
	return func(c *client.EndpointerConfig) { c.FailStatic = f }
}
func withCloseGrace(d time.Duration) epOpt {
	return func(c *client.EndpointerConfig) { c.CloseGrace = d }
}
func withSubset(size, caller int) epOpt {
	return func(c *client.EndpointerConfig) { c.Subset, c.SubsetCaller = size, caller }
}
func withMetrics(m client.Metrics) epOpt { return func(c *client.EndpointerConfig) { c.Metrics = m } }

// endpointerConfig is the EndpointerConfig opts make.
func endpointerConfig(opts ...epOpt) client.EndpointerConfig {
	var c client.EndpointerConfig
	for _, o := range opts {
		o(&c)
	}
	return c
}

func newEndpointer(t testing.TB, instancer kitsd.Instancer, factory kitsd.Factory, logger log.Logger, opts ...epOpt) *client.Endpointer {
	t.Helper()
	e, err := client.NewEndpointer(instancer, factory, logger, endpointerConfig(opts...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// fakeStack builds Endpointer -> RoundRobin -> Retry over a FixedInstancer,
// without ejection (unless opts say otherwise) and without a retry budget
// (unless cfg.Budget is set).
func fakeStack(t *testing.T, f *fakes, instances []string, cfg client.RetryConfig, opts ...epOpt) endpoint.Endpoint {
	t.Helper()
	opts = append([]epOpt{noEjection}, opts...)
	if cfg.Budget == (client.RetryBudget{}) {
		cfg.Budget = noBudget
	}
	e := newEndpointer(t, kitsd.FixedInstancer(instances), f.factory, log.NewNopLogger(), opts...)
	call, err := client.Retry(client.NewRoundRobin(e), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return call
}

func TestRetryAttempts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		endpoints map[string]endpoint.Endpoint
		wantOrder []string   // the instances attempted, in order
		wantCode  codes.Code // OK: success
	}{
		{"success at once", map[string]endpoint.Endpoint{"a": ok("a"), "b": ok("b"), "c": ok("c")}, []string{"a"}, codes.OK},
		{"unavailable, then the next instance", map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": ok("b"), "c": failing(codes.Unavailable)}, []string{"a", "b"}, codes.OK},
		{"all unavailable: MaxAttempts attempts", map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": failing(codes.Unavailable), "c": failing(codes.Unavailable)}, []string{"a", "b", "c"}, codes.Unavailable},
		{"connection closed under the call is retried", map[string]endpoint.Endpoint{"a": failing(codes.Canceled), "b": failing(codes.Canceled), "c": failing(codes.Canceled)}, []string{"a", "b", "c"}, codes.Canceled},
		{"invalid argument: one attempt", map[string]endpoint.Endpoint{"a": failing(codes.InvalidArgument), "b": failing(codes.InvalidArgument), "c": failing(codes.InvalidArgument)}, []string{"a"}, codes.InvalidArgument},
		{"internal: the next instance", map[string]endpoint.Endpoint{"a": failing(codes.Internal), "b": ok("b"), "c": ok("c")}, []string{"a", "b"}, codes.OK},
		{"all internal: MaxAttempts attempts", map[string]endpoint.Endpoint{"a": failing(codes.Internal), "b": failing(codes.Internal), "c": failing(codes.Internal)}, []string{"a", "b", "c"}, codes.Internal},
		{"not found: one attempt", map[string]endpoint.Endpoint{"a": failing(codes.NotFound), "b": ok("b"), "c": ok("c")}, []string{"a"}, codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakes(tc.endpoints)
			e := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{MaxAttempts: 3, Timeout: time.Second})
			_, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
			if want, have := tc.wantCode, status.Code(err); want != have {
				t.Fatalf("want %v, have %v (%v)", want, have, err)
			}
			if want, have := tc.wantOrder, f.attempts(); !equal(want, have) {
				t.Errorf("attempts: want %v, have %v", want, have)
			}
			var re *client.RetryError
			switch {
			case err == nil:
			case !retriedCode(tc.wantCode):
				// The instance's answer ends the call as it is: no
				// RetryError wraps it.
				if errors.As(err, &re) {
					t.Fatalf("want the instance's error as it is, have %v", err)
				}
			case !errors.As(err, &re):
				t.Fatalf("want *RetryError, have %T", err)
			default:
				if want, have := f.total(), re.Attempts; want != have {
					t.Errorf("RetryError.Attempts: want %d, have %d", want, have)
				}
				if want, have := tc.wantOrder[len(tc.wantOrder)-1], re.Instance; want != have {
					t.Errorf("RetryError.Instance: want %q, have %q", want, have)
				}
			}
		})
	}
}

// retriedCode reports whether the default classification retries an
// error with code c.
func retriedCode(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.Canceled, codes.Internal, codes.Unknown, codes.DataLoss, codes.DeadlineExceeded:
		return true
	}
	return false
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRetryAttemptsGoToDistinctInstances(t *testing.T) {
	// Whatever other callers do in between, a call's 3 attempts visit 3
	// distinct instances, so one good instance out of 3 always answers.
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": failing(codes.Unavailable), "c": ok("c")})
	e := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{MaxAttempts: 3, Timeout: time.Second})
	var wg sync.WaitGroup
	errs := make(chan error, 800)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if _, err := e(context.Background(), trimsvc.TrimRequest{S: "x"}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call failed: %v", err)
	}
}

// blind is a Balancer that is not this package's and ignores what a call
// has tried: every pick is a first one, as go-kit's lb.RoundRobin's is.
type blind struct{ client.Balancer }

func (b blind) Pick([]*client.Node) (*client.Node, error) { return b.Balancer.Pick(nil) }

// Over a balancer that is not this package's and ignores the instances a
// call tried (Retry no longer takes a go-kit lb.Balancer: blind stands for
// one), Retry still makes its attempts and keeps the error's status; it
// cannot steer them to distinct instances.
func TestRetryOverABalancerThatIgnoresTried(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": failing(codes.Unavailable)})
	endpointer := newEndpointer(t, kitsd.FixedInstancer{"a", "b"}, f.factory, log.NewNopLogger(), noEjection)
	call, err := client.Retry(blind{client.NewRoundRobin(endpointer)}, client.RetryConfig{MaxAttempts: 4, Timeout: time.Second, Budget: noBudget})
	if err != nil {
		t.Fatal(err)
	}
	_, err = call(context.Background(), trimsvc.TrimRequest{S: "x"})
	if want, have := codes.Unavailable, status.Code(err); want != have {
		t.Errorf("want %v, have %v", want, have)
	}
	var re *client.RetryError
	if !errors.As(err, &re) || re.Attempts != 4 {
		t.Errorf("want a RetryError after 4 attempts, have %#v", err)
	}
	if want, have := 4, f.total(); want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}

	// And a success comes back as it is.
	f = newFakes(map[string]endpoint.Endpoint{"a": ok("a")})
	endpointer = newEndpointer(t, kitsd.FixedInstancer{"a"}, f.factory, log.NewNopLogger())
	call, _ = client.Retry(blind{client.NewRoundRobin(endpointer)}, client.RetryConfig{})
	resp, err := call(context.Background(), trimsvc.TrimRequest{S: "x"})
	if err != nil || resp.(trim.TrimResponse).Instance != "a" {
		t.Errorf("want a's answer, have %v, %v", resp, err)
	}
}

// This package's balancers are go-kit lb.Balancers too: go-kit's lb.Retry
// runs over them, with their tiers but without Retry's steering.
func TestBalancersUnderGoKitRetry(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": ok("b")})
	endpointer := newEndpointer(t, kitsd.FixedInstancer{"a", "b"}, f.factory, log.NewNopLogger(), noEjection)
	for name, cb := range map[string]client.Balancer{"round robin": client.NewRoundRobin(endpointer), "p2c": client.NewP2C(endpointer)} {
		b, ok := cb.(lb.Balancer)
		if !ok {
			t.Fatalf("%s: %T is no lb.Balancer", name, cb)
		}
		f.reset()
		resp, err := lb.Retry(4, time.Second, b)(context.Background(), trimsvc.TrimRequest{S: "x"})
		if err != nil || resp.(trim.TrimResponse).Instance != "b" {
			t.Errorf("%s: want b's answer, have %v, %v (attempts %v)", name, resp, err, f.attempts())
		}
	}
}

func TestRetryConfigErrors(t *testing.T) {
	e := newEndpointer(t, kitsd.FixedInstancer(nil), newFakes(nil).factory, log.NewNopLogger())
	for _, tc := range []struct {
		cfg   client.RetryConfig
		field string
	}{
		{client.RetryConfig{MaxAttempts: -1}, "Retry.MaxAttempts"},
		{client.RetryConfig{Timeout: -time.Second}, "Retry.Timeout"},
		{client.RetryConfig{HedgeAfter: -time.Second}, "Retry.HedgeAfter"},
		{client.RetryConfig{Budget: client.RetryBudget{Ratio: -1}}, "Retry.Budget"},
	} {
		_, err := client.Retry(client.NewRoundRobin(e), tc.cfg)
		var fe *client.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%+v: want a *FieldError, have %v", tc.cfg, err)
		} else if fe.Field != tc.field {
			t.Errorf("%+v: want a *FieldError for %s, have %v", tc.cfg, tc.field, err)
		}
	}
	if _, err := client.Retry(nil, client.RetryConfig{}); err == nil {
		t.Error("no balancer: want an error")
	}
}

func TestRetryBusinessErrorIsNotRetried(t *testing.T) {
	bizErr := trim.FromStatus(trim.Status(&trimsvc.LimitError{Size: 2, Limit: 1}).Err())
	biz := func(context.Context, interface{}) (interface{}, error) {
		return trim.TrimResponse{TrimResponse: trimsvc.TrimResponse{Err: bizErr}}, nil
	}
	f := newFakes(map[string]endpoint.Endpoint{"a": biz, "b": biz})
	svc := trim.Service{TrimSpaceEndpoint: fakeStack(t, f, []string{"a", "b"}, client.RetryConfig{MaxAttempts: 3, Timeout: time.Second})}
	_, err := svc.TrimSpace(context.Background(), "xx")
	if !errors.Is(err, trimsvc.ErrInputTooLarge) {
		t.Fatalf("want ErrInputTooLarge, have %v", err)
	}
	if want, have := 1, f.total(); want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}
}

func TestRetryPerAttemptShare(t *testing.T) {
	waited := make(chan time.Duration, 3)
	f := newFakes(map[string]endpoint.Endpoint{"a": hanging(waited), "b": ok("b")})
	e := fakeStack(t, f, []string{"a", "b"}, client.RetryConfig{MaxAttempts: 3, Timeout: 300 * time.Millisecond})
	resp, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
	if err != nil {
		t.Fatalf("the second attempt should answer: %v", err)
	}
	if want, have := "b", resp.(trim.TrimResponse).Instance; want != have {
		t.Errorf("want %s, have %s", want, have)
	}
	// The hung attempt was cancelled at the end of its share, a third of
	// the budget: not before (a timer does not fire early), and early enough
	// that the second attempt still had time to answer.
	if share := <-waited; share < 90*time.Millisecond {
		t.Errorf("first attempt cancelled after %v, before its share of about 100ms", share)
	}
	if want, have := []string{"a", "b"}, f.attempts(); !equal(want, have) {
		t.Errorf("attempts: want %v, have %v", want, have)
	}
}

func TestRetryAllHungReturnsDeadline(t *testing.T) {
	waited := make(chan time.Duration, 3)
	f := newFakes(map[string]endpoint.Endpoint{"a": hanging(waited)})
	e := fakeStack(t, f, []string{"a"}, client.RetryConfig{MaxAttempts: 3, Timeout: 150 * time.Millisecond})
	_, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
	if want, have := codes.DeadlineExceeded, status.Code(err); want != have {
		t.Errorf("want %v, have %v (%v)", want, have, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("want errors.Is DeadlineExceeded: %v", err)
	}
	// One instance: the attempts go round to it again.
	if want, have := 3, f.total(); want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}
}

func TestRetryNoEndpoints(t *testing.T) {
	f := newFakes(nil)
	e := fakeStack(t, f, nil, client.RetryConfig{MaxAttempts: 3, Timeout: 200 * time.Millisecond})
	_, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
	if !errors.Is(err, lb.ErrNoEndpoints) {
		t.Fatalf("want ErrNoEndpoints, have %v", err)
	}
	// Three short pauses fit well within the 200ms: every attempt is made.
	var re *client.RetryError
	if !errors.As(err, &re) || re.Attempts != 3 {
		t.Errorf("want 3 attempts, have %#v", err)
	}
}

func TestRetryStopsWhenCallerCancels(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": failing(codes.Unavailable)})
	e := fakeStack(t, f, []string{"a", "b"}, client.RetryConfig{MaxAttempts: 3, Timeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e(ctx, trimsvc.TrimRequest{S: "x"})
	if err == nil {
		t.Fatal("want error")
	}
	if want, have := 1, f.total(); want != have {
		t.Errorf("attempts after the caller gave up: want %d, have %d", want, have)
	}
}

func TestEndpointerClosesRemovedAndAll(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": ok("a"), "b": ok("b")})
	inst := &manualInstancer{}
	e, err := client.NewEndpointer(inst, f.factory, log.NewNopLogger(), client.EndpointerConfig{CloseGrace: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	inst.send(kitsd.Event{Instances: []string{"a", "b"}})
	eps, _ := e.Endpoints()
	if want, have := 2, len(eps); want != have {
		t.Fatalf("want %d endpoints, have %d", want, have)
	}
	inst.send(kitsd.Event{Instances: []string{"b"}})
	inst.send(kitsd.Event{Err: errors.New("consul down")}) // keeps b
	eps, _ = e.Endpoints()
	if want, have := 1, len(eps); want != have {
		t.Fatalf("after removal and an error: want %d endpoints, have %d", want, have)
	}
	// a is closed once its grace period is over, and only a.
	select {
	case name := <-f.closed:
		if name != "a" {
			t.Errorf("closed %s, want a", name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a not closed after its grace period")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if name := <-f.closed; name != "b" {
		t.Errorf("Close closed %s, want b", name)
	}
	select {
	case name := <-f.closed:
		t.Errorf("%s closed twice", name)
	default:
	}
}

// manualInstancer sends the events a test gives it.
type manualInstancer struct {
	mu sync.Mutex
	ch chan<- kitsd.Event
}

func (m *manualInstancer) Register(ch chan<- kitsd.Event) { m.mu.Lock(); m.ch = ch; m.mu.Unlock() }
func (m *manualInstancer) Deregister(chan<- kitsd.Event)  { m.mu.Lock(); m.ch = nil; m.mu.Unlock() }
func (m *manualInstancer) Stop()                          {}
func (m *manualInstancer) send(ev kitsd.Event) {
	m.mu.Lock()
	ch := m.ch
	m.mu.Unlock()
	// The Endpointer handles events one at a time from a channel of one:
	// the second sync event fits only once the first was taken, that is
	// once ev was handled.
	ch <- ev
	ch <- kitsd.Event{Err: errSync}
	ch <- kitsd.Event{Err: errSync}
}

var errSync = errors.New("sync")
