package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc/connectivity"

	"github.com/trimkit/trimkit/internal/consulname"
	"github.com/trimkit/trimkit/sd"
)

// Endpointer turns the instances of an Instancer into endpoints through a
// Factory, one per instance, and implements go-kit's sd.Endpointer.
//
// It differs from go-kit's DefaultEndpointer in what a long-running program
// needs: an Instancer error keeps the endpoints known last (Consul down does
// not mean the instances are), a removed instance's connection is closed
// only after a grace period so calls in flight on it can finish, Close
// closes every connection and waits for its goroutines, and Endpoints is a
// lock-free read of a snapshot.
//
// Its parts, each with its state and its file: membership and snapshots
// (here), the subset (subsetter, subset.go), fail-static (holding,
// failstatic.go), ejection and probes (eject.go), closing after the grace
// period (graceCloser, grace.go, with a lock of its own). One update
// changes the first three together, under one lock.
//
// It also knows how each instance is doing, for the balancers over it: the
// state of its gRPC connection (when the Factory's io.Closer is a
// *grpc.ClientConn, as Factory's is), its attempts in flight and latency,
// and whether it is ejected (see Ejection). An instance keeps all of that
// for as long as it stays in discovery, across updates.
type Endpointer struct {
	factory    kitsd.Factory
	logger     log.Logger
	grace      time.Duration
	closer     *graceCloser // closes the connections of instances that left, after grace
	ejection   Ejection
	failStatic FailStatic
	metrics    Metrics
	published  func()    // see endpointerOptions
	epoch      time.Time // node times are nanoseconds since

	// Of the Instancer: with a banded source (several datacenters), its
	// bands' updates, the instances of each band kept apart.
	sub    subscription
	done   chan struct{}
	hinted bool // a log line said what to do about an unreachable agent; only handle uses it

	closeOnce sync.Once
	closeErr  error // Close's result, set once by closeOnce

	current atomic.Pointer[snapshot]
	explain interface{ NoInstances() error } // the instancer, when it explains

	// readsLoad says a balancer over it reads the load answers report
	// (P2C, LeastLoaded): its calls ask the instances for it.
	readsLoad atomic.Bool

	ctx    context.Context // ends at Close: watches and probes
	cancel context.CancelFunc
	wg     sync.WaitGroup // watches and probes

	mu     sync.Mutex // guards what follows, and the nodes' ejection state
	byInst map[string]*Node
	order  []*Node // listed, in instance order
	// nodes are order and then the held instances, endpoints their tracked
	// endpoints, built when either changes (a snapshot shares them; they
	// are never modified, only replaced).
	nodes     []*Node
	endpoints []endpoint.Endpoint
	closed    bool
	subset    subsetter // the subset, EndpointerConfig.Subset (subset.go)
	held      holding   // fail-static (failstatic.go)
	bands     banding   // by datacenter (bands.go); one band without a bandSource

	// For Handler's page, last: nothing a call touches.
	info    viewInfo // what the page says of it
	history history  // its instances' attempts per second
}

// Tiers of a snapshot, in the order a balancer prefers them: it picks from
// the first that holds an instance the call has not tried. A first attempt
// thus never goes to an instance whose connection failed, or that is
// ejected, while another is usable (grpc-go's pickers use READY ones the
// same way).
const (
	tierReady      = iota // connection READY (or unknown, or new and not yet dialled), not ejected
	tierConnecting        // CONNECTING, or IDLE after it lost READY: usable, once connected
	tierHeld              // removed from discovery en masse, alive on its connection (see FailStatic)
	tierFailing           // TRANSIENT_FAILURE or SHUTDOWN
	tierEjected
	tiers
)

// snapshot is the Endpointer's view at one moment; it is never modified,
// only replaced.
type snapshot struct {
	nodes     []*Node // listed in instance order, then held ones
	endpoints []endpoint.Endpoint
	tiers     [tiers][]*Node
	bands     *bandsSnap // nil with one band
}

var _ kitsd.Endpointer = (*Endpointer)(nil)

