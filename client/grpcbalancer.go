package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/go-kit/kit/endpoint"
	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/trimkit/trimkit/internal/overload"
)

// balancerName is the name trimkit's balancer has in grpc-go's registry,
// for a service config's loadBalancingConfig. NewConn and DialOptions
// register it (once per process) and select it; a program that selects
// it with a resolver of its own (grpc's dns, say) gets round robin with
// the Endpointer's defaults: connection tiers, ejection, fail-static.
const balancerName = "trimkit"

// registerBalancer registers trimkit's balancers with grpc-go, once:
// NewConn's and DialOptions' (balancerName), and a Factory connection's.
var registerBalancer = sync.OnceFunc(func() {
	balancer.Register(balancerBuilder{})
	balancer.Register(instanceBuilder{})
})

// connPolicy is what a ClientConn's resolver tells its balancer (in the
// resolver state's attributes): how to build the Endpointer and the
// Balancer over it, as CallConfig and the Options say.
type connPolicy struct {
	logger      log.Logger
	endpointer  endpointerOptions
	newBalancer func(*Endpointer) Balancer
	serverNames bool // verify each instance for its address
	// current is the balancer grpc built last, for the ClientConn's
	// Retry: nil until grpc builds it.
	current atomic.Pointer[grpcBalancer]
}

type policyKey struct{}

func defaultPolicy() *connPolicy {
	eo, _ := EndpointerConfig{}.options() // the defaults are valid
	return &connPolicy{logger: log.NewNopLogger(), endpointer: eo, newBalancer: func(e *Endpointer) Balancer { return NewRoundRobin(e) }}
}

type balancerBuilder struct{}

func (balancerBuilder) Name() string { return balancerName }

func (balancerBuilder) Build(cc balancer.ClientConn, _ balancer.BuildOptions) balancer.Balancer {
	return &grpcBalancer{cc: cc, published: make(chan struct{}, 1), done: make(chan struct{})}
}

// grpcBalancer is a ClientConn's balancer: an Endpointer whose Factory
// makes a SubConn per instance, fed with the resolver's addresses, and a
// Balancer over it. The picker reads the Endpointer's snapshot as the
// go-kit face's Balancers do, and each pick's Done records the attempt or
// stream on its instance: one core, two faces.
type grpcBalancer struct {
	cc         balancer.ClientConn
	p          *connPolicy
	instancer  *pushInstancer
	endpointer *Endpointer
	policy     Balancer
	published  chan struct{} // the Endpointer published a snapshot
	done       chan struct{} // closed by Close
	passed     sync.WaitGroup
}

func (b *grpcBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	instances := addressesOf(s.ResolverState)
	if b.endpointer != nil {
		b.instancer.update(instances)
		if bands, ok := s.ResolverState.Attributes.Value(bandsKey{}).(*bandStates); ok {
			b.instancer.updateBands(bands)
		}
		return nil
	}
	p, _ := s.ResolverState.Attributes.Value(policyKey{}).(*connPolicy)
	if p == nil {
		p = defaultPolicy()
	}
	b.p = p
	b.instancer = &pushInstancer{}
	if n := len(p.endpointer.bandNames); n > 1 {
		b.instancer.bands = make([]bandState, n)
		for i := range b.instancer.bands {
			b.instancer.bands[i] = bandState{band: i, registered: -1}
		}
	}
	b.instancer.update(instances)
	if bands, ok := s.ResolverState.Attributes.Value(bandsKey{}).(*bandStates); ok {
		b.instancer.updateBands(bands)
	}
	eo := p.endpointer
	eo.published = b.changed
	b.endpointer = newEndpointer(b.instancer, b.newSubConn, p.logger, eo)
	b.policy = p.newBalancer(b.endpointer)
	p.current.Store(b)
	b.passed.Add(1)
	go b.pass()
	b.changed()
	return nil
}

// addressesOf are the instances of a resolver state, "host:port", one
// per endpoint (the first address of each).
func addressesOf(s resolver.State) []string {
	var out []string
	if len(s.Endpoints) > 0 {
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) > 0 {
				out = append(out, ep.Addresses[0].Addr)
			}
		}
		return out
	}
	for _, a := range s.Addresses {
		out = append(out, a.Addr)
	}
	return out
}

