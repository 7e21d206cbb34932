package grpcserver

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/metrics"
	otelmetric "go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/trimkit/trimkit/internal/otelkit"
	"github.com/trimkit/trimkit/internal/overload"
)

// healthPrefix starts the full names of grpc.health.v1's methods, which
// admission never refuses: a server that is busy is not unhealthy, and its
// health check must not fail for being busy.
const healthPrefix = "/grpc.health.v1.Health/"

// AdmissionMetrics are the instruments a server's admission reports to,
// go-kit's interfaces. A nil field is not reported.
type AdmissionMetrics struct {
	// Shed counts the calls refused at once because the concurrency limit
	// (or MaxCallsInFlight) was reached, and the streaming calls refused
	// because MaxStreams was.
	Shed metrics.Counter
	// Limit is the concurrency limit now (at most MaxCallsInFlight).
	Limit metrics.Gauge
	// InFlight is the calls in flight now, health checks and open
	// streaming calls excepted.
	InFlight metrics.Gauge
	// Streams is the streaming calls open now, health checks excepted
	// (a server built from ServerOptions alone counts one from when its
	// handler starts).
	Streams metrics.Gauge

	// ConnsRefused counts the connections closed as they were accepted:
	// every place (MaxConnections) was held by an established connection.
	ConnsRefused metrics.Counter
	// ConnsEvicted counts the connections not yet established closed to
	// make room for a newer one (MaxConnections, MaxPendingConnections).
	ConnsEvicted metrics.Counter
	// ConnsTimedOut counts the connections closed before they were
	// established, with a label "stage": "first_byte" for those that sent
	// nothing within FirstByteTimeout, "handshake" for those that had not
	// finished within HandshakeTimeout.
	ConnsTimedOut metrics.Counter

	// MeterProvider, when set, reports every instrument above through
	// OpenTelemetry too, as the instruments trimkit.server.shed,
	// .concurrency_limit, .in_flight, .streams, .connections_refused,
	// .connections_evicted and .connections_timed_out (attribute stage) of
	// the meter github.com/trimkit/trimkit/transport/grpcserver: a program
	// without Prometheus wires one provider. The go-kit instruments set
	// beside it report as well.
	MeterProvider otelmetric.MeterProvider
}

// resolved is m with its MeterProvider's instruments beside its own.
func (m AdmissionMetrics) resolved() AdmissionMetrics {
	if m.MeterProvider == nil {
		return m
	}
	t := otelkit.NewTee(m.MeterProvider, "github.com/trimkit/trimkit/transport/grpcserver", "trimkit.server.")
	c, g := t.Counter, t.Gauge
	m.Shed = c(m.Shed, "shed", "{call}", "Calls refused at once: the concurrency limit, MaxCallsInFlight or MaxStreams was reached.")
	m.Limit = g(m.Limit, "concurrency_limit", "{call}", "The concurrency limit now.")
	m.InFlight = g(m.InFlight, "in_flight", "{call}", "Calls in flight now, health checks and open streams excepted.")
	m.Streams = g(m.Streams, "streams", "{stream}", "Streaming calls open now, health checks excepted.")
	m.ConnsRefused = c(m.ConnsRefused, "connections_refused", "{connection}", "Connections closed as they were accepted: every place was held by an established connection.")
	m.ConnsEvicted = c(m.ConnsEvicted, "connections_evicted", "{connection}", "Connections not yet established closed to make room for a newer one.")
	m.ConnsTimedOut = c(m.ConnsTimedOut, "connections_timed_out", "{connection}", "Connections closed before they were established, by stage: first_byte or handshake.")
	m.MeterProvider = nil // resolved once
	return m
}

