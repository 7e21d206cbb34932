package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/trimkit/trimkit/internal/ctxtime"
)

// NewConn returns one *grpc.ClientConn for the service cfg names, for its
// generated client (pb.NewXClient(conn)), unary and streaming calls alike:
// the gRPC-native face of the stack New builds. Both faces share one core:
// the same discovery (the process's shared Consul watch, or DNS), the
// same Endpointer under grpc's balancer (connection tiers, ejection with
// health probes, fail-static, subsetting, close after a grace period), the
// same Balancer policies, and the same Retry for unary calls.
//
//   - Unary calls go through Retry (cfg.Retry): budget, throttle,
//     idempotency, hedging, a share of the time per attempt, each retry on
//     an instance the call has not tried.
//   - A stream counts towards its instance's calls in flight while it is
//     open, and its outcome towards ejection; its life is no latency
//     sample. A stream whose open never reached an instance, or that the
//     instance shed before answering (a trailers-only ResourceExhausted
//     with the shed mark), opens again on another instance, its messages
//     sent so far replayed (at most 32), budget permitting; once an answer
//     has come, a failure is the caller's, as grpc has it.
//   - The call's instance is grpc.Peer's, as with any ClientConn.
//
// The caller's dial options (WithDialOptions) come after trimkit's, so
// their interceptors wrap a whole call, its retries included. Idleness is
// off (grpc.WithIdleTimeout(0), whatever the options say): the Consul
// watch and the instances' scores live as long as the ClientConn. Close
// the ClientConn when done: it stops discovery and closes every
// connection.
func NewConn(cfg Config, opts ...Option) (*grpc.ClientConn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("client options: %w", err)
	}
	instancer, stop, p, err := discoverParts(cfg, &o)
	if err != nil {
		return nil, err
	}
	conn, err := dial(cfg.Service, instancer, stop, p, o)
	if err != nil {
		stop()
		return nil, err
	}
	return conn, nil
}

// scheme is the target scheme of NewConn's ClientConns, whose resolver is
// their own (grpc.WithResolvers).
const scheme = "trimkit"

// parts is what a CallConfig and the Options make of a client, whichever
// face: the Endpointer's options, how to build the Balancer, the
// transport credentials, Retry's config.
type parts struct {
	endpointer  endpointerOptions
	newBalancer func(*Endpointer) Balancer
	creds       grpc.DialOption
	serverNames bool // verify each instance for its address (TLS without ServerName)
	retry       RetryConfig
}

// callParts checks cfg and makes its parts but the balancer, which needs
// what discovery makes (balancerFor): cfg is checked, its TLS files read,
// before discovery starts.
func callParts(cfg CallConfig) (parts, error) {
	eo, err := cfg.EndpointerConfig.options()
	if err != nil {
		return parts{}, err
	}
	retry := cfg.Retry
	if retry.Metrics.isZero() {
		retry.Metrics = cfg.Metrics // the stack's, given once
	}
	eo.view = viewInfo{balancer: cmp.Or(cfg.Balancer, RoundRobinName), face: faceEndpoint}
	p := parts{endpointer: eo, retry: retry.withDefaults(), serverNames: cfg.TLS.CAFile != "" && cfg.TLS.ServerName == ""}
	if p.creds, err = cfg.TLS.DialOption(); err != nil {
		return parts{}, err
	}
	return p, nil
}

// dialOptions are the options of the stack's connections: its
// credentials, otelgrpc's stats handler when it traces, then the caller's
// (WithDialOptions).
func (p parts) dialOptions(o options) []grpc.DialOption {
	opts := []grpc.DialOption{p.creds}
	if tp := p.retry.TracerProvider; tp != nil {
		opts = append(opts, tracingDialOption(tp))
	}
	return append(opts, o.dialOptions...)
}

// conn makes what a ClientConn of p calls through: the policy its
// balancer builds by, and the Retry of its interceptors over it.
func (p parts) conn(logger log.Logger) (*connPolicy, *retry) {
	policy := &connPolicy{logger: logger, endpointer: p.endpointer, newBalancer: p.newBalancer, serverNames: p.serverNames}
	return policy, newRetry(policy, p.retry, invokeAttempt)
}

