package otelenv

import (
	"context"
	"fmt"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// Tracing is a command's tracing, from the environment.
type Tracing struct {
	// Provider is nil when tracing is off.
	Provider *sdktrace.TracerProvider
}

// FromEnv reads the environment through getenv and returns the tracing it
// asks for, spans named for service unless OTEL_SERVICE_NAME says
// otherwise. Tracing is on when OTEL_TRACES_EXPORTER is "otlp", or when it
// is unset and an OTLP endpoint is (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); "none", or nothing set, is off.
// The exporter speaks OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf" (the
// default, port 4318) or "grpc" (port 4317), and reads its endpoint and
// headers from the environment itself. Any other value is an error.
func FromEnv(ctx context.Context, getenv func(string) string, service string) (Tracing, error) {
	switch exp := getenv("OTEL_TRACES_EXPORTER"); exp {
	case "none":
		return Tracing{}, nil
	case "":
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return Tracing{}, nil
		}
	case "otlp":
	default:
		return Tracing{}, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: want otlp or none", exp)
	}
	var (
		exporter sdktrace.SpanExporter
		err      error
	)
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch protocol {
	case "", "http/protobuf":
		exporter, err = otlptracehttp.New(ctx)
	case "grpc":
		exporter, err = otlptracegrpc.New(ctx)
	default:
		return Tracing{}, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: want http/protobuf or grpc", protocol)
	}
	if err != nil {
		return Tracing{}, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	// The command's name first, so that OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES override it.
	res, err := resource.New(ctx, resource.WithAttributes(attribute.String("service.name", service)), resource.WithFromEnv())
	if err != nil {
		return Tracing{}, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES or OTEL_SERVICE_NAME: %w", err)
	}
	return Tracing{Provider: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))}, nil
}

// ServerOption is otelgrpc's server stats handler over t's provider, the
// W3C trace context continuing each caller's trace; health checks are
// not traced (Consul's agent checks every instance every few seconds).
// Nil when tracing is off.
func (t Tracing) ServerOption() grpc.ServerOption {
	if t.Provider == nil {
		return nil
	}
	return grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(t.Provider),
		otelgrpc.WithPropagators(propagation.TraceContext{}), otelgrpc.WithFilter(filters.Not(filters.HealthCheck()))))
}

// Start starts a root span named name with attrs, from a tracer named
// for trimkit's commands; when tracing is off, a span that records
// nothing.
func (t Tracing) Start(name string, attrs ...attribute.KeyValue) trace.Span {
	if t.Provider == nil {
		return trace.SpanFromContext(context.Background())
	}
	_, span := t.Provider.Tracer("github.com/trimkit/trimkit/cmd").Start(context.Background(), name, trace.WithAttributes(attrs...))
	return span
}

// Shutdown sends the spans still buffered, within ctx, and stops.
func (t Tracing) Shutdown(ctx context.Context) error {
	if t.Provider == nil {
		return nil
	}
	if err := t.Provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: send the last spans: %w", err)
	}
	return nil
}
