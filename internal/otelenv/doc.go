// Package otelenv makes the TracerProvider of trimkit's commands from
// OpenTelemetry's standard environment: OTEL_TRACES_EXPORTER,
// OTEL_EXPORTER_OTLP_ENDPOINT (and its _TRACES_ form),
// OTEL_EXPORTER_OTLP_PROTOCOL and OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES.
// Tracing is off unless that environment asks for it.
package otelenv