// dial makes the ClientConn of target scheme:///service over instancer,
// which it owns from then on: the ClientConn's Close stops it (stop).
func dial(service string, instancer kitsd.Instancer, stop func(), p parts, o options) (*grpc.ClientConn, error) {
	conn, _, err := dialSetup(service, instancer, stop, p, o)
	return conn, err
}

// dialSetup is dial, and the ClientConn's setup (for BenchmarkRetryCost,
// which turns its Retry off and on).
func dialSetup(service string, instancer kitsd.Instancer, stop func(), p parts, o options) (*grpc.ClientConn, *connSetup, error) {
	// connSetup.Build calls build once: the discovery started here is
	// handed over once.
	c := &connSetup{scheme: scheme, build: func(resolver.Target) (kitsd.Instancer, func(), *connPolicy, *retry, error) {
		policy, r := p.conn(o.logger)
		return instancer, stop, policy, r, nil
	}}
	// The caller's options after the credentials, which they may replace;
	// their interceptors before trimkit's, so that they see whole calls.
	opts := p.dialOptions(o)
	opts = append(opts, c.dialOptions()...)
	conn, err := grpc.NewClient(scheme+":///"+service, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	conn.Connect() // builds the resolver, which takes instancer over
	if !c.built.Load() {
		conn.Close()
		return nil, nil, errors.New("client: grpc did not build the ClientConn's resolver")
	}
	return conn, c, nil
}

// DialOptions returns what grpc.NewClient needs to call a service in
// Consul with trimkit, by a target of the consul scheme (below): its
// resolver over the shared Consul watch (or DNS),
// trimkit's balancer, and the interceptors that make unary calls through
// Retry and reopen streams as NewConn's do. The target's query says what
// Config would: tags, balancer, retries. opts are as for New (WithLogger,
// WithInstancers...; WithDialOptions is not for here: give
// those to grpc.NewClient). The options serve one ClientConn: call
// DialOptions again for another.
//
// A target:
//
//	consul://[AGENT]/SERVICE[?PARAM=VALUE&...]
//
// AGENT is the Consul agent's host:port; without it, the Consul CLI's
// environment (CONSUL_HTTP_ADDR, its token and TLS variables), else
// 127.0.0.1:8500. The parameters, each the Config field it names:
//
//	tag=T            Tags: instances that carry T (repeat for more)
//	dc=D             Datacenters: D, then the next dc= in order (repeat)
//	overprovisioning=F  Overprovisioning of the datacenters' bands
//	region=R, zone=Z Region, Zone: the caller's locality
//	near=N           Near: _agent, or a node's name
//	balancer=B       Balancer: round-robin (default), p2c, least-loaded
//	discovery=D      Discovery: consul (default), dns or query
//	query=Q          Query, for query discovery
//	dns-addr=H:P     DNSAddr, for dns discovery
//	subset=N         Subset; subset-caller=N, SubsetCaller
//	timeout=D        Retry.Timeout, a Go duration (500ms)
//	attempts=N       Retry.MaxAttempts
//	hedge-after=D    Retry.HedgeAfter
//
// An unknown parameter, or a value out of range, is an error.
//
// Give grpc.NewClient the transport credentials too: with TLS, the
// instances are verified against the target's service name unless the
// credentials name another; NewConn verifies each against its address.
//
//	conn, err := grpc.NewClient("consul:///orders?tag=v2&balancer=p2c",
//		append(client.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
func DialOptions(opts ...Option) []grpc.DialOption {
	c := &connSetup{scheme: consulScheme}
	c.build = func(t resolver.Target) (kitsd.Instancer, func(), *connPolicy, *retry, error) {
		cfg, err := consulTarget(t.URL)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		o, err := newOptions(opts)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("client options: %w", err)
		}
		instancer, stop, p, err := discoverParts(cfg, &o)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		policy, r := p.conn(o.logger)
		return instancer, stop, policy, r, nil
	}
	return c.dialOptions()
}

