package grpcserver

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// healthPrefix starts the full names of grpc.health.v1's methods, which
// admission never refuses: a server that is busy is not unhealthy, and its
// health check must not fail for being busy.
const healthPrefix = "/grpc.health.v1.Health/"

// admission bounds the calls in flight: it admits or refuses a call in
// gRPC's tap handle, when its headers arrive and before its request is
// read, and lets it go when the call ends.
type admission struct {
	limit    int64
	inflight atomic.Int64
}

func newAdmission(limit int) *admission { return &admission{limit: int64(limit)} }

// ticket is an admitted call's place in flight. It is given back once: by
// the call's first interceptor when the call ends, or, for a call that
// never reaches an interceptor (an unknown method, a caller that reset the
// stream before its request was whole), when its stream's context ends.
//
// It is also the call's context (one allocation, not two): its Value
// answers ticketKey with itself.
type ticket struct {
	context.Context
	a        *admission
	returned atomic.Bool
	stop     func() bool // stops the context's AfterFunc
}

func (t *ticket) Value(key any) any {
	if key == (ticketKey{}) {
		return t
	}
	return t.Context.Value(key)
}

func (t *ticket) giveBack() {
	if t.returned.CompareAndSwap(false, true) {
		t.a.inflight.Add(-1)
	}
}

type ticketKey struct{}

func (a *admission) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if strings.HasPrefix(info.FullMethodName, healthPrefix) {
		return ctx, nil
	}
	if n := a.inflight.Add(1); n > a.limit {
		a.inflight.Add(-1)
		return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("server busy: %d calls in flight, its limit; try another instance", a.limit))
	}
	t := &ticket{Context: ctx, a: a}
	t.stop = context.AfterFunc(ctx, t.giveBack)
	return t, nil
}

// done gives back the ticket of the call of ctx, if it has one.
func done(ctx context.Context) {
	if t, ok := ctx.Value(ticketKey{}).(*ticket); ok {
		t.stop()
		t.giveBack()
	}
}

func (a *admission) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	defer done(ctx)
	return handler(ctx, req)
}

func (a *admission) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	defer done(ss.Context())
	return handler(srv, ss)
}
