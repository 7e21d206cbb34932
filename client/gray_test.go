package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/pb"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// counter is a go-kit Counter that keeps its totals by label values.
type counter struct {
	mu     *sync.Mutex
	totals map[string]float64
	lvs    []string
}

func newCounter() counter { return counter{mu: &sync.Mutex{}, totals: map[string]float64{}} }

func (c counter) With(lvs ...string) metrics.Counter {
	return counter{mu: c.mu, totals: c.totals, lvs: append(slices.Clone(c.lvs), lvs...)}
}

func (c counter) Add(v float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.totals[strings.Join(c.lvs, ",")] += v
}

func (c counter) get(lvs ...string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.totals[strings.Join(lvs, ",")]
}

func (c counter) sum() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s float64
	for _, v := range c.totals {
		s += v
	}
	return s
}

// newMetrics returns the Endpointer's metrics and Retry's, over counters
// by name.
func newMetrics() (client.Metrics, client.Metrics, map[string]counter) {
	cs := map[string]counter{"attempts": newCounter(), "retries": newCounter(), "hedges": newCounter(), "ejections": newCounter(), "budget": newCounter()}
	return client.Metrics{Attempts: cs["attempts"], Ejections: cs["ejections"]},
		client.Metrics{Retries: cs["retries"], Hedges: cs["hedges"], BudgetExhausted: cs["budget"]}, cs
}

// eventually polls cond every millisecond, for at most 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func callN(t *testing.T, e endpoint.Endpoint, n int) (failures int) {
	t.Helper()
	for range n {
		if _, err := e(context.Background(), trimsvc.TrimRequest{S: "x"}); err != nil {
			failures++
		}
	}
	return failures
}

// warm makes 30 calls, so that each of three instances has answered 10,
// and starts counting attempts afresh: the peers of an instance that
// fails then have shown that they do not.
func warm(t *testing.T, f *fakes, call endpoint.Endpoint) {
	t.Helper()
	if n := callN(t, call, 30); n != 0 {
		t.Fatalf("%d calls failed while warming up", n)
	}
	f.reset()
}

func TestFailingInstanceIsEjected(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": ok("a"), "b": ok("b"), "c": ok("c")})
	m, _, cs := newMetrics()
	opts := []epOpt{withMetrics(m), withEjection(client.Ejection{BaseTime: time.Hour})}
	call := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{}, opts...)
	warm(t, f, call)
	f.set("a", failing(codes.Unavailable))
	// Round robin reaches a on calls 1 and 4: two failures in a row.
	if n := callN(t, call, 4); n != 0 {
		t.Fatalf("%d calls failed", n)
	}
	if want, have := 1.0, cs["ejections"].get("instance", "a"); want != have {
		t.Fatalf("ejections of a: want %v, have %v", want, have)
	}
	f.reset()
	if n := callN(t, call, 30); n != 0 {
		t.Fatalf("%d calls failed", n)
	}
	if have := f.count("a"); have != 0 {
		t.Errorf("the ejected instance got %d attempts", have)
	}
	if want, have := 2.0, cs["attempts"].get("instance", "a", "outcome", "failed"); want != have {
		t.Errorf("failed attempts on a: want %v, have %v", want, have)
	}
}

func TestEjectionKeepsHalfTheInstances(t *testing.T) {
	for _, tc := range []struct {
		instances, failing int
		wantEjected        float64
	}{
		{1, 1, 0}, // the only instance is never ejected
		{2, 1, 1},
		{3, 1, 1},
		// Two of three failing: the peers of each fail half the time, so
		// it takes a longer streak (20 in a row); at most one is ejected.
		{3, 2, 1},
		{4, 2, 2},
	} {
		t.Run(fmt.Sprintf("%d of %d failing", tc.failing, tc.instances), func(t *testing.T) {
			byName := map[string]endpoint.Endpoint{}
			var names []string
			for i := range tc.instances {
				name := string(rune('a' + i))
				names = append(names, name)
				byName[name] = ok(name)
				if i < tc.failing {
					byName[name] = failing(codes.Unavailable)
				}
			}
			f := newFakes(byName)
			m, _, cs := newMetrics()
			opts := []epOpt{withMetrics(m), withEjection(client.Ejection{BaseTime: time.Hour})}
			call := fakeStack(t, f, names, client.RetryConfig{MaxAttempts: 1}, opts...)
			callN(t, call, 90)
			if want, have := tc.wantEjected, cs["ejections"].sum(); want != have {
				t.Errorf("ejections: want %v, have %v", want, have)
			}
		})
	}
}

