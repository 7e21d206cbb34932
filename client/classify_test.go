package client_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/trimsvc"
)

// everyOther fails every other call with code, starting with the first.
func everyOther(name string, code codes.Code) endpoint.Endpoint {
	var n atomic.Int64
	healthy, broken := ok(name), failing(code)
	return func(ctx context.Context, req interface{}) (interface{}, error) {
		if n.Add(1)%2 == 1 {
			return broken(ctx, req)
		}
		return healthy(ctx, req)
	}
}

// failingAtRate fails a fraction of calls with code, at random from seed.
func failingAtRate(name string, code codes.Code, fraction float64, seed uint64) endpoint.Endpoint {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed))
	healthy, broken := ok(name), failing(code)
	return func(ctx context.Context, req interface{}) (interface{}, error) {
		mu.Lock()
		fail := r.Float64() < fraction
		mu.Unlock()
		if fail {
			return broken(ctx, req)
		}
		return healthy(ctx, req)
	}
}

// callFor calls e sequentially for d and returns how many calls failed.
func callFor(e endpoint.Endpoint, d time.Duration) (calls, failed int) {
	for end := time.Now().Add(d); time.Now().Before(end); calls++ {
		if _, err := e(context.Background(), trimsvc.TrimRequest{S: "x"}); err != nil {
			failed++
		}
	}
	return calls, failed
}

// srOnly is ejection by success rate alone, counted over 200ms.
var srOnly = client.Ejection{
	ConsecutiveFailures: 1 << 20,
	BaseTime:            time.Hour,
	SuccessRate:         client.SuccessRate{Interval: 200 * time.Millisecond, MinRequests: 20},
}

// An instance that fails half its calls, never twice in a row, is
// ejected by its success rate, and its healthy peers are not.
func TestSuccessRateEjectsAnOutlier(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": everyOther("a", codes.Internal), "b": ok("b"), "c": ok("c")})
	m, _, cs := newMetrics()
	call := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{MaxAttempts: 1}, withMetrics(m), withEjection(srOnly))
	calls, failed := callFor(call, time.Second)
	if want, have := 1.0, cs["ejections"].get("instance", "a"); want != have {
		t.Fatalf("ejections of a: want %v, have %v (%d of %d calls failed)", want, have, failed, calls)
	}
	if have := cs["ejections"].sum(); have != 1 {
		t.Errorf("ejections: want only a's, have %v", have)
	}
	if failed > calls/10 {
		t.Errorf("%d of %d calls failed: a was ejected too late", failed, calls)
	}
}

// An error rate the instances share is no instance's outlier: neither
// rule ejects one, however long it lasts.
func TestASharedErrorRateEjectsNothing(t *testing.T) {
	for _, ej := range []struct {
		name string
		e    client.Ejection
	}{
		{"success rate", srOnly},
		{"both rules", client.Ejection{BaseTime: time.Hour, SuccessRate: client.SuccessRate{Interval: 200 * time.Millisecond, MinRequests: 20}}},
	} {
		t.Run(ej.name, func(t *testing.T) {
			f := newFakes(map[string]endpoint.Endpoint{
				"a": failingAtRate("a", codes.Internal, 0.3, 1),
				"b": failingAtRate("b", codes.Internal, 0.3, 2),
				"c": failingAtRate("c", codes.Internal, 0.3, 3),
			})
			m, _, cs := newMetrics()
			call := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{MaxAttempts: 1}, withMetrics(m), withEjection(ej.e))
			calls, failed := callFor(call, time.Second)
			if have := cs["ejections"].sum(); have != 0 {
				t.Errorf("ejections: want none, have %v (%d of %d calls failed)", have, failed, calls)
			}
			// 30% of calls fail, so streaks of two and more came up.
			if failed < calls/5 {
				t.Fatalf("only %d of %d calls failed: the fakes are not at 30%%", failed, calls)
			}
		})
	}
}

