package client

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd/lb"

	"github.com/trimkit/trimkit/sd"
)

// Balancer names, as CallConfig.Balancer and cmd/client's -balancer take
// them.
const (
	RoundRobin  = "round-robin"
	P2C         = "p2c"
	LeastLoaded = "least-loaded"
)

// Balancer picks an instance of an Endpointer for each call. It implements
// go-kit's lb.Balancer; Retry also asks it, for each retry of a call, for an
// instance that the call has not tried yet, so that a retry does not land
// on the instance that just failed while other calls use the balancer
// concurrently.
//
// Whatever its policy, a Balancer picks among the instances in the best
// state first: connection READY and not ejected, then connecting, then
// failing, then ejected (see Endpointer). A pick reads a snapshot and a few
// atomics: it takes no lock.
type Balancer struct {
	endpointer *Endpointer
	p2c        bool
	loads      *sd.LoadWatcher // least-loaded only
	counter    atomic.Uint64
}

var _ lb.Balancer = (*Balancer)(nil)

// NewRoundRobin balances over the instances of e in turn: calls start on
// successive instances, and each retry of a call moves on to the next
// instance it has not tried.
func NewRoundRobin(e *Endpointer) *Balancer {
	if e == nil {
		panic("client: NewRoundRobin needs an endpointer")
	}
	return &Balancer{endpointer: e}
}

// NewP2C balances over the instances of e by the power of two choices: of
// two instances picked at random, the one with the lower cost, its
// peak-sensitive moving average of latency (or the mean age of its calls
// in flight, when that is larger) times its calls in flight plus one, as
// Finagle and linkerd do. A slow or stalling instance soon loses almost
// every comparison, a hung one as soon as its calls in flight outlive its
// usual latency; an estimate decays while nobody picks its instance, so
// that a recovered instance is tried again within seconds. A new instance
// costs nothing until it has a call in flight and then everything until it
// answers (Finagle's rule): it is tried at once, one call at a time, neither
// starved nor flooded. The estimates of instances that stay survive every
// change of the instance list.
func NewP2C(e *Endpointer) *Balancer {
	if e == nil {
		panic("client: NewP2C needs an endpointer")
	}
	return &Balancer{endpointer: e, p2c: true}
}

// NewLeastLoaded balances by the load the instances report in Consul KV
// (trimsvc -load-report-interval; w watches the reports): of two instances
// picked at random, the one whose fresh report plus this client's own calls
// in flight to it is lower. Two at random, not the least of all, so that
// callers do not all herd onto one instance between reports. When either
// report is missing or stale (three reporting intervals after the watcher
// received it), it falls back to its own view, p2c's cost.
func NewLeastLoaded(e *Endpointer, w *sd.LoadWatcher) *Balancer {
	if e == nil || w == nil {
		panic("client: NewLeastLoaded needs an endpointer and a load watcher")
	}
	return &Balancer{endpointer: e, p2c: true, loads: w}
}

// balancerFor returns how to build the balancer CallConfig.Balancer names,
// or why it cannot be built: checked before an Endpointer connects
// anywhere.
func balancerFor(name string, loads *sd.LoadWatcher) (func(*Endpointer) *Balancer, error) {
	switch name {
	case RoundRobin, "":
		return NewRoundRobin, nil
	case P2C:
		return NewP2C, nil
	case LeastLoaded:
		if loads == nil {
			return nil, errors.New("the least-loaded balancer needs the load reports in Consul: build the client with New, or give NewFromInstancer WithLoadReports")
		}
		return func(e *Endpointer) *Balancer { return NewLeastLoaded(e, loads) }, nil
	}
	return nil, fmt.Errorf("unknown balancer %q", name)
}

// Endpoint implements lb.Balancer.
func (b *Balancer) Endpoint() (endpoint.Endpoint, error) {
	n, err := b.pick(b.next(), nil)
	if err != nil {
		return nil, err
	}
	return n.tracked, nil
}

// next numbers a new call.
func (b *Balancer) next() uint64 { return b.counter.Add(1) - 1 }

// pick returns the instance for the next attempt of call seq, which has
// tried the nodes in tried: from the best tier that holds an instance it
// has not tried, by the balancer's policy. When it has tried them all, it
// goes round again (a single instance gets every attempt).
func (b *Balancer) pick(seq uint64, tried []*node) (*node, error) {
	s := b.endpointer.snapshot()
	if len(s.nodes) == 0 {
		return nil, lb.ErrNoEndpoints
	}
	for _, tier := range s.tiers {
		if n := b.pickIn(tier, seq, tried); n != nil {
			return n, nil
		}
	}
	for _, tier := range s.tiers {
		if n := b.pickIn(tier, seq, nil); n != nil {
			return n, nil
		}
	}
	return nil, lb.ErrNoEndpoints
}

// pickIn picks a node of tier that is not in tried, or returns nil.
func (b *Balancer) pickIn(tier []*node, seq uint64, tried []*node) *node {
	n := uint64(len(tier))
	if n == 0 {
		return nil
	}
	if !b.p2c {
		start := seq + uint64(len(tried))
		for i := range n {
			if nd := tier[(start+i)%n]; !slices.Contains(tried, nd) {
				return nd
			}
		}
		return nil
	}
	var a, c *node
	if len(tried) == 0 && n >= 2 {
		// A first attempt: two distinct nodes at random.
		i, j := rand.Uint64N(n), rand.Uint64N(n-1)
		if j >= i {
			j++
		}
		return b.better(tier[i], tier[j])
	}
	// Two distinct untried nodes at random; a few draws find them unless
	// most of the tier has been tried, when a scan does.
	for range 4 {
		if nd := tier[rand.Uint64N(n)]; nd != a && !slices.Contains(tried, nd) {
			if a == nil {
				a = nd
			} else {
				c = nd
				break
			}
		}
	}
	if c == nil {
		for _, nd := range tier {
			if nd != a && !slices.Contains(tried, nd) {
				if a == nil {
					a = nd
				} else if c == nil {
					c = nd
				}
			}
		}
	}
	if c == nil {
		return a
	}
	return b.better(a, c)
}

// better is the better pick of two nodes: by their fresh load reports for
// least-loaded, else by p2c's cost.
func (b *Balancer) better(a, c *node) *node {
	if b.loads != nil {
		ra, okA := b.fresh(a)
		rc, okC := b.fresh(c)
		if okA && okC {
			if rc.Load+float64(c.inflight.Load()) < ra.Load+float64(a.inflight.Load()) {
				return c
			}
			return a
		}
	}
	now := a.now()
	if c.cost(now) < a.cost(now) {
		return c
	}
	return a
}

// fresh returns n's load report when the watcher holds a fresh one for it
// (see sd.LoadWatcher for what fresh means, and what it trusts).
func (b *Balancer) fresh(n *node) (sd.LoadReport, bool) {
	return b.loads.Report(n.instance)
}