// ResolverError keeps the instances known last, as the Endpointer does
// with an Instancer's error.
func (b *grpcBalancer) ResolverError(err error) {
	if b.instancer != nil {
		b.instancer.fail(err)
	}
}

func (b *grpcBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *grpcBalancer) ExitIdle() {}

func (b *grpcBalancer) Close() {
	if b.p != nil {
		b.p.current.CompareAndSwap(b, nil)
	}
	close(b.done)
	if b.endpointer != nil {
		_ = b.endpointer.Close()
	}
	b.passed.Wait()
}

// changed notes that the Endpointer published a snapshot (its lock held:
// it must not call grpc).
func (b *grpcBalancer) changed() {
	select {
	case b.published <- struct{}{}:
	default:
	}
}

// pass gives grpc a new picker and state after each snapshot, outside the
// Endpointer's lock: picks that waited for an instance to connect try
// again.
func (b *grpcBalancer) pass() {
	defer b.passed.Done()
	for {
		select {
		case <-b.done:
			return
		case <-b.published:
		}
		b.cc.UpdateState(balancer.State{ConnectivityState: b.state(), Picker: &picker{b: b}})
	}
}

// state is the ClientConn's state: READY while an instance is, else
// CONNECTING while one is, else TRANSIENT_FAILURE.
func (b *grpcBalancer) state() connectivity.State {
	s := b.endpointer.snapshot()
	connecting := false
	for _, n := range s.nodes {
		switch connectivity.State(n.state.Load()) {
		case connectivity.Ready:
			return connectivity.Ready
		case connectivity.Connecting, connectivity.Idle:
			connecting = true
		}
	}
	if connecting {
		return connectivity.Connecting
	}
	return connectivity.TransientFailure
}

// newSubConn is the Endpointer's Factory: a SubConn for the instance,
// connecting at once, as grpc's own balancers' do.
func (b *grpcBalancer) newSubConn(instance string) (endpoint.Endpoint, io.Closer, error) {
	addr := resolver.Address{Addr: instance}
	if b.p.serverNames {
		addr.ServerName = instance // TLS verifies the instance, as Factory's connections do
	}
	c, err := dialSubConn(b.cc, []resolver.Address{addr}, nil)
	if err != nil {
		return nil, nil, err
	}
	return nativeOnly, c, nil
}

// dialSubConn makes a SubConn of cc to one instance at addrs (one, or a
// host name's, tried in turn as pick_first does), followed as a subConn
// whose onChange (if not nil) is told each state, and connects it.
func dialSubConn(cc balancer.ClientConn, addrs []resolver.Address, onChange func(connectivity.State, error)) (*subConn, error) {
	c := &subConn{changed: make(chan struct{}), state: connectivity.Idle, onChange: onChange}
	//lint:ignore SA1019 one instance per SubConn, which is what the deprecation asks for.
	sc, err := cc.NewSubConn(addrs, balancer.NewSubConnOptions{StateListener: c.listen})
	if err != nil {
		return nil, err
	}
	c.sc = sc
	sc.Connect() // states follow, through grpc's serializer: after a balancer's own update, when it called this
	return c, nil
}

// nativeOnly is the endpoint of an instance of a ClientConn's
// Endpointer: its calls go through the ClientConn.
func nativeOnly(context.Context, any) (any, error) {
	return nil, errors.New("client: an instance of a ClientConn (NewConn) is called through the ClientConn")
}

// subConn is a SubConn as the Endpointer follows a connection: its state,
// its changes, Connect, and Close; and a grpc.ClientConnInterface on it
// alone, for health probes.
type subConn struct {
	sc balancer.SubConn

	mu      sync.Mutex
	state   connectivity.State
	lastErr error
	changed chan struct{}        // closed at the next change
	streams map[*streamOpen]bool // open on it
	// onChange, when set, is told each new state (an instanceBalancer's).
	onChange func(connectivity.State, error)
}

// errLeft ends the streams still open on an instance when its connection
// is closed, a grace period after it left discovery: as the go-kit face's
// Close of its connection ends its calls. A frozen instance's streams
// would otherwise wait for it for ever.
var errLeft = errors.New("the instance left discovery and its connection was closed")

func (c *subConn) addStream(st *streamOpen) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == connectivity.Shutdown {
		return false
	}
	if c.streams == nil {
		c.streams = map[*streamOpen]bool{}
	}
	c.streams[st] = true
	return true
}