// An instance that fails at once looks slow to P2C, not fast: it stops
// getting picks before anything ejects it.
func TestP2CStopsPickingAFastFailingInstance(t *testing.T) {
	slowOK := func(name string) endpoint.Endpoint {
		e := ok(name)
		return func(ctx context.Context, req interface{}) (interface{}, error) {
			time.Sleep(200 * time.Microsecond)
			return e(ctx, req)
		}
	}
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Internal), "b": slowOK("b"), "c": slowOK("c")})
	e := newEndpointer(t, kitsd.FixedInstancer([]string{"a", "b", "c"}), f.factory, log.NewNopLogger(), noEjection)
	call, err := client.Retry(client.NewP2C(e), client.RetryConfig{Budget: noBudget})
	if err != nil {
		t.Fatal(err)
	}
	if n := callN(t, call, 500); n != 0 {
		t.Errorf("%d of 500 calls failed: the instance failure was not retried", n)
	}
	if have := f.count("a"); have > 5 {
		t.Errorf("the instance that fails every call got %d of 500 first attempts and retries", have)
	}
}

// A call that is not idempotent is not sent again after an instance
// failure that reached its instance: its outcome is unknown.
func TestInstanceFailureOfANonIdempotentCall(t *testing.T) {
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.Internal), "b": ok("b"), "c": ok("c")})
	call := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{Idempotent: func(any) bool { return false }})
	_, err := call(context.Background(), trimsvc.TrimRequest{S: "x"})
	re := retryError(t, err)
	if !re.OutcomeUnknown || re.Attempts != 1 || status.Code(err) != codes.Internal {
		t.Errorf("want one attempt, outcome unknown, Internal; have %+v (%v)", re, err)
	}
	if have := f.total(); have != 1 {
		t.Errorf("attempts: want 1, have %d", have)
	}
}

// Ejection.Classify is the one classification: what it calls an instance
// failure is retried and ejects, what it calls an answer is neither.
func TestClassifyOverridden(t *testing.T) {
	notFoundIsBroken := func(err error) client.Class {
		switch status.Code(err) {
		case codes.NotFound:
			return client.InstanceFailure
		case codes.Internal:
			return client.Answer
		}
		return client.DefaultClassify(err)
	}
	f := newFakes(map[string]endpoint.Endpoint{"a": failing(codes.NotFound), "b": ok("b"), "c": failing(codes.Internal)})
	m, _, cs := newMetrics()
	call := fakeStack(t, f, []string{"a", "b", "c"}, client.RetryConfig{},
		withMetrics(m), withEjection(client.Ejection{BaseTime: time.Hour, Classify: notFoundIsBroken}))
	var internal int
	for range 30 {
		_, err := call(context.Background(), trimsvc.TrimRequest{S: "x"})
		switch status.Code(err) {
		case codes.OK:
		case codes.Internal:
			var re *client.RetryError
			if errors.As(err, &re) {
				t.Fatalf("an Answer was retried: %v", err)
			}
			internal++
		default:
			t.Fatalf("NotFound, an instance failure here, was not retried: %v", err)
		}
	}
	if internal == 0 {
		t.Error("no call reached c")
	}
	if want, have := 1.0, cs["ejections"].get("instance", "a"); want != have {
		t.Errorf("ejections of a: want %v, have %v", want, have)
	}
	if have := cs["ejections"].get("instance", "c"); have != 0 {
		t.Errorf("c, which answers, was ejected %v times", have)
	}
}

func TestEjectionValidates(t *testing.T) {
	for _, e := range []client.Ejection{
		{SuccessRate: client.SuccessRate{Interval: time.Millisecond}},
		{SuccessRate: client.SuccessRate{MinRequests: -1}},
		{SuccessRate: client.SuccessRate{MinInstances: 1}},
		{SuccessRate: client.SuccessRate{StdevFactor: -1}},
	} {
		if _, err := client.NewEndpointer(kitsd.FixedInstancer(nil), newFakes(nil).factory, log.NewNopLogger(), client.EndpointerConfig{Ejection: e}); err == nil {
			t.Errorf("%+v: want an error", e.SuccessRate)
		}
	}
}
