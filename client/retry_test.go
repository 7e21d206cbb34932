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
	"github.com/trimkit/trimkit/transport"
	"github.com/trimkit/trimkit/trimsvc"
)

// fakes maps an instance name to the endpoint the fake factory builds for
// it, and counts the calls each gets.
type fakes struct {
	mu     sync.Mutex
	byName map[string]endpoint.Endpoint
	calls  map[string]int
	closed map[string]bool
}

func newFakes(byName map[string]endpoint.Endpoint) *fakes {
	return &fakes{byName: byName, calls: map[string]int{}, closed: map[string]bool{}}
}

func (f *fakes) factory(instance string) (endpoint.Endpoint, io.Closer, error) {
	e, ok := f.byName[instance]
	if !ok {
		return nil, nil, errors.New("no fake for " + instance)
	}
	return func(ctx context.Context, req interface{}) (interface{}, error) {
		f.mu.Lock()
		f.calls[instance]++
		f.mu.Unlock()
		return e(ctx, req)
	}, closerFunc(func() error { f.mu.Lock(); f.closed[instance] = true; f.mu.Unlock(); return nil }), nil
}

func (f *fakes) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += c
	}
	return n
}

type closerFunc func() error

func (c closerFunc) Close() error { return c() }

func ok(name string) endpoint.Endpoint {
	return func(context.Context, interface{}) (interface{}, error) {
		return trimsvc.TrimResponse{S: "ok", Instance: name}, nil
	}
}

func failing(code codes.Code) endpoint.Endpoint {
	return func(context.Context, interface{}) (interface{}, error) {
		return nil, transport.FromStatus(status.Error(code, code.String()))
	}
}

// hanging blocks until its call is cancelled and reports how long that took.
func hanging(waited chan<- time.Duration) endpoint.Endpoint {
	return func(ctx context.Context, _ interface{}) (interface{}, error) {
		start := time.Now()
		<-ctx.Done()
		waited <- time.Since(start)
		return nil, transport.FromStatus(status.FromContextError(ctx.Err()).Err())
	}
}

// stack builds Endpointer -> RoundRobin -> Retry over a FixedInstancer.
func stack(t *testing.T, f *fakes, instances []string, max int, timeout time.Duration) endpoint.Endpoint {
	t.Helper()
	e := client.NewEndpointer(kitsd.FixedInstancer(instances), f.factory, log.NewNopLogger(), time.Second)
	t.Cleanup(func() { e.Close() })
	return client.Retry(max, timeout, client.NewRoundRobin(e))
}

func TestRetryAttempts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		endpoints map[string]endpoint.Endpoint
		wantCalls int
		wantCode  codes.Code // OK: success
	}{
		{"success at once", map[string]endpoint.Endpoint{"a": ok("a"), "b": ok("b"), "c": ok("c")}, 1, codes.OK},
		{"unavailable, then another instance", map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": ok("b"), "c": failing(codes.Unavailable)}, 0, codes.OK},
		{"all unavailable: RetryMax attempts", map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": failing(codes.Unavailable), "c": failing(codes.Unavailable)}, 3, codes.Unavailable},
		{"connection closed under the call is retried", map[string]endpoint.Endpoint{"a": failing(codes.Canceled), "b": failing(codes.Canceled), "c": failing(codes.Canceled)}, 3, codes.Canceled},
		{"invalid argument: one attempt", map[string]endpoint.Endpoint{"a": failing(codes.InvalidArgument), "b": failing(codes.InvalidArgument), "c": failing(codes.InvalidArgument)}, 1, codes.InvalidArgument},
		{"internal: one attempt", map[string]endpoint.Endpoint{"a": failing(codes.Internal), "b": failing(codes.Internal), "c": failing(codes.Internal)}, 1, codes.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakes(tc.endpoints)
			e := stack(t, f, []string{"a", "b", "c"}, 3, time.Second)
			_, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
			if want, have := tc.wantCode, status.Code(err); want != have {
				t.Fatalf("want %v, have %v (%v)", want, have, err)
			}
			if tc.wantCalls > 0 {
				if want, have := tc.wantCalls, f.total(); want != have {
					t.Errorf("attempts: want %d, have %d", want, have)
				}
			}
			if err != nil {
				var re *client.RetryError
				if !errors.As(err, &re) {
					t.Fatalf("want *RetryError, have %T", err)
				}
				if want, have := f.total(), re.Attempts; want != have {
					t.Errorf("RetryError.Attempts: want %d, have %d", want, have)
				}
			}
		})
	}
}