// NewEndpointer subscribes to instancer and builds endpoints with factory;
// the state the instancer sends on Register is applied before it returns.
// It returns an error for a nil argument or a cfg field out of range.
func NewEndpointer(instancer kitsd.Instancer, factory kitsd.Factory, logger log.Logger, cfg EndpointerConfig) (*Endpointer, error) {
	if instancer == nil || factory == nil || logger == nil {
		return nil, errors.New("client: NewEndpointer needs an instancer, a factory and a logger")
	}
	o, err := cfg.options()
	if err != nil {
		return nil, fmt.Errorf("client: NewEndpointer: %w", err)
	}
	return newEndpointer(instancer, factory, logger, o), nil
}

func newEndpointer(instancer kitsd.Instancer, factory kitsd.Factory, logger log.Logger, o endpointerOptions) *Endpointer {
	ctx, cancel := context.WithCancel(context.Background())
	e := &Endpointer{
		factory:    factory,
		logger:     logger,
		grace:      o.grace,
		ejection:   o.ejection,
		failStatic: o.failStatic,
		metrics:    o.metrics,
		subset:     subsetter{subsetting: o.subset},
		published:  o.published,
		info:       o.view,
		epoch:      time.Now(),
		done:       make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
		byInst:     map[string]*Node{},
		closer:     newGraceCloser(logger),
		held:       holding{nodes: map[string]*Node{}, recent: map[string]leftRecently{}},
		bands:      banding{over: o.overprovisioning, names: o.bandNames},
	}
	e.explain, _ = instancer.(interface{ NoInstances() error })
	e.current.Store(&snapshot{})
	// go-kit Instancers send their current state on Register, and banded
	// sources each band's; apply it before returning, so that a new
	// Endpointer already has endpoints.
	var bands int
	if e.sub, bands = subscribe(instancer, len(o.bandNames) > 1); e.sub.bandSrc != nil {
		e.bands.init(bands)
		e.handleBand(<-e.sub.bandEvents)
		e.mu.Lock()
		e.bands.started = true
		e.mu.Unlock()
	} else {
		e.bands.init(1)
		select {
		case ev := <-e.sub.events:
			e.handle(ev)
		default:
		}
	}
	go e.receive()
	e.wg.Add(1)
	go e.sampleEvery(time.Second)
	views.add(e)
	if !e.ejection.Disabled {
		e.wg.Add(1)
		go e.sweep()
	}
	return e
}

// Endpoints implements sd.Endpointer. Do not modify the returned slice.
func (e *Endpointer) Endpoints() ([]endpoint.Endpoint, error) {
	return e.current.Load().endpoints, nil
}

func (e *Endpointer) snapshot() *snapshot { return e.current.Load() }

// noInstances is the error of a pick that finds no instance: the
// Instancer's explanation when it has one (sd's say what they searched
// where, and what went wrong), which wraps lb.ErrNoEndpoints.
func (e *Endpointer) noInstances() error {
	if e.explain != nil {
		if err := e.explain.NoInstances(); err != nil {
			return err
		}
	}
	return lb.ErrNoEndpoints
}

func (e *Endpointer) receive() {
	defer close(e.done)
	if e.sub.bandSrc != nil {
		for u := range e.sub.bandEvents {
			e.handleBand(u)
		}
		return
	}
	for ev := range e.sub.events {
		e.handle(ev)
	}
}

func (e *Endpointer) handle(ev kitsd.Event) {
	if ev.Err != nil {
		if n := len(e.snapshot().nodes); n > 0 {
			_ = level.Warn(e.logger).Log("msg", "discovery failed; keeping the endpoints known last", "endpoints", n, "err", ev.Err)
			return
		}
		kv := []any{"msg", "discovery failed and no instance is known: calls fail until it succeeds", "err", ev.Err}
		if errors.As(ev.Err, new(*sd.UnreachableError)) && !e.hinted {
			e.hinted = true
			kv = append(kv, "hint", consulname.UnreachableHint)
		}
		_ = level.Warn(e.logger).Log(kv...)
		return
	}
	e.update(ev.Instances)
}

func (e *Endpointer) update(instances []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	if !sortedSet(instances) { // sd's Instancers send them sorted
		instances = slices.Compact(slices.Sorted(slices.Values(instances)))
	}
	if e.subset.size > 0 {
		instances = e.subset.update(instances, e.byInst, e.resubset)
	}
	e.apply(instances)
}

