package client_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"

	"github.com/trimkit/trimkit/client"
	"github.com/trimkit/trimkit/internal/logbuf"
	"github.com/trimkit/trimkit/transport/trim"
	"github.com/trimkit/trimkit/trimsvc"
)

// staticRig is an Endpointer over a manual instancer and fake connections,
// with round robin and Retry over it, and the fail-static metrics.
type staticRig struct {
	f       *fakes
	conns   map[string]*fakeConn
	inst    *manualInstancer
	e       *client.Endpointer
	b       client.Balancer
	call    endpoint.Endpoint
	episode counter
	held    *gauge
	// instances is the Endpointer's Metrics.Instances.
	instances *gauge
	logs      *logbuf.Buffer
}

func newStaticRig(t *testing.T, names []string, opts ...epOpt) *staticRig {
	t.Helper()
	byName := map[string]endpoint.Endpoint{}
	r := &staticRig{conns: map[string]*fakeConn{}, inst: &manualInstancer{},
		episode: newCounter(), held: &gauge{}, instances: &gauge{}, logs: &logbuf.Buffer{}}
	for _, n := range names {
		byName[n] = ok(n)
		r.conns[n] = newFakeConn()
	}
	r.f = newFakes(byName)
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, closer, err := r.f.factory(instance)
		return e, reportedConn{r.conns[instance], closer}, err
	}
	opts = append([]epOpt{noEjection, withCloseGrace(time.Nanosecond),
		withMetrics(client.Metrics{FailStatic: r.episode, Held: r.held, Instances: r.instances})}, opts...)
	r.e = newEndpointer(t, r.inst, factory, log.NewLogfmtLogger(r.logs), opts...)
	r.inst.send(kitsdEvent(names...))
	r.b = client.NewRoundRobin(r.e)
	var err error
	r.call, err = client.Retry(r.b, client.RetryConfig{Budget: noBudget})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// warm calls every instance, so that each has answered on a READY
// connection.
func (r *staticRig) warm(t *testing.T) {
	t.Helper()
	if failed := callN(t, r.call, 3*len(r.conns)); failed != 0 {
		t.Fatalf("%d calls failed before any update", failed)
	}
	r.f.reset()
}

func (r *staticRig) endpoints() int {
	eps, _ := r.e.Endpoints()
	return len(eps)
}

// answeredBy are the instances that answered n calls, all of which must
// succeed.
func (r *staticRig) answeredBy(t *testing.T, n int) map[string]int {
	t.Helper()
	by := map[string]int{}
	for range n {
		resp, err := r.call(context.Background(), trimsvc.TrimRequest{S: "x"})
		if err != nil {
			t.Fatalf("a call failed: %v", err)
		}
		by[resp.(trim.TrimResponse).Instance]++
	}
	return by
}

// reportedConn is a fakeConn whose Close the fakes report.
type reportedConn struct {
	*fakeConn
	report io.Closer
}

func (c reportedConn) Close() error {
	c.fakeConn.Close()
	return c.report.Close()
}

// gauge is a metrics.Gauge that keeps its last value.
type gauge struct {
	mu sync.Mutex
	v  float64
}

func (g *gauge) With(...string) metrics.Gauge { return g }
func (g *gauge) Set(v float64)                { g.mu.Lock(); g.v = v; g.mu.Unlock() }
func (g *gauge) Add(d float64)                { g.mu.Lock(); g.v += d; g.mu.Unlock() }
func (g *gauge) value() float64               { g.mu.Lock(); defer g.mu.Unlock(); return g.v }

func kitsdEvent(instances ...string) kitsd.Event { return kitsd.Event{Instances: instances} }

const (
	goingStatic = "discovery removed most instances"
	staticOver  = "holding no instance against discovery any more"
)

