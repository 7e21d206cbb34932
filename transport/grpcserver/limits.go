package grpcserver

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Limits bound what callers can cost a server. The zero value of each
// field means its default (DefaultLimits'); see there for why each is what
// it is.
//
// What they bound together: a request is read whole before any handler or
// interceptor runs, so the memory requests take is at most
// MaxCallsInFlight times MaxRecvMsgSize (and what the handlers make of
// them), however many connections and streams callers open; calls over
// MaxCallsInFlight are refused before their message is read. A streaming
// call reads its messages one at a time, as its handler asks: the servers
// of NewServer, which bound streaming calls apart, add at most MaxStreams
// times MaxRecvMsgSize.
type Limits struct {
	// MaxRecvMsgSize is the largest request message, in bytes: the
	// service's own largest valid request plus a small margin for framing,
	// not gRPC's 4 MiB default. Larger gets ResourceExhausted.
	MaxRecvMsgSize int
	// MaxConcurrentStreams bounds the calls in flight on one connection.
	MaxConcurrentStreams uint32
	// MaxCallsInFlight bounds the calls in flight across the server,
	// health checks excepted: more get ResourceExhausted at once, before
	// their request is read.
	MaxCallsInFlight int
	// MaxStreams bounds the streaming calls (where the client or the
	// server streams) open across a NewServer's server, health checks
	// excepted: a new one over it gets ResourceExhausted at once, marked
	// as shed, so that its caller opens it on another instance. A
	// stream's life is no latency and may last minutes: streaming calls
	// neither feed nor count against the concurrency limit or
	// MaxCallsInFlight, only this. (The admission of ServerOptions alone
	// does not know the server's methods: it counts a streaming call in
	// flight until its handler starts, and then among these.)
	MaxStreams int
	// MaxConnections bounds the connections open at once. When they are
	// all open, a new connection takes the place of one not yet
	// established (see MaxPendingConnections), or, when every one is
	// established, is closed as soon as it is accepted. An established
	// connection is never closed to make room.
	MaxConnections int
	// MaxPendingConnections bounds the connections not yet established:
	// those whose TLS handshake (with the client's certificate verified,
	// under mutual TLS) or HTTP/2 preface is not done. A caller needs no
	// certificate to hold such connections, only sockets; over the bound,
	// a new one takes the place of the one that has waited longest (at
	// least 250ms) for its caller to say something, so that however many
	// a caller holds, callers that go on with their handshake get in.
	// Half of MaxConnections by default.
	MaxPendingConnections int
	// FirstByteTimeout closes a connection that has sent nothing (no TLS
	// ClientHello, no HTTP/2 preface) for this long after it was accepted;
	// a live caller speaks within a round trip. HandshakeTimeout still
	// bounds a handshake that has started.
	FirstByteTimeout time.Duration
	// MaxConnectionIdle closes (with GOAWAY) a connection that has had no
	// call for this long.
	MaxConnectionIdle time.Duration
	// KeepaliveTime is how long a connection may be silent before the
	// server pings it, and KeepaliveTimeout how long it waits for the
	// answer before it closes the connection: a caller that vanished
	// without closing (a crashed host) does not hold its connection.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MinPingInterval is the shortest interval between a client's
	// keepalive pings the server tolerates; a client that pings more often
	// is disconnected (gRPC's keepalive enforcement). Pings without a call
	// in flight are refused.
	MinPingInterval time.Duration
	// HandshakeTimeout bounds a new connection's TLS handshake and HTTP/2
	// setup, from its accept: a caller that starts a handshake and stalls
	// does not hold its connection.
	HandshakeTimeout time.Duration
	// StreamWorkers is how many goroutines the server keeps to run calls
	// on (grpc.NumStreamWorkers). A call that finds one free runs on a
	// stack grown already; one that does not gets a goroutine of its own,
	// whose small stack grows by copying as the call goes deep (decoding,
	// interceptors, go-kit's server, the endpoint): a tenth of a plain
	// grpc-go server's CPU per call under load, measured. Zero means 16
	// per CPU (GOMAXPROCS), at most MaxCallsInFlight; negative means
	// none, grpc's own default of a goroutine per call. The workers end
	// when the server stops (Stop or GracefulStop).
	StreamWorkers int
	// Concurrency is how many calls the server runs at once, below
	// MaxCallsInFlight: calls over it are shed, ResourceExhausted at once
	// with a mark callers recognise (they try another instance), before
	// their request is read. Nil means an AdaptiveLimit with
	// DefaultAdaptive's settings and MaxCallsInFlight as its Max, made
	// afresh by each ServerOptions; FixedLimit and NoConcurrencyLimit are
	// the others. Health checks are never limited.
	Concurrency ConcurrencyLimit
	// OmitLoad, when true, leaves the load out of answers. By default
	// every answer to a call that asks for it (request header
	// "endpoint-load-metrics-format: BIN", as trimkit's load-aware
	// balancers send) carries the server's load (calls in flight over the
	// limit, and the limit) in its trailer, in gRPC's ORCA per-call format
	// ("endpoint-load-metrics-bin"); a call that does not ask gets none.
	OmitLoad bool
	// Utilization, when set, is the service's own measure of how busy its
	// bottleneck is, from 0 (idle) to 1 (full): a worker pool's busy
	// share, a CPU's. Answers then carry the larger of it and the calls in
	// flight over the limit. Until calls queue the limit says little of
	// the capacity (it has not been tried), so without it a smaller
	// instance looks as loaded as its peers below their limits, and gets
	// as many calls. Called once per answer: it must be cheap.
	Utilization func() float64
	// Metrics are the instruments admission reports to: calls shed, the
	// limit, the calls in flight; connections refused, evicted and timed
	// out.
	Metrics AdmissionMetrics
	// Logger logs, at most once each per episode, when the connection
	// limit starts to evict or refuse connections and when that is over.
	// Nil means none.
	Logger log.Logger
}