// A failure on every instance (a dependency they all share) is the
// service's, not an instance's: nothing is ejected, whatever the cap
// allows, and each call fails with the instances' own error.
func TestFailureOnEveryInstanceEjectsNothing(t *testing.T) {
	for _, code := range []codes.Code{codes.Internal, codes.Unavailable} {
		for n := 1; n <= 4; n++ {
			t.Run(fmt.Sprintf("%v/%d", code, n), func(t *testing.T) {
				byName := map[string]endpoint.Endpoint{}
				var names []string
				for i := range n {
					name := string(rune('a' + i))
					names = append(names, name)
					byName[name] = failing(code)
				}
				m, _, cs := newMetrics()
				opts := []epOpt{withMetrics(m), withEjection(client.Ejection{BaseTime: time.Hour})}
				// An attempt on each instance; going round again would only
				// add Retry's pauses.
				call := fakeStack(t, newFakes(byName), names, client.RetryConfig{MaxAttempts: n}, opts...)
				for range 20 {
					_, err := call(context.Background(), trimsvc.TrimRequest{S: "x"})
					if status.Code(err) != code {
						t.Fatalf("want the instances' %v, have %v", code, err)
					}
				}
				if have := cs["ejections"].sum(); have != 0 {
					t.Errorf("ejections: want none, have %v", have)
				}
			})
		}
	}
}

func TestEjectedInstanceReturnsOnProbation(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": ok("a"), "b": ok("b"), "c": ok("c")})
	m, _, cs := newMetrics()
	opts := []epOpt{withMetrics(m), withEjection(client.Ejection{BaseTime: 20 * time.Millisecond, MaxTime: time.Hour})}
	call := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{}, opts...)
	warm(t, f, call)
	f.set("a", failing(codes.Unavailable))
	callN(t, call, 4)
	if want, have := 1.0, cs["ejections"].get("instance", "a"); want != have {
		t.Fatalf("ejections of a: want %v, have %v", want, have)
	}
	// Without a gRPC connection to probe, it is readmitted when its time is
	// up; on probation, one failure ejects it again.
	f.reset()
	eventually(t, "a readmitted", func() bool {
		callN(t, call, 1)
		return f.count("a") > 0
	})
	if want, have := 2.0, cs["ejections"].get("instance", "a"); want != have {
		t.Fatalf("ejections of a after one failure on probation: want %v, have %v", want, have)
	}
	// Healthy again: readmitted (its second ejection is twice as long),
	// it answers and stays.
	f.set("a", ok("a"))
	f.reset()
	eventually(t, "a readmitted again", func() bool {
		callN(t, call, 1)
		return f.count("a") > 0
	})
	callN(t, call, 30)
	if have := f.count("a"); have < 9 {
		t.Errorf("readmitted healthy instance got %d of its share of 30 calls", have)
	}
	if want, have := 2.0, cs["ejections"].get("instance", "a"); want != have {
		t.Errorf("ejections of a: want %v, have %v", want, have)
	}
}

// fakeConn is a connection whose state a test sets, for the Endpointer's
// watch.
type fakeConn struct {
	mu      sync.Mutex
	state   connectivity.State
	changed chan struct{}
}

func newFakeConn() *fakeConn {
	return &fakeConn{state: connectivity.Ready, changed: make(chan struct{})}
}

func (c *fakeConn) set(s connectivity.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = s
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeConn) GetState() connectivity.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