// discoverParts starts the discovery of cfg, which is valid, with o, and
// makes the parts of its calls.
func discoverParts(cfg Config, o *options) (kitsd.Instancer, func(), parts, error) {
	p, err := callParts(cfg.CallConfig)
	if err != nil {
		return nil, nil, parts{}, err
	}
	instancer, loads, stop, err := discover(cfg, o)
	if err != nil {
		return nil, nil, parts{}, err
	}
	if p.newBalancer, err = balancerFor(cfg.Balancer, loads); err != nil {
		stop()
		return nil, nil, parts{}, err
	}
	p.endpointer.view.service, p.endpointer.view.tags = cfg.Service, cfg.Tags
	p.endpointer.bandNames, p.endpointer.overprovisioning = o.bandNames, o.overprovisioning
	p.endpointer.view.face, p.endpointer.view.watch = faceConn, instancer
	return instancer, stop, p, nil
}

const serviceConfigJSON = `{"loadBalancingConfig":[{"` + balancerName + `":{}}]}`

// Balancer of a ClientConn's Retry: its grpc balancer's, once grpc has
// built it.
var _ Balancer = (*connPolicy)(nil)

func (p *connPolicy) Pick(tried []*Node) (*Node, error) {
	b := p.current.Load()
	if b == nil {
		return nil, lb.ErrNoEndpoints
	}
	return b.policy.Pick(tried)
}

func (p *connPolicy) Done(n *Node, err error) {
	if b := p.current.Load(); b != nil {
		b.policy.Done(n, err)
	}
}

// connSetup is one ClientConn's resolver builder and interceptors: its
// resolver, built once, starts discovery and makes the Retry its
// interceptors call through.
type connSetup struct {
	scheme string
	// build starts the discovery of target and makes the policy of its
	// balancer and its Retry; it is called once.
	build func(target resolver.Target) (kitsd.Instancer, func(), *connPolicy, *retry, error)
	built atomic.Bool
	retry atomic.Pointer[retry]
}

// dialOptions are the ClientConn's: its resolver, trimkit's balancer, a
// Factory's reconnection backoff, and the interceptors; idleness off, so
// that discovery and the instances' scores live as long as it.
func (c *connSetup) dialOptions() []grpc.DialOption {
	registerBalancer()
	return []grpc.DialOption{
		grpc.WithResolvers(c),
		grpc.WithDefaultServiceConfig(serviceConfigJSON),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnectBackoff, MinConnectTimeout: 20 * time.Second}),
		grpc.WithChainUnaryInterceptor(c.intercept),
		grpc.WithChainStreamInterceptor(c.interceptStream),
		grpc.WithIdleTimeout(0),
	}
}

func (c *connSetup) Scheme() string { return c.scheme }

func (c *connSetup) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	if !c.built.CompareAndSwap(false, true) {
		return nil, errors.New("client: these dial options serve one ClientConn, which has them; call DialOptions again for another")
	}
	instancer, stop, policy, r, err := c.build(t)
	if err != nil {
		return nil, err
	}
	c.retry.Store(r)
	return newInstancerResolver(cc, instancer, stop, policy), nil
}

// intercept makes a unary call through Retry, once the resolver is built.
func (c *connSetup) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if r := c.retry.Load(); r != nil {
		_, err := r.call(ctx, &unaryCall{method: method, req: req, reply: reply, cc: cc, invoker: invoker, opts: opts})
		return err
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// interceptStream opens a stream, again on another instance when an open
// does not reach one.
func (c *connSetup) interceptStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	r := c.retry.Load()
	if r == nil {
		return streamer(ctx, desc, cc, method, opts...)
	}
	s := &retryStream{r: r, st: &streamOpen{}, desc: desc, cc: cc, method: method, streamer: streamer, opts: opts, caller: ctx}
	ctx, s.st.cancel = context.WithCancelCause(ctx)
	s.ctx = context.WithValue(ctx, streamKey{}, s.st)
	cs, err := s.open(nil)
	if err != nil {
		s.st.cancel(nil)
		return nil, s.why(err)
	}
	s.cs = cs
	return s, nil
}

