package client

import (
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd/lb"

	"github.com/trimkit/trimkit/sd"
)

// Balancer names, as CallConfig.Balancer and cmd/client's -balancer take
// them.
const (
	RoundRobinName  = "round-robin"
	P2CName         = "p2c"
	LeastLoadedName = "least-loaded"
)

// Balancer picks the instance of each attempt of a call; Retry asks it.
// NewRoundRobin, NewP2C and NewLeastLoaded make this package's; a Balancer
// that wraps one (to filter, log or steer its picks) keeps everything the
// instances know, since that lives in the *Node, not in the Balancer.
type Balancer interface {
	// Pick returns the instance for the next attempt of a call whose
	// earlier attempts went to tried, in order (none for a first attempt):
	// one not in tried while there is one, so that a retry does not land
	// on the instance that just failed while other calls use the balancer
	// concurrently. With no instance at all it returns an error that wraps
	// lb.ErrNoEndpoints.
	Pick(tried []*Node) (*Node, error)
	// Done reports how an attempt on an instance Pick returned ended: err
	// is nil when the instance answered. The instance has recorded it
	// already (in flight, latency, ejection); Done is for a Balancer that
	// keeps state of its own.
	Done(inst *Node, err error)
}

var (
	_ Balancer    = (*roundRobin)(nil)
	_ Balancer    = (*p2c)(nil)
	_ Balancer    = (*leastLoaded)(nil)
	_ lb.Balancer = (*roundRobin)(nil)
	_ lb.Balancer = (*p2c)(nil)
	_ lb.Balancer = (*leastLoaded)(nil)
)

// Whatever its policy, each of this package's balancers picks among the
// instances in the best state first: connection READY and not ejected,
// then connecting, then failing, then ejected (see Endpointer). A pick
// reads a snapshot and a few atomics: it takes no lock. Each also
// implements go-kit's lb.Balancer (Endpoint), for a first attempt: assert
// it, as in b.(lb.Balancer).

// roundRobin is NewRoundRobin's Balancer.
type roundRobin struct {
	endpointer *Endpointer
	counter    atomic.Uint64
}

// NewRoundRobin returns a Balancer that balances over the instances of e in
// turn: calls start on successive instances, and each retry of a call moves
// on to the next instance it has not tried.
func NewRoundRobin(e *Endpointer) Balancer { return &roundRobin{endpointer: e} }

// Pick implements Balancer.
func (b *roundRobin) Pick(tried []*Node) (*Node, error) {
	return pick(b.endpointer, tried, b.pickIn)
}

// Done implements Balancer; the instance has recorded the outcome.
func (b *roundRobin) Done(*Node, error) {}

// Endpoint implements lb.Balancer.
func (b *roundRobin) Endpoint() (endpoint.Endpoint, error) { return endpointOf(b.Pick(nil)) }

func (b *roundRobin) pickIn(tier []*Node, tried []*Node) *Node {
	n := uint64(len(tier))
	// A retry starts after the instance tried last, when it is in this
	// tier; anything else at the next instance in turn.
	last := -1
	if len(tried) > 0 {
		last = slices.Index(tier, tried[len(tried)-1])
	}
	start := uint64(last) + 1
	if last < 0 {
		start = b.counter.Add(1) - 1
	}
	for i := range n {
		if nd := tier[(start+i)%n]; !slices.Contains(tried, nd) {
			return nd
		}
	}
	return nil
}

// p2c is NewP2C's Balancer.
type p2c struct {
	endpointer *Endpointer
	// better is the better of two instances; P2C's compares costs.
	better func(a, c *Node) *Node
}

// NewP2C returns a Balancer that balances over the instances of e by the
// power of two choices: of two instances picked at random, the one with the
// lower cost, its peak-sensitive moving average of latency (or the mean age
// of its calls in flight, when that is larger) times its calls in flight
// plus one, as Finagle and linkerd do. A slow or stalling instance soon
// loses almost every comparison, a hung one as soon as its calls in flight
// outlive its usual latency; an estimate decays while nobody picks its
// instance, so that a recovered instance is tried again within seconds. A
// new instance costs nothing until it has a call in flight and then
// everything until it answers (Finagle's rule): it is tried at once, one
// call at a time, neither starved nor flooded. The estimates of instances
// that stay survive every change of the instance list.
//
// When both instances' answers carry their load (a grpcserver with its
// defaults) and neither looks more than twice as slow as the other, the
// load decides instead: the utilization each reported within the last
// second (fading once the calls it counted have had time to end), plus
// the attempts this client started to it since, over its limit. Other
// callers' calls count then, before they show in latency, and equal
// instances get equal shares: by latency alone the slightly faster of
// equal instances takes far more than its share, and reaches its limit
// first.
func NewP2C(e *Endpointer) Balancer {
	e.readsLoad.Store(true)
	return &p2c{endpointer: e, better: lessLoadedOrCheaper}
}

// Pick implements Balancer.
func (b *p2c) Pick(tried []*Node) (*Node, error) {
	return pick(b.endpointer, tried, b.pickIn)
}

// Done implements Balancer; the instance has recorded the outcome.
func (b *p2c) Done(*Node, error) {}

// Endpoint implements lb.Balancer.
func (b *p2c) Endpoint() (endpoint.Endpoint, error) { return endpointOf(b.Pick(nil)) }

// leastLoaded is NewLeastLoaded's Balancer.
type leastLoaded struct {
	p2c
	loads *sd.LoadWatcher
}