func (c *subConn) removeStream(st *streamOpen) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.streams, st)
}

// listen follows the SubConn's state. A failure sticks, as pick_first's
// does: after TRANSIENT_FAILURE, grpc lets the SubConn go IDLE once its
// backoff is over, and it is connected again at once, its state still
// TRANSIENT_FAILURE until it is READY.
func (c *subConn) listen(s balancer.SubConnState) {
	c.mu.Lock()
	if c.state == connectivity.Shutdown {
		c.mu.Unlock()
		return
	}
	next := s.ConnectivityState
	if c.state == connectivity.TransientFailure && (next == connectivity.Idle || next == connectivity.Connecting) {
		c.mu.Unlock()
		if next == connectivity.Idle {
			c.sc.Connect()
		}
		return
	}
	c.state = next
	if s.ConnectionError != nil {
		c.lastErr = s.ConnectionError
	}
	close(c.changed)
	c.changed = make(chan struct{})
	onChange, err := c.onChange, c.lastErr
	c.mu.Unlock()
	if onChange != nil {
		onChange(next, err)
	}
}

func (c *subConn) GetState() connectivity.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

func (c *subConn) WaitForStateChange(ctx context.Context, s connectivity.State) bool {
	c.mu.Lock()
	if c.state != s {
		c.mu.Unlock()
		return true
	}
	ch := c.changed
	c.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *subConn) Connect() { c.sc.Connect() }

// Close shuts the SubConn down: unary calls in flight on it finish, the
// streams still open end (errLeft).
func (c *subConn) Close() error {
	c.sc.Shutdown()
	c.listen(balancer.SubConnState{ConnectivityState: connectivity.Shutdown})
	c.mu.Lock()
	streams := c.streams
	c.streams = nil
	c.mu.Unlock()
	for st := range streams {
		st.cancel(errLeft)
	}
	return nil
}

// failure is why a pick cannot use the SubConn now: its last connection
// error, for a caller that does not wait for ready.
func (c *subConn) failure(instance string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr != nil {
		return status.Errorf(codes.Unavailable, "%s: %v", instance, c.lastErr)
	}
	return status.Errorf(codes.Unavailable, "%s: connection %v", instance, c.state)
}

// Invoke makes a unary call on this SubConn alone (a health probe): it
// passes by no picker and no interceptor.
func (c *subConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	p, release := c.sc.GetOrBuildProducer(ownConn{})
	defer release()
	return p.(grpc.ClientConnInterface).Invoke(ctx, method, args, reply, opts...)
}

// NewStream is not used: probes are unary.
func (c *subConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "client: no streams on a probe's connection")
}

// ownConn builds, as a SubConn's producer, the grpc.ClientConnInterface
// grpc hands producers: calls on that SubConn.
type ownConn struct{}

func (ownConn) Build(cc any) (balancer.Producer, func()) { return cc, func() {} }

// picker picks for a ClientConn: the instance the call's Retry picked
// (a unary call through NewConn's interceptor), else the Balancer's pick
// among the instances the stream has not tried.
type picker struct{ b *grpcBalancer }

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	ctx := info.Ctx
	at, _ := ctx.Value(attemptKey{}).(*attemptRec)
	st, _ := ctx.Value(streamKey{}).(*streamOpen)
	var n *Node
	if at != nil {
		n = at.n
	} else {
		var tried []*Node
		if st != nil {
			tried = st.triedSoFar()
		}
		var err error
		if sp, ok := p.b.policy.(streamPicker); ok && st != nil {
			n, err = sp.pickStream(tried)
		} else {
			n, err = p.b.policy.Pick(tried)
		}
		if err != nil {
			return balancer.PickResult{}, status.Error(codes.Unavailable, err.Error())
		}
	}
	c, ok := n.closer.(*subConn)
	if !ok { // an instance of another Endpointer: cannot be
		return balancer.PickResult{}, status.Errorf(codes.Internal, "client: %s is not this ClientConn's", n.instance)
	}
	switch c.GetState() {
	case connectivity.Ready:
	case connectivity.Idle:
		c.Connect()
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	case connectivity.Connecting:
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	default:
		if at != nil {
			at.picked.Store(false) // the call ends with this failure, not an earlier pick's
		}
		return balancer.PickResult{}, c.failure(n.instance)
	}
	if st != nil {
		if !c.addStream(st) {
			return balancer.PickResult{}, c.failure(n.instance)
		}
		n.beginStream()
		st.picked(n)
		return balancer.PickResult{SubConn: c.sc, Metadata: askLoad(n), Done: func(di balancer.DoneInfo) {
			c.removeStream(st)
			st.done(n.endStream(ctx, doneErr(di)), di.BytesSent)
		}}, nil
	}
	var start int64
	if at != nil { // the attempt's time runs from Retry's reading of the clock
		start = n.beginAt(n.reading(at.begun))
	} else {
		start = n.begin()
	}
	return balancer.PickResult{SubConn: c.sc, Metadata: askLoad(n), Done: func(di balancer.DoneInfo) {
		reportLoad(n, di)
		o := n.end(ctx, start, doneErr(di))
		if at != nil {
			at.o = o
			at.ended(di)
		}
	}}, nil
}