// instancerResolver passes an Instancer's instances to a ClientConn, with
// the policy its balancer builds by (an attribute of the state), and its
// errors, which keep the instances known last.
type instancerResolver struct {
	cc    resolver.ClientConn
	sub   subscription
	stop  func()
	done  chan struct{}
	attrs *attributes.Attributes
	sc    *serviceconfig.ParseResult
	// With several datacenters: each band's state.
	bands []bandState
}

func newInstancerResolver(cc resolver.ClientConn, instancer kitsd.Instancer, stop func(), p *connPolicy) *instancerResolver {
	r := &instancerResolver{
		cc: cc, stop: stop,
		done:  make(chan struct{}),
		attrs: attributes.New(policyKey{}, p),
		sc:    cc.ParseServiceConfig(serviceConfigJSON),
	}
	var bands int
	r.sub, bands = subscribe(instancer, len(p.endpointer.bandNames) > 1)
	r.bands = make([]bandState, bands)
	go r.receive()
	return r
}

// bandStates are the states of a banded source's bands, a resolver
// state's attribute (bandsKey) for its balancer.
type bandStates struct{ bands []bandState }

type bandsKey struct{}

// receiveBands passes each band's state on, every band's instances as the
// state's addresses and the bands' states as its attribute.
func (r *instancerResolver) receiveBands() {
	set := func(u bandUpdate) {
		for _, st := range u {
			if st.band >= 0 && st.band < len(r.bands) {
				r.bands[st.band] = st
			}
		}
	}
	for u := range r.sub.bandEvents {
		set(u)
		// Take what else came, to pass it on at once.
		for more := true; more; {
			select {
			case u, ok := <-r.sub.bandEvents:
				if !ok {
					more = false
					break
				}
				set(u)
			default:
				more = false
			}
		}
		attrs := r.attrs.WithValue(bandsKey{}, &bandStates{bands: slices.Clone(r.bands)})
		r.update(instancesOf(r.bands), attrs)
	}
}

// update passes instances on to the ClientConn, as its addresses, with
// attrs.
func (r *instancerResolver) update(instances []string, attrs *attributes.Attributes) {
	addrs := make([]resolver.Address, len(instances))
	for i, inst := range instances {
		addrs[i] = resolver.Address{Addr: inst}
	}
	_ = r.cc.UpdateState(resolver.State{Addresses: addrs, Attributes: attrs, ServiceConfig: r.sc})
}

func (r *instancerResolver) receive() {
	defer close(r.done)
	if r.sub.bandSrc != nil {
		r.receiveBands()
		return
	}
	for ev := range r.sub.events {
		if ev.Err != nil {
			r.cc.ReportError(ev.Err)
			continue
		}
		r.update(ev.Instances, r.attrs)
	}
}

func (r *instancerResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *instancerResolver) Close() {
	r.sub.cancel()
	<-r.done
	if r.stop != nil {
		r.stop()
	}
}

// unaryCall is a unary call through a ClientConn's interceptor, the
// request Retry passes to invokeAttempt.
type unaryCall struct {
	method     string
	req, reply any
	cc         *grpc.ClientConn
	invoker    grpc.UnaryInvoker
	opts       []grpc.CallOption
	// first is the record of the call's first attempt, allocated with the
	// call (a call answered at once allocates one object for both); later
	// attempts get records of their own. Attempts of one unaryCall never
	// run at once: a hedge runs on a fork.
	first     attemptRec
	firstUsed bool
}

// record is a record for the call's next attempt, on n.
func (c *unaryCall) record(ctx context.Context, n *Node) *attemptRec {
	if c.firstUsed {
		return &attemptRec{Context: ctx, n: n}
	}
	c.firstUsed = true
	c.first.Context, c.first.n = ctx, n
	return &c.first
}

// forks says whether the call can be copied for a hedge: its reply is a
// protocol buffer (not a codec of the program's).
func (c *unaryCall) forks() bool {
	_, ok := c.reply.(proto.Message)
	return ok
}