func (c *fakeConn) WaitForStateChange(ctx context.Context, s connectivity.State) bool {
	for {
		c.mu.Lock()
		state, changed := c.state, c.changed
		c.mu.Unlock()
		if state != s {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

func (c *fakeConn) Connect()     {}
func (c *fakeConn) Close() error { c.set(connectivity.Shutdown); return nil }

func TestNoFirstAttemptOnAFailedConnection(t *testing.T) {
	conns := map[string]*fakeConn{"a": newFakeConn(), "b": newFakeConn(), "c": newFakeConn()}
	f := newFakes(map[string]endpoint.Endpoint{"a": ok("a"), "b": ok("b"), "c": ok("c")})
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, _, err := f.factory(instance)
		return e, conns[instance], err
	}
	e := newEndpointer(t, kitsd.FixedInstancer{"a", "b", "c"}, factory, log.NewNopLogger(), noEjection)
	b := client.NewRoundRobin(e)
	call, _ := client.Retry(b, client.RetryConfig{Budget: noBudget})

	conns["a"].set(connectivity.TransientFailure)
	eventually(t, "a out of the picks", func() bool {
		for range 6 {
			if ep, _ := b.(lb.Balancer).Endpoint(); ep != nil {
				resp, _ := ep(context.Background(), trimsvc.TrimRequest{})
				if resp.(trim.TrimResponse).Instance == "a" {
					return false
				}
			}
		}
		return true
	})
	f.reset()
	callN(t, call, 30)
	if have := f.count("a"); have != 0 {
		t.Errorf("a, in TRANSIENT_FAILURE, got %d attempts", have)
	}
	// Connecting counts for less than READY, more than failed.
	conns["b"].set(connectivity.Connecting)
	conns["c"].set(connectivity.TransientFailure)
	eventually(t, "b preferred while connecting", func() bool {
		f.reset()
		callN(t, call, 5)
		return f.count("b") == 5
	})
	// Back to READY, back in turn.
	for _, c := range conns {
		c.set(connectivity.Ready)
	}
	eventually(t, "a back", func() bool {
		f.reset()
		callN(t, call, 6)
		return f.count("a") == 2
	})
}

// slow answers after d.
func slow(name string, d time.Duration) endpoint.Endpoint {
	return func(ctx context.Context, req interface{}) (interface{}, error) {
		select {
		case <-time.After(d):
			return ok(name)(ctx, req)
		case <-ctx.Done():
			return nil, trim.FromStatus(status.FromContextError(ctx.Err()).Err())
		}
	}
}

func TestP2CAvoidsASlowInstance(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": slow("a", 50*time.Millisecond), "b": ok("b"), "c": ok("c")})
	e := newEndpointer(t, kitsd.FixedInstancer{"a", "b", "c"}, f.factory, log.NewNopLogger(), noEjection)
	call, _ := client.Retry(client.NewP2C(e), client.RetryConfig{Budget: noBudget})
	callN(t, call, 300)
	if have := f.count("a"); have > 30 {
		t.Errorf("the slow instance got %d of 300 calls, want at most 10%%", have)
	}
	// Each healthy one wins at least every pair it makes with the slow one.
	if f.count("b") < 60 || f.count("c") < 60 {
		t.Errorf("b %d, c %d: want the load spread over both", f.count("b"), f.count("c"))
	}
}

func TestP2CStopsPickingAHungInstanceBeforeItsCallsFail(t *testing.T) {
	hung := func(ctx context.Context, _ interface{}) (interface{}, error) {
		<-ctx.Done()
		return nil, trim.FromStatus(status.FromContextError(ctx.Err()).Err())
	}
	f := newFakes(map[string]endpoint.Endpoint{"a": ok("a"), "b": ok("b"), "c": ok("c")})
	e := newEndpointer(t, kitsd.FixedInstancer{"a", "b", "c"}, f.factory, log.NewNopLogger(), noEjection)
	call, _ := client.Retry(client.NewP2C(e), client.RetryConfig{Timeout: 10 * time.Second, Budget: noBudget})
	callN(t, call, 100) // estimates for all three
	f.set("a", hung)
	f.reset()
	// 8 callers for 300 calls of 50ms each: an attempt on a is given up
	// after its share of that (about 17ms), which then counts against a as
	// a timeout too; the benchmark (BenchmarkGrayFailure, hung, p2c: last
	// attempt 1ms after the fault, against a share of 167ms) is what shows
	// the aging alone.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 300 / 8 {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				_, _ = call(ctx, trimsvc.TrimRequest{S: "x"})
				cancel()
			}
		}()
	}
	wg.Wait()
	if have := f.count("a"); have > 8+8 {
		t.Errorf("the hung instance got %d attempts, want it dropped once a few calls aged on it", have)
	}
}