// errUnprocessed is how a call ended that grpc tries again at once on
// another pick, its stream having closed before the instance took it (a
// connection closing under it): grpc's Done says no error, and no byte
// came back.
var errUnprocessed = status.Error(codes.Unavailable, "client: the connection closed before the instance took the call; grpc tries it again")

// doneErr is the error a pick's call ended with: di.Err, or
// errUnprocessed for a call that grpc finished without error or answer,
// to try it again (an answer, even an empty one, brings bytes).
func doneErr(di balancer.DoneInfo) error {
	if di.Err == nil && !di.BytesReceived {
		return errUnprocessed
	}
	return di.Err
}

// askLoad is the metadata a call to n adds to ask for the load in the
// answer's trailer: the request when a balancer over n's Endpointer reads
// it, else nil, so that the calls of a balancer that reads no load cost
// neither side a load report.
func askLoad(n *Node) metadata.MD {
	if n.owner.readsLoad.Load() {
		return overload.Request
	}
	return nil
}

// reportLoad gives n the load its answer reported in its trailer, if it
// reported one.
func reportLoad(n *Node, di balancer.DoneInfo) {
	if r, ok := overload.FromTrailer(di.Trailer); ok {
		n.reportLoad(r)
	}
}

// instanceBalancerName is the name of the balancer of a Factory's
// connection, in grpc-go's registry.
const instanceBalancerName = "trimkit_instance"

const instanceServiceConfigJSON = `{"loadBalancingConfig":[{"` + instanceBalancerName + `":{}}]}`

type instanceBuilder struct{}

func (instanceBuilder) Name() string { return instanceBalancerName }

func (instanceBuilder) Build(cc balancer.ClientConn, _ balancer.BuildOptions) balancer.Balancer {
	return &instanceBalancer{cc: cc}
}

// instanceBalancer is the balancer of a Factory's connection, to one
// instance: one SubConn, which it connects as soon as the connection
// leaves idle, and picks whenever it is READY, as pick_first does (a
// failure sticks until it connects again); its picks tell the attempt in
// their call's context how the call ended (attemptRec).
type instanceBalancer struct {
	cc balancer.ClientConn
	sc *subConn
}

func (b *instanceBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	if b.sc != nil {
		return nil // one instance, one address: it does not move
	}
	var addrs []resolver.Address
	for _, inst := range addressesOf(s.ResolverState) {
		addrs = append(addrs, resolver.Address{Addr: inst})
	}
	if len(addrs) == 0 {
		b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure, Picker: errPicker{status.Error(codes.Unavailable, "client: the instance's address resolved to nothing")}})
		return balancer.ErrBadResolverState
	}
	c, err := dialSubConn(b.cc, addrs, b.changed)
	if err != nil {
		return err
	}
	b.sc = c
	return nil
}

// changed passes the SubConn's new state on to grpc, with its picker.
func (b *instanceBalancer) changed(s connectivity.State, err error) {
	var p balancer.Picker
	switch s {
	case connectivity.Ready:
		p = readyPicker{b.sc.sc}
	case connectivity.TransientFailure:
		p = errPicker{err}
	case connectivity.Shutdown:
		return
	case connectivity.Idle: // the instance closed the connection: connect again when asked
		p = idlePicker{b.sc}
	default:
		p = errPicker{balancer.ErrNoSubConnAvailable}
	}
	b.cc.UpdateState(balancer.State{ConnectivityState: s, Picker: p})
}