func TestFailStaticHoldsEveryInstanceWhenDiscoveryEmpties(t *testing.T) {
	r := newStaticRig(t, []string{"a", "b", "c"})
	r.warm(t)
	r.inst.send(kitsdEvent()) // the agent holding them all restarted
	by := r.answeredBy(t, 30)
	if len(by) != 3 {
		t.Errorf("calls after the catalog emptied went to %v, want all three held instances", by)
	}
	if have := r.endpoints(); have != 3 {
		t.Errorf("Endpoints: have %d, want the 3 held", have)
	}
	if have := r.episode.sum(); have != 1 {
		t.Errorf("fail-static counter: have %v, want 1", have)
	}
	if have := r.held.value(); have != 3 {
		t.Errorf("held gauge: have %v, want 3", have)
	}
	if have := r.instances.value(); have != 3 {
		t.Errorf("instances gauge: have %v, want the 3 held", have)
	}
	// Another empty answer (a second blocking query) changes nothing and
	// logs nothing new.
	r.inst.send(kitsdEvent())
	if have := len(r.logs.Lines(goingStatic)); have != 1 {
		t.Errorf("going static logged %d times, want once", have)
	}

	// The catalog comes back: the normal tiers again, the very same
	// instances (no new connection), nothing held.
	r.inst.send(kitsdEvent("a", "b", "c"))
	if have := r.held.value(); have != 0 {
		t.Errorf("held gauge after the catalog came back: %v", have)
	}
	if have := len(r.logs.Lines(staticOver)); have != 1 {
		t.Errorf("end of fail-static logged %d times, want once", have)
	}
	select {
	case c := <-r.f.closed:
		t.Errorf("connection of %s closed", c)
	default:
	}
	if by := r.answeredBy(t, 30); len(by) != 3 {
		t.Errorf("after the catalog came back: %v", by)
	}
	// Listed again, a failure is judged by ejection, not by fail-static:
	// with ejection off the instance stays.
	r.f.set("a", failing(codes.Unavailable))
	callN(t, r.call, 6)
	if have := r.endpoints(); have != 3 {
		t.Errorf("Endpoints after a listed instance failed: %d, want 3", have)
	}
}

// Metrics.Instances follows the instances the Endpointer holds as
// discovery changes them.
func TestInstancesGauge(t *testing.T) {
	r := newStaticRig(t, []string{"a", "b", "c"})
	if have := r.instances.value(); have != 3 {
		t.Errorf("instances gauge: have %v, want 3", have)
	}
	r.inst.send(kitsdEvent("a", "b")) // one left: not en masse, not held
	if have := r.instances.value(); have != 2 {
		t.Errorf("instances gauge after one left: have %v, want 2", have)
	}
	r.inst.send(kitsdEvent("a", "b", "c"))
	if have := r.instances.value(); have != 3 {
		t.Errorf("instances gauge after it came back: have %v, want 3", have)
	}
}

func TestFailStaticHeldAreATierBelowListed(t *testing.T) {
	r := newStaticRig(t, []string{"a", "b", "c", "d"})
	r.warm(t)
	r.inst.send(kitsdEvent("d")) // 3 of 4 removed
	if have := r.held.value(); have != 3 {
		t.Fatalf("held gauge: have %v, want 3", have)
	}
	if by := r.answeredBy(t, 20); by["d"] != 20 {
		t.Errorf("calls went to %v, want all to d, the one listed", by)
	}
	// d fails: its calls' retries go to a held instance.
	r.f.set("d", failing(codes.Unavailable))
	if failed := callN(t, r.call, 20); failed != 0 {
		t.Errorf("%d of 20 calls failed with three held instances to retry on", failed)
	}
	if r.f.count("a")+r.f.count("b")+r.f.count("c") < 20 {
		t.Errorf("held instances answered %d, %d, %d of 20 retried calls", r.f.count("a"), r.f.count("b"), r.f.count("c"))
	}
}

