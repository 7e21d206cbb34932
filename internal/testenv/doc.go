// Package consultest starts a real Consul agent for tests: a dev agent from
// bin/consul (or PATH) on free loopback ports with its own temporary data
// directory, stopped by t.Cleanup.
//
// With CI=true a missing consul binary fails the test; elsewhere the test is
// skipped with a message that says to run `make consul`.
package consultest