// sortedSet reports whether s is sorted with no duplicate.
func sortedSet(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

// reachable reports whether n's connection has not failed since it was
// last READY (a new connection counts). Ejection does not matter to it:
// the others of a subset cover an ejected member, but growing the subset
// for it would dial more instances exactly when calls are slow (a
// starved caller gets its instances ejected), which feeds on itself.
func reachable(n *Node) bool {
	s := connectivity.State(n.state.Load())
	return !n.failing.Load() && s != connectivity.TransientFailure && s != connectivity.Shutdown
}

// apply makes instances, sorted, the listed ones. e.mu is held.
func (e *Endpointer) apply(instances []string) {
	// instances and e.order are both in instance order: one walk over the
	// two finds the instances that stayed, came and went, without a map
	// of a thousand built anew for each update.
	order := make([]*Node, 0, len(instances))
	var removed, dropped []*Node
	gone := func(n *Node) {
		delete(e.byInst, n.instance)
		if e.subset.isListed(n.instance) {
			dropped = append(dropped, n) // still listed, out of the subset
		} else {
			removed = append(removed, n)
		}
	}
	relisted, old := false, e.order
	for _, inst := range instances {
		for len(old) > 0 && old[0].instance < inst {
			gone(old[0])
			old = old[1:]
		}
		if len(old) > 0 && old[0].instance == inst {
			order = append(order, old[0])
			old = old[1:]
			continue
		}
		n, ok := e.held.nodes[inst]
		if ok {
			delete(e.held.nodes, inst)
			n.held.Store(false)
			relisted = true
		} else if n = e.takeBack(inst); n != nil {
			// Listed again within the Window: the same connection and
			// scores, as if it had never left.
		} else {
			ep, closer, err := e.factory(inst)
			if err != nil {
				_ = level.Error(e.logger).Log("msg", "factory failed; instance skipped", "instance", inst, "err", err)
				continue
			}
			n = newNode(e, inst, ep, closer)
			if c, ok := closer.(watchedConn); ok {
				n.state.Store(int32(c.GetState()))
				e.wg.Add(1)
				go e.watch(n, c)
				if e.subset.size > 0 {
					// A subset is small: its members are dialled at once, as
					// grpc-go's round_robin dials its addresses, so that
					// the first calls find them connected.
					c.Connect()
				}
			}
		}
		e.byInst[inst] = n
		order = append(order, n)
	}
	for _, n := range old {
		gone(n)
	}
	// Each listed instance in its band now: a new one, one listed again,
	// one whose band changed places (a nearer datacenter first) or that
	// moved to another band (its node now far).
	for _, n := range order {
		n.band.Store(int32(e.bands.bandOf[n.instance]))
	}
	for _, n := range dropped {
		e.letGo(n)
	}
	e.removeSome(removed, e.order, order)
	e.order = order
	if relisted {
		e.heldChanged("listed again")
	} else {
		e.membersChanged()
	}
	e.publish()
}

// letGo closes the connection of n, which left, after the grace period.
// e.mu is held.
func (e *Endpointer) letGo(n *Node) { e.letGoAfter(n, e.grace, nil) }

// letGoAfter closes the connection of n, which left, after d (calling
// done first, if not nil), and returns the timer that will (nil when n has
// no connection). e.mu is held.
func (e *Endpointer) letGoAfter(n *Node, d time.Duration, done func(*time.Timer)) *time.Timer {
	if n.probeCancel != nil {
		n.probeCancel()
		n.probeCancel = nil
	}
	if n.closer == nil {
		return nil
	}
	return e.closer.after(n.instance, n.closer, d, done)
}

// publish replaces the snapshot with one built from the nodes' current
// state, after letting go of held instances that no longer show they are
// alive; with subsetting, it first picks the subset again if the health
// of its members changed it. e.mu is held.
func (e *Endpointer) publish() {
	if e.subset.size > 0 {
		if members, changed := e.subset.again(e.byInst, e.resubset); changed {
			e.apply(members) // which publishes
			return
		}
	}
	e.pruneHeld()
	s := &snapshot{nodes: e.nodes, endpoints: e.endpoints}
	var bs *bandsSnap
	if e.sub.bandSrc != nil {
		bs = e.bands.start()
	}
	for _, n := range e.nodes {
		t := tierHeld
		if !n.held.Load() {
			t = tierOf(n) // once: a watcher may change n's state meanwhile
		}
		s.tiers[t] = append(s.tiers[t], n)
		if bs != nil {
			e.bands.add(bs, n, t)
		}
	}
	if bs != nil {
		s.bands = e.bands.finish(bs, e.rampAgain)
	}
	e.current.Store(s)
	if e.metrics.Instances != nil {
		e.metrics.Instances.Set(float64(len(s.nodes)))
	}
	if e.published != nil {
		e.published()
	}
}

// membersChanged rebuilds nodes and endpoints after the listed or held
// instances changed. e.mu is held.
func (e *Endpointer) membersChanged() {
	e.nodes = e.order
	if len(e.held.nodes) > 0 {
		e.nodes = slices.Clone(e.order)
		for _, inst := range slices.Sorted(maps.Keys(e.held.nodes)) {
			e.nodes = append(e.nodes, e.held.nodes[inst])
		}
	}
	e.endpoints = make([]endpoint.Endpoint, len(e.nodes))
	for i, n := range e.nodes {
		e.endpoints[i] = n.tracked
	}
}

// tierOf is the tier of n. e.mu is held.
func tierOf(n *Node) int {
	if n.ejected {
		return tierEjected
	}
	switch connectivity.State(n.state.Load()) {
	case connectivity.Ready:
		return tierReady
	case connectivity.Idle:
		if !n.wasReady.Load() {
			// New: it connects on its first call, as grpc-go's do.
			return tierReady
		}
		return tierConnecting
	case connectivity.Connecting:
		return tierConnecting
	default:
		return tierFailing
	}
}

// resubset picks the subset again, a step after a pick that left it short
// of its window.
func (e *Endpointer) resubset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.subset.swapTimer = nil
	if !e.closed {
		e.publish()
	}
}

