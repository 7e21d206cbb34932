package client

import (
	"context"
	"errors"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// tracerName names the tracer Retry's spans come from.
const tracerName = "github.com/trimkit/trimkit/client"

// Span names and attributes, as docs/tracing.md lists them.
const (
	callSpan    = "trimkit.call"
	attemptSpan = "trimkit.attempt"

	attrInstanceID   = attribute.Key("trimkit.instance.id")
	attrInstanceAddr = attribute.Key("trimkit.instance.addr")
	attrAttempt      = attribute.Key("trimkit.attempt")
	attrHedge        = attribute.Key("trimkit.hedge")
	attrOutcome      = attribute.Key("trimkit.outcome")
	attrEjected      = attribute.Key("trimkit.ejected")
	attrHeld         = attribute.Key("trimkit.held")
)

// What an attempt's span says of how it ended (trimkit.outcome).
const (
	spanOK             = "ok"              // answered
	spanError          = "error"           // failed, and the call tried no more
	spanRetried        = "retried"         // failed, and the call tried again
	spanShed           = "shed"            // refused at once for overload
	spanTimeout        = "timeout"         // its share of the call's time ran out
	spanOutcomeUnknown = "outcome_unknown" // may have reached its instance; not sent again
	spanOutpaced       = "outpaced"        // a hedge raced it and the other answered first
)

// newTracer is tp's tracer for Retry's spans; nil (no tracing, and no
// cost) when tp is nil.
func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracerName)
}

// tracingDialOption is the gRPC client span of each attempt's call
// (otelgrpc's stats handler), under the attempt's span, with the trace
// context sent to the instance (W3C traceparent) so that its server span
// continues the trace.
func tracingDialOption(tp trace.TracerProvider) grpc.DialOption {
	return grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagation.TraceContext{})))
}

// startAttempt starts the span of attempt number no of a call, on n, as a
// child of the call's span in ctx, and returns the attempt's context.
func (r *retry) startAttempt(ctx context.Context, n *Node, no int, hedge bool) (context.Context, trace.Span) {
	ctx, span := r.tracer.Start(ctx, attemptSpan, trace.WithAttributes(
		attrInstanceID.String(n.instance),
		attrInstanceAddr.String(n.instance),
		attrAttempt.Int(no),
		attrHedge.Bool(hedge),
	))
	if n.held.Load() {
		span.SetAttributes(attrHeld.Bool(true))
	}
	return ctx, span
}

// endAttempt ends an attempt's span (nil: not traced) with how it ended;
// err is its error, nil when it answered.
func endAttempt(span trace.Span, outcome string, err error) {
	if span == nil {
		return
	}
	span.SetAttributes(attrOutcome.String(outcome))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// failedOutcome is the span outcome of a failed attempt that ended as o,
// when the call went on (retried) or not.
func failedOutcome(o outcome, err error, retried bool) string {
	var timeout *attemptTimeoutError
	switch {
	case o == shed:
		return spanShed
	case o == timedOut || errors.As(err, &timeout):
		return spanTimeout
	case o == outpaced:
		return spanOutpaced
	case retried:
		return spanRetried
	}
	return spanError
}

// markEjected records on the attempt of ctx, if it has one, that its
// failure ejected its instance (trimkit.ejected).
func markEjected(ctx context.Context) {
	if at, ok := ctx.Value(attemptKey{}).(*attemptRec); ok {
		at.ejectedIt.Store(true)
	}
}
