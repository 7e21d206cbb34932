package client_test

import (
	"context"
	"fmt"
	"os"

	kitsd "github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trimkit/trimkit/client"
)

// Tracing a stack built by hand: Retry's TracerProvider makes a span per
// call and one per attempt, and otelgrpc's stats handler, given to the
// Factory, puts each attempt's gRPC span under its attempt and sends the
// trace context to the instance. New, NewFromInstancer and NewConn add
// the stats handler themselves when CallConfig.Retry.TracerProvider is
// set.
func ExampleRetryConfig_tracing() {
	// Your program's TracerProvider, with its exporter (OTLP, say).
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())

	logger := log.NewLogfmtLogger(os.Stderr)
	factory := client.Factory(healthEndpoints, grpc.WithStatsHandler(otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagation.TraceContext{}))))
	endpointer, err := client.NewEndpointer(kitsd.FixedInstancer{"127.0.0.1:8975"}, factory, logger, client.EndpointerConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer endpointer.Close()
	call, err := client.Retry(client.NewRoundRobin(endpointer), client.RetryConfig{TracerProvider: tp})
	if err != nil {
		fmt.Println(err)
		return
	}
	// One trace: trimkit.call, then trimkit.attempt with the instance,
	// the attempt's number and its outcome, then the gRPC client span.
	_, _ = call(context.Background(), &healthpb.HealthCheckRequest{})
}

// Metrics through OpenTelemetry: a program without Prometheus gives the
// stack its MeterProvider, and every instrument of Metrics reports as
// trimkit.client.* with the same labels as attributes.
func ExampleMetrics_openTelemetry() {
	// Your program's MeterProvider, with its reader or exporter (OTLP, say).
	mp := sdkmetric.NewMeterProvider()
	defer mp.Shutdown(context.Background())

	c, err := client.New(client.Config{Service: "orders", CallConfig: client.CallConfig{
		EndpointerConfig: client.EndpointerConfig{Metrics: client.Metrics{MeterProvider: mp}},
	}}, healthEndpoints)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
}