// NewLeastLoaded returns a Balancer over e: P2C with another source of
// load: the load the instances report in Consul KV (an sd.LoadReporter's; w
// watches the reports). Of two instances picked at random, it takes the one
// whose fresh report plus this client's own calls in flight to it is lower.
// Two at random, not the least of all, so that callers do not all herd onto
// one instance between reports. When both instances' answers carried their
// load within the last second it compares those as P2C does, since they are
// fresher; when either KV report is missing or stale (three reporting
// intervals after the watcher received it), it compares P2C's costs.
func NewLeastLoaded(e *Endpointer, w *sd.LoadWatcher) Balancer {
	e.readsLoad.Store(true)
	b := &leastLoaded{loads: w}
	b.p2c = p2c{endpointer: e, better: b.lessLoaded}
	return b
}

// lessLoaded is the less loaded of two instances by their fresh load
// reports, else the cheaper.
func (b *leastLoaded) lessLoaded(a, c *Node) *Node {
	// Loads in answers first when both are fresh: they are at most
	// loadFresh old, a KV report up to three intervals.
	if now := a.now(); a.freshLoad(now) && c.freshLoad(now) {
		return lessLoadedOrCheaper(a, c)
	}
	ra, okA := b.loads.Report(a.instance)
	rc, okC := b.loads.Report(c.instance)
	if okA && okC {
		if rc.Load+float64(c.inflight.Load()) < ra.Load+float64(a.inflight.Load()) {
			return c
		}
		return a
	}
	return cheaper(a, c)
}

// lessLoadedOrCheaper is the less loaded of two instances by the load
// their answers report, when both reported it within loadFresh and
// neither looks more than comparableLatency times slower than the other;
// else the cheaper. Equal loads (two idle instances) go to a, the first
// of two picked at random: latency does not break the tie, or the faster
// of equal instances would take more than its share.
func lessLoadedOrCheaper(a, c *Node) *Node {
	now := a.now()
	la, okA := a.loadCost(now)
	lc, okC := c.loadCost(now)
	if okA && okC {
		if ea, ec := a.latency(now), c.latency(now); ea > 0 && ec > 0 && max(ea, ec) <= comparableLatency*min(ea, ec) {
			if lc < la {
				return c
			}
			return a
		}
	}
	return cheaper(a, c)
}

// cheaper is the one of two instances with the lower p2c cost.
func cheaper(a, c *Node) *Node {
	now := a.now()
	if c.cost(now) < a.cost(now) {
		return c
	}
	return a
}

func (b *p2c) pickIn(tier []*Node, tried []*Node) *Node {
	return pickTwo(tier, tried, b.better)
}

// pickStream picks the instance of a stream (a ClientConn's, see NewConn)
// for a stream whose opens went to tried: of two, the one with fewer
// streams open (see fewerStreams).
func (b *p2c) pickStream(tried []*Node) (*Node, error) {
	return pick(b.endpointer, tried, func(tier, tried []*Node) *Node { return pickTwo(tier, tried, fewerStreams) })
}

// fewerStreams is the one of two instances with fewer streams and calls
// open, unless one looks more than comparableLatency times and
// streamSlack slower than the other (slowness): that one is in trouble,
// and the other wins. A stream's cost is its instance's share of the
// streams, not a latency; by latency alone, the slightly faster of equal
// instances would take most of them, and sub-millisecond latencies differ
// twofold by chance.
func fewerStreams(a, c *Node) *Node {
	now := a.now()
	sa, sc := a.slowness(now), c.slowness(now)
	if hi, lo := max(sa, sc), min(sa, sc); hi > comparableLatency*lo && hi-lo > streamSlack {
		if sc < sa {
			return c
		}
		return a
	}
	if c.streams.Load()+c.inflight.Load() < a.streams.Load()+a.inflight.Load() {
		return c
	}
	return a
}

// streamSlack is how much slower, by latency, one instance must look than
// another before latency rather than streams decides a stream's pick.
const streamSlack = float64(10 * time.Millisecond)

// pickTwo picks from a non-empty tier the better, by better, of two
// instances the call has not tried, or the only one, or nil.
func pickTwo(tier, tried []*Node, better func(a, c *Node) *Node) *Node {
	n := uint64(len(tier))
	if len(tried) == 0 && n >= 2 {
		// A first attempt: two distinct instances at random.
		i, j := rand.Uint64N(n), rand.Uint64N(n-1)
		if j >= i {
			j++
		}
		return better(tier[i], tier[j])
	}
	// Two distinct untried instances at random; a few draws find them
	// unless most of the tier has been tried, when a scan does.
	var a, c *Node
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
	return better(a, c)
}

// pick returns the instance of e for the next attempt of a call that has
// tried the instances in tried: from the best tier that holds an instance
// it has not tried, by pickIn, which picks from a non-empty tier an
// instance not in tried, or nil. When the call has tried them all, it goes
// round again (a single instance gets every attempt).
func pick(e *Endpointer, tried []*Node, pickIn func(tier, tried []*Node) *Node) (*Node, error) {
	if e == nil {
		return nil, lb.ErrNoEndpoints
	}
	s := e.snapshot()
	if len(s.nodes) == 0 {
		return nil, e.noInstances()
	}
	if s.bands != nil {
		if n := s.bands.pick(tried, pickIn); n != nil {
			return n, nil
		}
		return nil, e.noInstances()
	}
	for _, tier := range s.tiers {
		if len(tier) > 0 {
			if n := pickIn(tier, tried); n != nil {
				return n, nil
			}
		}
	}
	for _, tier := range s.tiers {
		if len(tier) > 0 {
			if n := pickIn(tier, nil); n != nil {
				return n, nil
			}
		}
	}
	return nil, e.noInstances()
}

func endpointOf(n *Node, err error) (endpoint.Endpoint, error) {
	if err != nil {
		return nil, err
	}
	return n.tracked, nil
}