// DefaultLimits are the limits a server gets unless told otherwise.
var DefaultLimits = Limits{
	// gRPC's own default; a service should lower it to its largest
	// request (trimsvc: -max-input-bytes plus 1 KiB).
	MaxRecvMsgSize: 4 << 20,
	// HTTP/2's recommended minimum, and what most servers advertise.
	MaxConcurrentStreams: 100,
	// A server of a few cores keeps only so many calls busy at once; more
	// only queue, holding their requests. 128 calls of 1 MiB are at most
	// about 300 MB of requests and their copies.
	MaxCallsInFlight: 128,
	// A stream waiting for its next message holds no core, only a
	// goroutine and its HTTP/2 state: one per connection the server
	// keeps (MaxConnections), so that every caller may keep a stream
	// open (a watch, a subscription). Each holds at most one request
	// message while its handler reads it: a service that streams bounds
	// their memory with its MaxRecvMsgSize (1024 messages of 64 KiB are
	// 64 MiB), or lowers this.
	MaxStreams: 1024,
	// Far above what a fleet of callers holds (one connection per caller
	// per instance), far below a process's file descriptor limit.
	MaxConnections: 1024,
	// MaxPendingConnections is left 0: half of MaxConnections, whatever
	// that is, so that callers without a certificate never hold more
	// than half the places, and a burst of legitimate reconnections
	// (every caller after a network blip) still has hundreds.

	// A caller's first bytes follow its connect within a round trip;
	// 2s covers a slow network and a busy client, and a silent
	// connection holds its place a fifth as long as HandshakeTimeout
	// lets it.
	FirstByteTimeout: 2 * time.Second,
	// Idle connections cost memory on both sides; callers reconnect in a
	// round trip when they need to.
	MaxConnectionIdle: 5 * time.Minute,
	KeepaliveTime:     time.Minute,
	KeepaliveTimeout:  20 * time.Second,
	// gRPC's enforcement default.
	MinPingInterval:  5 * time.Minute,
	HandshakeTimeout: 10 * time.Second,
}

