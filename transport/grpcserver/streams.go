package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Streaming calls: how a server's admission tells them from unary calls,
// bounds them, and ends them when the server stops.
//
// A streaming call (one where the client or the server streams) may stay
// open for minutes, and its life says nothing of the service's latency:
// taken for a unary call, a few long streams made the adaptive limit read
// seconds of latency and fall to its minimum, while the streams held the
// few places left, and unary calls were shed. So the admission of a
// NewServer's server admits a streaming call apart, in the tap as any
// call: it holds a place among MaxStreams, not in flight; the limit never
// hears of it; and the answers' load stays that of the unary calls. The
// tap knows a call by its method's full name only: the admission reads
// the server's streaming methods from its GetServiceInfo at its first
// call, once it serves, when no service can be registered any more.
//
// The admission of ServerOptions alone does not know its server: its tap
// takes every call for a unary one. Its stream interceptor still knows a
// streaming call: it moves the call among the streams as its handler
// starts, and the limit never hears of one.
//
// An Instance stops a server gracefully: gRPC tells the callers to go
// (GOAWAY) and waits for the calls open. A stream may not end by itself
// within StopTimeout; cut off with its connection, its caller learns only
// that the connection broke. So every streaming call's context also ends
// when the Instance's StopTimeout is up (stopStreams), and a handler that
// returns then answers Unavailable: its caller opens the stream again on
// another instance.

// GRPCServer is a *grpc.Server made by Limits.NewServer: register the
// services on it, as on the *grpc.Server it embeds, and run it as an
// Instance's Server. Its admission knows which of its methods stream, and
// bounds them apart (MaxStreams); an Instance running it ends the
// streaming calls still open when its StopTimeout is up, Unavailable.
type GRPCServer struct {
	*grpc.Server
	a *admission
}

var _ Server = (*GRPCServer)(nil)

// NewServer returns a gRPC server bounded by l (with its defaults): the
// grpc.Server of l.ServerOptions(), then of opts (interceptors of your
// own, TLS). Unlike one built from ServerOptions alone, its admission
// knows the server's streaming calls from the start: they never count
// against the concurrency limit or MaxCallsInFlight (MaxStreams bounds
// them), and an Instance ends those still open, Unavailable, when its
// StopTimeout is up. Serve it on l.Listener(lis).
func (l Limits) NewServer(opts ...grpc.ServerOption) *GRPCServer {
	lopts, a := l.serverOptions()
	s := grpc.NewServer(append(lopts, opts...)...)
	a.streaming = sync.OnceValue(func() map[string]bool { return streamingMethods(s) })
	return &GRPCServer{Server: s, a: a}
}

// streamingMethods returns the full names of s's methods where the client
// or the server streams.
func streamingMethods(s *grpc.Server) map[string]bool {
	m := map[string]bool{}
	for service, info := range s.GetServiceInfo() {
		for _, method := range info.Methods {
			if method.IsClientStream || method.IsServerStream {
				m["/"+service+"/"+method.Name] = true
			}
		}
	}
	return m
}

// tapStream admits a streaming call among MaxStreams, or sheds it; load
// says its caller asked for the load in the trailer.
func (a *admission) tapStream(ctx context.Context, load bool) (context.Context, error) {
	t, err := a.admitStream(ctx)
	if err != nil {
		return nil, err
	}
	t.load = load
	a.unclaimed.add(t)
	return t, nil
}

// admitStream takes a place among the streams for the streaming call of
// ctx, or sheds it.
func (a *admission) admitStream(ctx context.Context) (*ticket, error) {
	n := a.streams.Add(1)
	if n > a.maxStreams {
		a.streams.Add(-1)
		if a.metrics.Shed != nil {
			a.metrics.Shed.Add(1)
		}
		return nil, a.marker.Shed(fmt.Sprintf("server busy: %d streams open, its limit (MaxStreams); try another instance", a.maxStreams))
	}
	if a.metrics.Streams != nil {
		a.metrics.Streams.Set(float64(n))
	}
	return &ticket{Context: ctx, a: a, stream: true, slot: -1}, nil
}

// streamEnded gives a stream's place back.
func (a *admission) streamEnded() {
	n := a.streams.Add(-1)
	if a.metrics.Streams != nil {
		a.metrics.Streams.Set(float64(n))
	}
}

// errStopping is the cause of a streaming call's context that ended
// because the server stops.
var errStopping = errors.New("server stopping")

// runStream runs a streaming call's handler with a context that also ends
// when the server stops. A handler that returns then answers Unavailable,
// unless it said something of its own (a status other than Canceled).
func (a *admission) runStream(srv any, ss grpc.ServerStream, handler grpc.StreamHandler) error {
	ctx, cancel := context.WithCancelCause(context.WithValue(ss.Context(), leavingKey{}, a.leaving))
	defer cancel(nil)
	unhook := context.AfterFunc(a.stopping, func() { cancel(errStopping) })
	defer unhook()
	err := handler(srv, serverStream{ServerStream: ss, ctx: ctx})
	if errors.Is(context.Cause(ctx), errStopping) {
		if s, ok := status.FromError(err); !ok || s.Code() == codes.OK || s.Code() == codes.Canceled {
			return status.Error(codes.Unavailable, "server stopping; reopen on another instance")
		}
	}
	return err
}

type leavingKey struct{}

// Leaving returns a channel that is closed when the server of a streaming
// call, a GRPCServer run by an Instance, begins to stop gracefully: after
// it has left Consul and drained, when its callers no longer pick it. A
// stream that can end by itself (a watch, a subscription) should then:
// ended OK, or with a status of its own, its caller opens it again on
// another instance, with no error to show for it. A stream still open at
// StopTimeout ends Unavailable. ctx is the stream's; for any other, the
// channel is nil, which is never ready.
func Leaving(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(leavingKey{}).(chan struct{})
	return ch
}

// serverStream is a streaming call's stream with runStream's context.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s serverStream) Context() context.Context { return s.ctx }
