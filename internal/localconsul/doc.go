// Package localconsul runs a Consul dev agent on loopback for trimkit's demo
// and tests: free ports, its own data directory, stopped by PID. Package
// consultest wraps it for tests.
package localconsul