// admission bounds the calls in flight: it admits or sheds a call in
// gRPC's tap handle, when its headers arrive and before its request is
// read, and lets it go when the call ends. It tells the limit how each
// admitted unary call went, and every answer to a caller that asks for it
// (overload.RequestKey) carries the server's load in its trailer (see
// internal/overload). Streaming calls are bounded apart, when it knows
// them (see streams.go).
type admission struct {
	max      int64 // MaxCallsInFlight
	limit    ConcurrencyLimit
	over     overLimit // limit, when it learns of calls over it; else nil
	inflight atomic.Int64
	metrics  AdmissionMetrics
	marker   overload.Marker
	noLoad   bool           // OmitLoad
	busy     func() float64 // Utilization, or nil
	// lastLimit is the limit the Limit gauge last got, so that it is set
	// only when the limit moves.
	lastLimit atomic.Int64

	// streaming returns the full names ("/package.Service/Method") of
	// the server's streaming methods; nil for the admission of
	// ServerOptions alone, which does not know its server: its tap takes
	// every call for a unary one, and its stream interceptor moves a
	// streaming call among the streams.
	streaming  func() map[string]bool
	maxStreams int64 // MaxStreams
	streams    atomic.Int64
	// stopping ends when the server stops (stopStreams): every streaming
	// call's context ends with it.
	stopping    context.Context
	stopStreams context.CancelFunc
	// leaving is closed when the server begins to stop gracefully
	// (Leaving): a stream that can end by itself ends then.
	leaving chan struct{}
	leave   func()
	// unclaimed holds the tickets tap gave out until an interceptor
	// claims them (begin).
	unclaimed unclaimed
}

// newAdmission returns the admission of l, which has its defaults.
func newAdmission(l Limits) *admission {
	a := &admission{max: int64(l.MaxCallsInFlight), limit: l.Concurrency, metrics: l.Metrics.resolved(), marker: overload.NewMarker(), noLoad: l.OmitLoad, busy: l.Utilization, maxStreams: int64(l.MaxStreams)}
	a.over, _ = l.Concurrency.(overLimit)
	a.stopping, a.stopStreams = context.WithCancel(context.Background())
	a.leaving = make(chan struct{})
	a.leave = sync.OnceFunc(func() { close(a.leaving) })
	a.unclaimed.timer = time.AfterFunc(time.Duration(math.MaxInt64), a.unclaimed.sweep) // armed by add
	a.unclaimed.timer.Stop()
	a.currentLimit()
	return a
}

// overLimit is a ConcurrencyLimit that learns of the calls over it
// (AdaptiveLimit): admitOver, called for each before it is shed, reports
// whether the limit grew to admit it.
type overLimit interface {
	admitOver() bool
}

// currentLimit is the limit now: the ConcurrencyLimit's, within
// MaxCallsInFlight.
func (a *admission) currentLimit() int64 {
	l := min(int64(a.limit.Limit()), a.max)
	if a.metrics.Limit != nil && a.lastLimit.Swap(l) != l {
		a.metrics.Limit.Set(float64(l))
	}
	return l
}

// ticket is an admitted call's place in flight, or a streaming call's
// among the streams. It is given back once: by the call's first
// interceptor when the call ends, or, for a call that never reaches an
// interceptor (an unknown method, a caller that reset the stream before
// its request was whole), by the sweep of the unclaimed tickets soon
// after its stream's context ends. A call whose caller gives up while
// its handler runs keeps its place until the handler returns: the server
// is still doing its work.
//
// It is also the call's context (one allocation, not two): its Value
// answers ticketKey with itself.
type ticket struct {
	context.Context
	a        *admission
	admitted time.Time
	inflight int64 // when it was admitted, itself included
	returned atomic.Bool
	stream   bool  // a place among the streams, not in flight
	load     bool  // its caller asked for the load in the trailer
	slot     int32 // its place among the unclaimed tickets; -1: claimed
}

func (t *ticket) Value(key any) any {
	if key == (ticketKey{}) {
		return t
	}
	return t.Context.Value(key)
}