// Validate returns every field out of range, joined.
func (l Limits) Validate() error {
	var errs []error
	for field, v := range map[string]int64{
		"Limits.MaxRecvMsgSize": int64(l.MaxRecvMsgSize), "Limits.MaxCallsInFlight": int64(l.MaxCallsInFlight),
		"Limits.MaxStreams":     int64(l.MaxStreams),
		"Limits.MaxConnections": int64(l.MaxConnections), "Limits.MaxConnectionIdle": int64(l.MaxConnectionIdle),
		"Limits.MaxPendingConnections": int64(l.MaxPendingConnections), "Limits.FirstByteTimeout": int64(l.FirstByteTimeout),
		"Limits.KeepaliveTime": int64(l.KeepaliveTime), "Limits.KeepaliveTimeout": int64(l.KeepaliveTimeout),
		"Limits.MinPingInterval": int64(l.MinPingInterval), "Limits.HandshakeTimeout": int64(l.HandshakeTimeout),
	} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: must not be negative (0 means the default)", field, v))
		}
	}
	if conns := cmp.Or(l.MaxConnections, DefaultLimits.MaxConnections); l.MaxPendingConnections > conns {
		errs = append(errs, fmt.Errorf("Limits.MaxPendingConnections %d: must be at most MaxConnections (%d)", l.MaxPendingConnections, conns))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// WithDefaults returns l with every zero field set to its default; a nil
// Concurrency becomes a new AdaptiveLimit.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	l.MaxRecvMsgSize = cmp.Or(l.MaxRecvMsgSize, d.MaxRecvMsgSize)
	l.MaxConcurrentStreams = cmp.Or(l.MaxConcurrentStreams, d.MaxConcurrentStreams)
	l.MaxCallsInFlight = cmp.Or(l.MaxCallsInFlight, d.MaxCallsInFlight)
	l.MaxStreams = cmp.Or(l.MaxStreams, d.MaxStreams)
	l.MaxConnections = cmp.Or(l.MaxConnections, d.MaxConnections)
	l.MaxPendingConnections = cmp.Or(l.MaxPendingConnections, d.MaxPendingConnections, max(l.MaxConnections/2, 1))
	l.FirstByteTimeout = cmp.Or(l.FirstByteTimeout, d.FirstByteTimeout)
	l.MaxConnectionIdle = cmp.Or(l.MaxConnectionIdle, d.MaxConnectionIdle)
	l.KeepaliveTime = cmp.Or(l.KeepaliveTime, d.KeepaliveTime)
	l.KeepaliveTimeout = cmp.Or(l.KeepaliveTimeout, d.KeepaliveTimeout)
	l.MinPingInterval = cmp.Or(l.MinPingInterval, d.MinPingInterval)
	l.HandshakeTimeout = cmp.Or(l.HandshakeTimeout, d.HandshakeTimeout)
	if l.StreamWorkers == 0 {
		l.StreamWorkers = min(16*runtime.GOMAXPROCS(0), l.MaxCallsInFlight)
	}
	if l.Concurrency == nil {
		cfg := DefaultAdaptive
		cfg.Max = l.MaxCallsInFlight
		cfg.Initial = min(cfg.Initial, cfg.Max)
		cfg.Min = min(cfg.Min, cfg.Max)
		l.Concurrency = newAdaptiveLimit(cfg, time.Now)
	}
	return l
}

// ServerOptions are the grpc.ServerOptions that apply l (with its
// defaults), the concurrency limit, the calls-in-flight bound and the load
// in answers included. Give them to
// grpc.NewServer before any interceptor of your own, and serve on
// l.Listener(lis).
//
// Their admission does not know the server it is given to, so it cannot
// tell a streaming call when it admits it: a streaming call holds a place
// in flight, of the concurrency limit and MaxCallsInFlight, until its
// handler starts, and then moves among the streams (MaxStreams); its life
// never feeds the limit. An Instance cannot end the streams still open
// when it stops. A server with streaming calls is best made by NewServer.
func (l Limits) ServerOptions() []grpc.ServerOption {
	opts, _ := l.serverOptions()
	return opts
}

func (l Limits) serverOptions() ([]grpc.ServerOption, *admission) {
	l = l.WithDefaults()
	a := newAdmission(l)
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(l.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.ConnectionTimeout(l.HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: l.MaxConnectionIdle,
			Time:              l.KeepaliveTime,
			Timeout:           l.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.MinPingInterval}),
		grpc.InTapHandle(a.tap),
		grpc.ChainUnaryInterceptor(a.unary),
		grpc.ChainStreamInterceptor(a.stream),
	}
	if l.StreamWorkers > 0 {
		opts = append(opts, grpc.NumStreamWorkers(uint32(l.StreamWorkers)))
	}
	return opts, a
}

// Listener returns lis with l's connection bounds applied
// (MaxConnections, MaxPendingConnections, FirstByteTimeout,
// HandshakeTimeout), for a *grpc.Server to serve on: it learns from the
// server when a connection is established. A connection refused is closed
// as soon as it is accepted, so that its caller learns at once (and tries
// another instance) rather than waiting in the backlog. Closing the
// listener closes the connections not yet established.
func (l Limits) Listener(lis net.Listener) net.Listener {
	return newConnListener(lis, l.WithDefaults())
}