func TestP2CScoresSurviveUpdatesAndNewInstancesAreTried(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": slow("a", 50*time.Millisecond), "b": ok("b"), "c": ok("c"), "d": ok("d")})
	inst := &manualInstancer{}
	e := newEndpointer(t, inst, f.factory, log.NewNopLogger(), noEjection)
	inst.send(kitsd.Event{Instances: []string{"a", "b", "c"}})
	call, _ := client.Retry(client.NewP2C(e), client.RetryConfig{Budget: noBudget})
	callN(t, call, 100)
	// d joins: a keeps its bad score, d is tried at once. A new instance
	// costs nothing until it is called, so it wins the first pick it is a
	// candidate in: each call's pair holds it with probability 1/2, so it
	// is called within 20 calls but for a chance of 2^-20. Its share after
	// that depends on its measured latency against b's and c's, which a
	// pause of the test process can skew: logged, not asserted.
	inst.send(kitsd.Event{Instances: []string{"a", "b", "c", "d"}})
	f.reset()
	callN(t, call, 20)
	if f.count("d") == 0 {
		t.Errorf("the new instance got none of the first 20 calls after it joined: it was not tried")
	}
	callN(t, call, 80)
	if have := f.count("a"); have > 10 {
		t.Errorf("after an update the slow instance got %d of 100: its score was lost", have)
	}
	t.Logf("of 100 calls after the update: a %d, b %d, c %d, d %d", f.count("a"), f.count("b"), f.count("c"), f.count("d"))
}

func TestHedgeAnswersForAHungInstance(t *testing.T) {
	waited := make(chan time.Duration, 1)
	f := newFakes(map[string]endpoint.Endpoint{"a": hanging(waited), "b": ok("b")})
	m, rm, cs := newMetrics()
	// The default retry budget, as a client has: a hedge is charged to it.
	call := fakeStack(t, f, []string{"a", "b"}, client.RetryConfig{HedgeAfter: 20 * time.Millisecond, Timeout: 10 * time.Second,
		Budget: client.DefaultRetryBudget, Metrics: rm}, withMetrics(m))
	start := time.Now()
	resp, err := call(context.Background(), trimsvc.TrimRequest{S: "x"}) // round robin starts at a
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if want, have := "b", resp.(trim.TrimResponse).Instance; want != have {
		t.Errorf("want the hedge's answer from %s, have %s's", want, have)
	}
	// The hung attempt was cancelled as soon as the hedge answered, long
	// before its share (5s) ran out.
	if w := <-waited; w > time.Second {
		t.Errorf("hung attempt cancelled after %v", w)
	}
	if took < 20*time.Millisecond {
		t.Errorf("answered after %v, before the hedge was due", took)
	}
	if want, have := 1.0, cs["hedges"].sum(); want != have {
		t.Errorf("hedges: want %v, have %v", want, have)
	}
	// The outpaced attempt ends on its own goroutine, after the call.
	eventually(t, "a's attempt counted as outpaced", func() bool {
		return cs["attempts"].get("instance", "a", "outcome", "outpaced") == 1
	})
}

func TestNoHedgeWhenTheFirstAnswersInTime(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": ok("a"), "b": ok("b")})
	m, rm, cs := newMetrics()
	call := fakeStack(t, f, []string{"a", "b"}, client.RetryConfig{HedgeAfter: time.Second, Metrics: rm}, withMetrics(m))
	if n := callN(t, call, 50); n != 0 {
		t.Fatalf("%d failed", n)
	}
	if have := cs["hedges"].sum(); have != 0 {
		t.Errorf("%v hedges for calls that answered at once", have)
	}
	if want, have := 50, f.total(); want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}
}