func (b *instanceBalancer) ResolverError(err error) {
	if b.sc == nil {
		b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure, Picker: errPicker{fmt.Errorf("name resolver error: %w", err)}})
	}
}

func (b *instanceBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *instanceBalancer) ExitIdle() {
	if b.sc != nil {
		b.sc.Connect()
	}
}

func (b *instanceBalancer) Close() {}

// readyPicker picks a READY SubConn, telling the attempt of each call
// (attemptRec), if it has one, how the call ended.
type readyPicker struct{ sc balancer.SubConn }

func (p readyPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	at, _ := info.Ctx.Value(attemptKey{}).(*attemptRec)
	if at == nil {
		return balancer.PickResult{SubConn: p.sc}, nil
	}
	at.seen.Store(true)
	return balancer.PickResult{SubConn: p.sc, Metadata: askLoad(at.n), Done: func(di balancer.DoneInfo) {
		reportLoad(at.n, di)
		at.ended(di)
	}}, nil
}

// idlePicker connects its SubConn and has the pick wait for it.
type idlePicker struct{ sc *subConn }

func (p idlePicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	p.sc.Connect()
	return errPicker{balancer.ErrNoSubConnAvailable}.Pick(info)
}

// errPicker fails every pick with err (balancer.ErrNoSubConnAvailable:
// waits for the next picker), telling the attempt it saw it.
type errPicker struct{ err error }

func (p errPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	if at, ok := info.Ctx.Value(attemptKey{}).(*attemptRec); ok {
		at.seen.Store(true)
	}
	return balancer.PickResult{}, p.err
}

// streamPicker is a Balancer that picks streams by a rule of their own
// (P2C's, and so LeastLoaded's).
type streamPicker interface {
	pickStream(tried []*Node) (*Node, error)
}

// pushInstancer is a go-kit Instancer fed by a ClientConn's resolver, for
// its balancer's Endpointer.
type pushInstancer struct {
	mu    sync.Mutex
	state kitsd.Event
	subs  []chan<- kitsd.Event
	// bands are the bands' states, with several datacenters (a bandSource
	// then, for the Endpointer).
	bands    []bandState
	bandSubs []chan<- bandUpdate
}

var _ bandSource = (*pushInstancer)(nil)

// updateBands passes the bands that changed on, together.
func (p *pushInstancer) updateBands(bands *bandStates) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var u bandUpdate
	for i, st := range bands.bands {
		if i >= len(p.bands) {
			break
		}
		// A failing band's error passes through unchanged until its watch
		// answers again: the same error is no change.
		if old := p.bands[i]; errors.Is(st.err, old.err) && st.name == old.name && st.registered == old.registered && slices.Equal(st.instances, old.instances) {
			continue
		}
		p.bands[i] = st
		u = append(u, st)
	}
	if len(u) > 0 {
		for _, ch := range p.bandSubs {
			ch <- u
		}
	}
}

func (p *pushInstancer) registerBands(ch chan<- bandUpdate) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bandSubs = append(p.bandSubs, ch)
	ch <- slices.Clone(p.bands)
	return len(p.bands)
}

func (p *pushInstancer) deregisterBands(ch chan<- bandUpdate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bandSubs = slices.DeleteFunc(p.bandSubs, func(c chan<- bandUpdate) bool { return c == ch })
}

func (p *pushInstancer) update(instances []string) { p.send(kitsd.Event{Instances: instances}) }
func (p *pushInstancer) fail(err error)            { p.send(kitsd.Event{Err: err}) }

func (p *pushInstancer) send(ev kitsd.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.Err == nil {
		p.state = ev
	}
	for _, ch := range p.subs {
		ch <- ev
	}
}

func (p *pushInstancer) Register(ch chan<- kitsd.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.subs = append(p.subs, ch)
	ch <- p.state
}

func (p *pushInstancer) Deregister(ch chan<- kitsd.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, c := range p.subs {
		if c == ch {
			p.subs = append(p.subs[:i], p.subs[i+1:]...)
			return
		}
	}
}

func (p *pushInstancer) Stop() {}
