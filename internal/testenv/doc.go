// Package testenv is what trimkit's tests and benchmarks run against: a real
// Consul agent from bin/consul (or PATH) on free loopback ports with its own
// temporary data directory, the project's commands built once per test
// binary and only when a test asks for them, and processes started from them
// that are stopped and reaped when the test ends, failed or not.
//
// With CI=true a missing consul binary fails the test; elsewhere the test is
// skipped with a message that says to run `make consul`.
package testenv