// A hedge goes to another instance or not at all: with one instance a
// second attempt would only double the load of the one that is slow.
func TestNoHedgeToTheSameInstance(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": slow("a", 30*time.Millisecond)})
	m, rm, cs := newMetrics()
	call := fakeStack(t, f, []string{"a"}, client.RetryConfig{HedgeAfter: time.Millisecond, Timeout: 10 * time.Second, Metrics: rm}, withMetrics(m))
	if n := callN(t, call, 5); n != 0 {
		t.Fatalf("%d failed", n)
	}
	if have := cs["hedges"].sum(); have != 0 {
		t.Errorf("%v hedges with a single instance", have)
	}
	if want, have := 5, f.total(); want != have {
		t.Errorf("attempts: want %d, have %d", want, have)
	}
}

func TestRetryBudgetBoundsRetries(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Unavailable), "b": failing(codes.Unavailable), "c": failing(codes.Unavailable)})
	m, rm, cs := newMetrics()
	// 10% of calls, and a floor of 1 a second over 10s: 10 retries spare.
	call := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{Metrics: rm,
		Budget: client.RetryBudget{Ratio: 0.1, MinPerSecond: 1, TTL: 10 * time.Second}}, withMetrics(m))
	callN(t, call, 100)
	// 100 calls: 10% of them plus the floor's 10 retries, not 200.
	if want, have := 120, f.total(); have > want {
		t.Errorf("attempts for 100 calls: want at most %d, have %d", want, have)
	}
	if have := cs["budget"].sum(); have < 80 {
		t.Errorf("budget refusals: %v, want most calls refused a retry", have)
	}
	_, err := call(context.Background(), trimsvc.TrimRequest{S: "x"})
	var re *client.RetryError
	if !errors.As(err, &re) || !re.BudgetSpent || re.Attempts != 1 {
		t.Fatalf("want a RetryError after 1 attempt with the budget spent, have %#v", err)
	}
	if !strings.Contains(err.Error(), "retry budget is spent") {
		t.Errorf("error %q does not say the budget was spent", err)
	}
	if want, have := codes.Unavailable, status.Code(err); want != have {
		t.Errorf("want the first failure's %v, have %v", want, have)
	}
}

// A probe asks the instance's own grpc.health.v1 service: an instance whose
// health is NOT_SERVING stays ejected, and comes back once it serves.
func TestProbeAsksTheInstancesHealth(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	svc, _ := trimsvc.New(64)
	pb.RegisterTrimServer(srv, trim.NewGRPCServer(trimsvc.NewServerSet(svc), "real", log.NewNopLogger()))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	defer srv.Stop()

	addr := lis.Addr().String()
	failNext := make(chan struct{}, 2)
	failNext <- struct{}{}
	failNext <- struct{}{}
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, closer, err := client.Factory(trim.Endpoints)(instance)
		if err != nil {
			return nil, nil, err
		}
		return func(ctx context.Context, req interface{}) (interface{}, error) {
			select {
			case <-failNext:
				return nil, trim.FromStatus(status.Error(codes.Unavailable, "injected"))
			default:
				return e(ctx, req)
			}
		}, closer, nil
	}
	m, _, cs := newMetrics()
	logs := make(msgLog, 100)
	e, call := fastEjectionStack(t, addr, factory, logs, withMetrics(m))
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	callN(t, call, 1) // two injected failures: ejected
	if want, have := 1.0, cs["ejections"].sum(); want != have {
		t.Fatalf("ejections: want %v, have %v", want, have)
	}
	// NOT_SERVING: probed and kept out, twice over.
	logs.waitFor(t, "ejected instance failed its probe")
	logs.waitFor(t, "ejected instance failed its probe")
	if want, have := 1, client.EjectedCount(e); want != have {
		t.Fatalf("ejected: want %d, have %d", want, have)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	logs.waitFor(t, "instance readmitted on probation")
	if want, have := 0, client.EjectedCount(e); want != have {
		t.Errorf("ejected after readmission: want %d, have %d", want, have)
	}
	if n := callN(t, call, 5); n != 0 {
		t.Errorf("%d calls failed after readmission", n)
	}
}