// fork is a copy of the call for one of two attempts that run at once: a
// reply of its own, and of its own the call options grpc writes into
// (Peer, Header, Trailer).
func (c *unaryCall) fork() any {
	f := &unaryCall{method: c.method, req: c.req, cc: c.cc, invoker: c.invoker,
		reply: c.reply.(proto.Message).ProtoReflect().New().Interface(),
		opts:  slices.Clone(c.opts)}
	for i, o := range f.opts {
		switch o.(type) {
		case grpc.PeerCallOption:
			f.opts[i] = grpc.Peer(&peer.Peer{})
		case grpc.HeaderCallOption:
			f.opts[i] = grpc.Header(new(metadata.MD))
		case grpc.TrailerCallOption:
			f.opts[i] = grpc.Trailer(new(metadata.MD))
		}
	}
	return f
}

// won gives the call what the attempt that answered got.
func (c *unaryCall) won(attempt any) any {
	f := attempt.(*unaryCall)
	proto.Reset(c.reply.(proto.Message))
	proto.Merge(c.reply.(proto.Message), f.reply.(proto.Message))
	for i, o := range c.opts {
		switch o := o.(type) {
		case grpc.PeerCallOption:
			*o.PeerAddr = *f.opts[i].(grpc.PeerCallOption).PeerAddr
		case grpc.HeaderCallOption:
			*o.HeaderAddr = *f.opts[i].(grpc.HeaderCallOption).HeaderAddr
		case grpc.TrailerCallOption:
			*o.TrailerAddr = *f.opts[i].(grpc.TrailerCallOption).TrailerAddr
		}
	}
	return c.reply
}

// invokeAttempt is the attempter of a ClientConn: the call, pinned to n.
// An attempt that never got n's SubConn (its connection failed, or the
// attempt's time ran out while it connected) is recorded on n as an
// attempt of the go-kit face on a failed connection would be; it was not
// sent.
func invokeAttempt(at *attemptRec, request any) (any, bool, outcome, error) {
	c, n := request.(*unaryCall), at.n
	err := c.invoker(at, c.method, c.req, c.reply, c.cc, c.opts...)
	if !at.picked.Load() {
		now := n.now()
		return c.reply, false, n.settle(at, err, float64(now-n.reading(at.begun)), now), err
	}
	return c.reply, at.sent.Load(), at.o, err
}

// streamOpen is what a ClientConn's picker knows of a stream that opens:
// the instances its opens went to, and how the last one ended.
type streamOpen struct {
	cancel context.CancelCauseFunc // ends the stream (errLeft)
	mu     sync.Mutex
	tried  []*Node
	o      outcome
	ended  bool // the last open's stream has ended
	sent   bool // and bytes of it had left for its instance
}

type streamKey struct{}

func (s *streamOpen) triedSoFar() []*Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tried
}

func (s *streamOpen) picked(n *Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tried = append(s.tried, n)
	s.ended, s.sent = false, false
}

func (s *streamOpen) done(o outcome, sent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.o, s.ended, s.sent = o, true, sent
}

// unreached says whether the last open, which began after picks picks,
// never reached an instance (no pick, or nothing sent) or was shed there:
// then it may open again elsewhere.
func (s *streamOpen) unreached(picks int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tried) == picks || !s.sent || (s.ended && s.o == shed)
}

// replayLimit is how many messages a stream keeps, until its first
// answer, to send again should it open again on another instance.
const replayLimit = 32

// retryStream is a stream of a ClientConn that may open again on another
// instance until its first answer.
type retryStream struct {
	r        *retry
	st       *streamOpen
	caller   context.Context // the caller's
	ctx      context.Context // the caller's, ended by st.cancel too
	desc     *grpc.StreamDesc
	cc       *grpc.ClientConn
	method   string
	streamer grpc.Streamer
	opts     []grpc.CallOption
	opens    int
	picks    int // the picks the stream had made before its last open

	mu        sync.Mutex
	cs        grpc.ClientStream
	sent      []any // messages sent until the first answer
	closed    bool  // CloseSend was called
	committed bool  // an answer came (or too much was sent): no more opens
}