func TestFailStaticLetsAFewGoAtOnce(t *testing.T) {
	const window = 50 * time.Millisecond
	r := newStaticRig(t, []string{"a", "b", "c", "d"}, withFailStatic(client.FailStatic{Window: window}))
	r.warm(t)
	r.inst.send(kitsdEvent("b", "c", "d")) // a deregistered: 1 of 4
	if by := r.answeredBy(t, 30); by["a"] != 0 {
		t.Errorf("a, removed alone, still got %d calls", by["a"])
	}
	if have := <-r.f.closed; have != "a" {
		t.Errorf("closed %s, want a", have)
	}
	// A rolling deploy takes them down one at a time, each a while after
	// the last: b, 1 of 3, and c, 1 of 2, not more than half.
	for _, left := range [][]string{{"c", "d"}, {"d"}} {
		time.Sleep(2 * window)
		r.inst.send(kitsdEvent(left...))
	}
	if have := r.endpoints(); have != 1 {
		t.Errorf("Endpoints: %d, want d alone", have)
	}
	if have := r.episode.sum(); have != 0 {
		t.Errorf("fail-static counter: %v, want 0", have)
	}
	// The last one leaving is all of them: held, while it is alive.
	time.Sleep(2 * window)
	r.inst.send(kitsdEvent())
	if have := r.held.value(); have != 1 {
		t.Errorf("held gauge: %v, want 1 (d)", have)
	}
	// It drains: its server closes the connection, and it leaves.
	r.conns["d"].set(connectivity.Idle)
	eventually(t, "d let go when its connection closed", func() bool { return r.endpoints() == 0 })
	if _, err := r.call(context.Background(), trimsvc.TrimRequest{}); !errors.Is(err, lb.ErrNoEndpoints) {
		t.Errorf("a call with nothing listed or held: %v, want no endpoints", err)
	}
}

// A Consul agent that restarts registers its services again one at a
// time, each critical until its check first runs: the catalog drops them
// in as many updates, milliseconds apart. Together they are en masse.
func TestFailStaticCountsRemovalsWithinTheWindow(t *testing.T) {
	r := newStaticRig(t, []string{"a", "b", "c"})
	r.warm(t)
	r.inst.send(kitsdEvent("b", "c")) // a: 1 of 3, let go
	if by := r.answeredBy(t, 20); by["a"] != 0 {
		t.Errorf("a, removed alone, still got %d calls", by["a"])
	}
	r.inst.send(kitsdEvent("c")) // b too: 2 of 3 within the window
	if have := r.held.value(); have != 2 {
		t.Fatalf("held gauge: %v, want 2 (a and b, removed one at a time)", have)
	}
	if have := r.episode.sum(); have != 1 {
		t.Errorf("fail-static counter: %v, want 1", have)
	}
	// c, the one listed, is killed: its calls go to a and b.
	r.f.set("c", failing(codes.Unavailable))
	if failed := callN(t, r.call, 30); failed != 0 {
		t.Errorf("%d of 30 calls failed with a and b alive and held", failed)
	}
	r.inst.send(kitsdEvent()) // c is dropped too; its attempts failed
	if have := r.held.value(); have != 2 {
		t.Errorf("held gauge after the catalog emptied: %v, want 2", have)
	}
	// The agent's checks pass again: a and b on the same connections,
	// nothing closed but c's.
	r.inst.send(kitsdEvent("a", "b", "c"))
	if by := r.answeredBy(t, 30); by["a"] == 0 || by["b"] == 0 {
		t.Errorf("after the catalog came back: %v, want a and b among them", by)
	}
	if have := r.held.value(); have != 0 {
		t.Errorf("held gauge after the catalog came back: %v", have)
	}
	for {
		select {
		case c := <-r.f.closed:
			if c != "c" {
				t.Errorf("connection of %s closed", c)
			}
			continue
		default:
		}
		break
	}
}

// An instance discovery lists again soon after it left keeps its
// connection.
func TestFailStaticTakesBackAnInstanceListedAgain(t *testing.T) {
	const window = 100 * time.Millisecond
	r := newStaticRig(t, []string{"a", "b", "c"}, withFailStatic(client.FailStatic{Window: window}))
	r.warm(t)
	r.inst.send(kitsdEvent("b", "c")) // a's check failed once
	r.inst.send(kitsdEvent("a", "b", "c"))
	time.Sleep(3 * window)
	select {
	case c := <-r.f.closed:
		t.Errorf("connection of %s closed; a, listed again within the window, keeps its connection", c)
	default:
	}
	if by := r.answeredBy(t, 30); len(by) != 3 {
		t.Errorf("calls went to %v, want all three", by)
	}
}