// republish publishes a new snapshot after a node's state changed.
func (e *Endpointer) republish() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed {
		e.publish()
	}
}

// watchedConn is what the Endpointer needs of a connection to follow its
// state; *grpc.ClientConn has it.
type watchedConn interface {
	GetState() connectivity.State
	WaitForStateChange(ctx context.Context, s connectivity.State) bool
	Connect()
}

// watch follows the state of n's connection until it shuts down or the
// Endpointer closes. A connection that was READY and went IDLE (its server
// closed it, or went away) is asked to connect again at once, so that a
// dead instance is known as such (TRANSIENT_FAILURE) before a caller's
// attempt finds out. A new connection is left to connect on its first call:
// a service of a thousand instances is not dialled all at once.
func (e *Endpointer) watch(n *Node, c watchedConn) {
	defer e.wg.Done()
	for {
		s := c.GetState()
		switch s {
		case connectivity.Ready:
			n.wasReady.Store(true)
			n.failing.Store(false)
		case connectivity.TransientFailure:
			n.failing.Store(true)
		}
		if connectivity.State(n.state.Swap(int32(s))) != s {
			e.republish()
		}
		switch s {
		case connectivity.Shutdown:
			return
		case connectivity.Idle:
			if n.wasReady.Load() {
				c.Connect()
			}
		}
		if !c.WaitForStateChange(e.ctx, s) {
			return
		}
	}
}

// Close unsubscribes from the Instancer (it does not stop it: whoever made it
// owns it), closes every connection, those in their grace period included,
// and waits for the Endpointer's goroutines. Endpoints is empty afterwards.
// It may be called any number of times, concurrently too: every call
// returns the first one's result once that one is done.
func (e *Endpointer) Close() error {
	e.closeOnce.Do(func() { e.closeErr = e.close() })
	return e.closeErr
}

func (e *Endpointer) close() error {
	views.remove(e)
	e.sub.cancel()
	<-e.done

	e.mu.Lock()
	e.closed = true
	e.cancel()
	for _, m := range []map[string]*Node{e.byInst, e.held.nodes} {
		for inst, n := range m {
			if n.closer != nil {
				e.closer.close(inst, n.closer)
			}
		}
	}
	if e.held.timer != nil {
		e.held.timer.Stop()
		e.held.timer = nil
	}
	e.subset.stop()
	e.bands.stop()
	e.closer.closeAll()
	clear(e.byInst)
	clear(e.held.nodes)
	clear(e.held.recent)
	e.order, e.nodes, e.endpoints = nil, nil, nil
	e.current.Store(&snapshot{})
	e.mu.Unlock()
	e.wg.Wait()
	return nil
}