// open opens the stream, after last, the failure of the open before (nil
// for the first), when that one may be tried again.
func (s *retryStream) open(last error) (grpc.ClientStream, error) {
	for {
		if last != nil && !s.again() {
			return nil, last
		}
		s.picks = len(s.st.triedSoFar())
		cs, err := s.streamer(s.ctx, s.desc, s.cc, s.method, s.opts...)
		s.opens++
		if err == nil {
			return cs, nil
		}
		if len(s.st.triedSoFar()) == s.picks {
			// No instance found: a moment for discovery or a connection.
			if !ctxtime.Sleep(s.ctx, noEndpointsPause) {
				return nil, err
			}
		}
		last = err
	}
}

// again says whether the stream may open again after its last open
// failed: attempts and budget left, and the open never reached an instance
// or was shed there.
func (s *retryStream) again() bool {
	if s.opens >= s.r.max || s.ctx.Err() != nil || !s.st.unreached(s.picks) {
		return false
	}
	if !s.r.budget.retry() {
		add(s.r.metrics.BudgetExhausted)
		return false
	}
	add(s.r.metrics.Retries)
	return true
}

func (s *retryStream) current() grpc.ClientStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cs
}

func (s *retryStream) Header() (metadata.MD, error) { return s.current().Header() }
func (s *retryStream) Trailer() metadata.MD         { return s.current().Trailer() }
func (s *retryStream) Context() context.Context     { return s.current().Context() }

func (s *retryStream) CloseSend() error {
	s.mu.Lock()
	s.closed = true
	cs := s.cs
	s.mu.Unlock()
	return cs.CloseSend()
}

func (s *retryStream) SendMsg(m any) error {
	s.mu.Lock()
	cs, keep := s.cs, !s.committed
	if keep {
		s.sent = append(s.sent, m)
		if len(s.sent) > replayLimit {
			s.commitLocked()
			keep = false
		}
	}
	s.mu.Unlock()
	err := cs.SendMsg(m)
	if err == io.EOF && keep {
		// The stream ended; RecvMsg tells how, and may open it again
		// elsewhere with this message.
		return nil
	}
	return err
}

func (s *retryStream) RecvMsg(m any) error {
	err := s.recv(m)
	if err != nil || !s.desc.ServerStreams {
		s.st.cancel(nil) // the stream is over: its context goes
	}
	return err
}

func (s *retryStream) recv(m any) error {
	for {
		s.mu.Lock()
		cs, committed := s.cs, s.committed
		s.mu.Unlock()
		err := cs.RecvMsg(m)
		if err != nil && err != io.EOF {
			err = s.why(err)
		}
		if committed {
			return err
		}
		if err == nil || err == io.EOF {
			s.commit()
			return err
		}
		cs, err = s.open(err)
		if err != nil {
			s.commit()
			return s.why(err)
		}
		if err := s.replay(cs); err != nil {
			s.commit()
			return s.why(err)
		}
	}
}

// why is err, the failure of the stream, or, when the stream ended
// because its instance left (errLeft) while its caller waits, Unavailable
// saying so: the caller opens it again, elsewhere.
func (s *retryStream) why(err error) error {
	if s.caller.Err() == nil && errors.Is(context.Cause(s.ctx), errLeft) {
		return status.Errorf(codes.Unavailable, "%v: %v", errLeft, err)
	}
	return err
}

// replay makes cs the stream and sends it what the one before was sent.
func (s *retryStream) replay(cs grpc.ClientStream) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cs = cs
	for _, m := range s.sent {
		if err := cs.SendMsg(m); err != nil {
			if err == io.EOF {
				return nil // RecvMsg tells how it ended
			}
			return err
		}
	}
	if s.closed {
		return cs.CloseSend()
	}
	return nil
}

func (s *retryStream) commit() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commitLocked()
}

func (s *retryStream) commitLocked() {
	s.committed = true
	s.sent = nil
}
