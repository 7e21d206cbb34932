// Package bench holds trimkit's benchmarks: the cost of a call through the
// client stack against raw gRPC, discovery and failover latency, and a
// client watching 1,000 instances. `make bench` runs them and prints one
// summary table; see BENCHMARKS.md for the latest figures.
package bench
