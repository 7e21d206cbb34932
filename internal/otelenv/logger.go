package otelenv

import (
	"fmt"

	"github.com/go-kit/log"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Logger returns a logger that records each record as an event of span,
// named by its "msg" and with its other pairs as attributes, and passes
// it on to next with the span's trace_id and span_id: a process's life
// (registered, NOT_SERVING, deregistered, drained) as a span that a trace
// backend shows, and its log lines with the trace context to find it by.
// Debug records are not events. With a span that does not record
// (tracing off) it is next.
func Logger(next log.Logger, span trace.Span) log.Logger {
	if !span.IsRecording() {
		return next
	}
	sc := span.SpanContext()
	next = log.With(next, "trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
	return log.LoggerFunc(func(keyvals ...any) error {
		name := "log"
		var attrs []attribute.KeyValue
		for i := 0; i+1 < len(keyvals); i += 2 {
			k, v := fmt.Sprint(keyvals[i]), keyvals[i+1]
			if k == "msg" {
				name = fmt.Sprint(v)
				continue
			}
			if k == "level" && fmt.Sprint(v) == "debug" {
				return next.Log(keyvals...) // what the logs leave out, the span does too
			}
			if valuer, ok := v.(log.Valuer); ok {
				v = valuer()
			}
			attrs = append(attrs, attribute.String(k, fmt.Sprint(v)))
		}
		span.AddEvent(name, trace.WithAttributes(attrs...))
		return next.Log(keyvals...)
	})
}