func TestFailStaticHoldsOnlyTheLive(t *testing.T) {
	r := newStaticRig(t, []string{"a", "b", "c"})
	r.warm(t)
	r.conns["a"].set(connectivity.TransientFailure) // a's process died
	eventually(t, "a's state seen", func() bool {
		by := map[string]int{}
		for range 6 {
			resp, err := r.call(context.Background(), trimsvc.TrimRequest{})
			if err == nil {
				by[resp.(trim.TrimResponse).Instance]++
			}
		}
		return by["a"] == 0
	})
	r.f.set("b", failing(codes.Unavailable)) // b's last attempt failed
	callN(t, r.call, 6)
	r.f.set("b", ok("b"))

	r.inst.send(kitsdEvent())
	if have := r.held.value(); have != 1 {
		t.Errorf("held gauge: %v, want 1 (c: a's connection failed, b's last attempt did)", have)
	}
	if by := r.answeredBy(t, 10); by["c"] != 10 {
		t.Errorf("calls went to %v, want all to c", by)
	}
	// c's connection breaks: nothing is left.
	r.conns["c"].set(connectivity.TransientFailure)
	eventually(t, "c let go when its connection broke", func() bool { return r.endpoints() == 0 })
	if have := len(r.logs.Lines(staticOver)); have != 1 {
		t.Errorf("end of fail-static logged %d times, want once", have)
	}
	// An attempt that fails on a held instance lets it go at once.
	r2 := newStaticRig(t, []string{"a", "b", "c"})
	r2.warm(t)
	r2.inst.send(kitsdEvent())
	r2.f.set("a", failing(codes.Unavailable))
	if failed := callN(t, r2.call, 10); failed != 0 {
		t.Errorf("%d calls failed with b and c held", failed)
	}
	if have := r2.held.value(); have != 2 {
		t.Errorf("held after a failed: %v, want 2", have)
	}
}

func TestFailStaticNeedsEvidence(t *testing.T) {
	// Never called: no connection, no answer, nothing to hold. The empty
	// list is news, at once.
	r := newStaticRig(t, []string{"a", "b"})
	r.inst.send(kitsdEvent())
	if _, err := r.call(context.Background(), trimsvc.TrimRequest{}); !errors.Is(err, lb.ErrNoEndpoints) {
		t.Errorf("have %v, want no endpoints", err)
	}
	if have := r.episode.sum(); have != 0 {
		t.Errorf("fail-static counter: %v, want 0", have)
	}
	// Disabled: the catalog obeyed to the letter.
	off := newStaticRig(t, []string{"a", "b"}, withFailStatic(client.FailStatic{Disabled: true}))
	off.warm(t)
	off.inst.send(kitsdEvent())
	if _, err := off.call(context.Background(), trimsvc.TrimRequest{}); !errors.Is(err, lb.ErrNoEndpoints) {
		t.Errorf("disabled: have %v, want no endpoints", err)
	}
}

func TestFailStaticBoundExpires(t *testing.T) {
	r := newStaticRig(t, []string{"a", "b", "c"}, withFailStatic(client.FailStatic{MaxAge: 200 * time.Millisecond}))
	r.warm(t)
	r.inst.send(kitsdEvent())
	if have := r.endpoints(); have != 3 {
		t.Fatalf("Endpoints: %d, want 3 held", have)
	}
	eventually(t, "held instances let go after MaxAge", func() bool { return r.endpoints() == 0 })
	closed := map[string]bool{}
	for range 3 {
		closed[<-r.f.closed] = true
	}
	if len(closed) != 3 {
		t.Errorf("closed %v, want a, b and c", closed)
	}
	if have := len(r.logs.Lines(staticOver)); have != 1 {
		t.Errorf("end of fail-static logged %d times, want once", have)
	}
}

func TestFailStaticValidation(t *testing.T) {
	for _, f := range []client.FailStatic{{Fraction: -0.1}, {Fraction: 1.5}, {MaxAge: -time.Second}, {Window: -time.Second}} {
		_, err := client.NewEndpointer(&manualInstancer{}, newFakes(nil).factory, log.NewNopLogger(), client.EndpointerConfig{FailStatic: f})
		if err == nil || !strings.Contains(err.Error(), "FailStatic") {
			t.Errorf("%+v: have %v, want an error naming FailStatic", f, err)
		}
	}
}