func (t *ticket) giveBack() {
	if t.returned.CompareAndSwap(false, true) {
		if t.stream {
			t.a.streamEnded()
			return
		}
		n := t.a.inflight.Add(-1)
		if t.a.metrics.InFlight != nil {
			t.a.metrics.InFlight.Set(float64(n))
		}
	}
}

type ticketKey struct{}

func (a *admission) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if strings.HasPrefix(info.FullMethodName, healthPrefix) {
		return ctx, nil
	}
	load := !a.noLoad && overload.Requested(info.Header)
	if a.streaming != nil && a.streaming()[info.FullMethodName] {
		return a.tapStream(ctx, load)
	}
	limit := a.currentLimit()
	n := a.inflight.Add(1)
	if n > limit && limit < a.max && a.over != nil && a.over.admitOver() {
		limit = a.currentLimit()
	}
	if n > limit {
		a.inflight.Add(-1)
		if a.metrics.Shed != nil {
			a.metrics.Shed.Add(1)
		}
		var which any = a.limit
		if limit == a.max {
			which = "MaxCallsInFlight"
		}
		return nil, a.marker.Shed(fmt.Sprintf("server busy: %d calls in flight, its limit (%v); try another instance", limit, which))
	}
	if a.metrics.InFlight != nil {
		a.metrics.InFlight.Set(float64(n))
	}
	t := &ticket{Context: ctx, a: a, admitted: time.Now(), inflight: n, load: load}
	a.unclaimed.add(t)
	return t, nil
}

// begin claims the ticket of the call of ctx, if it has one, and returns
// it, or an error when its caller has gone already: the handler then
// does no work for nobody.
func begin(ctx context.Context) (*ticket, error) {
	t, _ := ctx.Value(ticketKey{}).(*ticket)
	if t != nil {
		t.a.unclaimed.claim(t)
	}
	if err := ctx.Err(); err != nil {
		return t, status.FromContextError(err).Err()
	}
	return t, nil
}

// end gives back t (nil: a health check, nothing to give back), tells the
// limit how the call went when it is a unary call (observe) and its caller
// waited for it, and returns the load trailer of its answer. A streaming
// call's life is no latency: however it was admitted, the limit never
// hears of it.
func (t *ticket) end(ctx context.Context, observe bool) metadata.MD {
	if t == nil {
		return nil
	}
	if observe && ctx.Err() == nil {
		t.a.limit.Observe(time.Since(t.admitted), int(t.inflight))
	}
	t.giveBack()
	if !t.load {
		return nil
	}
	limit := t.a.currentLimit()
	// The load other callers see now: the calls still in flight (not the
	// streams a NewServer's server admits apart), this one no longer
	// among them.
	u := float64(t.a.inflight.Load()) / float64(limit)
	if t.a.busy != nil {
		if b := t.a.busy(); b > u { // false for NaN
			u = min(b, 1)
		}
	}
	r := overload.Report{Utilization: u, Limit: float64(limit)}
	var buf [48]byte
	return metadata.MD{overload.Key: []string{string(overload.Append(buf[:0], r))}}
}

func (a *admission) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	t, err := begin(ctx)
	if err != nil {
		t.end(ctx, true)
		return nil, err
	}
	resp, err := handler(ctx, req)
	if md := t.end(ctx, true); md != nil {
		_ = grpc.SetTrailer(ctx, md)
	}
	return resp, err
}

func (a *admission) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	t, err := begin(ctx)
	if err != nil {
		t.end(ctx, false)
		return err
	}
	if t != nil && !t.stream {
		// Admitted as a call in flight by a tap that could not tell it
		// streams (a server from ServerOptions alone, which does not know
		// its methods): it moves among the streams as its handler starts,
		// so that open streams never hold places of the unary calls'
		// limit.
		t.giveBack()
		load := t.load
		if t, err = a.admitStream(ctx); err != nil {
			return err
		}
		t.load = load
	}
	err = a.runStream(srv, ss, handler)
	if md := t.end(ctx, false); md != nil {
		ss.SetTrailer(md)
	}
	return err
}
