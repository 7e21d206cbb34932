// Package localjaeger runs a Jaeger (bin/jaeger, Jaeger v2, built from
// the module proxy by `make jaeger`) on free loopback ports with
// in-memory storage: an OTLP receiver for trimkit's commands and tests,
// and the query service and UI to read traces back.
package localjaeger