func TestRetryAttemptsGoToDistinctInstances(t *testing.T) {
	// Whatever other callers do in between, a call's 3 attempts visit 3
	// distinct instances, so one good instance out of 3 always answers.
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": failing(codes.Unavailable), "c": ok("c")})
	e := stack(t, f, []string{"a", "b", "c"}, 3, time.Second)
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

func TestRetryBusinessErrorIsNotRetried(t *testing.T) {
	bizErr := transport.FromStatus(transport.Status(&trimsvc.LimitError{Size: 2, Limit: 1}).Err())
	biz := func(context.Context, interface{}) (interface{}, error) { return trimsvc.TrimResponse{Err: bizErr}, nil }
	f := newFakes(map[string]endpoint.Endpoint{"a": biz, "b": biz})
	e := stack(t, f, []string{"a", "b"}, 3, time.Second)
	svc := trimsvc.Set{TrimSpaceEndpoint: e}
	_, err := svc.TrimSpace(context.Background(), "xx")
	if !errors.Is(err, trimsvc.ErrInputTooLarge) {
		t.Fatalf("want ErrInputTooLarge, have %v", err)
	}
	if want, have := 1, f.total(); want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}
}

func TestRetryPerAttemptDeadline(t *testing.T) {
	deadlines := make(chan time.Duration, 3)
	f := newFakes(map[string]endpoint.Endpoint{"a": hanging(deadlines), "b": ok("b")})
	e := stack(t, f, []string{"a", "b"}, 3, 300*time.Millisecond)
	start := time.Now()
	resp, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
	if err != nil {
		t.Fatalf("the second attempt should answer: %v", err)
	}
	if want, have := "b", resp.(trimsvc.TrimResponse).Instance; want != have {
		t.Errorf("want %s, have %s", want, have)
	}
	// The hung attempt had a third of the budget, not all of it.
	share := <-deadlines
	if share > 150*time.Millisecond || share < 90*time.Millisecond {
		t.Errorf("first attempt cancelled after %v, want about 100ms (300ms / 3 attempts)", share)
	}
	if took := time.Since(start); took >= 300*time.Millisecond {
		t.Errorf("took %v: the hung attempt ate the whole budget", took)
	}
}

func TestRetryAllHungReturnsDeadline(t *testing.T) {
	deadlines := make(chan time.Duration, 3)
	f := newFakes(map[string]endpoint.Endpoint{"a": hanging(deadlines)})
	e := stack(t, f, []string{"a"}, 3, 150*time.Millisecond)
	_, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
	if want, have := codes.DeadlineExceeded, status.Code(err); want != have {
		t.Errorf("want %v, have %v (%v)", want, have, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("want errors.Is DeadlineExceeded: %v", err)
	}
	if want, have := 3, f.total(); want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}
}

func TestRetryNoEndpoints(t *testing.T) {
	f := newFakes(nil)
	e := stack(t, f, nil, 3, 200*time.Millisecond)
	start := time.Now()
	_, err := e(context.Background(), trimsvc.TrimRequest{S: "x"})
	if !errors.Is(err, lb.ErrNoEndpoints) {
		t.Fatalf("want ErrNoEndpoints, have %v", err)
	}
	if took := time.Since(start); took > 300*time.Millisecond {
		t.Errorf("took %v, past the 200ms retry timeout", took)
	}
}

func TestRetryStopsWhenCallerCancels(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": failing(codes.Unavailable)})
	e := stack(t, f, []string{"a", "b"}, 3, time.Second)
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
	e := client.NewEndpointer(inst, f.factory, log.NewNopLogger(), 50*time.Millisecond)
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
	time.Sleep(200 * time.Millisecond)
	f.mu.Lock()
	if !f.closed["a"] || f.closed["b"] {
		t.Errorf("after grace: closed %v, want only a", f.closed)
	}
	f.mu.Unlock()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed["b"] {
		t.Error("Close left b open")
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
	ch <- ev
	ch <- kitsd.Event{Err: errSync} // returns once the first is handled
}

var errSync = errors.New("sync")
