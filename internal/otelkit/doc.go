// Package otelkit adapts OpenTelemetry metric instruments to go-kit's
// metrics interfaces, which trimkit's stacks report to: with a
// MeterProvider in client.Metrics or grpcserver.AdmissionMetrics, every
// instrument also reports through OpenTelemetry, so that a program without
// Prometheus wires one provider.
//
// go-kit label values (With("instance", "a:1", ...)) become attributes. A
// gauge keeps the value of each attribute set, since go-kit's Gauge.Add is
// relative and OpenTelemetry's synchronous gauge records absolute values.
// Instrument errors go to otel.Handle, as OpenTelemetry's own do; the
// instrument returned then is a no-op.
package otelkit
